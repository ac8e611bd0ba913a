"""Flash attention kernels against the dense reference: values and gradients.

The ``gpu``-marked tests run the kernels compiled on a GPU and interpreted on CPU (CI): ``INTERPRET`` is
the platform default of :func:`gemma_kernels._platform.resolve_interpret`. The ``long`` case runs on a
device only; interpreted it would take minutes.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gemma_kernels
from gemma_kernels._platform import resolve_interpret
from gemma_kernels.attention import band
from gemma_kernels.attention.pallas import attention_pallas
from gemma_kernels.attention.pallas_fwd import flash_forward
from gemma_kernels.blocks import AttentionBlocks, compiler_params
from gemma_kernels.masks import visible

SMALL = AttentionBlocks(block_q=16, block_k=16, block_q_bwd=16, block_k_bwd=16)
MIXED = AttentionBlocks(block_q=16, block_k=32, block_q_bwd=32, block_k_bwd=16)
INTERPRET = resolve_interpret(None)  # True exactly on CPU
ON_CPU = jax.default_backend() == "cpu"


@pytest.fixture(autouse=True)
def ieee_f32_matmuls():
    """f32 cases compare at 1e-5: on a GPU both the kernel (Triton) and the XLA reference would
    otherwise round f32 matmul inputs to TF32 (10-bit mantissa). No effect on CPU or on bf16 inputs."""
    with jax.default_matmul_precision("highest"):
        yield


def rel_err(a, b):
    """Relative L2 error; against an all-zero truth (window 1 has dq = 0) it is the max abs error."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = np.linalg.norm(b)
    return np.abs(a - b).max() if scale == 0 else np.linalg.norm(a - b) / scale


def qkv(t, h, kv, e, dtype=jnp.float32, seed=0):
    ks = jax.random.split(jax.random.key(seed), 4)
    q = jax.random.normal(ks[0], (t, h, e), dtype)
    k = jax.random.normal(ks[1], (t, kv, e), dtype)
    v = jax.random.normal(ks[2], (t, kv, e), dtype)
    return q, k, v, jax.random.normal(ks[3], (t, h, e), jnp.float32)


def segments(t, cuts):
    return jnp.searchsorted(jnp.asarray(cuts), jnp.arange(t), side="right").astype(jnp.int32)


# (t, h, kv, e, window, causal, softcap, segment cuts, blocks)
CASES = {
    "w1_mha": (40, 2, 2, 16, 1, True, None, None, None),
    "w7_gqa_t_not_block_multiple": (70, 4, 2, 16, 7, True, None, None, SMALL),
    "w7_mqa_bidirectional": (70, 4, 1, 16, 7, False, None, None, SMALL),
    "w20_not_block_multiple_softcap": (96, 2, 1, 32, 20, True, 30.0, None, MIXED),
    "w20_bidirectional_softcap": (83, 4, 2, 16, 20, False, 5.0, None, MIXED),
    "window_ge_t": (50, 2, 2, 16, 64, True, None, None, None),
    "window_ge_t_bidirectional": (50, 2, 2, 16, 64, False, None, None, None),
    "global_causal_gqa_softcap": (70, 4, 2, 16, None, True, 5.0, None, SMALL),
    "global_bidirectional": (70, 2, 2, 16, None, False, None, None, MIXED),
    "segments_local": (80, 4, 2, 16, 9, True, None, (13, 40, 41), SMALL),
    "segments_global_bidirectional_mqa": (80, 2, 1, 16, None, False, 10.0, (30, 55), MIXED),
}


def _loss(fn, w):
    return lambda q, k, v: jnp.sum(fn(q, k, v).astype(jnp.float32) * w)


def assert_matches(fn, ref, q, k, v, w, tol):
    """``fn``'s output and its gradients in q, k and v are within ``tol`` (relative) of ``ref``'s, with
    ``fn`` keeping the inputs' dtype."""
    out = fn(q, k, v)
    assert out.shape == q.shape and out.dtype == q.dtype
    assert rel_err(out, ref(q, k, v)) < tol
    grads = jax.grad(_loss(fn, w), (0, 1, 2))(q, k, v)
    for got, want in zip(grads, jax.grad(_loss(ref, w), (0, 1, 2))(q, k, v)):
        assert got.shape == want.shape and got.dtype == q.dtype
        assert rel_err(got, want) < tol


