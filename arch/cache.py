"""Decode state for any config: global layers keep K/V for ``max_len`` positions, local layers a ring
buffer of ``min(window, max_len)`` slots, recurrent layers the Conv1D tail and the f32 RG-LRU state.

The shapes come from the modules' own ``init_cache``; ``jax.eval_shape(init_cache, ...)`` sizes a
cache without allocating it (what :mod:`arch.memory` does). ``filled_cache`` builds the state a
prefill of ``ctx`` tokens leaves, with random contents, for timing decode at long context.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from arch.attention import KVCache, cache_slots
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


def slot_positions(size: int, max_len: int, ctx: int) -> np.ndarray:
    """The position each slot of a ``size``-slot buffer holds after ``ctx`` tokens (-1: empty).

    A global layer (``size == max_len``) keeps position p in slot p; a ring buffer keeps in slot s the
    newest position ``p < ctx`` with ``p % size == s`` (what :meth:`arch.attention.Attention.step`
    writes, whatever the chunking of the prefill).
    """
    survivors = np.arange(max(0, ctx - size), ctx)  # the newest `size` positions: distinct slots
    pos = np.full(size, -1, np.int32)
    pos[cache_slots(survivors, size, ring=size < max_len)] = survivors
    return pos


@functools.partial(jax.jit, static_argnames=("shape", "dtype", "scale"))
def random_fill(key, *, shape: tuple[int, ...], dtype, scale: float = 1.0) -> jax.Array:
    """Normal(0, scale) values of ``shape``: a pool of at most 65,536 draws tiled over the array.

    Cheap at any size (drawing a billion normals costs seconds on a CPU) and enough wherever the
    values only have to be finite and unstructured, as for timing.
    """
    n = math.prod(shape)
    pool = scale * jax.random.normal(key, (min(n, 1 << 16),), jnp.float32)
    return jnp.resize(pool, (n,)).reshape(shape).astype(dtype)


def filled_cache(cfg: ModelConfig, ctx: int, max_len: int, *, dtype=jnp.float32, seed: int = 0) -> Cache:
    """The cache a prefill of ``ctx`` tokens into ``init_cache(cfg, max_len)`` leaves, with random
    values: slot positions exact (:func:`slot_positions`), ``pos = ctx``, K/V and the recurrent
    state random.

    A decode step's work does not depend on the values, so this times decoding at context ``ctx``
    without paying for the prefill (``experiments.bench.decode``).
    """
    if not 0 <= ctx <= max_len:
        raise ValueError(f"filled_cache: ctx={ctx!r} must be in [0, max_len={max_len}]")
    shapes = jax.eval_shape(lambda: init_cache(cfg, max_len, dtype=dtype))
    keys = iter(jax.random.split(jax.random.key(seed), 2 * len(shapes.layers)))
    noise = lambda x, scale: random_fill(next(keys), shape=x.shape, dtype=x.dtype, scale=scale)
    layers = []
    for layer in shapes.layers:
        if isinstance(layer, KVCache):
            pos = slot_positions(layer.pos.shape[0], max_len, ctx)
            layers.append(KVCache(k=noise(layer.k, 1.0), v=noise(layer.v, 1.0), pos=jnp.asarray(pos)))
        elif isinstance(layer, ConvState):
            layers.append(ConvState(conv=noise(layer.conv, 1.0), h=noise(layer.h, 0.1)))
        else:
            raise TypeError(f"filled_cache: unknown cache entry {type(layer).__name__}")
    return Cache(layers=tuple(layers), pos=jnp.asarray(ctx, jnp.int32))


__all__ = ["Cache", "ConvState", "KVCache", "filled_cache", "init_cache", "random_fill", "slot_positions"]
