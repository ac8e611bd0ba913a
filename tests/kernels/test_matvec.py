"""``gemma_kernels.matvec``: the compiled CPU kernel and the XLA forms against the dequantize-then-matmul
reference, values and gradients, under ``jax.vmap`` (batched decoding) and with shapes that leave
tails (inputs not a multiple of the kernel's 32-wide loop, outputs not a multiple of its 4-row block).
"""

import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gemma_kernels
from gemma_kernels.matvec import MAX_ROWS, build_error

SHAPES = [(37, 96), (130, 1000), (515, 1152), (8, 6912)]
FORMATS = ["bfloat16", "int8", "int4", "int8_block32", "int4_block32"]


def weights(fmt: str, n_out: int, n_in: int, seed: int = 0):
    """Weights and scales of ``fmt`` in gemma_kernels.matvec's layouts (random codes, all values used)."""
    rng = np.random.default_rng(seed)
    if fmt == "bfloat16":
        return jnp.asarray(rng.standard_normal((n_out, n_in)), jnp.bfloat16), None
    bits, _, block = fmt.partition("_block")
    width = n_in if bits == "int8" else n_in // 2
    codes = (rng.integers(-128, 128, (n_out, width)).astype(np.int8) if bits == "int8"
             else rng.integers(0, 256, (n_out, width)).astype(np.uint8))
    if block:
        blocks = n_in // int(block)
        return jnp.asarray(codes.reshape(n_out, blocks, -1)), jnp.asarray(rng.random((n_out, blocks)) + 0.5)
    return jnp.asarray(codes), jnp.asarray(rng.random(n_out) + 0.5, jnp.float32)


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.abs(a - b).max() / np.abs(b).max()


@pytest.mark.skipif(shutil.which(os.environ.get("CXX", "c++")) is None, reason="no C++ compiler here")
def test_the_cpu_kernel_builds_here():
    """Wherever there is a C++ compiler (CI has one), a kernel that stops building fails here rather
    than falling back to the XLA forms unseen."""
    assert build_error() is None


CASES = [(fmt, shape) for fmt in FORMATS for shape in SHAPES if "block" not in fmt or shape[1] % 32 == 0]


@pytest.mark.parametrize("fmt,shape", CASES)
@pytest.mark.parametrize("rows", [1, 3])
def test_values_match_the_reference(fmt, shape, rows):
    w, scales = weights(fmt, *shape)
    x = jax.random.normal(jax.random.key(rows), (rows, shape[1])).astype(jnp.bfloat16)
    ref = gemma_kernels.matvec_reference(x, w, scales)
    impls = ["xla"] + (["cpu"] if "block" not in fmt else [])
    for impl in impls:
        out = gemma_kernels.matvec(x, w, scales, impl=impl)
        assert out.dtype == jnp.float32 and out.shape == (rows, shape[0])
        assert rel_err(out, ref) < 1e-5, (impl, fmt, shape)


@pytest.mark.parametrize("fmt", ["bfloat16", "int8", "int4"])
def test_auto_runs_the_kernel_on_cpu(fmt):
    w, scales = weights(fmt, 64, 128)
    x = jnp.ones((1, 128), jnp.float32)
    jaxpr = str(jax.make_jaxpr(lambda x: gemma_kernels.matvec(x, w, scales))(x))
    assert "gemma_matvec_" in jaxpr
    many = jnp.ones((MAX_ROWS + 1, 128), jnp.float32)  # more rows: XLA's dot
    assert "gemma_matvec_" not in str(jax.make_jaxpr(lambda x: gemma_kernels.matvec(x, w, scales))(many))


@pytest.mark.parametrize("fmt", ["bfloat16", "int8", "int4"])
def test_gradients_match_the_reference(fmt):
    w, scales = weights(fmt, 40, 96)
    x = jax.random.normal(jax.random.key(0), (2, 96))
    g = jax.random.normal(jax.random.key(1), (2, 40))
    floats = scales is None

    def grads(f):
        args = (x, w) if floats else (x,)
        fn = (lambda x, w: (f(x, w, None) * g).sum()) if floats else (lambda x: (f(x, w, scales) * g).sum())
        return jax.grad(fn, argnums=tuple(range(len(args))))(*args)

    ours = grads(lambda x, w, s: gemma_kernels.matvec(x, w, s, impl="cpu"))
    ref = grads(gemma_kernels.matvec_reference)
    for a, b in zip(ours, ref):
        assert rel_err(a.astype(jnp.float32), b.astype(jnp.float32)) < 1e-5


@pytest.mark.parametrize("fmt", ["bfloat16", "int8", "int4"])
def test_vmap_over_sequences_and_over_weights(fmt):
    """A batch of decoding sequences shares one read of the weights; batched weights go one by one."""
    w, scales = weights(fmt, 70, 160)
    xs = jax.random.normal(jax.random.key(2), (5, 1, 160))
    batched = jax.vmap(lambda x: gemma_kernels.matvec(x, w, scales, impl="cpu"))(xs)
    single = jnp.stack([gemma_kernels.matvec(x, w, scales, impl="cpu") for x in xs])
    np.testing.assert_allclose(batched, single, rtol=1e-6, atol=1e-5)
    ws = jnp.stack([weights(fmt, 70, 160, seed=s)[0] for s in range(5)])
    per_w = jax.vmap(lambda x, w: gemma_kernels.matvec(x, w, scales, impl="cpu"))(xs, ws)
    ref = jnp.stack([gemma_kernels.matvec_reference(x, w, scales) for x, w in zip(xs, ws)])
    assert rel_err(per_w, ref) < 1e-5


def test_bad_input_is_named():
    w, scales = weights("int8", 16, 32)
    with pytest.raises(ValueError, match="impl='fast'"):
        gemma_kernels.matvec(jnp.ones((1, 32)), w, scales, impl="fast")
    with pytest.raises(ValueError, match="need scales"):
        gemma_kernels.matvec(jnp.ones((1, 32)), w)
    with pytest.raises(ValueError, match="last axis"):
        gemma_kernels.matvec(jnp.ones((1, 31)), w, scales)
    with pytest.raises(ValueError, match=f"at most {MAX_ROWS} rows"):
        gemma_kernels.matvec(jnp.ones((MAX_ROWS + 1, 32)), w, scales, impl="cpu")
