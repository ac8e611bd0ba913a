"""Switched floating point 8 (SFP8): the 8-bit weight format of gemma.cpp, a column of Gemma 3 Table 3.

The Gemma 3 report names the format and nothing more. This follows google/gemma.cpp:
``compression/types.h`` and ``compression/sfp.h`` (the format), ``compression/sfp-inl.h``
(``SfpCodec``: the encoder ``EncBytes`` fed by ``Enc4F``, and the decoder ``DecBytes``) and
``compression/compress.cc`` (``ScaleWeights``: tensors beyond the range).

A byte is ``s mmmmmmm``: the sign, then a 7-bit magnitude code ``m`` read one of two ways, switched by
bit 6 of ``m`` (e4m3 for large magnitudes, e4m2 for small ones):

- ``m >= 64``: ``(1 + (m & 7) / 8) * 2**((m >> 3) - 15)``, from 2^-7 to 1.875 (``MAX``), 3 mantissa bits;
- ``1 <= m < 64``: ``(1 + (m & 3) / 4) * 2**((m >> 2) - 23)``, from 1.25 * 2^-23 to 1.75 * 2^-8, 2 bits;
- ``m == 0``: zero. No subnormals, infinities or NaN. The byte 0x80 (negative zero) is reserved: the
  encoder never writes it and :func:`decode` reads it as -0.0; the other 255 bytes are distinct values.

Encoding, as ``Enc4F`` then ``EncBytes`` do: the float32 input is truncated to bfloat16 and the rounding
sees the top 6 of its 7 mantissa bits; it rounds to nearest, ties to even, to 3 bits when the magnitude
is at least 1.1111b * 2^-8 (which rounds to 2^-7 either way) and to 2 bits below; a carry moves to the
next binade, switching the reading at 2^-7. After rounding, magnitudes below 2^-23 become zero and
exactly 2^-23 becomes 1.25 * 2^-23 (``m == 0`` is taken by zero).

Range: the codec takes ``|x| <= 1.875``; :func:`encode` saturates larger magnitudes to 1.875, as
``ScaleWeights`` clamps. A tensor whose largest magnitude exceeds 1.875 is divided by
``max|w| / 1.875`` first and multiplied back after decoding (:func:`quantize` / :func:`dequantize`); else
its scale is 1. gemma.cpp keeps this scale as a float32 in the tensor's header (``MatPtr::scale_``) next
to its name and shape, not in its data, so byte counts (:mod:`arch.memory`) leave it out. Inputs must be
finite.
"""

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, UInt8

MAX = 1.875  # 1.111b * 2^0, the largest magnitude (SfpStream::kMax)
_MIN_BIASED = 127 - 23  # float32 biased exponent of 2^-23, the smallest binade
_LARGE_BIASED = 127 - 8  # above this biased exponent (>= 2^-7) the code keeps 3 mantissa bits


def encode(x: Float[Array, "..."]) -> UInt8[Array, "..."]:
    """The SFP8 byte of each value (magnitudes above :data:`MAX` saturate to it)."""
    x = jnp.clip(x.astype(jnp.float32), -MAX, MAX)
    bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
    sign = (bits >> 31).astype(jnp.int32)
    biased = ((bits >> 23) & 0xFF).astype(jnp.int32)
    m6 = ((bits >> 17) & 0x3F).astype(jnp.int32)  # the top 6 mantissa bits; the rest is truncated
    large = (biased > _LARGE_BIASED) | ((biased == _LARGE_BIASED) & (m6 > 0x3B))
    kept = jnp.where(large, m6 << 1, m6)  # the mantissa bits to keep now sit at bits 4 and up
    rounded = kept + ((kept >> 4) & 1) + 7  # + 7, + 1 more when the last kept bit is odd: ties to even
    carry = jnp.where(large, 0x80, 0x40)
    overflow = rounded >= carry
    biased = biased + overflow.astype(jnp.int32)
    mantissa = jnp.where(overflow, rounded - carry, rounded) >> 4
    large = biased > _LARGE_BIASED  # decided again: a carry from 1.11b * 2^-8 lands on 2^-7
    mantissa = jnp.where(biased == _MIN_BIASED, jnp.maximum(mantissa, 1), mantissa)
    exponent = jnp.where(large, biased - (127 - 15), biased - _MIN_BIASED)
    magnitude = mantissa | (exponent << jnp.where(large, 3, 2))
    return jnp.where(biased < _MIN_BIASED, 0, (sign << 7) | magnitude).astype(jnp.uint8)


def decode(codes: UInt8[Array, "..."], dtype=jnp.float32) -> Float[Array, "..."]:
    """The value of each SFP8 byte. Every value is a bfloat16, so the bf16 bit pattern is built directly:
    exponent and mantissa are the code shifted into place over the bias of its range."""
    c = codes.astype(jnp.int32)
    m = c & 0x7F
    bf16 = jnp.where(m >= 64, 0x3800 + (m << 4), 0x3400 + (m << 5))
    bf16 = jnp.where(m == 0, 0, bf16) | ((c >> 7) << 15)
    return jax.lax.bitcast_convert_type(bf16.astype(jnp.uint16), jnp.bfloat16).astype(dtype)


def tensor_scale(w: Float[Array, "..."]) -> Float[Array, ""]:
    """``max|w| / 1.875`` when that exceeds 1, else 1 (``ScaleWeights``)."""
    amax = jnp.max(jnp.abs(w.astype(jnp.float32)))
    return jnp.where(amax > MAX, amax / MAX, 1.0).astype(jnp.float32)


def quantize(w: Float[Array, "..."]) -> tuple[UInt8[Array, "..."], Float[Array, ""]]:
    """The codes of ``w / scale`` and the tensor's scale."""
    scale = tensor_scale(w)
    return encode(w.astype(jnp.float32) * (1.0 / scale)), scale


def dequantize(codes: UInt8[Array, "..."], scale: Float[Array, ""], dtype=jnp.float32
               ) -> Float[Array, "..."]:
    return (decode(codes) * scale).astype(dtype)
