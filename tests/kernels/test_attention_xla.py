"""The plain-JAX attention paths: blocked local attention and the dense reference against oracles."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gemma_kernels
from gemma_kernels.attention.ref import attention_reference_jaxnn
from gemma_kernels.attention.xla import local_attention_blocked


def qkv(t, h, kv, e, seed=0):
    ks = jax.random.split(jax.random.key(seed), 3)
    return (jax.random.normal(ks[0], (t, h, e)), jax.random.normal(ks[1], (t, kv, e)),
            jax.random.normal(ks[2], (t, kv, e)))


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("window", [1, 3, 20, 57, 100, None])  # 20: not a block multiple; 57, 100 >= t
def test_xla_attention_matches_reference(window, causal):
    q, k, v = qkv(57, 4, 2, 16)
    seg = (jnp.arange(57) >= 25).astype(jnp.int32)
    for segment_ids, softcap in [(None, None), (seg, 8.0)]:
        opts = dict(window=window, causal=causal, softcap=softcap, segment_ids=segment_ids)
        got = gemma_kernels.attention(q, k, v, impl="xla", **opts)
        want = gemma_kernels.attention_reference(q, k, v, **opts)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("window, block", [(1, 16), (3, 16), (20, 16), (20, 32), (60, 16)])
def test_blocked_local_attention_with_explicit_blocks(window, block, causal):
    """The blocked path itself (attention_xla sends window >= t to the dense path)."""
    q, k, v = qkv(50, 2, 1, 16, seed=1)
    got = local_attention_blocked(q, k, v, window=window, causal=causal, block=block)
    want = gemma_kernels.attention_reference(q, k, v, window=window, causal=causal)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("window", [1, 3, 20, None])
def test_reference_matches_jax_nn_sliding_window(window):
    """Independent oracle: jax.nn.dot_product_attention with local_window_size=(W - 1, 0) is the
    causal rule 0 <= i - j < W; batch axis added because jax.nn wants [b, t, h, e]."""
    q, k, v = qkv(45, 4, 2, 16, seed=2)
    want = attention_reference_jaxnn(q[None], k[None], v[None], window=window)[0]
    got = gemma_kernels.attention_reference(q, k, v, window=window)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_window_edge_is_exact():
    """Key i - W + 1 is visible from query i and key i - W is not (perturbing it changes nothing)."""
    t, w = 12, 4
    q, k, v = qkv(t, 1, 1, 8, seed=3)
    base = gemma_kernels.attention(q, k, v, window=w, impl="xla")
    i = t - 1
    outside = gemma_kernels.attention(q, k, v.at[i - w].add(10.0), window=w, impl="xla")
    inside = gemma_kernels.attention(q, k, v.at[i - w + 1].add(10.0), window=w, impl="xla")
    np.testing.assert_array_equal(outside[i], base[i])
    assert np.abs(np.asarray(inside[i] - base[i])).max() > 1e-3
