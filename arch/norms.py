"""RMSNorm in the ``(1 + w)`` form of Gemma and Griffin: ``x * rsqrt(mean(x^2) + eps) * (1 + w)``,
``w`` initialised to zero, computed in float32 (Gemma 2 section 2; HF ``Gemma2RMSNorm``)."""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float


class RMSNorm(eqx.Module):
    weight: Float[Array, " d"]
    eps: float = eqx.field(static=True)

    def __init__(self, dim: int, *, eps: float = 1e-6):
        self.weight = jnp.zeros((dim,))
        self.eps = eps

    def __call__(self, x: Float[Array, "... d"]) -> Float[Array, "... d"]:
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return (y * (1.0 + self.weight.astype(jnp.float32))).astype(x.dtype)
