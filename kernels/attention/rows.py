"""Masked softmax attention over rows of queries, with its backward pass written out.

The maths is the standard one (FlashAttention-2, Dao 2023, Algorithms 1 and 2, without the tiling):

    Z = scale * Q K^T,  S = cap * tanh(Z / cap) (Gemma 2 soft-cap; S = Z without it),
    P = softmax(S | mask),  O = P V,
    dV = P^T dO,  dP = dO V^T,  dS = P * (dP - rowsum(dO * O)),  dZ = dS * (1 - (S / cap)^2),
    dQ = scale * dZ K,  dK = scale * dZ^T Q.

Why it is written out rather than left to autodiff: every product here is laid out
``[..., m, k] @ [..., k, n]`` on row-major operands (:mod:`gemma_kernels.layout`), which is what XLA's CPU
backend needs to run bf16 products on its fast path; the transposed operand is always the narrow one
(``e`` columns, not ``s``). Products take the inputs' dtype (bf16 in bf16 training) and accumulate in
f32, and P is cast to that dtype before ``P V`` as flash attention does. The backward recomputes P
from the saved row log-sum-exp instead of keeping it.

Shapes: ``q [..., h, m, e]`` (rows ``m``), ``k, v [..., h, s, e]`` (``h`` KV heads), row positions,
segments and image ids ``[..., m]``, key positions, segments and image ids ``[..., s]``; the mask is
:func:`gemma_kernels.masks.visible` (with Gemma 3's image rule, section 2.1; image ids None: text only,
at no extra cost) and equal segments. With ``copy_inputs`` the inputs (and the output's cotangent)
are first written out row-major: the caller passes it when they are transposed views (more than one
KV head); one KV head makes every view a reshape, and the copies would be wasted passes.
"""

import functools

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from gemma_kernels.attention.ref import masked_softmax_stats, softcap_logits
from gemma_kernels.layout import dot, dot_tn, physical_swap, physical_transpose
from gemma_kernels.masks import visible


def _mask(q_pos, k_pos, q_seg, k_seg, q_img, k_img, window, causal):
    ok = visible(q_pos, k_pos, window=window, causal=causal, q_image=q_img, k_image=k_img)
    ok &= q_seg[..., :, None] == k_seg[..., None, :]
    return ok[..., None, :, :]  # broadcast over KV heads


def _scores(q, kt, scale, softcap):
    return softcap_logits(dot(q, kt) * scale, softcap)


def _row_major(a: Array, copy: bool) -> Array:
    return physical_transpose(a) if copy else a


def _forward(q, k, v, q_pos, k_pos, q_seg, k_seg, q_img, k_img, window, causal, scale, softcap, copy_inputs):
    q, k, v = (_row_major(a, copy_inputs) for a in (q, k, v))
    mask = _mask(q_pos, k_pos, q_seg, k_seg, q_img, k_img, window, causal)
    p, denom, m = masked_softmax_stats(_scores(q, physical_swap(k), scale, softcap), mask)
    o = (dot(p.astype(v.dtype), v) / denom).astype(q.dtype)
    return o, (q, k, v, o, m + jnp.log(denom))


@functools.partial(jax.custom_vjp, nondiff_argnums=(9, 10, 11, 12, 13))
def attend_rows(
    q: Float[Array, "... h m e"],
    k: Float[Array, "... h s e"],
    v: Float[Array, "... h s e"],
    q_pos: Int[Array, "... m"],
    k_pos: Int[Array, "... s"],
    q_seg: Int[Array, "... m"],
    k_seg: Int[Array, "... s"],
    q_img: Int[Array, "... m"] | None,
    k_img: Int[Array, "... s"] | None,
    window: int | None,
    causal: bool,
    scale: float,
    softcap: float | None,
    copy_inputs: bool = True,
) -> Float[Array, "... h m e"]:
    """``softmax(S | mask) V`` per row; see the module docstring."""
    return _forward(q, k, v, q_pos, k_pos, q_seg, k_seg, q_img, k_img, window, causal, scale, softcap,
                    copy_inputs)[0]


def _fwd(q, k, v, q_pos, k_pos, q_seg, k_seg, q_img, k_img, window, causal, scale, softcap, copy_inputs):
    o, (q, k, v, o, lse) = _forward(q, k, v, q_pos, k_pos, q_seg, k_seg, q_img, k_img, window, causal, scale,
                                    softcap, copy_inputs)
    return o, (q, k, v, o, lse, q_pos, k_pos, q_seg, k_seg, q_img, k_img)


def _bwd(window, causal, scale, softcap, copy_inputs, res, do):
    q, k, v, o, lse, q_pos, k_pos, q_seg, k_seg, q_img, k_img = res
    s = _scores(q, physical_swap(k), scale, softcap)
    p = jnp.where(_mask(q_pos, k_pos, q_seg, k_seg, q_img, k_img, window, causal), jnp.exp(s - lse), 0.0)
    do = _row_major(do.astype(v.dtype), copy_inputs)
    dp = dot(do, physical_swap(v))
    delta = jnp.sum(do.astype(jnp.float32) * o.astype(jnp.float32), axis=-1, keepdims=True)
    dz = p * (dp - delta)
    if softcap is not None:
        dz = dz * (1.0 - jnp.square(s / softcap))
    dz = (dz * scale).astype(q.dtype)
    dq = dot(dz, k).astype(q.dtype)
    dk = dot_tn(dz, q).astype(k.dtype)
    dv = dot_tn(p.astype(v.dtype), do).astype(v.dtype)
    return dq, dk, dv, None, None, None, None, None, None


attend_rows.defvjp(_fwd, _bwd)
