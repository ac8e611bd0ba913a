"""EmbeddingGemma as a sentence-transformers folder, and the text half of Gemma3ForConditionalGeneration.

EmbeddingGemma: a bidirectional Gemma3TextModel (7 layers, window 8 -> transformers' radius 5) at the
folder root, mean pooling, Dense 48 -> 40 -> 24 without bias, Normalize. Padded batches check that the
mask reaches both the attention (padding keys hidden) and the pooling.
"""

import json
import shutil

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
tf = pytest.importorskip("transformers")
st = pytest.importorskip("sentence_transformers")


import arch  # noqa: E402
from arch.hf import from_hf, to_hf  # noqa: E402

pytestmark = pytest.mark.hf
VOCAB = 97
TEXT = dict(vocab_size=VOCAB, hidden_size=48, intermediate_size=80, num_attention_heads=6,
            num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=24, sliding_window=8,
            num_hidden_layers=7, attn_implementation="eager")
EAGER = dict(attn_implementation="eager")


def tokenizer():
    from tokenizers import Tokenizer, models

    vocab = {f"t{i}": i for i in range(VOCAB)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="t3"))
    return tf.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="t3", pad_token="t0")


def rel_err(got, ref):
    return float(np.abs(np.asarray(got, np.float64) - ref).max() / np.abs(ref).max())


@pytest.fixture(scope="module")
def st_folder(tmp_path_factory, randomize):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Dense, Normalize, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    base = tmp_path_factory.mktemp("trunk")
    trunk = tf.Gemma3TextModel(tf.Gemma3TextConfig(**TEXT, use_bidirectional_attention=True))
    randomize(trunk).save_pretrained(base)
    tokenizer().save_pretrained(base)
    ident = torch.nn.Identity()
    model = SentenceTransformer(modules=[
        Transformer(str(base), model_kwargs=EAGER), Pooling(48, "mean"),
        Dense(48, 40, bias=False, activation_function=ident),
        Dense(40, 24, bias=False, activation_function=ident), Normalize()])
    randomize(model[2], seed=1)
    randomize(model[3], seed=2)
    folder = tmp_path_factory.mktemp("embeddinggemma")
    model.save(str(folder))
    return folder, model.eval()


def batch():
    """Three sequences of 20, 13 and 7 real tokens, right-padded to 20 (longer than radius 5)."""
    rng = np.random.default_rng(0)
    lengths = [20, 13, 7]
    ids = rng.integers(1, VOCAB, (3, 20))
    mask = np.arange(20)[None, :] < np.array(lengths)[:, None]
    return np.where(mask, ids, 0), mask


