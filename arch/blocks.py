"""Residual blocks and the one dispatch point from a pattern letter to a mixer.

Gemma 2/3 (``post_norms=True``): ``x + post(mixer(pre(x)))`` then ``x + post(mlp(pre(x)))``
(Gemma 2 section 2, "Post-norm and pre-norm"). Griffin (``post_norms=False``): pre-norms only
(Griffin section 2.1).
"""

import equinox as eqx
import jax.random as jr
from jaxtyping import Array, Int, PRNGKeyArray

from arch.attention import Attention
from arch.config import ModelConfig
from arch.mixer import AbstractMixer, ImageLayout
from arch.mlp import GatedMLP
from arch.norms import RMSNorm
from arch.rglru import RecurrentMixer
from arch.typing import Hidden, Positions


def make_mixer(kind: str, cfg: ModelConfig, *, key: PRNGKeyArray) -> AbstractMixer:
    match kind:
        case "G" | "L":
            return Attention(cfg, window=cfg.attention_window(kind), key=key)
        case "R":
            return RecurrentMixer(cfg, key=key)
    raise ValueError(f"unknown block kind {kind!r}; allowed: G, L, R")


class ResidualBlock(eqx.Module):
    pre_mixer_norm: RMSNorm
    mixer: AbstractMixer
    post_mixer_norm: RMSNorm | None
    pre_mlp_norm: RMSNorm
    mlp: GatedMLP
    post_mlp_norm: RMSNorm | None

    def __init__(self, kind: str, cfg: ModelConfig, *, key: PRNGKeyArray):
        mkey, fkey = jr.split(key)
        norm = lambda: RMSNorm(cfg.width, eps=cfg.norm_eps)
        self.pre_mixer_norm = norm()
        self.mixer = make_mixer(kind, cfg, key=mkey)
        self.post_mixer_norm = norm() if cfg.post_norms else None
        self.pre_mlp_norm = norm()
        self.mlp = GatedMLP(cfg, key=fkey)
        self.post_mlp_norm = norm() if cfg.post_norms else None

    def _mlp(self, x: Hidden) -> Hidden:
        y = self.mlp(self.pre_mlp_norm(x))
        return x + (y if self.post_mlp_norm is None else self.post_mlp_norm(y))

    def _residual(self, x: Hidden, y: Hidden) -> Hidden:
        return x + (y if self.post_mixer_norm is None else self.post_mixer_norm(y))

    def __call__(self, x: Hidden, positions: Positions, *, segment_ids: Int[Array, " t"] | None = None,
                 images: ImageLayout | None = None) -> Hidden:
        y = self.mixer(self.pre_mixer_norm(x), positions, segment_ids=segment_ids, images=images)
        return self._mlp(self._residual(x, y))

    def step(self, x: Hidden, positions: Positions, cache: eqx.Module, *, images: ImageLayout | None = None
             ) -> tuple[Hidden, eqx.Module]:
        y, cache = self.mixer.step(self.pre_mixer_norm(x), positions, cache, images=images)
        return self._mlp(self._residual(x, y)), cache
