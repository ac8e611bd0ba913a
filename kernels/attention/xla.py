"""Plain-JAX attention whose cost follows what a query can see.

Global layers are dense (every key is visible). Local layers are computed in query blocks of
``block`` rows; each block gathers only the key blocks that intersect its band, so time and memory
are O(t * (window + block)) rather than O(t^2). This is the CPU path of every local layer.
"""

import math

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from kernels.attention.ref import attention_reference, masked_softmax_combine, softcap_logits
from kernels.masks import visible


def _block_size(window: int) -> int:
    """Query rows per block: a power of two near half the window, in [16, 128]."""
    return 1 << max(4, min(7, math.ceil(math.log2(max(window, 2) / 2))))


def local_attention_blocked(
    q: Float[Array, "t h e"],
    k: Float[Array, "t k e"],
    v: Float[Array, "t k e"],
    *,
    window: int,
    causal: bool = True,
    softcap: float | None = None,
    scale: float | None = None,
    segment_ids: Int[Array, " t"] | None = None,
    block: int | None = None,
    rows_per_step: int = 1024,
) -> Float[Array, "t h e"]:
    """Sliding-window attention, blocked: query block i reads only key blocks i - before .. i + after.

    The blocks are walked by ``lax.map`` about ``rows_per_step`` query rows at a time, so the
    working set stays cache-sized however long the sequence is.
    """
    t, h, e = q.shape
    nkv = k.shape[1]
    g = h // nkv
    scale = e**-0.5 if scale is None else scale
    b = block or _block_size(window)
    nb = -(-t // b)
    before = -(-(window - 1) // b)  # key blocks left of the query block that can be visible
    after = 0 if causal else before
    span = before + 1 + after
    pad_t = nb * b - t

    def blocks(x, fill=0):  # [t, ...] -> [before + nb + after, b, ...], padded on both sides
        widths = [(before * b, pad_t + after * b)] + [(0, 0)] * (x.ndim - 1)
        return jnp.pad(x, widths, constant_values=fill).reshape(before + nb + after, b, *x.shape[1:])

    def bands(x, fill=0):  # [nb, span * b, ...]: the keys each query block can reach (static slices)
        xb = blocks(x, fill)
        return jnp.concatenate([xb[s : s + nb] for s in range(span)], axis=1)

    pos = jnp.arange(t)
    q_pos = jnp.pad(pos, (0, pad_t), constant_values=-(2**30)).reshape(nb, b)
    seg = jnp.zeros((t,), jnp.int32) if segment_ids is None else segment_ids
    q_seg = jnp.pad(seg, (0, pad_t), constant_values=-1).reshape(nb, b)
    qb = jnp.pad(q, ((0, pad_t), (0, 0), (0, 0))).reshape(nb, b, nkv, g, e)
    inputs = (qb, bands(k), bands(v), q_pos, bands(pos, -1), q_seg, bands(seg, -2))  # -1: padding

    def one_block(args):
        qb, kb, vb, q_pos, k_pos, q_seg, k_seg = args
        logits = jnp.einsum("qkge,ske->kgqs", qb, kb, preferred_element_type=jnp.float32) * scale
        mask = visible(q_pos, k_pos, window=window, causal=causal) & (q_seg[:, None] == k_seg[None, :])
        out = masked_softmax_combine(softcap_logits(logits, softcap), mask, vb.transpose(1, 0, 2)[:, None])
        return out.transpose(2, 0, 1, 3)  # [k, g, q, e] -> [q, k, g, e]

    out = jax.lax.map(one_block, inputs, batch_size=max(1, rows_per_step // b))
    return out.reshape(nb * b, h, e)[:t].astype(q.dtype)


def attention_xla(q, k, v, *, window=None, causal=True, softcap=None, scale=None, segment_ids=None):
    """Dense for global layers (or when the window covers the sequence), blocked for local ones."""
    t = q.shape[0]
    if window is None or window >= t:  # the band covers everything: no blocks to skip
        return attention_reference(
            q, k, v, window=window, causal=causal, softcap=softcap, scale=scale, segment_ids=segment_ids
        )
    return local_attention_blocked(
        q, k, v, window=window, causal=causal, softcap=softcap, scale=scale, segment_ids=segment_ids
    )
