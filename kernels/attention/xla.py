"""Plain-JAX attention whose cost follows what a query can see: the CPU path of every layer.

Global layers are dense: every key is visible, except that causal attention splits the queries into
slices and slice ``i`` reads keys ``[0, end_i)`` only (2 slices do 3/4 of the dense work, 4 do 5/8).
Local layers are computed in query blocks of
``block`` rows; each block gathers only the key blocks that intersect its band, so time and memory
are O(t * window) rather than O(t^2). Both run :func:`gemma_kernels.attention.rows.attend_rows`, whose
backward is written out with row-major products (bf16 stays bf16 on XLA's CPU fast path). Query
heads that share a KV head become rows of one product (GQA as a taller matrix, not a repeat of K/V),
ordered position-major (row ``t * g + j`` is head ``j`` at position ``t``), so with one KV head the
rows are a reshape of the projection's output, not a transpose of it.

Images (Gemma 3 section 2.1; :mod:`gemma_kernels.masks`): with image ids a causal query also sees the
later tokens of its own image, so keys up to ``image_span - 1`` positions ahead of the diagonal can be
visible. Query slice ``i`` then reads keys up to ``end_i + image_span - 1``, and a local query block
also the key blocks within ``image_span - 1`` positions after it; without a span nothing ahead is
skipped (global layers are not sliced, local ones run dense).

Inputs are one sequence ``q [t, h, e]`` or a batch ``q [b, t, h, e]`` (segment and image ids ``[t]``
or ``[b, t]``); a batch is one product per layer, not a ``vmap`` of per-sequence products.
"""

import math

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from gemma_kernels.attention.rows import attend_rows
from gemma_kernels.masks import image_reach


def _block_size(window: int) -> int:
    """Query rows per block: a power of two near half the window, in [16, 128]."""
    return 1 << max(4, min(7, math.ceil(math.log2(max(window, 2) / 2))))


def _batched(fn):
    """Run ``fn`` on ``[b, t, ...]`` inputs; a single ``[t, ...]`` sequence gets a batch axis of 1."""
    def wrapper(q, k, v, *, segment_ids=None, image_ids=None, **kw):
        if q.ndim == 4:
            return fn(q, k, v, segment_ids=segment_ids, image_ids=image_ids, **kw)
        lift = lambda ids: None if ids is None else ids[None]  # noqa: E731
        return fn(q[None], k[None], v[None], segment_ids=lift(segment_ids), image_ids=lift(image_ids),
                  **kw)[0]
    return wrapper


