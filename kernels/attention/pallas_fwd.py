"""Flash attention forward kernel (FlashAttention-2, Dao 2023, algorithm 1) over a sliding band.

One program per (query head, query block). The key loop runs INSIDE the kernel over only the key
blocks that intersect the band (``lax.fori_loop(lo, hi)``), so a local layer costs
O(t * window) and a global causal layer visits the lower triangle only. The body uses no scratch
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

from gemma_kernels.attention.band import BIG, NEG, band_mask, key_block_range, logits, segment_mask


def _fwd_kernel(*refs, scale, softcap, window, causal, t, block_k, has_seg):
    if has_seg:
        q_ref, k_ref, v_ref, qseg_ref, kseg_ref, o_ref, lse_ref = refs
    else:
        q_ref, k_ref, v_ref, o_ref, lse_ref = refs
    block_q, e = q_ref.shape
    q0 = pl.program_id(1) * block_q
    q = q_ref[...]
    q_seg = qseg_ref[...] if has_seg else None

    def body(j, carry):
        acc, m, denom = carry
        k0 = j * block_k
        k = k_ref[pl.ds(k0, block_k), :]
        v = v_ref[pl.ds(k0, block_k), :]
        s, _ = logits(q, k, scale, softcap)
        mask = band_mask(q0, k0, block_q, block_k, t=t, window=window, causal=causal)
        if has_seg:
            mask &= segment_mask(q_seg, kseg_ref[:, pl.ds(k0, block_k)])
        s = jnp.where(mask, s, NEG)
        m_new = jnp.maximum(m, jnp.max(s, axis=1, keepdims=True))
        alpha = jnp.exp(m - m_new)
        # Masked entries are zeroed explicitly: in a row with nothing visible yet, s - m_new is 0.
        p = jnp.where(mask, jnp.exp(s - m_new), 0.0)
        denom = alpha * denom + jnp.sum(p, axis=1, keepdims=True)
        acc = alpha * acc + jnp.dot(p.astype(v.dtype), v, preferred_element_type=jnp.float32)
        return acc, m_new, denom

    lo, hi = key_block_range(q0, block_q, block_k, t=t, window=window, causal=causal)
    init = (
        jnp.zeros((block_q, e), jnp.float32),
        jnp.full((block_q, 1), NEG, jnp.float32),
        jnp.zeros((block_q, 1), jnp.float32),
    )
    acc, m, denom = lax.fori_loop(lo, hi, body, init)
    seen = denom > 0  # rows with no visible key (padding) give zeros, and an lse that zeroes p later
    o_ref[...] = (acc / jnp.where(seen, denom, 1.0)).astype(o_ref.dtype)
    lse_ref[...] = jnp.where(seen, m + jnp.log(jnp.where(seen, denom, 1.0)), BIG)


def flash_forward(q, k, v, seg, *, t, window, causal, softcap, scale, blocks, interpret, params):
    """q ``[h, T, e]``, k/v ``[kv, T, e]``, seg ``None`` or ``[T]`` int32 (T a block multiple).

    Returns ``(o [h, T, e] in q.dtype, lse [h, T, 1] f32)``; ``lse`` is the residual of the backward.
    """
    h, tp, e = q.shape
    g = h // k.shape[0]
    bq, bk = blocks
    kernel = functools.partial(
        _fwd_kernel, scale=scale, softcap=softcap, window=window, causal=causal, t=t, block_k=bk,
        has_seg=seg is not None,
    )
    # lax.div, not //: floor division lowers through sign, which Mosaic resolves per TPU generation.
    in_specs = [
        pl.BlockSpec((None, bq, e), lambda n, i: (n, i, 0)),
        pl.BlockSpec((None, tp, e), lambda n, i: (lax.div(n, g), 0, 0)),
        pl.BlockSpec((None, tp, e), lambda n, i: (lax.div(n, g), 0, 0)),
    ]
    args = [q, k, v]
    if seg is not None:
        in_specs += [pl.BlockSpec((bq, 1), lambda n, i: (i, 0)), pl.BlockSpec((1, tp), lambda n, i: (0, 0))]
        args += [seg[:, None], seg[None, :]]
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
