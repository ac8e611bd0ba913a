"""Flash attention backward kernels (FlashAttention-2, Dao 2023, algorithm 2) over a sliding band.

Two kernels, so that no program accumulates into memory another program writes (Triton's grid axes
run in parallel):

- dq: one program per (query head, query block), looping over the key blocks in its band;
- dk/dv: one program per (KV head, key block), looping over the query heads that share the KV head
  (GQA/MQA) and, for each, over only the query blocks that see the key block.

With ``p = exp(s - lse)``, ``dp = do v^T`` and ``delta = rowsum(do * o)``: ``ds = p (dp - delta)``,
times ``1 - tanh^2`` under a soft-cap (d/dx ``cap tanh(x / cap)``); ``dq = scale ds k``,
``dk = scale ds^T q``, ``dv = p^T do``. Both kernels apply the forward's mask over the forward's
band, images included (Gemma 3 section 2.1: rows up to ``image_span - 1`` positions before a key block
see it too).
"""

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from gemma_kernels.attention.band import (
    band_mask,
    id_refs,
    key_block_range,
    logits,
    query_block_range,
    segment_mask,
)
from gemma_kernels.masks import image_reach


def _dlogits(q, k, v, do, lse, delta, mask, scale, softcap):
    """``(p, ds)`` of one tile: softmax weights and the gradient w.r.t. the pre-cap scaled logits."""
    s, th = logits(q, k, scale, softcap)
    p = jnp.where(mask, jnp.exp(s - lse), 0.0)
    dp = jnp.dot(do, v.T, preferred_element_type=jnp.float32)
    ds = p * (dp - delta)
    if softcap is not None:
        ds = ds * (1.0 - th * th)
    return p, ds


def _dq_kernel(*refs, scale, softcap, window, causal, t, block_k, has_seg, has_img, ahead):
    q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, *ids, dq_ref = refs
    seg, img = id_refs(ids, has_seg, has_img)
    block_q, e = q_ref.shape
    q0 = pl.program_id(1) * block_q
    q, do, lse, delta = q_ref[...], do_ref[...], lse_ref[...], delta_ref[...]
    q_seg = seg[0][...] if has_seg else None
    q_img = img[0][...] if has_img else None

    def body(j, dq):
        k0 = j * block_k
        k = k_ref[pl.ds(k0, block_k), :]
        v = v_ref[pl.ds(k0, block_k), :]
        k_img = img[1][:, pl.ds(k0, block_k)] if has_img else None
        mask = band_mask(q0, k0, block_q, block_k, t=t, window=window, causal=causal,
                         q_img=q_img, k_img=k_img)
        if has_seg:
            mask &= segment_mask(q_seg, seg[1][:, pl.ds(k0, block_k)])
        _, ds = _dlogits(q, k, v, do, lse, delta, mask, scale, softcap)
        return dq + jnp.dot(ds.astype(k.dtype), k, preferred_element_type=jnp.float32)

    lo, hi = key_block_range(q0, block_q, block_k, t=t, window=window, causal=causal, ahead=ahead)
    dq = lax.fori_loop(lo, hi, body, jnp.zeros((block_q, e), jnp.float32))
    dq_ref[...] = (dq * scale).astype(dq_ref.dtype)


