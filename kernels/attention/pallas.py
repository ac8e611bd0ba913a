"""Sliding-window flash attention as Pallas kernels, differentiable through ``jax.custom_vjp``.

Forward: :mod:`gemma_kernels.attention.pallas_fwd`; backward: :mod:`gemma_kernels.attention.pallas_bwd`; the
band both agree on: :mod:`gemma_kernels.attention.band`. Autodiff cannot trace through ``pallas_call``, so
the VJP is written out. This wrapper pads time to a block multiple (padded keys are invisible) and
the head dim to a power of two (zero columns change no logit), moves heads in front, and resolves
block sizes per backend (:class:`gemma_kernels.blocks.AttentionBlocks`).

Image ids (Gemma 3 section 2.1, causal layers) travel like segment ids, padded with -1 (text); the
kernels then also visit the key blocks up to ``image_span - 1`` positions past the diagonal (all of
them when no span is given), where an image's tokens see one another.

Inputs may be bf16: matmuls accumulate in f32, softmax statistics are f32, the output takes the
input dtype. ``jax.vmap`` over :func:`attention_pallas` batches by adding a grid axis.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from gemma_kernels.attention.pallas_bwd import flash_backward
from gemma_kernels.attention.pallas_fwd import flash_forward
from gemma_kernels.blocks import AttentionBlocks, compiler_params, fit
from gemma_kernels.masks import image_reach


@dataclasses.dataclass(frozen=True)
class _Static:
    """Everything the kernels specialise on (hashable: it is a ``nondiff_argnums`` argument)."""

    t: int
    window: int | None
    causal: bool
    softcap: float | None
    scale: float
    fwd_blocks: tuple[int, int]
    bwd_blocks: tuple[int, int]
    interpret: bool
    params: object
    image_span: int | None = None

    def kwargs(self, bwd: bool):
        return dict(
            t=self.t, window=self.window, causal=self.causal, softcap=self.softcap, scale=self.scale,
            blocks=self.bwd_blocks if bwd else self.fwd_blocks, interpret=self.interpret,
            params=self.params, image_span=self.image_span,
        )


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _flash(q, k, v, seg, img, st: _Static):
    return flash_forward(q, k, v, seg, img, **st.kwargs(bwd=False))[0]


def _flash_fwd(q, k, v, seg, img, st: _Static):
    o, lse = flash_forward(q, k, v, seg, img, **st.kwargs(bwd=False))
    return o, (q, k, v, seg, img, o, lse)


def _flash_bwd(st: _Static, res, do):
    q, k, v, seg, img, o, lse = res
    dq, dk, dv = flash_backward(q, k, v, seg, o, lse, do, img, **st.kwargs(bwd=True))
    return dq, dk, dv, None, None  # segment and image ids are integers: no cotangent


_flash.defvjp(_flash_fwd, _flash_bwd)


def attention_pallas(
    q: Float[Array, "t h e"],
    k: Float[Array, "t k e"],
    v: Float[Array, "t k e"],
    *,
    window: int | None = None,
    causal: bool = True,
    softcap: float | None = None,
    scale: float | None = None,
    segment_ids: Int[Array, " t"] | None = None,
    image_ids: Int[Array, " t"] | None = None,
    image_span: int | None = None,
    interpret: bool = False,
    blocks: AttentionBlocks | None = None,
) -> Float[Array, "t h e"]:
    """Flash attention of one sequence with the :mod:`gemma_kernels.masks` window rule.

    Same contract as :func:`gemma_kernels.attention.attention_reference` (self-attention: k and v have
    the query length). Query head ``n`` reads KV head ``n // (h // k)``. ``image_ids`` and
    ``image_span``: see :func:`gemma_kernels.attention.attention`.
    """
    t, h, e = q.shape
    if k.shape[0] != t or v.shape != k.shape:
        raise ValueError(f"self-attention kernel: q {q.shape}, k {k.shape}, v {v.shape}")
    if h % k.shape[1]:
        raise ValueError(f"query heads ({h}) must be a multiple of kv heads ({k.shape[1]})")
    image_reach(image_ids, image_span, causal=causal)
    blocks = blocks or AttentionBlocks.for_backend("cpu" if interpret else None)
    # Tiles no larger than the (power-of-two rounded) sequence; 16 is the smallest Triton dot.
    bq, bk, bqb, bkb = (fit(b, t, 16) for b in (blocks.block_q, blocks.block_k, blocks.block_q_bwd,
                                                  blocks.block_k_bwd))
    step = max(bq, bk, bqb, bkb)  # all powers of two: the largest is a multiple of the others
    tp = -(-t // step) * step
    ep = max(16, 1 << (e - 1).bit_length())
    warps = blocks.num_warps or (4 if ep <= 64 else 8)
    st = _Static(
        t=t, window=window, causal=causal, softcap=softcap,
        scale=float(e**-0.5 if scale is None else scale),
        fwd_blocks=(bq, bk), bwd_blocks=(bqb, bkb), interpret=bool(interpret),
        params=compiler_params(interpret, num_warps=warps, num_stages=blocks.num_stages),
        image_span=None if image_span is None else int(image_span),
    )

    def heads_first(x):  # [t, n, e] -> [n, tp, ep]
        return jnp.pad(x, ((0, tp - t), (0, 0), (0, ep - e))).transpose(1, 0, 2)

    def padded(ids):  # [tp] int32; -1 on padding rows: no segment or image of a real position
        return None if ids is None else jnp.pad(ids.astype(jnp.int32), (0, tp - t), constant_values=-1)

    o = _flash(heads_first(q), heads_first(k), heads_first(v), padded(segment_ids), padded(image_ids), st)
    return o[:, :t, :e].transpose(1, 0, 2)
