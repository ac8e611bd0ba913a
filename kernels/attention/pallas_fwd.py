"""Flash attention forward kernel (FlashAttention-2, Dao 2023, algorithm 1) over a sliding band.

One program per (query head, query block). The key loop runs INSIDE the kernel over only the key
blocks that intersect the band (``lax.fori_loop(lo, hi)``), so a local layer costs
O(t * window) and a global causal layer visits the lower triangle only (with images, Gemma 3 section
2.1, also the ``image_span - 1`` keys past the diagonal an image can reach). The body uses no scratch
buffers and no cross-step accumulation, so it lowers through Triton (GPU), Mosaic (TPU) and the
interpreter (CPU) alike.

Array layout inside the kernels: q ``[h, T, e]``, k and v ``[kv, T, e]`` (T padded to a block
multiple); query head ``n`` reads KV head ``n // (h // kv)`` through the index map, without copies.
"""

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from gemma_kernels.attention.band import BIG, NEG, band_mask, id_refs, key_block_range, logits, segment_mask
from gemma_kernels.masks import image_reach


def _fwd_kernel(*refs, scale, softcap, window, causal, t, block_k, has_seg, has_img, ahead):
    q_ref, k_ref, v_ref, *ids, o_ref, lse_ref = refs
    seg, img = id_refs(ids, has_seg, has_img)
    block_q, e = q_ref.shape
    q0 = pl.program_id(1) * block_q
    q = q_ref[...]
    q_seg = seg[0][...] if has_seg else None
    q_img = img[0][...] if has_img else None

    def body(j, carry):
        acc, m, denom = carry
        k0 = j * block_k
        k = k_ref[pl.ds(k0, block_k), :]
        v = v_ref[pl.ds(k0, block_k), :]
        s, _ = logits(q, k, scale, softcap)
        k_img = img[1][:, pl.ds(k0, block_k)] if has_img else None
        mask = band_mask(q0, k0, block_q, block_k, t=t, window=window, causal=causal,
                         q_img=q_img, k_img=k_img)
        if has_seg:
            mask &= segment_mask(q_seg, seg[1][:, pl.ds(k0, block_k)])
        s = jnp.where(mask, s, NEG)
        m_new = jnp.maximum(m, jnp.max(s, axis=1, keepdims=True))
        alpha = jnp.exp(m - m_new)
        # Masked entries are zeroed explicitly: in a row with nothing visible yet, s - m_new is 0.
        p = jnp.where(mask, jnp.exp(s - m_new), 0.0)
        denom = alpha * denom + jnp.sum(p, axis=1, keepdims=True)
        acc = alpha * acc + jnp.dot(p.astype(v.dtype), v, preferred_element_type=jnp.float32)
        return acc, m_new, denom

    lo, hi = key_block_range(q0, block_q, block_k, t=t, window=window, causal=causal, ahead=ahead)
    init = (
        jnp.zeros((block_q, e), jnp.float32),
        jnp.full((block_q, 1), NEG, jnp.float32),
        jnp.zeros((block_q, 1), jnp.float32),
    )
    acc, m, denom = lax.fori_loop(lo, hi, body, init)
    seen = denom > 0  # rows with no visible key (padding) give zeros, and an lse that zeroes p later
    o_ref[...] = (acc / jnp.where(seen, denom, 1.0)).astype(o_ref.dtype)
    lse_ref[...] = jnp.where(seen, m + jnp.log(jnp.where(seen, denom, 1.0)), BIG)


def flash_forward(q, k, v, seg, img=None, *, t, window, causal, softcap, scale, blocks, interpret, params,
                  image_span=None):
    """q ``[h, T, e]``, k/v ``[kv, T, e]``, seg and img (image ids) ``None`` or ``[T]`` int32 (T a block
    multiple); ``image_span`` bounds an image's length (:func:`gemma_kernels.masks.image_reach`).

    Returns ``(o [h, T, e] in q.dtype, lse [h, T, 1] f32)``; ``lse`` is the residual of the backward.
    """
    h, tp, e = q.shape
    g = h // k.shape[0]
    bq, bk = blocks
    kernel = functools.partial(
        _fwd_kernel, scale=scale, softcap=softcap, window=window, causal=causal, t=t, block_k=bk,
        has_seg=seg is not None, has_img=img is not None, ahead=image_reach(img, image_span, causal=causal),
    )
    # lax.div, not //: floor division lowers through sign, which Mosaic resolves per TPU generation.
    in_specs = [
        pl.BlockSpec((None, bq, e), lambda n, i: (n, i, 0)),
        pl.BlockSpec((None, tp, e), lambda n, i: (lax.div(n, g), 0, 0)),
        pl.BlockSpec((None, tp, e), lambda n, i: (lax.div(n, g), 0, 0)),
    ]
    args = [q, k, v]
    ids = [x for x in (seg, img) if x is not None]
    # per id array: the query block's ids as a column, every key's as a row
    id_specs = [pl.BlockSpec((bq, 1), lambda n, i: (i, 0)), pl.BlockSpec((1, tp), lambda n, i: (0, 0))]
    in_specs += id_specs * len(ids)
    args += [a for x in ids for a in (x[:, None], x[None, :])]
    return pl.pallas_call(
        kernel,
        grid=(h, tp // bq),
        in_specs=in_specs,
        out_specs=[
            pl.BlockSpec((None, bq, e), lambda n, i: (n, i, 0)),
            pl.BlockSpec((None, bq, 1), lambda n, i: (n, i, 0)),
        ],
        out_shape=[
            jax.ShapeDtypeStruct((h, tp, e), q.dtype),
            jax.ShapeDtypeStruct((h, tp, 1), jnp.float32),
        ],
        compiler_params=params,
        interpret=interpret,
        name="flash_attention_fwd",
    )(*args)
