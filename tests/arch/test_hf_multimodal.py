"""A whole ``Gemma3ForConditionalGeneration`` against transformers: two non-square images (resized for
the encoder) in one sequence, text after each, a sequence longer than the sliding window; logits,
export and reload (ours and transformers'), and greedy decoding against ``generate``."""

import json

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
tf = pytest.importorskip("transformers")

import arch  # noqa: E402
from arch.hf import from_hf, to_hf  # noqa: E402
from experiments.data.images import to_encoder  # noqa: E402
from experiments.eval.sampling import sample  # noqa: E402

pytestmark = pytest.mark.hf
VOCAB, WINDOW = 97, 6
IMAGE, BOI, EOI = VOCAB + 5, VOCAB - 2, VOCAB - 1  # the placeholder lies outside the vocabulary


@pytest.fixture(scope="module")
def hf_model(tmp_path_factory, randomize):
    vision = tf.SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, image_size=28, patch_size=7, vision_use_head=False)
    text = tf.Gemma3TextConfig(vocab_size=VOCAB, hidden_size=48, intermediate_size=80, num_attention_heads=4,
                               num_key_value_heads=2, head_dim=16, num_hidden_layers=4, sliding_window=WINDOW,
                               layer_types=["sliding_attention"] * 3 + ["full_attention"])
    cfg = tf.Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4,
                          image_token_index=IMAGE, boi_token_index=BOI, eoi_token_index=EOI)
    model = randomize(tf.Gemma3ForConditionalGeneration._from_config(cfg, attn_implementation="eager"))
    path = tmp_path_factory.mktemp("gemma3_vlm")
    model.save_pretrained(path)
    return model, path


@pytest.fixture(scope="module")
def prompt():
    """text 3, image A (20 x 40 px), text 3, image B (35 x 21 px), text 4: 22 tokens > the window of 6."""
    rng = np.random.default_rng(0)
    cfg = arch.vision_preset("tiny_siglip")
    raw = [rng.uniform(size=(3, 20, 40)), rng.uniform(size=(3, 35, 21))]
    pixels = np.stack([np.asarray(to_encoder(im, cfg)) for im in raw]).astype(np.float32)
    image = [BOI] + [IMAGE] * 4 + [EOI]
    text = lambda n: rng.integers(0, VOCAB - 2, n).tolist()  # noqa: E731
    tokens = text(3) + image + text(3) + image + text(4)
    return np.asarray(tokens, np.int32), pixels


def hf_logits(model, tokens, pixels):
    ids = torch.tensor(tokens)[None].long()
    with torch.no_grad():
        out = model(input_ids=ids, pixel_values=torch.from_numpy(pixels),
                    token_type_ids=(ids == IMAGE).long(), use_cache=False)
    return out.logits[0].numpy()


def rel_err(got, ref):
    return float(np.abs(np.asarray(got, np.float64) - ref).max() / np.abs(ref).max())


def test_logits_match_transformers(hf_model, prompt):
    model, path = hf_model
    tokens, pixels = prompt
    ours = from_hf(path)
    assert isinstance(ours, arch.MultimodalLM) and ours.vision_cfg.soft_tokens == 4
    assert (ours.image_token, ours.boi_token, ours.eoi_token) == (IMAGE, BOI, EOI)
    assert len(tokens) > WINDOW and ours.cfg.pattern.count("L") == 3
    ref = hf_logits(model, tokens, pixels)
    assert rel_err(ours(jnp.asarray(tokens), jnp.asarray(pixels)), ref) < 1e-4
    # the images matter: swapped, the logits differ
    swapped = ours(jnp.asarray(tokens), jnp.asarray(pixels[::-1]))
    assert rel_err(swapped, ref) > 1e-2
    # a batch of two sequences (the images swapped in the second) equals each alone
    batch = ours(jnp.asarray(np.stack([tokens, tokens])), jnp.asarray(np.stack([pixels, pixels[::-1]])))
    assert rel_err(batch[0], ref) < 1e-4 and rel_err(batch[1], np.asarray(swapped)) < 1e-5


