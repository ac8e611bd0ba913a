"""Plain-JAX reference for :func:`gemma_kernels.matvec`: dequantize the weights, then one f32 product.

Weights are ``[out, in]``: float, int8 codes, or int4 codes two per byte (uint8 ``[out, in / 2]``,
input 2m in the low nibble and 2m + 1 in the high one, each a signed 4-bit integer), with one scale
per output row (``scales [out]``) or per block of inputs (codes ``[out, blocks, block]``, int4
``[out, blocks, block / 2]``; ``scales [out, blocks]``).
"""

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float


def code_bits(w: Array) -> int | None:
    """4 (uint8 bytes of two int4 codes), 8 (int8 codes) or None (float weights), from the dtype."""
    if jnp.issubdtype(w.dtype, jnp.floating):
        return None
    if w.dtype == jnp.int8:
        return 8
    if w.dtype == jnp.uint8:
        return 4
    raise ValueError(f"matvec: weights of dtype {w.dtype} are not float, int8 codes or uint8 (int4) codes")


def signed_codes(codes: Array) -> tuple[Array, ...]:
    """The codes as int8 integers: int8 codes one array, int4 bytes their low and high nibbles (the
    even and odd inputs), each sign-extended."""
    if codes.dtype == jnp.int8:
        return (codes,)
    b = jax.lax.bitcast_convert_type(codes, jnp.int8)  # arithmetic shifts sign-extend each nibble,
    return (b << 4) >> 4, b >> 4  # in 8-bit lanes (widening to int32 first ran 3.5x slower on CPU)


def dequantize(codes: Array, scales: Array) -> Float[Array, "o ..."]:
    """The weights the codes stand for, float32, in the codes' layout with int4 nibbles spread out
    (``[out, in]`` or ``[out, blocks, block]``)."""
    parts = signed_codes(codes)
    if len(parts) == 1:
        x = parts[0].astype(jnp.float32)
    else:
        lo, hi = parts
        x = jnp.stack([lo, hi], axis=-1).reshape(*lo.shape[:-1], -1).astype(jnp.float32)
    return x * scales.astype(jnp.float32)[..., None]


def matvec_reference(x: Float[Array, "... i"], w: Array,
                     scales: Array | None = None) -> Float[Array, "... o"]:
    """``x @ W.T`` in float32 at full precision, ``W`` the dequantized weights."""
    dense = w.astype(jnp.float32) if scales is None else dequantize(w, scales)
    dense = dense.reshape(dense.shape[0], -1)
    return jnp.matmul(x.astype(jnp.float32), dense.T, precision=jax.lax.Precision.HIGHEST)
