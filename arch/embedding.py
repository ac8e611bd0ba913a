"""``EmbeddingModel``: a trunk, mask-aware pooling, bias-free dense projections and L2 normalisation.

EmbeddingGemma (report section 2.1): a bidirectional Gemma 3 trunk, mean pooling over tokens, then
g: d -> 3072 and f: 3072 -> d without bias or activation, then L2 normalisation. This is the
sentence-transformers pipeline ``Transformer -> Pooling(mean) -> Dense -> Dense -> Normalize``.
``pooling`` is a field so other poolings (and Matryoshka truncation, report section 2.2) can be added
beside ``"mean"`` without touching the weights.
"""

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Bool, Float, PRNGKeyArray

from arch.config import ModelConfig
from arch.linear import Linear
from arch.model import LM
from arch.typing import Tokens

POOLINGS = ("mean",)


class EmbeddingModel(eqx.Module):
    trunk: LM
    dense: tuple[Linear, ...]
    pooling: str = eqx.field(static=True)
    normalize: bool = eqx.field(static=True)

    def __init__(self, cfg: ModelConfig, *, key: PRNGKeyArray, dense_dims: tuple[int, ...] = (),
                 pooling: str = "mean", normalize: bool = True):
        """``dense_dims``: output widths of the projections in order (EmbeddingGemma: ``(3072, 768)``)."""
        if pooling not in POOLINGS:
            raise ValueError(f"EmbeddingModel pooling={pooling!r}: must be one of {POOLINGS}")
        tkey, *dkeys = jr.split(key, len(dense_dims) + 1)
        self.trunk = LM(cfg, key=tkey)
        dims = (cfg.width, *dense_dims)
        self.dense = tuple(Linear(i, o, matmul_dtype=cfg.matmul_dtype, key=k)
                           for i, o, k in zip(dims[:-1], dims[1:], dkeys))
        self.pooling, self.normalize = pooling, normalize

    @property
    def cfg(self) -> ModelConfig:
        return self.trunk.cfg

    def token_embeddings(self, tokens: Tokens, mask: Bool[Array, " t"] | None = None) -> Float[Array, "t d"]:
        """The trunk's final-normed hidden states (HF ``last_hidden_state``); padding keys are hidden
        from real tokens by giving them another segment id."""
        segments = None if mask is None else mask.astype(jnp.int32)
        return self.trunk.final_norm(self.trunk.hidden(tokens, segment_ids=segments))

    def __call__(self, tokens: Tokens, mask: Bool[Array, " t"] | None = None) -> Float[Array, " e"]:
        """One sequence's embedding; ``mask`` marks real tokens (True) versus padding."""
        h = self.token_embeddings(tokens, mask)
        w = jnp.ones(h.shape[:1], h.dtype) if mask is None else mask.astype(h.dtype)
        # sentence-transformers' mean: sum(h * mask) / clamp(sum(mask), 1e-9)
        x = (h * w[:, None]).sum(0) / jnp.maximum(w.sum(), 1e-9)
        for layer in self.dense:
            x = layer(x)
        if self.normalize:  # torch.nn.functional.normalize: x / max(||x||, 1e-12)
            x = x / jnp.maximum(jnp.linalg.norm(x), 1e-12)
        return x
