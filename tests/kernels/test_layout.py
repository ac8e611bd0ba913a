"""Row-major transposes and the products built on them equal the plain jnp expressions."""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from gemma_kernels.layout import _SENTINEL, dot, dot_tn, physical_swap, set_rows


@pytest.mark.parametrize("shape", [(5, 3), (2, 4, 7, 3)])
def test_physical_swap_is_swapaxes(shape):
    a = jr.normal(jr.key(0), shape)
    np.testing.assert_array_equal(jax.jit(physical_swap)(a), jnp.swapaxes(a, -1, -2))
    np.testing.assert_array_equal(jax.vmap(physical_swap)(a[None])[0], jnp.swapaxes(a, -1, -2))


def test_physical_swap_sentinel_branch_is_nan():
    a = jnp.ones((3, 2)).at[0, 0].set(jax.lax.bitcast_convert_type(jnp.int32(_SENTINEL), jnp.float32))
    out = jax.jit(physical_swap)(a)
    assert out.shape == (2, 3) and bool(jnp.isnan(out).all())


@pytest.mark.parametrize("p,q", [(3, 8), (8, 3)])  # both operand choices of dot_tn
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_dot_tn_and_dot(p, q, dtype):
    a, b = jr.normal(jr.key(1), (40, p), dtype), jr.normal(jr.key(2), (40, q), dtype)
    want = jnp.einsum("np,nq->pq", a.astype(jnp.float32), b.astype(jnp.float32))
    got = jax.jit(dot_tn)(a, b)
    assert got.dtype == jnp.float32 and got.shape == (p, q)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(jax.jit(dot)(a.T, b), want, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32, jnp.int32])
def test_set_rows_is_the_scatter_it_replaces(dtype):
    """Rows written through the bits equal ``.at[].set``, out-of-range rows dropped, under jit and not."""
    buf = (jnp.arange(8 * 3 * 4).reshape(8, 3, 4) * 0.37).astype(dtype)
    rows = (-jnp.arange(2 * 3 * 4).reshape(2, 3, 4) * 1.13 + 0.5).astype(jnp.float32)
    idx = jnp.array([5, 9])  # 9 is past the end: dropped
    want = buf.at[idx].set(rows.astype(dtype), mode="drop")
    for fn in (set_rows, jax.jit(set_rows, static_argnames="mode")):
        got = fn(buf, idx, rows, mode="drop")
        assert got.dtype == dtype
        np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32))


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
@pytest.mark.parametrize("at", [0, 5, 7, 8, -1])  # 8 and -1 are outside: nothing written
def test_one_decode_row_is_written_in_place_by_the_native_kernel(dtype, at):
    buf = (jnp.arange(8 * 3 * 4).reshape(8, 3, 4) * 0.37).astype(dtype)
    row = (-jnp.arange(3 * 4).reshape(1, 3, 4) * 1.13 + 0.5).astype(jnp.float32)
    idx = jnp.array([at])
    want = buf.at[idx].set(row.astype(dtype), mode="drop")
    step = jax.jit(lambda b, i: set_rows(b, i, row, mode="drop"), donate_argnums=0)
    assert "gemma_set_row" in str(jax.make_jaxpr(step)(buf, idx))
    hlo = step.lower(buf, idx).compile().as_text()
    assert not [line for line in hlo.splitlines() if " copy(" in line and "[8,3,4]" in line]  # no copy
    got = step(buf + 0, idx)
    np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32))


def test_the_native_row_write_batches_and_differentiates():
    bufs = jax.random.normal(jax.random.key(0), (3, 6, 2))
    rows = jax.random.normal(jax.random.key(1), (3, 1, 2))
    idx = jnp.array([[1], [5], [7]])  # the last is outside its buffer
    got = jax.vmap(lambda b, i, r: set_rows(b, i, r, mode="drop"))(bufs, idx, rows)
    want = jnp.stack([b.at[i].set(r, mode="drop") for b, i, r in zip(bufs, idx, rows)])
    np.testing.assert_array_equal(got, want)
    w = jax.random.normal(jax.random.key(2), (6, 2))
    at = jnp.array([2])

    def grads(write):
        return jax.grad(lambda b, r: (write(b, r) * w).sum(), argnums=(0, 1))(bufs[0], rows[0])

    ours = grads(lambda b, r: set_rows(b, at, r, mode="drop"))
    ref = grads(lambda b, r: b.at[at].set(r, mode="drop"))
    for a, b in zip(ours, ref):
        np.testing.assert_array_equal(a, b)
