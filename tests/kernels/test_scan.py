"""The linear recurrence: Pallas kernel and associative scan against lax.scan.

The ``gpu``-marked tests run the kernel compiled on a GPU and interpreted on CPU (CI): ``INTERPRET`` is
the platform default of :func:`gemma_kernels._platform.resolve_interpret`. The ``long`` case runs on a
device only.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gemma_kernels
from gemma_kernels._platform import resolve_interpret
from gemma_kernels.blocks import ScanBlocks
from gemma_kernels.scan.pallas import linear_scan_pallas

INTERPRET = resolve_interpret(None)  # True exactly on CPU


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def inputs(t, r, dtype=jnp.float32, seed=0):
    ks = jax.random.split(jax.random.key(seed), 5)
    a = jax.random.uniform(ks[0], (t, r), minval=0.6, maxval=0.999).astype(dtype)
    x = jax.random.normal(ks[1], (t, r), dtype)
    h0 = jax.random.normal(ks[2], (r,))
    return a, x, h0, jax.random.normal(ks[3], (t, r)), jax.random.normal(ks[4], (r,))


def check(fn, t, r, use_h0, dtype=jnp.float32, tol=1e-5, seed=0):
    a, x, h0, wy, wh = inputs(t, r, dtype, seed)
    h0 = h0 if use_h0 else None

    def loss(impl):
        def f(a, x, h0):
            y, h = impl(a, x, h0)
            return jnp.sum(y.astype(jnp.float32) * wy) + jnp.sum(h * wh)
        return f

    ref = gemma_kernels.linear_scan_reference
    (y, h), (y_ref, h_ref) = fn(a, x, h0), ref(a, x, h0)
    assert y.dtype == x.dtype and h.dtype == jnp.float32 and y.shape == (t, r) and h.shape == (r,)
    assert rel_err(y, y_ref) < tol and rel_err(h, h_ref) < tol
    argnums = (0, 1, 2) if use_h0 else (0, 1)
    got = jax.grad(loss(fn), argnums)(a, x, h0)
    want = jax.grad(loss(ref), argnums)(a, x, h0)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and rel_err(g, w) < tol


def pallas(**kw):
    return lambda a, x, h0: linear_scan_pallas(a, x, h0, interpret=INTERPRET, **kw)


@pytest.mark.gpu
@pytest.mark.parametrize("use_h0", [False, True])
@pytest.mark.parametrize("t, r, blocks", [
    (37, 45, ScanBlocks(block_t=8, block_r=16)),  # neither time nor width a block multiple
    (64, 32, ScanBlocks(block_t=16, block_r=32)),  # exact multiples
    (5, 3, None),  # shorter than one block
])
def test_pallas_scan_matches_reference(t, r, blocks, use_h0):
    check(pallas(blocks=blocks), t, r, use_h0)


@pytest.mark.gpu
def test_pallas_scan_bf16():
    check(pallas(), 40, 24, use_h0=True, dtype=jnp.bfloat16, tol=2e-2, seed=1)


@pytest.mark.gpu
def test_pallas_scan_through_public_entry_point_and_vmap():
    a, x, h0, _, _ = inputs(30, 20)
    a, x, h0 = (jnp.stack([z, z[::-1] * 0.9]) for z in (a, x, h0))
    scan = jax.vmap(lambda a, x, h0: gemma_kernels.linear_scan(a, x, h0, impl="pallas", interpret=None))
    y, h = scan(a, x, h0)
    y_ref, h_ref = jax.vmap(gemma_kernels.linear_scan_reference)(a, x, h0)
    assert rel_err(y, y_ref) < 1e-5 and rel_err(h, h_ref) < 1e-5
    g = jax.grad(lambda a, x: jnp.sum(jnp.sin(scan(a, x, h0)[0])), (0, 1))(a, x)
    ref = jax.vmap(gemma_kernels.linear_scan_reference)
    g_ref = jax.grad(lambda a, x: jnp.sum(jnp.sin(ref(a, x, h0)[0])), (0, 1))(a, x)
    for got, want in zip(g, g_ref):
        assert rel_err(got, want) < 1e-5


@pytest.mark.gpu
@pytest.mark.parametrize("use_h0", [False, True])
def test_assoc_scan_matches_reference(use_h0):
    check(lambda a, x, h0: gemma_kernels.linear_scan(a, x, h0, impl="assoc"), 21, 5, use_h0)


@pytest.mark.gpu
def test_padded_steps_leave_state_unchanged():
    """h_last after t steps is h_t even though the kernel walks a padded time axis."""
    a, x, h0, _, _ = inputs(9, 4)
    _, h = linear_scan_pallas(a, x, h0, interpret=INTERPRET, blocks=ScanBlocks(block_t=8, block_r=8))
    _, h8 = linear_scan_pallas(a[:8], x[:8], h0, interpret=INTERPRET,
                              blocks=ScanBlocks(block_t=8, block_r=8))
    np.testing.assert_allclose(h, a[8] * h8 + x[8], rtol=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(jax.default_backend() == "cpu", reason="long case: compiled kernel only")
def test_long_sequence_matches_reference():
    """The device's own tiles (``ScanBlocks.for_backend``) over 512 time blocks and several channel
    blocks, values and gradients (the reverse-time kernel)."""
    check(jax.jit(lambda a, x, h0: linear_scan_pallas(a, x, h0, interpret=INTERPRET)), 8192, 384,
          use_h0=True, tol=1e-4, seed=2)
