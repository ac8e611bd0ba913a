"""The interface every sequence mixer implements (attention, Griffin recurrence)."""

import abc

import equinox as eqx
from jaxtyping import Array, Int

from arch.typing import Hidden, Positions


class AbstractMixer(eqx.Module):
    """Sequence mixing ``(t, d) -> (t, d)`` for one sequence, in full (``__call__``) or against a
    decode cache (``step``: a prefill chunk or one token)."""

    @abc.abstractmethod
    def __call__(self, x: Hidden, positions: Positions, *, segment_ids: Int[Array, " t"] | None = None
                 ) -> Hidden:
        raise NotImplementedError

    @abc.abstractmethod
    def init_cache(self, max_len: int, dtype) -> eqx.Module:
        raise NotImplementedError

    @abc.abstractmethod
    def step(self, x: Hidden, positions: Positions, cache: eqx.Module) -> tuple[Hidden, eqx.Module]:
        raise NotImplementedError