def test_pallas_kernels_read_images_as_xla_does(hf_model, prompt):
    """The same model on the Pallas attention kernels (interpret mode on CPU): values and gradients."""
    _, path = hf_model
    tokens, pixels = prompt
    xla = from_hf(path)
    pallas = arch.reconfigure(xla, attn_impl="pallas")
    assert pallas.lm.blocks[0].mixer.impl == "pallas"
    tower = lambda m: m.vision.vision_model.position_embedding  # noqa: E731
    assert np.array_equal(tower(pallas), tower(xla))
    run = eqx.filter_jit(lambda m: m(jnp.asarray(tokens), jnp.asarray(pixels)))
    want = np.asarray(run(xla))
    assert rel_err(run(pallas), want) < 1e-5
    loss = eqx.filter_jit(eqx.filter_grad(lambda m: m(jnp.asarray(tokens), jnp.asarray(pixels))[-1].sum()))
    g_x, g_p = loss(xla), loss(pallas)
    ref = g_x.lm.blocks[-1].mixer.k_proj.weight
    assert rel_err(g_p.lm.blocks[-1].mixer.k_proj.weight, np.asarray(ref)) < 1e-4


def test_export_and_reload(hf_model, prompt, tmp_path):
    model, path = hf_model
    tokens, pixels = prompt
    ours = from_hf(path)
    to_hf(ours, tmp_path / "out")
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["architectures"] == ["Gemma3ForConditionalGeneration"]
    assert config["mm_tokens_per_image"] == 4
    want = np.asarray(ours(jnp.asarray(tokens), jnp.asarray(pixels)))
    again = from_hf(tmp_path / "out")
    assert np.array_equal(np.asarray(again(jnp.asarray(tokens), jnp.asarray(pixels))), want)
    theirs = tf.Gemma3ForConditionalGeneration.from_pretrained(tmp_path / "out", attn_implementation="eager")
    assert rel_err(want, hf_logits(theirs.eval(), tokens, pixels)) < 1e-4
    text = from_hf(tmp_path / "out", text_only=True)
    assert isinstance(text, arch.LM)


def test_prefill_in_chunks_equals_the_forward(hf_model, prompt):
    """model.step over chunks that keep each image whole (and a ring buffer smaller than a chunk)."""
    _, path = hf_model
    tokens, pixels = prompt
    ours = from_hf(path)
    full = np.asarray(ours(jnp.asarray(tokens), jnp.asarray(pixels)))
    cache = ours.init_cache(len(tokens))
    a, cache = ours.step(jnp.asarray(tokens[:11]), cache, jnp.asarray(pixels[:1]))
    b, cache = ours.step(jnp.asarray(tokens[11:]), cache, jnp.asarray(pixels[1:]))
    assert rel_err(np.concatenate([a, b]), full) < 1e-5
    with pytest.raises(ValueError, match="4 image placeholder tokens .* 2 image"):
        ours.step(jnp.asarray(tokens[:11]), ours.init_cache(len(tokens)), jnp.asarray(pixels))


def test_greedy_decoding_matches_generate(hf_model, prompt):
    model, path = hf_model
    tokens, pixels = prompt
    ids = torch.tensor(tokens)[None].long()
    with torch.no_grad():
        out = model.generate(input_ids=ids, pixel_values=torch.from_numpy(pixels),
                             token_type_ids=(ids == IMAGE).long(), max_new_tokens=10, do_sample=False,
                             min_new_tokens=10)
    want = out[0, len(tokens):].numpy()
    got = sample(from_hf(path), tokens, images=pixels, max_new_tokens=10)
    assert got.tolist() == want.tolist()


def test_a_wrong_checkpoint_is_named(hf_model, tmp_path):
    from safetensors.numpy import load_file, save_file

    _, path = hf_model
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text((path / "config.json").read_text())
    tensors = load_file(path / "model.safetensors")
    name = next(n for n in tensors if n.endswith("vision_tower.encoder.layers.1.mlp.fc1.weight"))
    del tensors[name]
    save_file(tensors, tmp_path / "bad" / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=rf"missing tensors \(1\): {name}"):
        from_hf(tmp_path / "bad")
    assert isinstance(from_hf(tmp_path / "bad", text_only=True), arch.LM)  # the text half alone still loads
    with pytest.raises(ValueError, match="only a MultimodalLM reads images"):
        sample(from_hf(path, text_only=True), [1, 2], images=np.zeros((1, 3, 28, 28)), max_new_tokens=2)
