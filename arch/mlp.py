"""Gated MLP: ``down(act(gate(x)) * up(x))``, GeGLU with tanh GELU in Gemma (Gemma 2 section 2),
with biases in RecurrentGemma (Griffin section 2.2, expansion factor 3)."""

import equinox as eqx
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from arch.config import ModelConfig
from arch.linear import Linear, activation


class GatedMLP(eqx.Module):
    gate_proj: Linear
    up_proj: Linear
    down_proj: Linear
    activation: str = eqx.field(static=True)

    def __init__(self, cfg: ModelConfig, *, key: PRNGKeyArray):
        gk, uk, dk = jr.split(key, 3)
        kw = dict(bias=cfg.mlp_bias, matmul_dtype=cfg.matmul_dtype)
        self.gate_proj = Linear(cfg.width, cfg.mlp_width, key=gk, **kw)
        self.up_proj = Linear(cfg.width, cfg.mlp_width, key=uk, **kw)
        self.down_proj = Linear(cfg.mlp_width, cfg.width, key=dk, **kw)
        self.activation = cfg.mlp_activation

    def __call__(self, x: Float[Array, "t d"]) -> Float[Array, "t d"]:
        return self.down_proj(activation(self.activation)(self.gate_proj(x)) * self.up_proj(x))