def _as_rows(q: Array, nkv: int) -> Array:
    """``[..., t, h, e] -> [..., k, t * g, e]``: the g query heads of KV head k as rows, by position."""
    *lead, t, h, e = q.shape
    n = len(lead)
    q = q.reshape(*lead, t, nkv, h // nkv, e)
    return q.transpose(*range(n), n + 1, n, n + 2, n + 3).reshape(*lead, nkv, t * (h // nkv), e)


def _from_rows(o: Array, t: int) -> Array:
    """Inverse of :func:`_as_rows`."""
    *lead, nkv, tg, e = o.shape
    n = len(lead)
    o = o.reshape(*lead, nkv, t, tg // t, e)
    return o.transpose(*range(n), n + 1, n, n + 2, n + 3).reshape(*lead, t, tg // t * nkv, e)


def _heads_first(k: Array) -> Array:
    """``[..., s, k, e] -> [..., k, s, e]``."""
    n = k.ndim - 3
    return k.transpose(*range(n), n + 1, n, n + 2)


def _causal_slices(t: int, s: int, window, causal: bool, reach: int | None = 0) -> int:
    """Query slices of a causal global layer: one per 256 queries, at most 4, dividing t; one when
    images have no span (``reach`` None), since every slice would read every key."""
    if not causal or window is not None or t != s or reach is None:
        return 1
    return next((n for n in (4, 2) if t % n == 0 and t // n >= 256), 1)


@_batched
def dense_attention(q, k, v, *, window=None, causal=True, softcap=None, scale=None, segment_ids=None,
                    image_ids=None, image_span=None, slices=None):
    """Every query against every key the mask may allow (the mask does the rest): global layers and
    short sequences. Causal self-attention runs in ``slices`` query slices (default
    :func:`_causal_slices`), slice ``i`` against the keys up to its last query, plus
    ``image_span - 1`` with images (all keys when no span bounds them)."""
    b, t, h, e = q.shape
    s, nkv = k.shape[1], k.shape[2]
    g = h // nkv
    scale = e**-0.5 if scale is None else scale
    reach = image_reach(image_ids, image_span, causal=causal)
    seg = jnp.zeros((b, t), jnp.int32) if segment_ids is None else segment_ids.astype(jnp.int32)
    img = None if image_ids is None else image_ids.astype(jnp.int32)
    n = _causal_slices(t, s, window, causal, reach) if slices is None else slices
    if n > 1 and (not causal or t != s or t % n):
        raise ValueError(f"slices={n} needs causal self-attention with t ({t}) a multiple of it")
    outs = []
    for lo, end in ((i * t // n, (i + 1) * t // n) for i in range(n)):
        # the keys up to the slice's last query, and as far past it as its images reach
        hi = s if n == 1 or reach is None else min(s, end + reach)
        out = attend_rows(_as_rows(q[:, lo:end], nkv), _heads_first(k[:, :hi]), _heads_first(v[:, :hi]),
                          jnp.repeat(jnp.arange(lo, end), g), jnp.arange(hi),
                          jnp.repeat(seg[:, lo:end], g, axis=-1), seg[:, :hi],
                          None if img is None else jnp.repeat(img[:, lo:end], g, axis=-1),
                          None if img is None else img[:, :hi],
                          window, causal, scale, softcap, nkv > 1)
        outs.append(_from_rows(out, end - lo))
    return outs[0] if n == 1 else jnp.concatenate(outs, axis=1)


@_batched
def local_attention_blocked(
    q: Float[Array, "*b t h e"],
    k: Float[Array, "*b t k e"],
    v: Float[Array, "*b t k e"],
    *,
    window: int,
    causal: bool = True,
    softcap: float | None = None,
    scale: float | None = None,
    segment_ids: Int[Array, "*b t"] | None = None,
    image_ids: Int[Array, "*b t"] | None = None,
    image_span: int | None = None,
    block: int | None = None,
    rows_per_step: int = 1024,
) -> Float[Array, "*b t h e"]:
    """Sliding-window attention, blocked: query block i reads only key blocks i - before .. i + after.

    Causal: ``after`` covers the ``image_span - 1`` keys an image reaches ahead (0 without images, every
    later block when images have no span). The blocks are walked by ``lax.map`` about
    ``rows_per_step`` query rows (over the whole batch) at a time, so the working set stays cache-sized
    however long the sequence is.
    """
    bsz, t, h, e = q.shape
    nkv = k.shape[2]
    g = h // nkv
    scale = e**-0.5 if scale is None else scale
    reach = image_reach(image_ids, image_span, causal=causal)
    b = block or _block_size(window)
    nb = -(-t // b)
    before = -(-(window - 1) // b)  # key blocks left of the query block that can be visible
    if not causal:
        after = before
    else:
        after = nb - 1 if reach is None else min(nb - 1, -(-reach // b))
    span = before + 1 + after
    pad_t = nb * b - t

    def blocks(x, fill=0):  # [B, t, ...] -> [B, before + nb + after, b, ...], padded on both sides
        widths = [(0, 0), (before * b, pad_t + after * b)] + [(0, 0)] * (x.ndim - 2)
        return jnp.pad(x, widths, constant_values=fill).reshape(x.shape[0], before + nb + after, b,
                                                                *x.shape[2:])

    def bands(x, fill=0):  # [B, nb, span * b, ...]: the keys each query block can reach
        xb = blocks(x, fill)
        return jnp.concatenate([xb[:, s : s + nb] for s in range(span)], axis=2)

    pos = jnp.arange(t)[None]
    seg = jnp.zeros((bsz, t), jnp.int32) if segment_ids is None else segment_ids.astype(jnp.int32)
    q_pos = jnp.repeat(jnp.pad(pos[0], (0, pad_t), constant_values=-(2**30)).reshape(nb, b), g, axis=-1)
    k_pos = bands(pos, -1)[0]  # -1: padding, never visible
    q_seg = jnp.repeat(jnp.pad(seg, ((0, 0), (0, pad_t)), constant_values=-1).reshape(bsz, nb, b), g, axis=-1)
    k_seg = bands(seg, -2)
    q_img = k_img = None
    if image_ids is not None:  # -1 (text) for padding: no image to open; padded keys are invisible anyway
        img = image_ids.astype(jnp.int32)
        q_img = jnp.repeat(jnp.pad(img, ((0, 0), (0, pad_t)), constant_values=-1).reshape(bsz, nb, b), g,
                           axis=-1)
        k_img = bands(img, -1)
    qb = _as_rows(jnp.pad(q, ((0, 0), (0, pad_t), (0, 0), (0, 0))).reshape(bsz, nb, b, h, e), nkv)
    kb, vb = _heads_first(bands(k)), _heads_first(bands(v))

    def run(qb, kb, vb, q_pos, k_pos, q_seg, k_seg, q_img, k_img):
        return attend_rows(qb, kb, vb, q_pos, k_pos, q_seg, k_seg, q_img, k_img, window, causal, scale,
                           softcap, nkv > 1)

    per_step = max(1, rows_per_step // (bsz * b))  # query blocks per lax.map step
    if per_step >= nb:
        out = run(qb, kb, vb, q_pos, k_pos, q_seg, k_seg, q_img, k_img)
    else:  # walk chunks of blocks: the chunk axis goes first for lax.map
        nc = -(-nb // per_step)

        def chunked(x, axis):  # pad the block axis to nc * per_step and split it, chunk axis first
            if x is None:
                return None
            x = jnp.pad(x, [(0, 0)] * axis + [(0, nc * per_step - nb)] + [(0, 0)] * (x.ndim - axis - 1))
            x = x.reshape(*x.shape[:axis], nc, per_step, *x.shape[axis + 1 :])
            return jnp.moveaxis(x, axis, 0)

        args = (chunked(qb, 1), chunked(kb, 1), chunked(vb, 1), chunked(q_pos, 0), chunked(k_pos, 0),
                chunked(q_seg, 1), chunked(k_seg, 1), chunked(q_img, 1), chunked(k_img, 1))
        out = jax.lax.map(lambda a: run(*a), args)
        out = jnp.moveaxis(out, 0, 1).reshape(bsz, nc * per_step, *out.shape[3:])[:, :nb]
    out = _from_rows(out, b).reshape(bsz, nb * b, h, e)
    return out[:, :t].astype(q.dtype)


def attention_xla(q, k, v, *, window=None, causal=True, softcap=None, scale=None, segment_ids=None,
                  image_ids=None, image_span=None):
    """Dense for global layers (or when the window covers the sequence, or images have no span),
    blocked for local ones."""
    t = q.shape[-3]
    reach = image_reach(image_ids, image_span, causal=causal)
    kw = dict(window=window, causal=causal, softcap=softcap, scale=scale, segment_ids=segment_ids,
              image_ids=image_ids, image_span=image_span)
    # Dense when no block can be skipped: the band covers everything, or images may reach any later key.
    if window is None or window >= t or reach is None:
        return dense_attention(q, k, v, **kw)
    return local_attention_blocked(q, k, v, **kw)
