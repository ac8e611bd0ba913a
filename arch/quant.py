"""Weight quantization for quantization-aware training and deployment (EmbeddingGemma Table 1).

Symmetric absmax integer quantization, ``q = clip(round(w / s), -qmax, qmax)`` with
``qmax = 2^(bits-1) - 1`` and ``s = max|w| / qmax`` over a group of weights:

- per-block: groups of ``block`` (32) consecutive weights along the last (input) axis;
- per-channel: one scale per row (an output channel, or one token's embedding row).

Schemes (Table 1): ``int8`` and ``int4`` per-block; ``mixed`` per-channel with int8 for attention
projections and int4 for everything else (embedding table, FFN, dense projection layers).
Only matrices are quantized; norm gains and the pooling query stay in float.

Quantization-aware training uses :func:`fake_quant`, the straight-through estimator (Bengio et al.
2013): the forward sees the dequantized weight, the gradient passes as if quantization were the
identity. Deployment uses :func:`quantize` / :func:`dequantize` (integer codes and scales); for any
weight ``fake_quant(w) == dequantize(*quantize(w))``.
"""

import dataclasses

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int8

SCHEMES = ("int8", "int4", "mixed")
BLOCK = 32
ATTENTION_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclasses.dataclass(frozen=True)
class QuantSpec:
    bits: int
    block: int | None  # None: per-channel (one scale per row)


def _groups(w: Float[Array, "... n"], block: int | None) -> tuple[Array, int]:
    """``w`` as ``[..., groups, size]`` (zero-padded to whole blocks) and the pad length."""
    if block is None:
        return w[..., None, :], 0
    pad = -w.shape[-1] % block
    wp = jnp.pad(w, [(0, 0)] * (w.ndim - 1) + [(0, pad)])
    return wp.reshape(*w.shape[:-1], -1, block), pad


def quantize(w: Float[Array, "... n"], spec: QuantSpec
             ) -> tuple[Int8[Array, "... g k"], Float[Array, "... g 1"]]:
    """Integer codes (int8 storage, also for 4 bits) and one f32 scale per group."""
    qmax = 2 ** (spec.bits - 1) - 1
    g, _ = _groups(w.astype(jnp.float32), spec.block)
    scale = jnp.max(jnp.abs(g), axis=-1, keepdims=True) / qmax
    scale = jnp.where(scale > 0, scale, 1.0)  # an all-zero group: any scale reproduces it
    codes = jnp.clip(jnp.round(g / scale), -qmax, qmax).astype(jnp.int8)
    return codes, scale


def dequantize(codes: Int8[Array, "... g k"], scale: Float[Array, "... g 1"], n: int, dtype=jnp.float32
               ) -> Float[Array, "... n"]:
    """Back to ``[..., n]`` floats (the padding of the last block dropped)."""
    w = (codes.astype(jnp.float32) * scale).reshape(*codes.shape[:-2], -1)
    return w[..., :n].astype(dtype)


def fake_quant(w: Float[Array, "... n"], spec: QuantSpec) -> Float[Array, "... n"]:
    """Quantize-dequantize in the forward; identity in the backward (straight-through estimator)."""
    wq = dequantize(*quantize(w, spec), w.shape[-1], w.dtype)
    return w + jax.lax.stop_gradient(wq - w)


def _names(path) -> list[str]:
    return [str(getattr(k, "name", getattr(k, "key", getattr(k, "idx", k)))) for k in path]


def spec_for(scheme: str, path_names: list[str]) -> QuantSpec:
    """The quantization of one matrix under ``scheme`` (Table 1), from its path in the module tree."""
    if scheme == "int8":
        return QuantSpec(8, BLOCK)
    if scheme == "int4":
        return QuantSpec(4, BLOCK)
    if scheme == "mixed":
        return QuantSpec(8 if any(n in ATTENTION_NAMES for n in path_names) else 4, None)
    raise ValueError(f"quantization scheme {scheme!r}: must be one of {SCHEMES}")


def _quantizable(x) -> bool:
    return isinstance(x, jax.Array | jax.ShapeDtypeStruct) and jnp.issubdtype(x.dtype, jnp.floating) \
        and x.ndim == 2


def fake_quantize_model(model, scheme: str | None):
    """Every matrix of ``model`` fake-quantized under ``scheme`` (``None``: unchanged). Use inside the
    loss for QAT; gradients reach the float weights through the straight-through estimator."""
    if scheme is None:
        return model
    return jax.tree_util.tree_map_with_path(
        lambda p, x: fake_quant(x, spec_for(scheme, _names(p))) if _quantizable(x) else x, model)


def deploy(model, scheme: str | None):
    """The model as deployed: each matrix stored as integer codes and scales, dequantized for the
    forward (no straight-through path; for evaluation)."""
    if scheme is None:
        return model

    def one(p, x):
        if not _quantizable(x):
            return x
        return dequantize(*quantize(x, spec_for(scheme, _names(p))), x.shape[-1], x.dtype)

    return jax.tree_util.tree_map_with_path(one, model)


def cast(model, dtype):
    """Every floating array of ``model`` rounded to ``dtype`` and back to its own dtype (e.g. bf16
    weights served in an f32 graph)."""
    return jax.tree_util.tree_map(
        lambda x: x.astype(dtype).astype(x.dtype) if isinstance(x, jax.Array)
        and jnp.issubdtype(x.dtype, jnp.floating) else x, model)


def bits_per_weight(model, scheme: str | None, *, float_bits: int = 32) -> float:
    """Average storage bits per parameter: codes plus one 16-bit scale per group for quantized
    matrices, ``float_bits`` for everything else."""
    total, bits = 0, 0.0
    for p, x in jax.tree_util.tree_flatten_with_path(model)[0]:
        if not isinstance(x, jax.Array) or not jnp.issubdtype(x.dtype, jnp.floating):
            continue
        n = x.size
        total += n
        if scheme is None or x.ndim != 2:
            bits += n * float_bits
            continue
        spec = spec_for(scheme, _names(p))
        groups = x.shape[0] * (1 if spec.block is None else -(-x.shape[1] // spec.block))
        bits += n * spec.bits + groups * 16
    return bits / max(total, 1)