def _dkv_kernel(*refs, scale, softcap, window, causal, t, tp, groups, block_q, has_seg, has_img, ahead):
    q_ref, do_ref, lse_ref, delta_ref, k_ref, v_ref, *ids, dk_ref, dv_ref = refs
    seg, img = id_refs(ids, has_seg, has_img)
    block_k, e = k_ref.shape
    k0 = pl.program_id(1) * block_k
    k, v = k_ref[...], v_ref[...]
    k_seg = seg[1][...] if has_seg else None
    k_img = img[1][...] if has_img else None
    lo, hi = query_block_range(k0, block_k, block_q, t=t, window=window, causal=causal, ahead=ahead)

    def body(i, carry, base):
        dk, dv = carry
        q0 = i * block_q
        rows = pl.ds(base + q0, block_q)  # q/do/lse/delta hold the group's heads end to end
        q, do = q_ref[rows, :], do_ref[rows, :]
        q_img = img[0][pl.ds(q0, block_q), :] if has_img else None
        mask = band_mask(q0, k0, block_q, block_k, t=t, window=window, causal=causal,
                         q_img=q_img, k_img=k_img)
        if has_seg:
            mask &= segment_mask(seg[0][pl.ds(q0, block_q), :], k_seg)
        p, ds = _dlogits(q, k, v, do, lse_ref[rows, :], delta_ref[rows, :], mask, scale, softcap)
        dv = dv + jnp.dot(p.astype(do.dtype).T, do, preferred_element_type=jnp.float32)
        dk = dk + jnp.dot(ds.astype(q.dtype).T, q, preferred_element_type=jnp.float32)
        return dk, dv

    def head(gi, carry):
        return lax.fori_loop(lo, hi, functools.partial(body, base=gi * tp), carry)

    zeros = jnp.zeros((block_k, e), jnp.float32)
    dk, dv = lax.fori_loop(0, groups, head, (zeros, zeros))
    dk_ref[...] = (dk * scale).astype(dk_ref.dtype)
    dv_ref[...] = dv.astype(dv_ref.dtype)


def flash_backward(q, k, v, seg, o, lse, do, img=None, *, t, window, causal, softcap, scale, blocks,
                   interpret, params, image_span=None):
    """Gradients ``(dq, dk, dv)`` in the layouts and dtypes of ``q, k, v`` (see :mod:`pallas_fwd`)."""
    h, tp, e = q.shape
    nkv = k.shape[0]
    g = h // nkv
    bq, bk = blocks
    # delta = rowsum(do * o): one cheap elementwise pass, fused by XLA.
    delta = jnp.sum(do.astype(jnp.float32) * o.astype(jnp.float32), axis=-1, keepdims=True)
    static = dict(scale=scale, softcap=softcap, window=window, causal=causal, t=t, has_seg=seg is not None,
                  has_img=img is not None, ahead=image_reach(img, image_span, causal=causal))
    ids = [x for x in (seg, img) if x is not None]
    id_args = [a for x in ids for a in (x[:, None], x[None, :])]  # per id array: a column and a row

    row = lambda b: pl.BlockSpec((None, b, e), lambda n, i: (n, i, 0))  # noqa: E731
    full_kv = pl.BlockSpec((None, tp, e), lambda n, i: (lax.div(n, g), 0, 0))
    col = pl.BlockSpec((None, bq, 1), lambda n, i: (n, i, 0))
    id_specs = [pl.BlockSpec((bq, 1), lambda n, i: (i, 0)), pl.BlockSpec((1, tp), lambda n, i: (0, 0))]
    dq = pl.pallas_call(
        functools.partial(_dq_kernel, block_k=bk, **static),
        grid=(h, tp // bq),
        in_specs=[row(bq), full_kv, full_kv, row(bq), col, col] + id_specs * len(ids),
        out_specs=row(bq),
        out_shape=jax.ShapeDtypeStruct(q.shape, q.dtype),
        compiler_params=params,
        interpret=interpret,
        name="flash_attention_dq",
    )(q, k, v, do, lse, delta, *id_args)

    # The g query heads of KV head m are contiguous: view them as one [g * T] axis (a free reshape).
    grouped = lambda x: x.reshape(nkv, g * tp, x.shape[-1])  # noqa: E731
    full_q = lambda w: pl.BlockSpec((None, g * tp, w), lambda m, j: (m, 0, 0))  # noqa: E731
    kv_blk = pl.BlockSpec((None, bk, e), lambda m, j: (m, j, 0))
    id_specs = [pl.BlockSpec((tp, 1), lambda m, j: (0, 0)), pl.BlockSpec((1, bk), lambda m, j: (0, j))]
    dk, dv = pl.pallas_call(
        functools.partial(_dkv_kernel, tp=tp, groups=g, block_q=bq, **static),
        grid=(nkv, tp // bk),
        in_specs=[full_q(e), full_q(e), full_q(1), full_q(1), kv_blk, kv_blk] + id_specs * len(ids),
        out_specs=[kv_blk, kv_blk],
        out_shape=[jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype)],
        compiler_params=params,
        interpret=interpret,
        name="flash_attention_dkv",
    )(grouped(q), grouped(do), grouped(lse), grouped(delta), k, v, *id_args)
    return dq, dk, dv
