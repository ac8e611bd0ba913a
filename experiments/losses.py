"""Training losses: a registry from name to a pure per-sequence function.

Every entry has the call shape ``loss(logits[t, v] f32, targets[t] int, mask[t] f32, **kw) -> scalar``
and returns the MEAN over the masked positions of one sequence; the train step vmaps it over the batch
and weights each sequence by its mask count, so the batch loss is a mean over tokens. Next-token
cross-entropy (:mod:`experiments.xent`) and the distillation losses (Gemma 2 section 6.1, Gemma 3
section 3; :mod:`experiments.distill.losses`, the same shape plus a ``teacher_logits`` keyword) are
listed here.
"""

from experiments.distill.losses import DISTILL_LOSSES
from experiments.xent import LossFn, masked_mean, xent

LOSSES: dict[str, LossFn] = {"xent": xent, **DISTILL_LOSSES}


def get_loss(name: str) -> LossFn:
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; known losses: {', '.join(sorted(LOSSES))}")
    return LOSSES[name]


__all__ = ["LOSSES", "LossFn", "get_loss", "masked_mean", "xent"]
