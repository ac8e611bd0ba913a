"""The interface every sequence mixer implements (attention, Griffin recurrence)."""

import abc

import equinox as eqx
from jaxtyping import Array, Int

from arch.typing import Hidden, Positions


class ImageLayout(eqx.Module):
    """Where the images sit in a sequence (Gemma 3 section 2.1): ``ids`` per position the image it
    belongs to (-1: text; :func:`arch.masks.image_ids`), ``span`` the most tokens one image has (static:
    attention need not look further ahead than that). Attention reads each image bidirectionally;
    a recurrence reads it in order, as it reads everything."""

    ids: Int[Array, "*b t"]
    span: int = eqx.field(static=True)


class AbstractMixer(eqx.Module):
    """Sequence mixing ``(t, d) -> (t, d)`` for one sequence, in full (``__call__``) or against a
    decode cache (``step``: a prefill chunk or one token)."""

    @abc.abstractmethod
    def __call__(self, x: Hidden, positions: Positions, *, segment_ids: Int[Array, " t"] | None = None,
                 images: ImageLayout | None = None) -> Hidden:
        raise NotImplementedError

    @abc.abstractmethod
    def init_cache(self, max_len: int, dtype) -> eqx.Module:
        raise NotImplementedError

    @abc.abstractmethod
    def step(self, x: Hidden, positions: Positions, cache: eqx.Module, *, images: ImageLayout | None = None
             ) -> tuple[Hidden, eqx.Module]:
        raise NotImplementedError
