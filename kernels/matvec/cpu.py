""":func:`gemma_kernels.matvec` on the CPU as a compiled kernel (``gemma_kernels/native/matvec.cc``).

XLA's CPU compiler widens each weight to f32 in generated loops that run at 4-5 G weights/s per core,
so a decode step of bf16 or int8 weights was bound by that, not by memory (int8 no faster than bf16).
The kernel widens in registers and reads each weight once at the memory's speed, on every core.
"""

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from gemma_kernels.matvec.ref import code_bits, matvec_reference

TARGETS = {None: "gemma_matvec_bf16", 8: "gemma_matvec_int8", 4: "gemma_matvec_int4"}
MAX_ROWS = 4  # more rows re-read each weight row from cache per row; XLA's dot serves those better


def supports(x: Array, w: Array, scales: Array | None) -> bool:
    """Shapes and dtypes the kernel takes: at most ``MAX_ROWS`` rows against bf16 weights or per-row
    int8/int4 codes, all ``[out, in]``."""
    rows = x.size // x.shape[-1] if x.shape[-1] else 0
    if w.ndim != 2 or rows > MAX_ROWS:
        return False
    bits = code_bits(w)
    return (w.dtype == jnp.bfloat16 and scales is None) or (bits is not None and scales is not None
                                                             and scales.shape == (w.shape[0],))


def _call(x, w, scales):
    lead, n_out = x.shape[:-1], w.shape[0]
    xs = x.astype(jnp.float32).reshape(-1, x.shape[-1])
    if code_bits(w) == 4:  # even inputs, then odd ones: the low and high nibbles of each byte
        xs = xs.reshape(xs.shape[0], -1, 2).transpose(0, 2, 1)
    scales = jnp.zeros((0,), jnp.float32) if scales is None else scales.astype(jnp.float32)
    return _kernel(xs, w, scales).reshape(*lead, n_out)


@jax.custom_batching.custom_vmap
def _kernel(xs: Array, w: Array, scales: Array) -> Float[Array, "r o"]:
    """One FFI call: ``xs [rows, in]`` (int4: ``[rows, 2, in / 2]``), no scales for bf16 (empty)."""
    args = (xs, w) if code_bits(w) is None else (xs, w, scales)
    out = jax.ShapeDtypeStruct((xs.shape[0], w.shape[0]), jnp.float32)
    return jax.ffi.ffi_call(TARGETS[code_bits(w)], out)(*args)


@_kernel.def_vmap
def _kernel_vmap(axis_size, in_batched, xs, w, scales):
    """``jax.vmap`` over sequences (batched decoding): the batch's rows share one read of the weights;
    batched weights (rare) are taken one at a time."""
    x_b, w_b, s_b = in_batched
    if not (w_b or s_b):
        out = _kernel(xs.reshape(-1, *xs.shape[2:]), w, scales)
        return out.reshape(axis_size, xs.shape[1], -1), True
    bcast = lambda a, b: a if b else jnp.broadcast_to(a, (axis_size, *a.shape))
    return jax.lax.map(lambda a: _kernel(*a), (bcast(xs, x_b), bcast(w, w_b), bcast(scales, s_b))), True


@jax.custom_vjp
def matvec_cpu(x: Float[Array, "... i"], w: Array, scales: Array | None = None) -> Float[Array, "... o"]:
    """``x @ W.T`` (f32) by the compiled kernel, where :func:`supports` holds and
    :func:`gemma_kernels.native.build_error` is None. Gradients (to ``x``, and to float weights) are
    the reference's."""
    return _call(x, w, scales)


def _fwd(x, w, scales):
    return _call(x, w, scales), (x, w, scales)


def _bwd(res, g):
    x, w, scales = res
    if scales is None:
        gx, gw = jax.vjp(matvec_reference, x, w)[1](g)
        return gx, gw, None
    gx = jax.vjp(lambda x: matvec_reference(x, w, scales), x)[1](g)[0]
    return gx, None, None


matvec_cpu.defvjp(_fwd, _bwd)
