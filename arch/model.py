"""``LM``: embed -> residual blocks (one per pattern letter) -> final RMSNorm -> tied logits.

Input embeddings are scaled by sqrt(width) (Gemma; RecurrentGemma rounds the factor to bf16), the
output projection is the embedding table itself and is not scaled, and the final logits are soft-capped
when ``logit_softcap`` is set (Gemma 2: 30).
"""

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, Int, PRNGKeyArray

import arch.decode as decode
import arch.quant as quant
from arch.blocks import ResidualBlock
from arch.config import ModelConfig
from arch.linear import Linear, matmul
from arch.mixer import ImageLayout
from arch.norms import RMSNorm
from arch.typing import Hidden, Logits, Tokens


class Cache(eqx.Module):
    """Decode state of a whole model: one entry per layer and the next position to write."""

    layers: tuple
    pos: Int[Array, ""]


class LM(eqx.Module):
    embed: Float[Array, "v d"]
    blocks: tuple[ResidualBlock, ...]
    final_norm: RMSNorm
    lm_head: Linear | None
    cfg: ModelConfig = eqx.field(static=True)

    def __init__(self, cfg: ModelConfig, *, key: PRNGKeyArray):
        ekey, hkey, *bkeys = jr.split(key, cfg.num_layers + 2)
        self.embed = jr.normal(ekey, (cfg.vocab_size, cfg.width)) / cfg.width**0.5
        self.blocks = tuple(ResidualBlock(kind, cfg, key=k) for kind, k in zip(cfg.layer_kinds, bkeys))
        self.final_norm = RMSNorm(cfg.width, eps=cfg.norm_eps)
        self.lm_head = None if cfg.tie_embeddings else Linear(
            cfg.width, cfg.vocab_size, matmul_dtype=cfg.matmul_dtype, key=hkey)
        self.cfg = cfg

    def embed_tokens(self, tokens: Tokens) -> Hidden:
        if isinstance(self.embed, decode.Served):  # read from its codes (arch.decode.decodable)
            x = decode.rows(self.embed, tokens, self.final_norm.weight.dtype)
        else:
            x = self.embed[tokens]
        if self.cfg.embed_scale:
            scale = jnp.asarray(self.cfg.width**0.5, jnp.bfloat16 if self.cfg.embed_scale_bf16 else x.dtype)
            x = x * scale.astype(x.dtype)
        return x

    def logits(self, x: Hidden) -> Logits:
        """Final norm, the (tied) output projection and the final soft-cap."""
        x = self.final_norm(x)
        if self.lm_head is not None:
            out = self.lm_head(x)
        else:
            out = matmul(x, self.embed, self.cfg.matmul_dtype)
        cap = self.cfg.logit_softcap
        return out if cap is None else cap * jnp.tanh(out / cap)

    def served(self) -> "LM":
        """The model as ``cfg.weight_format`` serves it: its matrices (of ``cfg.quant_targets``)
        quantized and dequantized with a straight-through gradient (:func:`arch.quant.quantize_model`),
        or itself when the format is None. Every forward goes through it, so post-training quantization
        and quantization-aware training (Gemma 3 section 2.3) run the same arithmetic."""
        fmt = self.cfg.weight_format
        if fmt is None:
            return self
        if fmt == "bfloat16":
            return quant.cast(self, jnp.bfloat16)
        return quant.quantize_model(self, fmt, self.cfg.quant_targets, fake=True)

    def hidden(self, tokens: Tokens, *, segment_ids: Int[Array, " t"] | None = None) -> Hidden:
        """The residual stream after the last block (before the final norm)."""
        return self.served()._hidden(tokens, segment_ids)

    def _hidden(self, tokens: Tokens, segment_ids) -> Hidden:
        return self.blocks_forward(self.embed_tokens(tokens), segment_ids=segment_ids)

    def blocks_forward(self, x: Hidden, *, segment_ids: Int[Array, " t"] | None = None,
                       images: ImageLayout | None = None) -> Hidden:
        """Every block over embedded inputs ``[t, d]`` or ``[b, t, d]`` (positions ``0 .. t - 1``)."""
        positions = jnp.arange(x.shape[-2])
        for block in self.blocks:
            x = block(x, positions, segment_ids=segment_ids, images=images)
        return x

    def __call__(self, tokens: Tokens, *, segment_ids: Int[Array, " t"] | None = None) -> Logits:
        """Logits ``[t, vocab]`` for one sequence ``[t]``, or ``[b, t, vocab]`` for a batch ``[b, t]``.

        A batch runs every projection as one ``[b * t, d]`` matmul (what training wants); attention and
        the recurrence see one sequence at a time. ``jax.vmap`` over single sequences is equivalent."""
        model = self.served()
        return model.logits(model._hidden(tokens, segment_ids))

    def init_cache(self, max_len: int, *, dtype=jnp.float32) -> Cache:
        if not self.cfg.causal:
            raise ValueError("ModelConfig.causal=False: a bidirectional encoder cannot be decoded")
        layers = tuple(b.mixer.init_cache(max_len, dtype) for b in self.blocks)
        return Cache(layers=layers, pos=jnp.zeros((), jnp.int32))

    def step(self, tokens: Tokens, cache: Cache) -> tuple[Logits, Cache]:
        """Prefill a chunk (any length) or decode one token: logits for the chunk and the new cache."""
        if not self.cfg.causal:
            raise ValueError("ModelConfig.causal=False: a bidirectional encoder cannot be decoded")
        model = self.served()
        return model.blocks_step(model.embed_tokens(tokens), cache)

    def blocks_step(self, x: Hidden, cache: Cache, *, images: ImageLayout | None = None
                    ) -> tuple[Logits, Cache]:
        """:meth:`step` from embedded inputs ``[t, d]`` (of a served model: see :meth:`served`)."""
        positions = cache.pos + jnp.arange(x.shape[0], dtype=jnp.int32)
        new_layers = []
        for block, layer_cache in zip(self.blocks, cache.layers):
            x, layer_cache = block.step(x, positions, layer_cache, images=images)
            new_layers.append(layer_cache)
        return self.logits(x), Cache(layers=tuple(new_layers), pos=cache.pos + x.shape[0])
