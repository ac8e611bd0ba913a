"""Dense masked attention: the ground truth every other attention path is tested against.

Costs O(t * s) time and memory; the model uses it only for global layers on CPU.
"""

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from gemma_kernels.layout import materialize
from gemma_kernels.masks import visible


def softcap_logits(logits: Array, softcap: float | None) -> Array:
    """Gemma 2 section 2: ``cap * tanh(logits / cap)``."""
    return logits if softcap is None else softcap * jnp.tanh(logits / softcap)


def masked_softmax_stats(logits: Float[Array, "... q s"], mask: Array) -> tuple[Array, Array, Array]:
    """Unnormalised softmax weights under ``mask``, their row sums (1 where a row sees nothing, so
    that row comes out as zeros, not NaN) and the row maxima they are taken against (0 for such rows).
    ``max + log(sum)`` is the row's log-sum-exp."""
    logits = jnp.where(mask, logits, -jnp.inf)
    m = jnp.max(logits, axis=-1, keepdims=True)
    m = jnp.where(jnp.isfinite(m), m, 0.0)
    p = jnp.exp(logits - m)
    denom = jnp.sum(p, axis=-1, keepdims=True)
    return p, jnp.where(denom > 0, denom, 1.0), m


def masked_softmax_weights(logits: Float[Array, "... q s"], mask: Array) -> tuple[Array, Array]:
    """:func:`masked_softmax_stats` without the row maxima."""
    return masked_softmax_stats(logits, mask)[:2]


def attention_reference(
    q: Float[Array, "t h e"],
    k: Float[Array, "s k e"],
    v: Float[Array, "s k e"],
    *,
    window: int | None = None,
    causal: bool = True,
    softcap: float | None = None,
    scale: float | None = None,
    segment_ids: Int[Array, " t"] | None = None,
    q_pos: Int[Array, " t"] | None = None,
    k_pos: Int[Array, " s"] | None = None,
    image_ids: Int[Array, " t"] | None = None,
) -> Float[Array, "t h e"]:
    """Grouped-query attention with the mask of :func:`gemma_kernels.masks.visible`.

    Query head ``n`` uses KV head ``n // (h // k)``. Positions default to ``arange``; pass them to
    attend over a cache whose slots are not in order (ring buffers). ``segment_ids`` (query and key
    side alike, so only when t == s) forbid attention across packed documents; ``image_ids`` (the same
    way; :func:`gemma_kernels.masks.image_ids`) let each image's tokens see one another.
    """
    t, _, e = q.shape
    s = k.shape[0]
    scale = e**-0.5 if scale is None else scale
    q_pos = jnp.arange(t) if q_pos is None else q_pos
    k_pos = jnp.arange(s) if k_pos is None else k_pos
    mask = visible(q_pos, k_pos, window=window, causal=causal, q_image=image_ids, k_image=image_ids)
    if segment_ids is not None:
        mask &= segment_ids[:, None] == segment_ids[None, :]
    return grouped_attention(q, k, v, mask, softcap=softcap, scale=scale).astype(q.dtype)


FEW_ROWS = 16  # query rows (positions x heads per KV head) that decode's q @ k takes as a reduce


def _divisor_near(s: int, target: int) -> int | None:
    """The divisor of ``s`` in ``[target / 2, 2 * target]`` closest to ``target``, if ``s > 2 * target``."""
    if s <= 2 * target:
        return None
    near = [d for d in range(max(1, target // 2), 2 * target + 1) if s % d == 0]
    return min(near, key=lambda d: abs(d - target), default=None)


def grouped_attention(q: Float[Array, "t h e"], k: Float[Array, "s k e"], v: Float[Array, "s k e"],
                      mask: Array, *, softcap: float | None, scale: float,
                      value_dtype=jnp.float32, value_chunk: int | None = None) -> Float[Array, "t h e"]:
    """The maths of every dense attention here, under a ``[t, s]`` boolean ``mask``, in f32.

    ``q @ k`` takes the inputs' dtype and accumulates in f32; the softmax is f32; ``p @ v`` takes
    ``value_dtype`` (f32 for :func:`attention_reference`; a bf16 decode cache passes its own dtype, so
    it is streamed as stored, with no f32 copy of it) and accumulates in f32. Both products contract
    straight from the ``[s, k, e]`` layout: no transposed copy of a (possibly long) cache.
    ``value_chunk`` (a decode step over a cache), with one KV head: ``p @ v`` is contracted in chunks
    of about ``value_chunk`` slots (a divisor of ``s`` within a factor of 2 of it; none: in one
    product), summed; and with at most :data:`FEW_ROWS` query rows ``q @ k`` is a multiply-and-reduce
    in f32. The same values up to rounding (f32 products) and f32 summation order."""
    t, h, e = q.shape
    nkv = k.shape[1]
    g = h // nkv
    if value_chunk is not None and nkv == 1 and t * g <= FEW_ROWS:
        # a few query rows over a long cache (decode): a fused multiply-and-reduce over e reads the cache
        # once at about twice the speed of XLA's CPU dot (32K slots: 1.3 ms against 2.7 per layer)
        rows = q.reshape(1, t * g, e).astype(jnp.float32)
        logits = (k.astype(jnp.float32) * rows).sum(-1)  # [s, t * g]
        logits = logits.T.reshape(t, g, -1).transpose(1, 0, 2)[None] * scale
    else:
        qg = q.reshape(t, nkv, g, e)
        logits = jnp.einsum("tkge,ske->kgts", qg, k, preferred_element_type=jnp.float32) * scale
    p, denom = masked_softmax_weights(softcap_logits(logits, softcap), mask)
    s = v.shape[0]
    chunk = None if value_chunk is None or nkv > 1 else _divisor_near(s, value_chunk)
    if chunk is not None:
        # [g * t, c, chunk] x [c, chunk, e] -> [c, g * t, e], batched over chunks, then summed: XLA's CPU
        # dot contracts one long slot axis at ~3.5 GB/s, short ones at ~2x that (a decode step over a 32K
        # cache). One KV head only: the chunk axis must lead v for the product to read it in place.
        c = s // chunk
        # the softmax once (in f32: XLA's CPU scatter widens bf16), not again inside the product
        p = materialize(p.reshape(-1, c, chunk)).astype(value_dtype)
        v = v.astype(value_dtype).reshape(c, chunk, e)
        out = jax.lax.dot_general(p, v, (((2,), (1,)), ((1,), (0,))), preferred_element_type=jnp.float32)
        out = out.sum(0).reshape(1, h, t, e) / denom
    else:
        # [k, g, t, s] x [s, k, e] -> [k, g, t, e], batched over KV heads, contracting the slot axis
        out = jax.lax.dot_general(p.astype(value_dtype), v.astype(value_dtype),
                                  (((3,), (0,)), ((0,), (1,))), preferred_element_type=jnp.float32) / denom
    return out.transpose(2, 0, 1, 3).reshape(t, h, e)


def attention_reference_jaxnn(q, k, v, *, window=None, scale=None):
    """Independent oracle for causal (local) attention without soft-cap: jax.nn's own implementation."""
    local = None if window is None else (window - 1, 0)
    return jax.nn.dot_product_attention(q, k, v, is_causal=True, scale=scale, local_window_size=local)
