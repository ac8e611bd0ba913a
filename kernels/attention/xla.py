"""Plain-JAX attention whose cost follows what a query can see.

Global layers are dense (every key is visible). Local layers are computed in query blocks of
``block`` rows; each block gathers only the key blocks that intersect its band, so time and memory
are O(t * (window + block)) rather than O(t^2). This is the CPU path of every local layer.
"""

import math
from functools import partial

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from kernels.attention.ref import attention_reference, masked_softmax_combine, softcap_logits
from kernels.masks import visible


def _block_size(window: int, t: int) -> int:
    """A power of two near the window (>= 16, <= 256) and no larger than needed for t."""
    b = 1 << max(4, min(8, math.ceil(math.log2(max(window, 1)))))
    return min(b, 1 << max(4, math.ceil(math.log2(t))))


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
) -> Float[Array, "t h e"]:
    """Sliding-window attention, blocked: query block i reads key blocks i - before .. i + after."""
    t, h, e = q.shape
    nkv = k.shape[1]
    g = h // nkv
    scale = e**-0.5 if scale is None else scale
    b = block or _block_size(window, t)
    nb = -(-t // b)
    before = -(-(window - 1) // b)  # key blocks left of the query block that can be visible
    after = 0 if causal else before
    span = before + 1 + after
    pad_t = nb * b - t

    def blocks(x, fill=0):  # [t, ...] -> [before + nb + after, b, ...], padded on both sides
        widths = [(before * b, pad_t + after * b)] + [(0, 0)] * (x.ndim - 1)
        return jnp.pad(x, widths, constant_values=fill).reshape(before + nb + after, b, *x.shape[1:])

    idx = jnp.arange(nb)[:, None] + jnp.arange(span)[None, :]  # [nb, span] key-block indices
    kb = blocks(k)[idx].reshape(nb, span * b, nkv, e)
    vb = blocks(v)[idx].reshape(nb, span * b, nkv, e)
    pos = jnp.arange(t)
    k_pos = blocks(pos, fill=-1)[idx].reshape(nb, span * b)  # -1 marks padding: never visible
    q_pos = jnp.pad(pos, (0, pad_t), constant_values=-(2**30)).reshape(nb, b)

    qb = jnp.pad(q, ((0, pad_t), (0, 0), (0, 0))).reshape(nb, b, nkv, g, e)
    logits = jnp.einsum("nqkge,nske->nkgqs", qb, kb, preferred_element_type=jnp.float32) * scale
    logits = softcap_logits(logits, softcap)
    mask = jax.vmap(partial(visible, window=window, causal=causal))(q_pos, k_pos)  # [nb, b, span*b]
    if segment_ids is not None:
        q_seg = jnp.pad(segment_ids, (0, pad_t), constant_values=-1).reshape(nb, b)
        k_seg = blocks(segment_ids, fill=-2)[idx].reshape(nb, span * b)
        mask &= q_seg[:, :, None] == k_seg[:, None, :]
    out = masked_softmax_combine(logits, mask[:, None, None], vb.transpose(0, 2, 1, 3)[:, :, None])
    out = out.transpose(0, 3, 1, 2, 4).reshape(nb * b, h, e)  # [nb, k, g, q, e] -> [t, h, e]
    return out[:t].astype(q.dtype)


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
