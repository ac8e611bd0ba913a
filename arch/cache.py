"""Decode state for any config: global layers keep K/V for ``max_len`` positions, local layers a ring
buffer of ``min(window, max_len)`` slots, recurrent layers the Conv1D tail and the f32 RG-LRU state.

The shapes come from the modules' own ``init_cache``; ``jax.eval_shape(init_cache, ...)`` sizes a
cache without allocating it (what :mod:`arch.memory` does).
"""

import jax
import jax.numpy as jnp

from arch.attention import KVCache
from arch.config import ModelConfig
from arch.model import Cache
from arch.params import abstract_model
from arch.rglru import ConvState


def init_cache(cfg: ModelConfig, max_len: int, *, dtype=jnp.float32, batch: int | None = None) -> Cache:
    """A fresh cache; with ``batch`` every leaf gets a leading batch axis for ``jax.vmap(model.step)``."""
    if max_len < 1:
        raise ValueError(f"init_cache: max_len={max_len!r} must be >= 1")
    if batch is not None and batch < 1:
        raise ValueError(f"init_cache: batch={batch!r} must be None or >= 1")
    cache = abstract_model(cfg).init_cache(max_len, dtype=dtype)
    if batch is None:
        return cache
    return jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (batch, *x.shape)), cache)


__all__ = ["Cache", "ConvState", "KVCache", "init_cache"]
