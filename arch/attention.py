"""Grouped-query attention, global (``G``) or sliding-window (``L``), causal or bidirectional.

Gemma 2 section 2 (local/global interleave, soft-capping, GQA), Gemma 3 section 2 (QK-norm, 5:1,
RoPE bases 10k local / 1M global, linear scaling of global positions), Griffin section 2.4 (local MQA
with partial RoPE). The visibility rule is :mod:`arch.masks`.
"""

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, Int, PRNGKeyArray

import gemma_kernels
from arch.config import ModelConfig
from arch.linear import Linear
from arch.masks import kernel_window
from arch.mixer import AbstractMixer, ImageLayout
from arch.norms import RMSNorm
from arch.rope import apply_rope
from arch.typing import Hidden, Positions


class KVCache(eqx.Module):
    """K and V for ``size`` slots with the position each slot holds (-1: empty). A global layer has a
    slot per position; a local layer is a ring buffer of ``window`` slots (slot = position % window)."""

    k: Float[Array, "s k e"]
    v: Float[Array, "s k e"]
    pos: Int[Array, " s"]


VALUE_CHUNK = 64  # cache slots per chunk of the p @ v product (gemma_kernels.grouped_attention)


def cache_slots(positions, size: int, ring: bool):
    """The slot each position is written to: ``position % size`` in a ring buffer (a local layer),
    the position itself in a global layer's cache (a position past its end is dropped on write).
    Works on JAX and NumPy arrays alike (:func:`arch.cache.slot_positions` uses it too)."""
    return positions % size if ring else positions


def attend_cache(q: Float[Array, "t h e"], k: Float[Array, "s k e"], v: Float[Array, "s k e"], *,
                 q_pos: Int[Array, " t"], k_pos: Int[Array, " s"], window: int | None,
                 softcap: float | None, scale: float, q_image: Int[Array, " t"] | None = None,
                 k_image: Int[Array, " s"] | None = None) -> Float[Array, "t h e"]:
    """Causal grouped-query attention of a chunk over cache slots, read in the cache's own dtype:
    :func:`gemma_kernels.grouped_attention` (the reference's maths and mask, identical for an f32
    cache) with both products taking the cache dtype as inputs (``q`` and the softmax weights are cast
    to it; they are a few values per head). A bf16 cache is streamed as stored: an f32 copy of it per
    decoded token would cost more than the attention itself at 32K context. ``q_image`` / ``k_image``:
    the image each query and slot belongs to (-1: text), for a prefill chunk holding images."""
    mask = gemma_kernels.visible(q_pos, k_pos, window=window, causal=True, q_image=q_image, k_image=k_image)
    out = gemma_kernels.grouped_attention(q.astype(k.dtype), k, v, mask, softcap=softcap, scale=scale,
                                          value_dtype=v.dtype, value_chunk=VALUE_CHUNK)
    return out.astype(q.dtype)


