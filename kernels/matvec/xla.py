""":func:`gemma_kernels.matvec` in plain JAX, in the forms XLA's CPU compiler runs fastest.

A float ``[out, in]`` weight: a dot when the input is the short side (Gemma 3 1B's up and gate
projections and tied head: 20-25 GB/s on a 2-core CPU), a fused multiply-and-reduce along the rows
when it is the long side (the down projection: 16 GB/s, where the dot falls to 2 GB/s). Codes: one
fused multiply-and-reduce that widens each code as it is read and applies the scales to the partial
sums. Values equal :func:`~gemma_kernels.matvec.ref.matvec_reference` up to f32 summation order.
"""

import jax.numpy as jnp
from jaxtyping import Array, Float

from gemma_kernels.layout import materialize
from gemma_kernels.matvec.ref import signed_codes


def matvec_xla(x: Float[Array, "... i"], w: Array, scales: Array | None = None) -> Float[Array, "... o"]:
    if scales is not None:
        return _codes_matvec(x, w, scales)
    w = w.astype(x.dtype)
    if w.shape[1] <= w.shape[0]:
        return jnp.matmul(x, w.T, preferred_element_type=jnp.float32)
    xs = materialize(x.astype(jnp.float32))  # else the fusion re-evaluates x's producer per row tile
    return (w.astype(jnp.float32) * xs[..., None, :]).sum(-1)


def _codes_matvec(x: Float[Array, "... i"], codes: Array, scales: Array) -> Float[Array, "... o"]:
    """Reads the codes once, widening each as it is read; the scales multiply partial sums.

    A single row is reduced as ``codes [out, in] * x [in]``: with a unit leading axis
    (``[1, out, in]``) XLA's CPU reduce of widened int8 ran 13x slower."""
    n_out, n_in, blocked = codes.shape[0], x.shape[-1], codes.ndim == 3
    lead = x.shape[:-1]
    xs = materialize(x.astype(jnp.float32)).reshape(-1, n_in)
    xs = xs[0] if xs.shape[0] == 1 else xs[:, None, :]
    if blocked:  # inputs as [..., blocks, block] against codes [out, blocks, block]
        xs = xs.reshape(*xs.shape[:-1], codes.shape[1], n_in // codes.shape[1])
    parts = signed_codes(codes)
    if len(parts) == 1:
        part = (parts[0].astype(jnp.float32) * xs).sum(-1)
    else:  # int4: byte m holds inputs 2m (low nibble) and 2m + 1 (high nibble)
        lo, hi = parts
        part = (lo.astype(jnp.float32) * xs[..., 0::2] + hi.astype(jnp.float32) * xs[..., 1::2]).sum(-1)
    part = part * scales.astype(jnp.float32)
    out = part.sum(-1) if blocked else part
    return out.reshape(*lead, n_out)
