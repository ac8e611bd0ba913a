"""The one optimizer recipe: global-norm clipping, then AdamW (Loshchilov & Hutter 2019) with decoupled
weight decay, under linear warmup from 0 and cosine decay to ``min_lr_ratio * lr``.

Language-model runs (``RunConfig.optimizer``), the embedding fine-tuning and its encoder adaptation
all build their optimizer here; only the numbers differ.
"""

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
