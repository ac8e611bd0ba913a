"""Row-major transposes and the products built on them equal the plain jnp expressions."""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from gemma_kernels.layout import _SENTINEL, dot, dot_tn, physical_swap


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
