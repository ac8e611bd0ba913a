"""Training losses: a registry from name to a pure per-sequence function.

Every entry has the call shape ``loss(logits[t, v] f32, targets[t] int, mask[t] f32, **kw) -> scalar``
and returns the MEAN over the masked positions of one sequence; the train step vmaps it over the batch
and weights each sequence by its mask count, so the batch loss is a mean over tokens. Distillation
losses (Gemma 2 section 6.1, Gemma 3 section 3) are added with the same shape plus a ``teacher_logits``
keyword.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

LossFn = Callable[..., Float[Array, ""]]


def masked_mean(values: Float[Array, " t"], mask: Float[Array, " t"]) -> Float[Array, ""]:
    # max(., 1): an all-masked sequence contributes 0, not NaN.
    return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def xent(logits: Float[Array, "t v"], targets: Int[Array, " t"], mask: Float[Array, " t"]
         ) -> Float[Array, ""]:
    """Next-token cross-entropy in nats, ``logsumexp(z) - z[target]``, in float32."""
    logits = logits.astype(jnp.float32)
    picked = jnp.take_along_axis(logits, targets[:, None].astype(jnp.int32), axis=-1)[:, 0]
    return masked_mean(jax.nn.logsumexp(logits, axis=-1) - picked, mask)


LOSSES: dict[str, LossFn] = {"xent": xent}


def get_loss(name: str) -> LossFn:
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; known losses: {', '.join(sorted(LOSSES))}")
    return LOSSES[name]

# The distillation losses live in their own module and add themselves to LOSSES (one registry).
import experiments.distill  # noqa: E402, F401
