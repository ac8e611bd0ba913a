"""``kernels.attention``: one entry point, implementations chosen by ``impl``.

- ``"xla"``: plain JAX; dense for global layers, blocked O(t * window) for local ones.
- ``"pallas"``: flash attention kernels (GPU via Triton, TPU via Mosaic, CPU in interpret mode).
- ``"auto"``: ``pallas`` on GPU/TPU, ``xla`` on CPU (resolved in ``kernels._platform``).
"""

from jaxtyping import Array, Float, Int

from kernels._platform import ATTENTION_IMPLS, resolve_impl, resolve_interpret
from kernels.attention.ref import attention_reference
from kernels.attention.xla import attention_xla


def attention(
    q: Float[Array, "t h e"],
    k: Float[Array, "s k e"],
    v: Float[Array, "s k e"],
    *,
    window: int | None = None,
    causal: bool = True,
    softcap: float | None = None,
    scale: float | None = None,
    segment_ids: Int[Array, " t"] | None = None,
    impl: str = "auto",
    interpret: bool | None = None,
) -> Float[Array, "t h e"]:
    """Grouped-query attention of one sequence; see :mod:`kernels.masks` for the window rule.

    q ``[t, h, e]``, k and v ``[t, k, e]`` with ``h % k == 0``; ``scale`` defaults to ``e ** -0.5``;
    ``softcap`` applies ``cap * tanh(logits / cap)`` before the mask. Batch with ``jax.vmap``.
    """
    if q.shape[1] % k.shape[1]:
        raise ValueError(f"query heads ({q.shape[1]}) must be a multiple of kv heads ({k.shape[1]})")
    if window is not None and window < 1:
        raise ValueError(f"window={window!r} must be None or >= 1")
    kwargs = dict(window=window, causal=causal, softcap=softcap, scale=scale, segment_ids=segment_ids)
    match resolve_impl(impl, ATTENTION_IMPLS):
        case "xla":
            return attention_xla(q, k, v, **kwargs)
        case "pallas":
            from kernels.attention.pallas import attention_pallas

            return attention_pallas(q, k, v, interpret=resolve_interpret(interpret), **kwargs)
    raise AssertionError("unreachable")


__all__ = ["attention", "attention_reference"]
