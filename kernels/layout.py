"""Row-major transposes XLA's CPU backend cannot fold away, for its fast bf16 matmul path, a fusion
boundary it keeps (:func:`materialize`) and a bf16 row write it does in place (:func:`set_rows`).

XLA's CPU backend runs a bf16 x bf16 -> f32 dot on its fast (YNNPACK) path only when the product is
laid out ``[..., m, k] @ [..., k, n]`` with both operands row-major; a ``jnp.swapaxes`` operand is
folded into the dot's dimension numbers, and such a dot falls back to an f32 path that runs 2-4x
slower. A transpose returned from a branch of a conditional stays a real copy, so the dot sees a
row-major operand. Elsewhere (GPU, TPU) the copy is one cheap pass over a small tensor.
"""

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array

from gemma_kernels.native import build_error

# A quiet-NaN bit pattern whose payload no arithmetic produces: the guard of `physical_transpose`.
_SENTINEL = 0x7FC0_5AFE


def physical_transpose(a: Array, axes: tuple[int, ...] | None = None) -> Array:
    """``a.transpose(axes)`` (``None``: a plain copy), written out row-major.

    The guard (false only if the first element carries the sentinel NaN payload) is a value XLA
    cannot know at compile time, which keeps the conditional; on that branch the product is NaN
    anyway, so the result is NaN there.
    """
    axes = tuple(range(a.ndim)) if axes is None else tuple(axes)
    first = lax.bitcast_convert_type(a.reshape(-1)[0].astype(jnp.float32), jnp.int32)
    shape = tuple(a.shape[i] for i in axes)
    return lax.cond(first != _SENTINEL, lambda a: jnp.transpose(a, axes),
                    lambda a: jnp.full(shape, jnp.nan, a.dtype), a)


def physical_swap(a: Array) -> Array:
    """``jnp.swapaxes(a, -1, -2)``, written out row-major."""
    return physical_transpose(a, (*range(a.ndim - 2), a.ndim - 1, a.ndim - 2))


def dot(a: Array, b: Array) -> Array:
    """``a @ b`` over matching leading (batch) axes, accumulated in f32."""
    return jnp.matmul(a, b, preferred_element_type=jnp.float32)


def dot_tn(a: Array, b: Array) -> Array:
    """``swapaxes(a) @ b``: a contraction over the long second-to-last axis of both operands (weight
    gradients), transposing whichever operand is narrower."""
    if a.shape[-1] <= b.shape[-1]:
        return dot(physical_swap(a), b)
    return physical_swap(dot(physical_swap(b), a))


def materialize(x: Array) -> Array:
    """``x`` itself, computed once into its own buffer: a scatter is a fusion boundary XLA keeps.

    XLA's CPU compiler hands a multiply-and-reduce to a library fusion together with the elementwise
    ops that produce its input, and that fusion evaluates them again for every tile of rows: a tanh
    GELU feeding the MLP's down projection made the decode step's MLP 1.6x slower."""
    flat = x.reshape(-1)
    idx = jnp.arange(flat.shape[0])
    return jnp.zeros_like(flat).at[idx].set(flat, unique_indices=True).reshape(x.shape)


def set_rows(buf: Array, idx: Array, rows: Array, *, mode: str | None = None) -> Array:
    """``buf.at[idx].set(rows)``, done in place when ``buf``'s buffer is donated (or carried by a loop).

    One row with ``mode="drop"`` (a decode step's new key or value) is written on the CPU by a native
    kernel whose output is its input buffer (``gemma_kernels/native/set_row.cc``): XLA's own writes
    were not in place for a donated bf16 cache. Otherwise XLA's CPU scatter widens a bf16 operand to
    f32 and back, so a bf16 buffer is scattered through its bits (uint16, a free bitcast each way)."""
    if idx.shape == (1,) and mode == "drop" and rows.shape == (1, *buf.shape[1:]) and build_error() is None:
        idx = jnp.where(idx < 0, idx + buf.shape[0], idx).astype(jnp.int32)  # as .at[] reads it
        return _set_row(buf, rows.astype(buf.dtype), idx)
    return _scatter_rows(buf, idx, rows, mode)


def _scatter_rows(buf: Array, idx: Array, rows: Array, mode: str | None) -> Array:
    if buf.dtype != jnp.bfloat16:
        return buf.at[idx].set(rows.astype(buf.dtype), mode=mode)
    bits = lax.bitcast_convert_type(buf, jnp.uint16)
    new = lax.bitcast_convert_type(rows.astype(jnp.bfloat16), jnp.uint16)
    return lax.bitcast_convert_type(bits.at[idx].set(new, mode=mode), jnp.bfloat16)


@jax.custom_batching.custom_vmap
def _native_set_row(buf: Array, row: Array, idx: Array) -> Array:
    """The native write of ``row [1, ...]`` at ``idx [1]`` (int32); out of range writes nothing."""
    out = jax.ShapeDtypeStruct(buf.shape, buf.dtype)
    return jax.ffi.ffi_call("gemma_set_row", out, input_output_aliases={0: 0})(buf, row, idx)


@_native_set_row.def_vmap
def _native_set_row_vmap(axis_size, in_batched, buf, row, idx):
    """A batch of caches (batched decoding under ``jax.vmap``): XLA's scatter, one row per cache."""
    args = [a if b else jnp.broadcast_to(a, (axis_size, *a.shape))
            for a, b in zip((buf, row, idx), in_batched)]
    return jax.vmap(lambda b, r, i: _scatter_rows(b, i, r, "drop"))(*args), True


@jax.custom_jvp
def _set_row(buf: Array, row: Array, idx: Array) -> Array:
    return _native_set_row(buf, row, idx)


@_set_row.defjvp
def _set_row_jvp(primals, tangents):
    buf, row, idx = primals
    d_buf, d_row, _ = tangents
    # one index is unique, which lets JAX transpose the tangent's scatter (reverse mode)
    return _set_row(buf, row, idx), d_buf.at[idx].set(d_row, mode="drop", unique_indices=True)