@pytest.mark.gpu
@pytest.mark.parametrize("name", list(CASES))
def test_forward_and_grad_match_reference(name):
    t, h, kv, e, window, causal, softcap, cuts, blocks = CASES[name]
    q, k, v, w = qkv(t, h, kv, e)
    seg = None if cuts is None else segments(t, cuts)
    opts = dict(window=window, causal=causal, softcap=softcap, segment_ids=seg)
    pallas = lambda q, k, v: attention_pallas(q, k, v, interpret=INTERPRET, blocks=blocks, **opts)  # noqa: E731
    ref = lambda q, k, v: gemma_kernels.attention_reference(q, k, v, **opts)  # noqa: E731
    assert_matches(pallas, ref, q, k, v, w, 1e-5)


@pytest.mark.gpu
def test_public_entry_point_dispatches_to_pallas():
    q, k, v, _ = qkv(40, 2, 1, 16)
    out = gemma_kernels.attention(q, k, v, window=5, impl="pallas", interpret=None, scale=0.3)
    assert rel_err(out, gemma_kernels.attention_reference(q, k, v, window=5, scale=0.3)) < 1e-5


@pytest.mark.gpu
def test_bf16_inputs_f32_accumulation():
    q, k, v, w = qkv(48, 4, 2, 32, dtype=jnp.bfloat16, seed=1)
    opts = dict(window=9, causal=True, softcap=20.0)
    pallas = lambda q, k, v: attention_pallas(q, k, v, interpret=INTERPRET, blocks=SMALL, **opts)  # noqa: E731

    def ref(q, k, v):  # f32 math on the same bf16 values
        f32 = [x.astype(jnp.float32) for x in (q, k, v)]
        return gemma_kernels.attention_reference(*f32, **opts)

    assert_matches(pallas, ref, q, k, v, w, 2e-2)  # outputs and gradients in bf16


@pytest.mark.gpu
def test_vmap_over_batch_with_segments():
    b, t = 2, 48
    ks = jax.random.split(jax.random.key(3), 3)
    q = jax.random.normal(ks[0], (b, t, 4, 16))
    k = jax.random.normal(ks[1], (b, t, 2, 16))
    v = jax.random.normal(ks[2], (b, t, 2, 16))
    seg = jnp.stack([segments(t, (10,)), segments(t, (30, 31))])
    opts = dict(window=6, causal=True)

    def batched(fn):
        return lambda q, k, v: jax.vmap(lambda q, k, v, s: fn(q, k, v, segment_ids=s, **opts))(q, k, v, seg)

    pallas = batched(lambda *a, **kw: attention_pallas(*a, interpret=INTERPRET, blocks=SMALL, **kw))
    ref = batched(gemma_kernels.attention_reference)
    assert rel_err(pallas(q, k, v), ref(q, k, v)) < 1e-5
    loss = lambda fn: lambda q, k, v: jnp.sum(jnp.sin(fn(q, k, v)))  # noqa: E731
    for got, exp in zip(jax.grad(loss(pallas), (0, 1, 2))(q, k, v), jax.grad(loss(ref), (0, 1, 2))(q, k, v)):
        assert rel_err(got, exp) < 1e-5


@pytest.mark.gpu
def test_rows_without_visible_keys_give_zeros():
    """Padding rows (positions >= t) see no key: the kernel must write zeros and a finite lse."""
    t, tp, e = 20, 32, 16
    q, k, v, _ = qkv(tp, 2, 1, e)
    o, lse = flash_forward(
        q.transpose(1, 0, 2), k.transpose(1, 0, 2), v.transpose(1, 0, 2), None, t=t, window=4,
        causal=False, softcap=None, scale=e**-0.5, blocks=(16, 16), interpret=INTERPRET,
        params=compiler_params(INTERPRET, num_warps=4, num_stages=2),
    )
    assert np.all(np.isfinite(np.asarray(o))) and np.all(np.isfinite(np.asarray(lse)))
    assert np.all(np.asarray(o[:, t:]) == 0.0)
    assert np.all(np.asarray(lse[:, t:]) == band.BIG)
    want = gemma_kernels.attention_reference(q[:t], k[:t], v[:t], window=4, causal=False)
    assert rel_err(o[:, :t].transpose(1, 0, 2), want) < 1e-5


