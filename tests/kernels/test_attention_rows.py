"""The written-out attention backward (gemma_kernels.attention.rows) against autodiff of the dense
reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gemma_kernels


def qkv(b, t, h, kv, e, dtype=jnp.float32, seed=0):
    ks = jax.random.split(jax.random.key(seed), 4)
    shape = lambda n: (b, t, n, e)  # noqa: E731
    return (jax.random.normal(ks[0], shape(h), dtype), jax.random.normal(ks[1], shape(kv), dtype),
            jax.random.normal(ks[2], shape(kv), dtype), jax.random.normal(ks[3], shape(h)))


def grads(fn, q, k, v, w):
    return jax.grad(lambda q, k, v: jnp.sum(fn(q, k, v).astype(jnp.float32) * w), argnums=(0, 1, 2))(q, k, v)


@pytest.mark.parametrize("window, causal", [(None, True), (7, True), (5, False), (None, False), (40, True)])
@pytest.mark.parametrize("softcap, segments", [(None, False), (3.0, True)])
def test_values_and_gradients_match_the_reference(window, causal, softcap, segments):
    q, k, v, w = qkv(2, 37, 4, 2, 8)
    seg = jnp.stack([(jnp.arange(37) >= 20), (jnp.arange(37) >= 3)]).astype(jnp.int32) if segments else None
    opts = dict(window=window, causal=causal, softcap=softcap)

    def ref(q, k, v):
        one = lambda q, k, v, s: gemma_kernels.attention_reference(q, k, v, segment_ids=s, **opts)  # noqa: E731
        return jax.vmap(one, in_axes=(0, 0, 0, None if seg is None else 0))(q, k, v, seg)

    def ours(q, k, v):
        return gemma_kernels.attention(q, k, v, segment_ids=seg, impl="xla", **opts)

    np.testing.assert_allclose(jax.jit(ours)(q, k, v), ref(q, k, v), rtol=1e-5, atol=1e-5)
    for got, want in zip(jax.jit(lambda *a: grads(ours, *a))(q, k, v, w), grads(ref, q, k, v, w)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_bf16_inputs_stay_close_to_f32():
    q, k, v, w = qkv(1, 64, 4, 1, 16)
    f32 = grads(lambda *a: gemma_kernels.attention(*a, window=16, impl="xla"), q, k, v, w)
    bf = [a.astype(jnp.bfloat16) for a in (q, k, v)]
    b16 = grads(lambda *a: gemma_kernels.attention(*a, window=16, impl="xla"), *bf, w)
    for got, want in zip(b16, f32):
        assert got.dtype == jnp.bfloat16
        tol = 0.05 * float(jnp.abs(want).max())
        np.testing.assert_allclose(got.astype(jnp.float32), want, rtol=0.05, atol=tol)


def test_long_sequence_walks_blocks_in_chunks():
    """Past ``rows_per_step`` rows the blocked path runs under lax.map: same values and gradients."""
    from gemma_kernels.attention.xla import local_attention_blocked

    q, k, v, w = qkv(2, 70, 2, 1, 8, seed=3)
    full = lambda q, k, v: local_attention_blocked(q, k, v, window=9, block=16)  # noqa: E731
    walked = lambda q, k, v: local_attention_blocked(q, k, v, window=9, block=16, rows_per_step=32)  # noqa: E731
    np.testing.assert_allclose(walked(q, k, v), full(q, k, v), rtol=1e-6, atol=1e-6)
    for got, want in zip(grads(walked, q, k, v, w), grads(full, q, k, v, w)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("slices", [1, 2, 4])
@pytest.mark.parametrize("kv", [1, 2])
def test_causal_global_query_slices_match_the_reference(slices, kv):
    """Slice i of a causal global layer reads only keys up to its last query; nothing else changes."""
    from gemma_kernels.attention.xla import dense_attention

    q, k, v, w = qkv(2, 64, 4, kv, 8, seed=5)
    seg = jnp.stack([(jnp.arange(64) >= 40), (jnp.arange(64) >= 9)]).astype(jnp.int32)

    def ref(q, k, v):
        one = lambda q, k, v, s: gemma_kernels.attention_reference(q, k, v, segment_ids=s, softcap=4.0)  # noqa: E731
        return jax.vmap(one)(q, k, v, seg)

    def ours(q, k, v):
        return dense_attention(q, k, v, segment_ids=seg, softcap=4.0, slices=slices)

    np.testing.assert_allclose(jax.jit(ours)(q, k, v), ref(q, k, v), rtol=1e-5, atol=1e-5)
    for got, want in zip(jax.jit(lambda *a: grads(ours, *a))(q, k, v, w), grads(ref, q, k, v, w)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_causal_slices_default_and_bad_values():
    from gemma_kernels.attention.xla import _causal_slices, dense_attention

    lengths = (128, 512, 1024, 4096, 1000, 1001)
    assert [_causal_slices(t, t, None, True) for t in lengths] == [1, 2, 4, 4, 2, 1]
    assert _causal_slices(512, 512, None, False) == 1 and _causal_slices(512, 300, None, True) == 1
    q, k, v, _ = qkv(1, 30, 2, 1, 8)
    with pytest.raises(ValueError, match="slices=4 needs causal self-attention with t \\(30\\)"):
        dense_attention(q, k, v, slices=4)
    with pytest.raises(ValueError, match="slices=2"):
        dense_attention(q, k, v, causal=False, slices=2)
