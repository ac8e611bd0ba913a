"""``EmbeddingModel``: a trunk, a pooler, bias-free dense projections, L2 normalisation, Matryoshka.

EmbeddingGemma (report section 2.1): a bidirectional Gemma 3 trunk, mean pooling over tokens, then
g: d -> 3072 and f: 3072 -> d without bias or activation, then L2 normalisation. This is the
sentence-transformers pipeline ``Transformer -> Pooling(mean) -> Dense -> Dense -> Normalize``.

Beyond the published model (for the report's ablations):

- ``pooling``: ``mean`` (mask-aware; the published choice), ``first``, ``last`` (the last non-padding
  token) or ``attention`` (Table 3: a learned 1 x d query, 4 heads, ``softmax(Q K^T / sqrt(d)) V``
  with K = V = the token states, no projections: the formula as printed);
- Matryoshka representation learning (section 2.2): :meth:`EmbeddingModel.embed` with ``dim`` keeps
  a prefix of the embedding and re-normalises it (768/512/256/128 in the report; any prefix here);
- task prompts (section 2.2): :func:`format_query` and :func:`format_document`;
- :func:`from_lm`: a decoder's weights as the trunk, switched to bidirectional attention (the
  "decoder-only" initialisation of Table 2).

Padding convention: padding goes at the END (right padding) and ``mask`` marks real tokens; padded
keys get another segment id so real tokens never attend to them, and positions of real tokens do not
move, so padding changes nothing for any pooling.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Bool, Float, PRNGKeyArray

from arch.config import ModelConfig
from arch.linear import Linear
from arch.model import LM
from arch.reconfigure import reconfigure
from arch.typing import Tokens

POOLINGS = ("mean", "first", "last", "attention")
ATTENTION_POOL_HEADS = 4  # Table 3


def format_query(text: str, task: str = "search result") -> str:
    """Report section 2.2: ``"task: search result | query: {text}"``."""
    return f"task: {task} | query: {text}"


def format_document(text: str, title: str | None = None) -> str:
    """Report section 2.2: ``"title: {title or 'none'} | text: {text}"``."""
    return f"title: {title or 'none'} | text: {text}"


def truncate(x: Float[Array, "... e"], dim: int | None = None) -> Float[Array, "... e"]:
    """The Matryoshka prefix ``x[..., :dim]`` re-normalised to unit length (``dim=None``: all)."""
    x = x if dim is None else x[..., :dim]
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


class AttentionPool(eqx.Module):
    """Table 3's attention pooler: one learned query per model, ``heads`` heads over d / heads dims."""

    query: Float[Array, " d"]
    heads: int = eqx.field(static=True)

    def __init__(self, width: int, *, key: PRNGKeyArray, heads: int = ATTENTION_POOL_HEADS):
        if width % heads:
            raise ValueError(f"attention pooling: width={width} must be a multiple of heads={heads}")
        self.query = jr.normal(key, (width,)) / width**0.5
        self.heads = heads

    def __call__(self, h: Float[Array, "*b t d"], mask: Bool[Array, "*b t"]) -> Float[Array, "*b d"]:
        *lead, t, d = h.shape
        hh = h.reshape(*lead, t, self.heads, d // self.heads)
        q = self.query.astype(h.dtype).reshape(self.heads, d // self.heads)
        # sqrt(d_M) as printed
        logits = jnp.einsum("hk,...thk->...ht", q, hh) / jnp.sqrt(jnp.asarray(d, h.dtype))
        logits = jnp.where(mask[..., None, :], logits, -jnp.inf)
        return jnp.einsum("...ht,...thk->...hk", jax.nn.softmax(logits, axis=-1), hh).reshape(*lead, d)


class EmbeddingModel(eqx.Module):
    trunk: LM
    dense: tuple[Linear, ...]
    attention_pool: AttentionPool | None
    pooling: str = eqx.field(static=True)
    normalize: bool = eqx.field(static=True)

    def __init__(self, cfg: ModelConfig, *, key: PRNGKeyArray, dense_dims: tuple[int, ...] = (),
                 pooling: str = "mean", normalize: bool = True):
        """``dense_dims``: output widths of the projections in order (EmbeddingGemma: ``(3072, 768)``)."""
        if pooling not in POOLINGS:
            raise ValueError(f"EmbeddingModel pooling={pooling!r}: must be one of {POOLINGS}")
        tkey, pkey, *dkeys = jr.split(key, len(dense_dims) + 2)
        self.trunk = LM(cfg, key=tkey)
        dims = (cfg.width, *dense_dims)
        self.dense = tuple(Linear(i, o, matmul_dtype=cfg.matmul_dtype, key=k)
                           for i, o, k in zip(dims[:-1], dims[1:], dkeys))
        # None for the other poolings keeps the parameter tree (and the HF layout) unchanged.
        self.attention_pool = AttentionPool(cfg.width, key=pkey) if pooling == "attention" else None
        self.pooling, self.normalize = pooling, normalize

    @property
    def cfg(self) -> ModelConfig:
        return self.trunk.cfg

    @property
    def dim(self) -> int:
        """Width of the output embedding."""
        return self.dense[-1].weight.shape[0] if self.dense else self.cfg.width

    def token_embeddings(self, tokens: Tokens, mask: Bool[Array, "*b t"] | None = None
                         ) -> Float[Array, "*b t d"]:
        """The trunk's final-normed hidden states (HF ``last_hidden_state``); padding keys are hidden
        from real tokens by giving them another segment id. ``tokens`` is one sequence ``[t]`` or a
        batch ``[b, t]`` (every projection then runs as one ``[b * t, d]`` matmul)."""
        segments = None if mask is None else mask.astype(jnp.int32)
        return self.trunk.final_norm(self.trunk.hidden(tokens, segment_ids=segments))

    def pool(self, h: Float[Array, "*b t d"], mask: Bool[Array, "*b t"] | None = None
             ) -> Float[Array, "*b d"]:
        """One vector per sequence from the token states under ``self.pooling`` (report Table 3);
        any leading batch axes."""
        t = h.shape[-2]
        m = jnp.ones(h.shape[:-1], bool) if mask is None else mask.astype(bool)
        idx = jnp.arange(t)
        if self.pooling == "mean":
            w = m.astype(h.dtype)
            # sentence-transformers' mean: sum(h * mask) / clamp(sum(mask), 1e-9)
            return (h * w[..., None]).sum(-2) / jnp.maximum(w.sum(-1, keepdims=True), 1e-9)
        if self.pooling in ("first", "last"):
            pick = jnp.min(jnp.where(m, idx, t - 1), axis=-1) if self.pooling == "first" \
                else jnp.max(jnp.where(m, idx, 0), axis=-1)
            return jnp.take_along_axis(h, pick[..., None, None], axis=-2)[..., 0, :]
        return self.attention_pool(h, m)

    def __call__(self, tokens: Tokens, mask: Bool[Array, "*b t"] | None = None) -> Float[Array, "*b e"]:
        """The embedding of one sequence ``[t]`` or of a batch ``[b, t]`` (the whole batch in one
        trunk call: what training wants; ``jax.vmap`` over sequences gives the same values but, under
        a gradient, per-example weight gradients). ``mask`` marks real tokens (True) versus padding."""
        x = self.pool(self.token_embeddings(tokens, mask), mask)
        for layer in self.dense:
            x = layer(x)
        if self.normalize:  # torch.nn.functional.normalize: x / max(||x||, 1e-12)
            x = x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
        return x

    def embed(self, tokens: Tokens, mask: Bool[Array, "*b t"] | None = None, dim: int | None = None
              ) -> Float[Array, "*b e"]:
        """The embedding, or its Matryoshka prefix of ``dim`` entries re-normalised (section 2.2)."""
        if dim is not None and not 1 <= dim <= self.dim:
            raise ValueError(f"EmbeddingModel.embed dim={dim}: must be in [1, {self.dim}]")
        return truncate(self(tokens, mask), dim)


def from_lm(lm: LM, *, key: PRNGKeyArray, dense_dims: tuple[int, ...] = (), pooling: str = "mean",
            normalize: bool = True) -> EmbeddingModel:
    """An ``EmbeddingModel`` whose trunk is ``lm``'s weights with bidirectional attention (Table 2,
    "decoder-only" initialisation); the pooler and projections are fresh (``key``)."""

    trunk = reconfigure(lm, causal=False) if lm.cfg.causal else lm
    # A one-layer trunk supplies the fresh head (the key split does not depend on the depth); the
    # trunk, and with it the config (a static field of the trunk), is then swapped for the decoder's.
    head = EmbeddingModel(trunk.cfg.replace(num_layers=1), key=key, dense_dims=dense_dims,
                          pooling=pooling, normalize=normalize)
    return eqx.tree_at(lambda m: m.trunk, head, trunk)