@pytest.mark.gpu
@pytest.mark.skipif(ON_CPU, reason="long case: compiled kernels only (interpreted it takes minutes)")
@pytest.mark.parametrize("window", [512, None])
def test_long_sequence_matches_reference(window):
    """The device's own tiles (``AttentionBlocks.for_backend``) over many key blocks: the band skip
    and the online softmax across 64+ blocks, which the short cases above never reach."""
    q, k, v, w = qkv(4096, 4, 1, 128, seed=2)
    opts = dict(window=window, causal=True, softcap=50.0)
    pallas = lambda q, k, v: attention_pallas(q, k, v, interpret=INTERPRET, **opts)  # noqa: E731
    ref = lambda q, k, v: gemma_kernels.attention_reference(q, k, v, **opts)  # noqa: E731
    assert_matches(jax.jit(pallas), jax.jit(ref), q, k, v, w, 1e-4)  # f32 sums over 4K keys


def test_masked_softmax_row_with_no_visible_key_is_zero():
    from gemma_kernels.attention.ref import masked_softmax_stats

    logits = jnp.arange(12.0).reshape(3, 4)
    mask = jnp.array([[True, False, True, False], [False] * 4, [True] * 4])
    p, denom, m = (np.asarray(x) for x in masked_softmax_stats(logits, mask))
    assert np.all(np.isfinite(p)) and np.all(np.isfinite(denom)) and np.all(np.isfinite(m))
    np.testing.assert_array_equal(p[1], 0.0)  # nothing visible: zero weights over a unit denominator
    assert denom[1, 0] == 1.0 and m[1, 0] == 0.0
    np.testing.assert_array_equal(p[0, [1, 3]], 0.0)  # masked keys weigh nothing
    seen = np.asarray(jnp.where(mask, logits, -jnp.inf))[[0, 2]]
    np.testing.assert_allclose((p / denom)[[0, 2]], np.asarray(jax.nn.softmax(seen, axis=-1)), rtol=1e-6)
    np.testing.assert_allclose((m + np.log(denom))[[0, 2], 0],  # max + log(sum) is the log-sum-exp
                               np.asarray(jax.nn.logsumexp(seen, -1)), rtol=1e-6)


@pytest.mark.parametrize("t, window, causal, bq, bk", [
    (70, 7, True, 16, 16), (70, 7, False, 16, 32), (100, 1, True, 32, 16), (100, 33, False, 16, 16),
    (64, None, True, 16, 32), (64, None, False, 32, 16), (50, 64, True, 16, 16),
])
def test_band_ranges_are_exactly_the_blocks_with_visible_keys(t, window, causal, bq, bk):
    """Work is O(t * window): the loops visit exactly the tiles that hold a visible (q, k) pair."""
    tp = -(-t // max(bq, bk)) * max(bq, bk)
    pos = jnp.arange(tp)
    vis = np.asarray(visible(pos, pos, window=window, causal=causal) & (pos[:, None] < t) & (pos < t))
    for qb in range(tp // bq):
        lo, hi = band.key_block_range(qb * bq, bq, bk, t=t, window=window, causal=causal)
        want = [j for j in range(tp // bk) if vis[qb * bq:(qb + 1) * bq, j * bk:(j + 1) * bk].any()]
        got = list(range(int(lo), int(hi)))
        assert got == want or (not want and not got), (qb, got, want)
    for kb in range(tp // bk):
        lo, hi = band.query_block_range(kb * bk, bk, bq, t=t, window=window, causal=causal)
        want = [i for i in range(tp // bq) if vis[i * bq:(i + 1) * bq, kb * bk:(kb + 1) * bk].any()]
        assert list(range(int(lo), int(hi))) == want, (kb, int(lo), int(hi), want)
