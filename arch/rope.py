"""Rotary position embedding in the rotate-half layout Hugging Face uses for Gemma.

Only the first ``rotary_dim`` dims of each head rotate (RecurrentGemma rotates half); frequencies are
``base ** (-2i / rotary_dim)``. Linear scaling divides positions by ``scale`` (Gemma 3 global
layers, factor 8; Gemma 3 report section 5.3).
"""

import jax.numpy as jnp
from jaxtyping import Array, Float, Int


def apply_rope(
    x: Float[Array, "t n e"], positions: Int[Array, " t"], *, base: float, rotary_dim: int, scale: float = 1.0
) -> Float[Array, "t n e"]:
    half = rotary_dim // 2
    inv_freq = 1.0 / (base ** (jnp.arange(0, rotary_dim, 2, dtype=jnp.float32) / rotary_dim))
    angles = (positions.astype(jnp.float32) / scale)[:, None] * inv_freq[None, :]  # [t, half]
    cos, sin = jnp.cos(angles)[:, None, :], jnp.sin(angles)[:, None, :]
    rot, rest = x[..., :rotary_dim].astype(jnp.float32), x[..., rotary_dim:]
    x1, x2 = rot[..., :half], rot[..., half:]
    rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)
    return jnp.concatenate([rotated, rest], axis=-1) if rest.shape[-1] else rotated
