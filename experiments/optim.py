"""The one optimizer recipe: global-norm clipping, then AdamW (Loshchilov & Hutter 2019) with decoupled
weight decay, under linear warmup from 0 and cosine decay to ``min_lr_ratio * lr``; and
``TrainSettings``, the fields every training run has (optimizer, steps, seed, logging and
checkpoint intervals), which ``experiments.runconfig.RunConfig`` and
``experiments.embed.config.EmbedConfig`` extend.

Language-model runs, the embedding fine-tuning and its encoder adaptation all build their optimizer
here; only the numbers differ.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

import jax
import optax


def decay_mask(params: Any) -> Any:
    """True for leaves that get weight decay: arrays of rank >= 2 whose path does not name a bias
    (norm gains, biases, the RG-LRU's Lambda and gate biases are not decayed)."""

    def one(path, x) -> bool:
        names = "/".join(str(getattr(k, "name", getattr(k, "key", k))) for k in path)
        return getattr(x, "ndim", 0) >= 2 and "bias" not in names

    return jax.tree_util.tree_map_with_path(one, params)


def warmup_cosine(lr: float, steps: int, warmup: int, min_lr_ratio: float) -> optax.Schedule:
    """Linear warmup from 0 to ``lr``, then cosine decay to ``min_lr_ratio * lr`` at ``steps``; a run
    shorter than its warmup still decays."""
    warmup = min(warmup, steps - 1)
    return optax.warmup_cosine_decay_schedule(init_value=0.0, peak_value=lr, warmup_steps=warmup,
                                              decay_steps=max(steps, warmup + 1), end_value=lr * min_lr_ratio)


def adamw(lr: float, steps: int, *, warmup: int, min_lr_ratio: float, weight_decay: float, clip: float,
          b1: float = 0.9, b2: float = 0.999, mask: Any = decay_mask) -> optax.GradientTransformation:
    """Clipping, then AdamW on :func:`warmup_cosine`; ``mask=None`` decays every parameter."""
    return optax.chain(
        optax.clip_by_global_norm(clip),
        optax.adamw(warmup_cosine(lr, steps, warmup, min_lr_ratio), b1=b1, b2=b2, weight_decay=weight_decay,
                    mask=mask),
    )


def short_hash(config: dict) -> str:
    """A run's name: 10 hex chars of sha256 over its config's sorted JSON, the same in every process
    and on every machine (language-model, embedding and vision runs alike)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:10]


def _lists(x):
    """Tuples, nested too, as lists: what JSON writes and reads back."""
    if isinstance(x, (tuple, list)):
        return [_lists(v) for v in x]
    return {k: _lists(v) for k, v in x.items()} if isinstance(x, dict) else x


def _tuples(x):
    """Lists, nested too, as tuples: a frozen config's fields hash."""
    return tuple(_tuples(v) for v in x) if isinstance(x, list) else x


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainSettings:
    """What every run of :func:`experiments.loop.fit` needs besides its model and data. Subclasses
    redeclare a field to change its default (the embedding recipe keeps AdamW's own ``b2``)."""

    steps: int = 300
    batch: int = 8
    lr: float = 3e-3
    warmup: int = 30
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    b1: float = 0.9
    b2: float = 0.95
    clip: float = 1.0  # global-norm clipping
    seed: int = 0  # data order and the step's randomness
    ckpt_every: int = 100
    log_every: int = 10

    def __post_init__(self):
        name = type(self).__name__
        for field in ("steps", "batch", "ckpt_every", "log_every"):
            value = getattr(self, field)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}.{field}={value!r}: must be a positive int")
        if not isinstance(self.warmup, int) or self.warmup < 0:
            raise ValueError(f"{name}.warmup={self.warmup!r}: must be an int >= 0")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"{name}.min_lr_ratio={self.min_lr_ratio!r}: must be in [0, 1]")
        if not self.lr > 0:
            raise ValueError(f"{name}.lr={self.lr!r}: must be > 0")

    def replace(self, **kw):
        return dataclasses.replace(self, **kw)

    def to_dict(self) -> dict:
        """Every field, tuples as lists: the run directory's ``config.json``."""
        return _lists(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: dict):
        """The config ``to_dict`` wrote; keys that are no field of this class are ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: _tuples(v) for k, v in d.items() if k in known})

    def short_hash(self) -> str:
        """The run's directory name (:func:`short_hash` of :meth:`to_dict`)."""
        return short_hash(self.to_dict())

    def schedule(self) -> optax.Schedule:
        """Linear warmup from 0 to ``lr``, then cosine decay to ``min_lr_ratio * lr`` at ``steps``."""
        return warmup_cosine(self.lr, self.steps, self.warmup, self.min_lr_ratio)

    def optimizer(self) -> optax.GradientTransformation:
        """:func:`adamw` with these numbers (weight decay on matrices only)."""
        return adamw(self.lr, self.steps, warmup=self.warmup, min_lr_ratio=self.min_lr_ratio,
                     weight_decay=self.weight_decay, clip=self.clip, b1=self.b1, b2=self.b2)
