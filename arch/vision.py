"""Gemma 3's image path: a SigLIP vision encoder and the projector that turns its patches into soft tokens.

Gemma 3 report section 2.1: a 400M-parameter SigLIP encoder (frozen, shared by 4B/12B/27B) reads a
896 x 896 image as 64 x 64 patches of 14 pixels; its output is average-pooled 4 x 4 into 256 soft tokens,
which an RMS norm and a linear map carry into the language model's width. The encoder is a ViT: patch
embedding, learned position embedding, pre-norm blocks (LayerNorm, bidirectional multi-head attention,
LayerNorm, GELU MLP) and a final LayerNorm (SigLIP, Zhai et al. 2023; HF ``SiglipVisionModel`` with no
pooling head). The projector is HF ``Gemma3MultiModalProjector``.

Images are ``[channels, height, width]`` (channels first, as HF ``pixel_values``), already resized and
normalised; a batch is a ``jax.vmap``. Field names follow the HF modules so checkpoints map name by name.
"""

from __future__ import annotations

import dataclasses
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

import gemma_kernels
from arch.config import ACTIVATIONS
from arch.linear import Linear, activation
from arch.norms import RMSNorm
from arch.params import _size


@dataclasses.dataclass(frozen=True, kw_only=True)
class VisionConfig:
    """The encoder's shape; the defaults are Gemma 3's (HF ``vision_config``: SigLIP so400m at 896)."""

    image_size: int = 896
    patch_size: int = 14
    channels: int = 3
    width: int = 1152
    num_layers: int = 27
    num_heads: int = 16
    mlp_width: int = 4304
    norm_eps: float = 1e-6
    mlp_activation: str = "gelu_tanh"
    pool: int = 4  # patches per side averaged into one soft token (64 / 4 = 16 per side: 256 tokens)
    matmul_dtype: str = "float32"

    def __post_init__(self):
        def fail(field, allowed):
            raise ValueError(f"VisionConfig.{field}={getattr(self, field)!r}: {allowed}")

        for field in ("image_size", "patch_size", "channels", "width", "num_layers", "num_heads",
                      "mlp_width", "pool"):
            value = getattr(self, field)
            if not isinstance(value, int) or value < 1:
                fail(field, "must be a positive int")
        if self.image_size % self.patch_size:
            fail("image_size", f"must be a multiple of patch_size={self.patch_size}")
        if self.width % self.num_heads:
            fail("width", f"must be a multiple of num_heads={self.num_heads}")
        if self.patches_per_side % self.pool:
            fail("pool", f"must divide the {self.patches_per_side} patches per side "
                         f"(image_size / patch_size)")
        if self.mlp_activation not in ACTIVATIONS:
            fail("mlp_activation", f"must be one of {ACTIVATIONS}")
        if not self.norm_eps > 0:
            fail("norm_eps", "must be > 0")

    @property
    def patches_per_side(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.patches_per_side**2

    @property
    def tokens_per_side(self) -> int:
        return self.patches_per_side // self.pool

    @property
    def soft_tokens(self) -> int:
        """Soft tokens per image (HF ``mm_tokens_per_image``)."""
        return self.tokens_per_side**2

    def replace(self, **changes) -> VisionConfig:
        return dataclasses.replace(self, **changes)


class LayerNorm(eqx.Module):
    """``(x - mean) / sqrt(var + eps) * weight + bias``, in float32 (SigLIP's norm, not Gemma's RMS)."""

    weight: Float[Array, " d"]
    bias: Float[Array, " d"]
    eps: float = eqx.field(static=True)

    def __init__(self, dim: int, *, eps: float):
        self.weight, self.bias, self.eps = jnp.ones((dim,)), jnp.zeros((dim,)), eps

    def __call__(self, x: Float[Array, "... d"]) -> Float[Array, "... d"]:
        x32 = x.astype(jnp.float32)
        mean = jnp.mean(x32, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + self.eps)
        return (y * self.weight.astype(jnp.float32) + self.bias.astype(jnp.float32)).astype(x.dtype)


class PatchEmbedding(eqx.Module):
    """A stride-``patch`` convolution, as a matmul over flattened patches; ``weight`` keeps the HF
    ``Conv2d`` layout ``[width, channels, patch, patch]``."""

    weight: Float[Array, "d c p p"]
    bias: Float[Array, " d"]

    def __init__(self, cfg: VisionConfig, *, key: PRNGKeyArray):
        fan_in = cfg.channels * cfg.patch_size**2
        shape = (cfg.width, cfg.channels, cfg.patch_size, cfg.patch_size)
        self.weight = jr.normal(key, shape) / fan_in**0.5
        self.bias = jnp.zeros((cfg.width,))

    def __call__(self, image: Float[Array, "c h w"]) -> Float[Array, "n d"]:
        d, c, p, _ = self.weight.shape
        rows, cols = image.shape[1] // p, image.shape[2] // p
        # [c, rows, p, cols, p] -> [rows, cols, c, p, p]: patches in row-major order, as the conv emits
        patches = image.reshape(c, rows, p, cols, p).transpose(1, 3, 0, 2, 4).reshape(rows * cols, c * p * p)
        return patches @ self.weight.reshape(d, -1).T.astype(patches.dtype) + self.bias.astype(patches.dtype)


class VisionAttention(eqx.Module):
    """Bidirectional multi-head attention over the patches, with biases (``gemma_kernels.attention``)."""

    q_proj: Linear
    k_proj: Linear
    v_proj: Linear
    out_proj: Linear
    num_heads: int = eqx.field(static=True)

    def __init__(self, cfg: VisionConfig, *, key: PRNGKeyArray):
        keys = jr.split(key, 4)
        lin = lambda k: Linear(cfg.width, cfg.width, bias=True, matmul_dtype=cfg.matmul_dtype, key=k)
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (lin(k) for k in keys)
        self.num_heads = cfg.num_heads

    def __call__(self, x: Float[Array, "n d"]) -> Float[Array, "n d"]:
        n, d = x.shape
        q, k, v = (proj(x).reshape(n, self.num_heads, d // self.num_heads)
                   for proj in (self.q_proj, self.k_proj, self.v_proj))
        out = gemma_kernels.attention(q, k, v, causal=False, impl="xla")  # scale: head_dim ** -0.5
        return self.out_proj(out.reshape(n, d))


class VisionMLP(eqx.Module):
    fc1: Linear
    fc2: Linear
    activation: str = eqx.field(static=True)

    def __init__(self, cfg: VisionConfig, *, key: PRNGKeyArray):
        k1, k2 = jr.split(key)
        self.fc1 = Linear(cfg.width, cfg.mlp_width, bias=True, matmul_dtype=cfg.matmul_dtype, key=k1)
        self.fc2 = Linear(cfg.mlp_width, cfg.width, bias=True, matmul_dtype=cfg.matmul_dtype, key=k2)
        self.activation = cfg.mlp_activation

    def __call__(self, x):
        return self.fc2(activation(self.activation)(self.fc1(x)))


class VisionBlock(eqx.Module):
    """``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    layer_norm1: LayerNorm
    self_attn: VisionAttention
    layer_norm2: LayerNorm
    mlp: VisionMLP

    def __init__(self, cfg: VisionConfig, *, key: PRNGKeyArray):
        akey, mkey = jr.split(key)
        self.layer_norm1 = LayerNorm(cfg.width, eps=cfg.norm_eps)
        self.self_attn = VisionAttention(cfg, key=akey)
        self.layer_norm2 = LayerNorm(cfg.width, eps=cfg.norm_eps)
        self.mlp = VisionMLP(cfg, key=mkey)

    def __call__(self, x):
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class VisionEncoder(eqx.Module):
    """SigLIP ViT: one image ``[c, h, w]`` -> patch features ``[num_patches, width]``."""

    patch_embedding: PatchEmbedding
    position_embedding: Float[Array, "n d"]
    layers: tuple[VisionBlock, ...]
    post_layernorm: LayerNorm
    cfg: VisionConfig = eqx.field(static=True)

    def __init__(self, cfg: VisionConfig, *, key: PRNGKeyArray):
        pkey, qkey, *lkeys = jr.split(key, cfg.num_layers + 2)
        self.patch_embedding = PatchEmbedding(cfg, key=pkey)
        self.position_embedding = jr.normal(qkey, (cfg.num_patches, cfg.width)) * 0.02
        self.layers = tuple(VisionBlock(cfg, key=k) for k in lkeys)
        self.post_layernorm = LayerNorm(cfg.width, eps=cfg.norm_eps)
        self.cfg = cfg

    def __call__(self, image: Float[Array, "c h w"]) -> Float[Array, "n d"]:
        want = (self.cfg.channels, self.cfg.image_size, self.cfg.image_size)
        if image.shape != want:
            raise ValueError(f"image of shape {image.shape}: the encoder takes {want} (channels first; "
                             f"resize, or crop with pan & scan, first)")
        x = self.patch_embedding(image) + self.position_embedding.astype(image.dtype)
        for layer in self.layers:
            x = layer(x)
        return self.post_layernorm(x)


def pool_patches(x: Float[Array, "n d"], pool: int) -> Float[Array, "m d"]:
    """Average each ``pool x pool`` square of the (row-major, square) patch grid into one token,
    tokens in row-major order (HF ``AvgPool2d(pool, stride=pool)`` on the ``[d, side, side]`` grid)."""
    side, d = math.isqrt(x.shape[0]), x.shape[1]
    grid = x.reshape(side // pool, pool, side // pool, pool, d)
    return grid.mean(axis=(1, 3), dtype=jnp.float32).astype(x.dtype).reshape(-1, d)


class SoftTokenProjector(eqx.Module):
    """Patches -> soft tokens: :func:`pool_patches`, RMS norm (Gemma's ``1 + w``), linear map into the
    language model's width (HF ``mm_soft_emb_norm`` and ``mm_input_projection_weight``, stored here
    transposed, ``[text, vision]``, as every Linear is)."""

    mm_soft_emb_norm: RMSNorm
    mm_input_projection: Linear
    pool: int = eqx.field(static=True)

    def __init__(self, cfg: VisionConfig, text_width: int, *, key: PRNGKeyArray):
        self.mm_soft_emb_norm = RMSNorm(cfg.width, eps=cfg.norm_eps)
        self.mm_input_projection = Linear(cfg.width, text_width, matmul_dtype=cfg.matmul_dtype, key=key)
        self.pool = cfg.pool

    def __call__(self, patches: Float[Array, "n d"]) -> Float[Array, "m e"]:
        return self.mm_input_projection(self.mm_soft_emb_norm(pool_patches(patches, self.pool)))


class VisionTower(eqx.Module):
    """An image ``[c, h, w]`` -> its ``cfg.soft_tokens`` soft tokens in the language model's width."""

    vision_model: VisionEncoder
    projector: SoftTokenProjector

    def __init__(self, cfg: VisionConfig, text_width: int, *, key: PRNGKeyArray):
        ekey, pkey = jr.split(key)
        self.vision_model = VisionEncoder(cfg, key=ekey)
        self.projector = SoftTokenProjector(cfg, text_width, key=pkey)

    @property
    def cfg(self) -> VisionConfig:
        return self.vision_model.cfg

    def __call__(self, image: Float[Array, "c h w"]) -> Float[Array, "m e"]:
        return self.projector(self.vision_model(image))


def count_vision_params(cfg: VisionConfig, text_width: int) -> dict[str, int]:
    """``{"encoder", "projector", "total"}`` from the module tree (built abstractly). The encoder is what
    Gemma 3 Table 1 counts as its vision encoder (417M at the published shape)."""
    # the key is made inside the traced function: a concrete one would start JAX's backend, here at import
    tower = eqx.filter_eval_shape(lambda: VisionTower(cfg, text_width, key=jr.key(0)))
    encoder, projector = _size(tower.vision_model), _size(tower.projector)
    return {"encoder": encoder, "projector": projector, "total": encoder + projector}