def st_embed(model, ids, mask):
    with torch.no_grad():
        out = model({"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask.astype(np.int64))})
    return out["sentence_embedding"].numpy()


def ours_embed(model, ids, mask):
    return np.stack([np.asarray(model(jnp.asarray(i), jnp.asarray(m))) for i, m in zip(ids, mask)])


def test_embeddinggemma_matches_sentence_transformers(st_folder):
    folder, ref_model = st_folder
    ours = from_hf(folder)
    assert isinstance(ours, arch.EmbeddingModel)
    assert (ours.cfg.window, ours.cfg.causal, ours.cfg.pattern) == (8, False, "LLLLLG")  # HF's w, not w//2+1
    assert [d.weight.shape for d in ours.dense] == [(40, 48), (24, 40)] and ours.normalize
    ids, mask = batch()
    ref = st_embed(ref_model, ids, mask)
    got = ours_embed(ours, ids, mask)
    assert rel_err(got, ref) < 1e-4
    np.testing.assert_allclose(np.linalg.norm(got, axis=-1), 1.0, rtol=1e-6)
    # the window matters at this length: HF's radius 8 // 2 + 1 = 5, not 8
    wide = ours_embed(arch.reconfigure(ours, window=16), ids, mask)
    assert rel_err(wide, ref) > 1e-3
    # no mask == all-ones mask
    np.testing.assert_allclose(np.asarray(ours(jnp.asarray(ids[0]))), got[0], rtol=1e-6, atol=1e-7)


def test_embeddinggemma_export_reloads_in_sentence_transformers(st_folder, tmp_path):
    from sentence_transformers import SentenceTransformer

    folder, ref_model = st_folder
    ours = from_hf(folder)
    out = tmp_path / "export"
    to_hf(ours, out)
    for f in ("tokenizer.json", "tokenizer_config.json"):  # tokenizers are not part of the weights
        shutil.copy(folder / f, out / f)
    back = SentenceTransformer(str(out), model_kwargs=EAGER, device="cpu").eval()
    ids, mask = batch()
    assert rel_err(st_embed(back, ids, mask), st_embed(ref_model, ids, mask)) < 1e-5
    assert json.loads((out / "config.json").read_text())["sliding_window"] == 8


def test_legacy_pooling_config_and_unsupported_pooling(st_folder, tmp_path):
    folder, _ = st_folder
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    pooling = copy / "1_Pooling" / "config.json"
    pooling.write_text(json.dumps({"word_embedding_dimension": 48, "pooling_mode_cls_token": False,
                                   "pooling_mode_mean_tokens": True}))
    assert isinstance(from_hf(copy), arch.EmbeddingModel)
    pooling.write_text(json.dumps({"embedding_dimension": 48, "pooling_mode": "cls"}))
    with pytest.raises(ValueError, match="pooling 'cls'.*supported: mean"):
        from_hf(copy)
    dense = copy / "2_Dense" / "config.json"
    pooling.write_text(json.dumps({"embedding_dimension": 48, "pooling_mode": "mean"}))
    dense.write_text(json.dumps({"in_features": 48, "out_features": 40, "bias": False}))  # ST default: Tanh
    with pytest.raises(ValueError, match="Tanh"):
        from_hf(copy)


# ------------------------------------------------------------------- Gemma3ForConditionalGeneration


@pytest.fixture(scope="module")
def multimodal(tmp_path_factory, randomize):
    vision = tf.SiglipVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                   num_attention_heads=2, image_size=28, patch_size=14)
    rope = {"full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
            "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}}
    text = tf.Gemma3TextConfig(**{**TEXT, "sliding_window": 6}, rope_parameters=rope)
    cfg = tf.Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4,
                          image_token_index=VOCAB + 5, boi_token_index=VOCAB + 6, eoi_token_index=VOCAB + 7)
    model = randomize(tf.Gemma3ForConditionalGeneration._from_config(cfg, **EAGER))
    path = tmp_path_factory.mktemp("gemma3_mm")
    model.save_pretrained(path)
    return model, path


def mm_logits(model, toks):
    with torch.no_grad():
        return model(input_ids=torch.tensor(toks)[None], use_cache=False).logits[0].numpy()


def test_gemma3_conditional_generation_text_part(multimodal, tmp_path):
    from safetensors.numpy import load_file, save_file

    model, path = multimodal
    toks = np.random.default_rng(4).integers(0, VOCAB, 24)
    ours = from_hf(path)
    assert ours.cfg.rope_scale_global == 8.0 and ours.cfg.num_layers == 7
    ref = mm_logits(model, toks)
    assert rel_err(ours(jnp.asarray(toks)), ref) < 1e-4
    # the Hub's older names: language_model.model.*, vision_tower.*, multi_modal_projector.*
    hub = tmp_path / "hub"
    hub.mkdir()
    shutil.copy(path / "config.json", hub / "config.json")
    rename = {"model.language_model.": "language_model.model.", "model.vision_tower.": "vision_tower.",
              "model.multi_modal_projector.": "multi_modal_projector."}
    tensors = {}
    for name, x in load_file(path / "model.safetensors").items():
        for old, new in rename.items():
            name = name.replace(old, new, 1) if name.startswith(old) else name
        tensors[name] = x
    save_file(tensors, hub / "model.safetensors", metadata={"format": "pt"})
    assert rel_err(from_hf(hub)(jnp.asarray(toks)), ref) < 1e-4
