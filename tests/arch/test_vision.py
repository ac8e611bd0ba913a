"""Gemma 3's vision tower: the SigLIP encoder preset's parameter count, pooling, the encoder's
bidirectional receptive field, config errors, and soft tokens against transformers'
``Gemma3ForConditionalGeneration.get_image_features``."""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from arch.hf_vision import vision_from_hf
from arch.presets import PUBLISHED_VISION_ENCODER, printed_matches, table, vision_preset
from arch.vision import VisionConfig, VisionEncoder, VisionTower, count_vision_params, pool_patches


def test_published_encoder_counts_417m():
    cfg = vision_preset("siglip_gemma3")
    n = count_vision_params(cfg, text_width=2560)  # gemma3_4b's width
    printed, exact, _ = PUBLISHED_VISION_ENCODER
    assert n["encoder"] == exact and printed_matches(printed, n["encoder"])
    assert (cfg.num_patches, cfg.soft_tokens) == (4096, 256)
    assert n["projector"] == 1152 + 1152 * 2560  # norm weight + projection
    row = next(r for r in table().splitlines() if r.startswith("siglip_gemma3"))
    assert row.endswith("✓") and "416,866,032" in row


def test_pool_averages_each_square_of_the_grid_alone():
    x = jr.normal(jr.key(0), (16, 3))  # a 4 x 4 grid, row-major
    got = pool_patches(x, 2)
    grid = np.asarray(x).reshape(4, 4, 3)
    want = [grid[r:r + 2, c:c + 2].mean(axis=(0, 1)) for r in (0, 2) for c in (0, 2)]
    np.testing.assert_allclose(got, np.stack(want), rtol=1e-6)
    moved = pool_patches(x.at[6].add(10.0), 2)  # patch (1, 2) lies in token 1 only
    changed = np.flatnonzero(np.abs(np.asarray(moved - got)).max(axis=1) > 0)
    assert changed.tolist() == [1]


def test_every_patch_sees_every_other_both_ways():
    cfg = vision_preset("tiny_siglip")
    enc = VisionEncoder(cfg, key=jr.key(0))
    image = jr.normal(jr.key(1), (cfg.channels, cfg.image_size, cfg.image_size))
    p = cfg.patch_size
    # a random read-out of one output row: the plain sum of a layer-normed row is zero whatever the
    # input, so its gradient would be rounding noise
    probe = jr.normal(jr.key(2), (cfg.width,))

    def row_from(img, i):
        return (enc(img)[i] * probe).sum()

    g = jax.grad(row_from)(image, 0)
    last = g[:, -p:, -p:]  # the last patch's pixels reach the first patch's output
    assert float(jnp.abs(last).max()) > 1e-3 * float(jnp.abs(g).max())
    g = jax.grad(row_from)(image, -1)
    assert float(jnp.abs(g[:, :p, :p]).max()) > 1e-3 * float(jnp.abs(g).max())


def test_config_errors_name_the_field_value_and_rule():
    with pytest.raises(ValueError, match=r"VisionConfig.image_size=30: must be a multiple of patch_size=7"):
        VisionConfig(image_size=30, patch_size=7)
    with pytest.raises(ValueError, match=r"VisionConfig.pool=3: must divide the 4 patches per side"):
        vision_preset("tiny_siglip", pool=3)
    with pytest.raises(ValueError, match=r"VisionConfig.width=30: must be a multiple of num_heads=4"):
        vision_preset("tiny_siglip", width=30)
    with pytest.raises(ValueError, match="unknown vision preset 'siglip'"):
        vision_preset("siglip")
    enc = VisionEncoder(vision_preset("tiny_siglip"), key=jr.key(0))
    with pytest.raises(ValueError, match=r"image of shape \(3, 28, 35\).*\(3, 28, 28\)"):
        enc(jnp.zeros((3, 28, 35)))


# --------------------------------------------------------------------- against transformers


@pytest.fixture(scope="module")
def hf_multimodal(randomize):
    torch = pytest.importorskip("torch")
    tf = pytest.importorskip("transformers")
    vision = tf.SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, image_size=28, patch_size=7, vision_use_head=False)
    text = tf.Gemma3TextConfig(vocab_size=97, hidden_size=48, intermediate_size=80, num_attention_heads=2,
                               num_key_value_heads=1, head_dim=16, num_hidden_layers=1)
    cfg = tf.Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4,
                          image_token_index=102, boi_token_index=103, eoi_token_index=104)
    model = randomize(tf.Gemma3ForConditionalGeneration._from_config(cfg, attn_implementation="eager"))
    tensors = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    return torch, model, tensors, cfg.to_dict()


@pytest.mark.hf
def test_soft_tokens_match_transformers(hf_multimodal):
    torch, model, tensors, config = hf_multimodal
    tower = vision_from_hf(tensors, config)
    assert isinstance(tower, VisionTower) and tower.cfg.pool == 2 and tower.cfg.soft_tokens == 4
    pixels = np.random.default_rng(0).normal(size=(2, 3, 28, 28)).astype(np.float32)
    with torch.no_grad():
        ref = model.model.get_image_features(torch.from_numpy(pixels)).pooler_output.numpy()
    got = np.asarray(jax.vmap(tower)(jnp.asarray(pixels)))
    assert got.shape == ref.shape == (2, 4, 48)
    assert np.abs(got - ref).max() / np.abs(ref).max() < 1e-4


@pytest.mark.hf
def test_a_missing_or_misshapen_tensor_is_named(hf_multimodal):
    _, _, tensors, config = hf_multimodal
    name = "model.vision_tower.encoder.layers.1.mlp.fc1.weight"
    with pytest.raises(ValueError, match=f"missing {name}"):
        vision_from_hf({k: v for k, v in tensors.items() if k != name}, config)
    bad = dict(tensors, **{name: tensors[name][:, :5]})
    with pytest.raises(ValueError, match=rf"{name}: shape \(64, 5\), expected \(64, 32\)"):
        vision_from_hf(bad, config)
    with pytest.raises(ValueError, match="not the checkpoint of a Gemma3ForConditionalGeneration"):
        vision_from_hf({k: v for k, v in tensors.items() if "projector" not in k}, config)


@pytest.mark.hf
def test_the_published_files_names_load_the_same_tower(hf_multimodal):
    """The released checkpoints name the encoder ``vision_tower.vision_model.*`` with no ``model.``."""
    _, _, tensors, config = hf_multimodal
    rename = lambda k: (k.replace("model.vision_tower.", "vision_tower.vision_model.")
                        .replace("model.multi_modal_projector.", "multi_modal_projector."))
    renamed = {rename(k): v for k, v in tensors.items()}
    a, b = vision_from_hf(tensors, config), vision_from_hf(renamed, config)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)
