"""References for the linear recurrence ``h_t = a_t * h_{t-1} + x_t`` (the RG-LRU's core).

State is always float32; outputs take the dtype of ``x``.
"""

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float


def linear_scan_reference(
    a: Float[Array, "t r"], x: Float[Array, "t r"], h0: Float[Array, " r"] | None = None
) -> tuple[Float[Array, "t r"], Float[Array, " r"]]:
    """Sequential ``lax.scan``: the ground truth. Returns ``(h for every t, h_last)``."""
    h = jnp.zeros(x.shape[-1], jnp.float32) if h0 is None else h0.astype(jnp.float32)

    def step(h, ax):
        a_t, x_t = ax
        h = a_t.astype(jnp.float32) * h + x_t.astype(jnp.float32)
        return h, h.astype(x.dtype)

    h_last, ys = jax.lax.scan(step, h, (a, x))
    return ys, h_last


def linear_scan_assoc(
    a: Float[Array, "t r"], x: Float[Array, "t r"], h0: Float[Array, " r"] | None = None
) -> tuple[Float[Array, "t r"], Float[Array, " r"]]:
    """The same recurrence as a log-depth ``lax.associative_scan`` (more work, less latency)."""
    a32, x32 = a.astype(jnp.float32), x.astype(jnp.float32)
    if h0 is not None:
        x32 = x32.at[0].add(a32[0] * h0.astype(jnp.float32))  # fold h0 into the first input

    def combine(left, right):
        a_l, x_l = left
        a_r, x_r = right
        return a_l * a_r, a_r * x_l + x_r

    _, h = jax.lax.associative_scan(combine, (a32, x32))
    return h.astype(x.dtype), h[-1]
