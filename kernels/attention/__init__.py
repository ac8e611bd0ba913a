"""``gemma_kernels.attention``: one entry point, implementations chosen by ``impl``.

- ``"xla"``: plain JAX; dense for global layers, blocked O(t * window) for local ones.
- ``"pallas"``: flash attention kernels (GPU via Triton, TPU via Mosaic, CPU in interpret mode).
- ``"auto"``: ``pallas`` on GPU/TPU, ``xla`` on CPU (resolved in ``gemma_kernels._platform``).
"""

import jax
from jaxtyping import Array, Float, Int

from gemma_kernels._platform import ATTENTION_IMPLS, resolve_impl, resolve_interpret
from gemma_kernels.attention.pallas import attention_pallas
from gemma_kernels.attention.ref import attention_reference
from gemma_kernels.attention.xla import attention_xla


def attention(
    q: Float[Array, "*b t h e"],
    k: Float[Array, "*b s k e"],
    v: Float[Array, "*b s k e"],
    *,
    window: int | None = None,
    causal: bool = True,
    softcap: float | None = None,
    scale: float | None = None,
    segment_ids: Int[Array, "*b t"] | None = None,
    image_ids: Int[Array, "*b t"] | None = None,
    image_span: int | None = None,
    impl: str = "auto",
    interpret: bool | None = None,
) -> Float[Array, "*b t h e"]:
    """Grouped-query attention of one sequence or a batch; see :mod:`gemma_kernels.masks` for the window rule.

    q ``[t, h, e]`` (or ``[b, t, h, e]``), k and v ``[t, k, e]`` with ``h % k == 0``; ``scale``
    defaults to ``e ** -0.5``; ``softcap`` applies ``cap * tanh(logits / cap)`` before the mask.

    ``image_ids`` (causal layers only; :func:`gemma_kernels.masks.image_ids`: the image of each
    position, -1 for text) let an image's tokens see one another both ways (Gemma 3 section 2.1).
    ``image_span``, a static bound on the tokens of one image (256 in Gemma 3), lets the fast paths
    skip keys more than ``image_span - 1`` positions ahead of a query (None: nothing ahead is skipped).
    """
    if q.shape[-2] % k.shape[-2]:
        raise ValueError(f"query heads ({q.shape[-2]}) must be a multiple of kv heads ({k.shape[-2]})")
    if window is not None and window < 1:
        raise ValueError(f"window={window!r} must be None or >= 1")
    kwargs = dict(window=window, causal=causal, softcap=softcap, scale=scale, image_span=image_span)
    match resolve_impl(impl, ATTENTION_IMPLS):
        case "xla":
            return attention_xla(q, k, v, segment_ids=segment_ids, image_ids=image_ids, **kwargs)
        case "pallas":
            def one(q, k, v, segment_ids, image_ids):
                return attention_pallas(q, k, v, interpret=resolve_interpret(interpret),
                                        segment_ids=segment_ids, image_ids=image_ids, **kwargs)

            if q.ndim == 4:  # the kernels take one sequence each
                axis = lambda ids: None if ids is None else 0  # noqa: E731
                one = jax.vmap(one, in_axes=(0, 0, 0, axis(segment_ids), axis(image_ids)))
            return one(q, k, v, segment_ids, image_ids)
    raise AssertionError("unreachable")


__all__ = ["attention", "attention_reference"]
