"""arch.reconfigure: the same weights under a new config (Gemma 2 Table 10: windows and G -> L at
inference; Gemma 3 section 5.3: RoPE rescaling after training)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import arch

T = 24


@pytest.fixture(scope="module")
def gemma3():
    cfg = arch.preset("tiny_gemma3")  # window 8, 7 layers LLLLLGL
    model = arch.LM(cfg, key=jax.random.key(0))
    tokens = jax.random.randint(jax.random.key(1), (T,), 0, cfg.vocab_size)
    return model, tokens, eqx.filter_jit(model.__call__)(tokens)


def same_params(a, b) -> bool:
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return len(la) == len(lb) and all(x is y for x, y in zip(la, lb))


def test_window_override_changes_outputs_only_beyond_the_new_window(gemma3):
    model, tokens, full = gemma3
    small = arch.reconfigure(model, window=4)
    assert small.cfg.window == 4 and small.blocks[0].mixer.window == 4
    assert small.blocks[5].mixer.window is None  # the global layer stays global
    assert same_params(model, small)
    out = np.asarray(eqx.filter_jit(small.__call__)(tokens))
    diff = np.max(np.abs(out - np.asarray(full)), axis=-1) / np.max(np.abs(full))
    assert diff[:4].max() < 1e-6, diff[:4]  # positions 0..3 see nothing the new window hides
    assert (diff[4:] > 1e-4).all(), diff[4:]  # every later position lost some keys


def test_global_to_local_pattern_keeps_params(gemma3):
    model, tokens, full = gemma3
    local = arch.reconfigure(model, pattern="L")  # Gemma 2 Table 10: global layers made local
    assert local.cfg.layer_kinds == ("L",) * 7
    assert local.blocks[5].mixer.window == 8 and model.blocks[5].mixer.window is None
    assert same_params(model, local)
    assert arch.count_params(local) == arch.count_params(model)
    out = eqx.filter_jit(local.__call__)(tokens)
    assert np.max(np.abs(np.asarray(out) - np.asarray(full))) > 1e-4  # it is a different model


def test_rope_and_impl_overrides(gemma3):
    model, tokens, full = gemma3
    scaled = arch.reconfigure(model, rope_scale_global=8.0)
    assert scaled.blocks[5].mixer.rope_scale == 8.0 and scaled.blocks[0].mixer.rope_scale == 1.0
    assert same_params(model, scaled)
    xla = arch.reconfigure(model, attn_impl="xla", scan_impl="xla")
    assert xla.cfg.attn_impl == "xla" and xla.blocks[0].mixer.impl == "xla"
    np.testing.assert_allclose(eqx.filter_jit(xla.__call__)(tokens), full, rtol=1e-5, atol=1e-5)


def test_dtype_of_the_leaves_is_kept():
    cfg = arch.preset("tiny_gemma2")
    model = arch.LM(cfg, key=jax.random.key(0))
    half = jax.tree_util.tree_map(lambda x: x.astype(jnp.bfloat16), model)
    assert arch.reconfigure(half, window=4).embed.dtype == jnp.bfloat16


def test_incompatible_overrides_name_what_differs():
    model = arch.LM(arch.preset("tiny_recurrentgemma"), key=jax.random.key(0))  # RRLRRLR
    with pytest.raises(ValueError, match=r"layer 2: L -> R; layer 5: L -> R"):
        arch.reconfigure(model, pattern="R")
    with pytest.raises(ValueError, match=r"layer 7: - -> R"):
        arch.reconfigure(model, num_layers=8)
    with pytest.raises(ValueError, match=r"mlp_width=256.*mlp.down_proj.weight: \(64, 128\) -> \(64, 256\)"):
        arch.reconfigure(model, mlp_width=256)
    with pytest.raises(ValueError, match="unknown ModelConfig field"):
        arch.reconfigure(model, windw=4)
