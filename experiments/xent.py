"""Next-token cross-entropy and the masked mean every training loss reduces with.

A loss takes ``(logits[t, v], targets[t], mask[t], **kw)`` for ONE sequence and returns the mean over
its masked positions (the registry, :data:`experiments.losses.LOSSES`, lists them by name).
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