class Attention(AbstractMixer):
    q_proj: Linear
    k_proj: Linear
    v_proj: Linear
    o_proj: Linear
    q_norm: RMSNorm | None
    k_norm: RMSNorm | None
    window: int | None = eqx.field(static=True)  # None: global
    num_heads: int = eqx.field(static=True)
    num_kv_heads: int = eqx.field(static=True)
    head_dim: int = eqx.field(static=True)
    rotary_dim: int = eqx.field(static=True)
    rope_base: float = eqx.field(static=True)
    rope_scale: float = eqx.field(static=True)
    scale: float = eqx.field(static=True)
    softcap: float | None = eqx.field(static=True)
    causal: bool = eqx.field(static=True)
    impl: str = eqx.field(static=True)
    matmul_bf16: bool = eqx.field(static=True)

    def __init__(self, cfg: ModelConfig, *, window: int | None, key: PRNGKeyArray):
        qk, kk, vk, ok = jr.split(key, 4)
        h, kv, e, d = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.width
        mm = cfg.matmul_dtype
        self.q_proj = Linear(d, h * e, matmul_dtype=mm, key=qk)
        self.k_proj = Linear(d, kv * e, matmul_dtype=mm, key=kk)
        self.v_proj = Linear(d, kv * e, matmul_dtype=mm, key=vk)
        self.o_proj = Linear(h * e, d, bias=cfg.attn_out_bias, matmul_dtype=mm, key=ok)
        self.q_norm = RMSNorm(e, eps=cfg.norm_eps) if cfg.qk_norm else None
        self.k_norm = RMSNorm(e, eps=cfg.norm_eps) if cfg.qk_norm else None
        self.window = window
        self.num_heads, self.num_kv_heads, self.head_dim = h, kv, e
        self.rotary_dim = cfg.rotary_dim
        self.rope_base = cfg.rope_base_global if window is None else cfg.rope_base_local
        self.rope_scale = cfg.rope_scale_global if window is None else 1.0
        self.scale = cfg.query_scale
        self.softcap = cfg.attn_softcap
        self.causal = cfg.causal
        self.impl = cfg.attn_impl
        self.matmul_bf16 = cfg.matmul_dtype == "bfloat16"

    def _qkv(self, x: Hidden, positions: Positions):
        lead = x.shape[:-1]  # [t] or [b, t]: the projections see every row of the batch at once
        q = self.q_proj(x).reshape(*lead, self.num_heads, self.head_dim)
        k = self.k_proj(x).reshape(*lead, self.num_kv_heads, self.head_dim)
        v = self.v_proj(x).reshape(*lead, self.num_kv_heads, self.head_dim)
        if self.q_norm is not None:  # Gemma 3: QK-norm before RoPE
            q, k = self.q_norm(q), self.k_norm(k)
        rope = dict(base=self.rope_base, rotary_dim=self.rotary_dim, scale=self.rope_scale)
        return apply_rope(q, positions, **rope), apply_rope(k, positions, **rope), v

    def __call__(self, x: Hidden, positions: Positions, *, segment_ids: Int[Array, " t"] | None = None,
                 images: ImageLayout | None = None) -> Hidden:
        q, k, v = self._qkv(x, positions)
        if self.matmul_bf16:  # the attention products in bf16 too (f32 accumulation and softmax)
            q, k, v = (a.astype(jnp.bfloat16) for a in (q, k, v))
        out = gemma_kernels.attention(
            q, k, v, window=kernel_window(self.window, self.causal), causal=self.causal,
            softcap=self.softcap, scale=self.scale, segment_ids=segment_ids, impl=self.impl,
            **({} if images is None else dict(image_ids=images.ids, image_span=images.span)),
        )
        return self.o_proj(out.reshape(*x.shape[:-1], -1))

    def init_cache(self, max_len: int, dtype) -> KVCache:
        size = max_len if self.window is None else min(self.window, max_len)
        shape = (size, self.num_kv_heads, self.head_dim)
        empty = jnp.full((size,), -1, jnp.int32)  # -1: nothing stored yet, never visible
        return KVCache(k=jnp.zeros(shape, dtype), v=jnp.zeros(shape, dtype), pos=empty)

    def step(self, x: Hidden, positions: Positions, cache: KVCache, *, images: ImageLayout | None = None
             ) -> tuple[Hidden, KVCache]:
        """Prefill a chunk or decode a token against the cache.

        When writing the chunk first cannot evict a key that one of its queries still sees (a global
        layer, whose slot is the position; or a single token, which evicts position p - window), the
        chunk is written and the queries attend over the cache alone: no copy of the cache per step.
        A longer chunk on a ring buffer attends over cache + chunk before writing, so early queries
        keep the keys that later tokens of the same chunk overwrite.

        ``images``: the chunk's image ids; an image must lie whole inside one chunk (the cache keeps no
        image ids, so an earlier chunk's tokens cannot see ahead into this one).
        """
        if not self.causal:
            raise ValueError("a bidirectional (causal=False) model has no decode step: it is an encoder")
        t = x.shape[0]
        q, k, v = self._qkv(x, positions)
        size = cache.pos.shape[0]
        keep = min(t, size)  # only the newest `size` positions of the chunk survive in the buffer
        slots = cache_slots(positions[-keep:], size, ring=self.window is not None)
        written = KVCache(  # in place when the cache is donated (gemma_kernels.set_rows)
            k=gemma_kernels.set_rows(cache.k, slots, k[-keep:], mode="drop"),
            v=gemma_kernels.set_rows(cache.v, slots, v[-keep:], mode="drop"),
            pos=cache.pos.at[slots].set(positions[-keep:].astype(jnp.int32), mode="drop"),
        )
        if self.window is None or t == 1:
            keys, values, k_pos = written.k, written.v, written.pos
        else:
            keys = jnp.concatenate([cache.k, k.astype(cache.k.dtype)])
            values = jnp.concatenate([cache.v, v.astype(cache.v.dtype)])
            k_pos = jnp.concatenate([cache.pos, positions.astype(jnp.int32)])
        seen = {}
        if images is not None:  # slots written before this chunk hold no image of it: -1
            if self.window is None or t == 1:
                k_image = jnp.full((size,), -1, jnp.int32).at[slots].set(images.ids[-keep:], mode="drop")
            else:
                k_image = jnp.concatenate([jnp.full((size,), -1, jnp.int32), images.ids.astype(jnp.int32)])
            seen = dict(q_image=images.ids, k_image=k_image)
        out = attend_cache(q, keys, values, q_pos=positions, k_pos=k_pos, window=self.window,
                           softcap=self.softcap, scale=self.scale, **seen)
        return self.o_proj(out.reshape(t, -1)), written
