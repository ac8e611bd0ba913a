"""Weight formats: fake quantization for training, packed storage for serving and byte counts.

Language models (Gemma 3 section 2.3: quantization-aware training into per-channel int4, per-block
int4 and switched fp8, the formats of Table 3) use ``FORMATS``:

- ``int8`` / ``int4``: symmetric absmax integers, ``q = clip(round(w / s), -qmax, qmax)`` with
  ``qmax = 2^(bits-1) - 1`` and ``s = max|w| / qmax``, one scale per output channel;
- ``int4_block32`` (any ``int<4|8>_block<N>``): one scale per ``N`` consecutive weights along the input
  axis: the tensor with its input axis moved last, flattened, cut in blocks (the last zero-padded), so a
  block straddles rows only when a row's length is not a multiple of ``N``;
- ``sfp8``: switched floating point 8 of gemma.cpp (:mod:`arch.sfp8`), one byte per weight.

Which tensors: floating tensors with ``ndim >= 2`` that are not biases (:func:`is_matrix`; norm gains,
biases, including the RG-LRU's ``[n, b]`` gate biases, and RG-LRU Lambda stay float), in the groups
``TARGETS`` picked by :func:`group_of` from the path in the module tree. The input axis of a tensor,
over which a per-channel scale reduces, is :func:`input_axis`.

Scales are stored in bfloat16, rounded up so that no code clips and every weight lies within half a
step of its value. Fake quantization uses the stored scale: ``fake_quant(w)``'s forward is exactly
``unpack(pack(w))``, and :func:`stored_bytes` is exactly :func:`packed_bytes` of :func:`pack`, which
:mod:`arch.memory` counts for whole models.

Quantization-aware training uses :func:`fake_quant` / :func:`quantize_model`, the straight-through
estimator (Bengio et al. 2013): the forward sees the dequantized weight, the gradient passes as if
quantization were the identity.

EmbeddingGemma's schemes (Table 1) keep their own specs (:class:`QuantSpec`, :func:`spec_for`): ``int8``
and ``int4`` per-block-32 and ``mixed`` (per-channel int8 for attention projections, int4 elsewhere),
groups along the last axis of each row with float32 scales, so the embedding sweep's numbers stay as
they were; they share the tree walk and the straight-through estimator with the formats above.

The arithmetic is written here rather than taken from qwix, which would pull in flax and a pinned jax.
"""

import dataclasses
import functools
import math
import re

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int8, UInt8

import arch.sfp8 as sfp8

FORMATS = ("int8", "int4", "int4_block32", "sfp8")
TARGETS = ("embedding", "attention", "mlp", "recurrence")
SCALE_DTYPE = jnp.bfloat16
EMBEDDING_NAMES = ("embed", "lm_head")  # the table (also the tied head) and an untied head
ATTENTION_PARTS = ("q_proj", "k_proj", "v_proj", "o_proj", "q_norm", "k_norm")
RECURRENCE_PARTS = ("linear_x", "linear_y", "linear_out", "conv_weight", "conv_bias", "rg_lru")


@dataclasses.dataclass(frozen=True)
class Format:
    bits: int
    block: int | None = None  # integers: weights per scale; None: one scale per output channel
    kind: str = "int"  # "int" or "sfp"

    @property
    def name(self) -> str:
        if self.kind == "sfp":
            return "sfp8"
        return f"int{self.bits}" + ("" if self.block is None else f"_block{self.block}")


def parse_format(fmt: "str | Format") -> Format:
    """``"int8"``, ``"int4"``, ``"int4_block32"`` (any ``int<4|8>_block<N>``) or ``"sfp8"``."""
    if isinstance(fmt, Format):
        return fmt
    if fmt == "sfp8":
        return Format(8, None, "sfp")
    match = re.fullmatch(r"int([48])(?:_block([1-9][0-9]*))?", str(fmt))
    if match is None:
        raise ValueError(f"weight format {fmt!r}: must be one of {FORMATS} or int<4|8>_block<N>")
    return Format(int(match[1]), None if match[2] is None else int(match[2]))


def group_of(path_names) -> str | None:
    """The target group (``TARGETS``) of a tensor from the names on its path, e.g.
    ``["blocks", "2", "mixer", "q_proj", "weight"]`` -> ``"attention"``; None outside every group
    (final norm, block norms, an embedding model's dense layers and pooler)."""
    names = [str(n) for n in path_names]
    if any(n in EMBEDDING_NAMES for n in names):
        return "embedding"
    if any(n in ATTENTION_PARTS for n in names):
        return "attention"
    if any(n in RECURRENCE_PARTS for n in names):
        return "recurrence"
    return "mlp" if "mlp" in names else None


def input_axis(name: str) -> int:
    """The axis a tensor named ``name`` sums its inputs over as the model uses it."""
    if name == "conv_weight":  # [w, r] depthwise: channel r sums its w taps
        return 0
    if name.endswith("gate_weight"):  # RG-LRU [n, b_in, b_out] block-diagonal
        return -2
    return -1  # Linear [out, in]; the embedding [v, d], whose v rows are the tied head's outputs


def is_matrix(name: str, shape: tuple[int, ...]) -> bool:
    """Is a floating tensor quantized in the weight formats (the rest is kept in bf16)?"""
    return len(shape) >= 2 and not name.endswith("bias")


def stored_bytes(shape: tuple[int, ...], fmt: "str | Format", *, axis: int = -1,
                 scale_bytes: int = 2) -> int:
    """Bytes of one matrix in ``fmt``: its codes (int4 two per byte) plus ``scale_bytes`` per scale."""
    f, size = parse_format(fmt), math.prod(shape)
    if f.kind == "sfp":
        return size  # the per-tensor scale lives in the header (arch.sfp8)
    groups = math.ceil(size / f.block) if f.block else size // shape[axis]
    return math.ceil(size * f.bits / 8) + scale_bytes * groups


def _ceil_bf16(x: Float[Array, "..."]) -> Float[Array, "..."]:
    """The smallest bfloat16 >= x, for finite x >= 0 (bf16 is float32 with the low 16 bits zero)."""
    bits = jax.lax.bitcast_convert_type(x.astype(jnp.float32), jnp.uint32)
    up = (bits + jnp.uint32(0xFFFF)) & jnp.uint32(0xFFFF0000)
    return jax.lax.bitcast_convert_type(up, jnp.float32)


def _absmax(g: Float[Array, "... k"], bits: int, *, bf16_scale: bool):
    """Codes and one scale per group (the last axis) of ``g``; an all-zero group gets scale 1."""
    qmax = 2 ** (bits - 1) - 1
    scale = jnp.max(jnp.abs(g), axis=-1, keepdims=True) / qmax
    if bf16_scale:
        scale = _ceil_bf16(scale)
    scale = jnp.where(scale > 0, scale, 1.0)
    return jnp.clip(jnp.round(g / scale), -qmax, qmax).astype(jnp.int8), scale


def _to_groups(w: Float[Array, "..."], size: int, axis: int) -> Float[Array, "g k"]:
    """``w`` with its input axis last, flattened and cut into groups of ``size``."""
    flat = jnp.moveaxis(w.astype(jnp.float32), axis, -1).reshape(-1)
    return jnp.pad(flat, (0, -flat.size % size)).reshape(-1, size)


def _from_groups(g: Float[Array, "g k"], shape: tuple[int, ...], axis: int) -> Float[Array, "..."]:
    moved = tuple(np.delete(shape, axis)) + (shape[axis],)
    return jnp.moveaxis(g.reshape(-1)[: math.prod(shape)].reshape(moved), -1, axis)


def _nbytes(x) -> int:
    return math.prod(x.shape) * jnp.dtype(x.dtype).itemsize


def pack_int4(codes: Int8[Array, " n"]) -> UInt8[Array, " m"]:
    """Two 4-bit two's-complement codes per byte, the first in the low nibble; odd ``n`` pads a zero."""
    u = codes.astype(jnp.int32) & 0xF
    u = jnp.pad(u, (0, u.size % 2)).reshape(-1, 2)
    return (u[:, 0] | (u[:, 1] << 4)).astype(jnp.uint8)


def unpack_int4(packed: UInt8[Array, " m"], n: int) -> Int8[Array, " n"]:
    b = packed.astype(jnp.int32)
    nibbles = jnp.stack([b & 0xF, b >> 4], axis=-1).reshape(-1)[:n]
    return (nibbles - ((nibbles & 8) << 1)).astype(jnp.int8)  # sign-extend bit 3


class Packed(eqx.Module):
    """One matrix as stored: ``codes`` (int8: int8, one per weight; int4: uint8, two per byte; sfp8:
    uint8, one per weight) in the order of the format's groups, ``scales`` (bf16, one per group; None
    for sfp8) and, for sfp8, the float32 ``tensor_scale`` of the header (not counted in ``nbytes``)."""

    codes: Array
    scales: Array | None
    tensor_scale: Array | None
    shape: tuple[int, ...] = eqx.field(static=True)
    fmt: Format = eqx.field(static=True)
    axis: int = eqx.field(static=True)  # the input axis, non-negative

    @property
    def nbytes(self) -> int:
        return _nbytes(self.codes) + (0 if self.scales is None else _nbytes(self.scales))


# Per-tensor codecs are compiled once per shape and format: eager callers (evaluation, tests) would
# otherwise compile each of their few dozen small ops separately; inside a jit they are inlined.
@functools.partial(jax.jit, static_argnames=("fmt", "axis"))
def pack(w: Float[Array, "..."], fmt: "str | Format", *, axis: int = -1) -> Packed:
    """``w`` (``ndim >= 2``) stored in ``fmt``; ``axis`` is its input axis (:func:`input_axis`)."""
    f, shape, axis = parse_format(fmt), tuple(w.shape), axis % w.ndim
    w = jax.lax.stop_gradient(w)
    if f.kind == "sfp":
        codes, scale = sfp8.quantize(w.reshape(-1))
        return Packed(codes, None, scale, shape, f, axis)
    codes, scale = _absmax(_to_groups(w, f.block or shape[axis], axis), f.bits, bf16_scale=True)
    codes = codes.reshape(-1)[: w.size]
    return Packed(pack_int4(codes) if f.bits == 4 else codes, scale[:, 0].astype(SCALE_DTYPE), None,
                  shape, f, axis)


@functools.partial(jax.jit, static_argnames="dtype")
def unpack(p: Packed, dtype=jnp.float32) -> Float[Array, "..."]:
    """The dequantized matrix in ``dtype``."""
    if p.fmt.kind == "sfp":
        return sfp8.dequantize(p.codes, p.tensor_scale, dtype).reshape(p.shape)
    n, size = math.prod(p.shape), p.fmt.block or p.shape[p.axis]
    codes = unpack_int4(p.codes, n) if p.fmt.bits == 4 else p.codes
    g = jnp.pad(codes, (0, -n % size)).reshape(-1, size).astype(jnp.float32)
    return _from_groups(g * p.scales.astype(jnp.float32)[:, None], p.shape, p.axis).astype(dtype)


@dataclasses.dataclass(frozen=True)
class QuantSpec:
    """An EmbeddingGemma scheme's quantization of one matrix (groups along the last axis, f32 scales)."""

    bits: int
    block: int | None  # None: per-channel (one scale per row)


def quantize(w: Float[Array, "... n"], spec: QuantSpec
             ) -> tuple[Int8[Array, "... g k"], Float[Array, "... g 1"]]:
    """Integer codes (int8 storage, also for 4 bits) and one f32 scale per group of a row: blocks of
    ``spec.block`` along the last axis (the last one zero-padded), or the whole row."""
    w = w.astype(jnp.float32)
    if spec.block is None:
        return _absmax(w[..., None, :], spec.bits, bf16_scale=False)
    wp = jnp.pad(w, [(0, 0)] * (w.ndim - 1) + [(0, -w.shape[-1] % spec.block)])
    return _absmax(wp.reshape(*w.shape[:-1], -1, spec.block), spec.bits, bf16_scale=False)


def dequantize(codes: Int8[Array, "... g k"], scale: Float[Array, "... g 1"], n: int, dtype=jnp.float32
               ) -> Float[Array, "... n"]:
    """Back to ``[..., n]`` floats (the padding of the last block dropped)."""
    w = (codes.astype(jnp.float32) * scale).reshape(*codes.shape[:-2], -1)
    return w[..., :n].astype(dtype)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _dequantized(w: Array, fmt: "str | Format | QuantSpec", axis: int) -> Array:
    if isinstance(fmt, QuantSpec):
        return dequantize(*quantize(jax.lax.stop_gradient(w), fmt), w.shape[-1], w.dtype)
    return unpack(pack(w, fmt, axis=axis), w.dtype)


def fake_quant(w: Float[Array, "..."], fmt: "str | Format | QuantSpec", *, axis: int = -1
               ) -> Float[Array, "..."]:
    """Quantize-dequantize in the forward, exactly ``unpack(pack(w))`` for a format; identity in the
    backward (straight-through estimator). ``axis``: the input axis (formats only)."""
    return _dequantized(w, fmt, axis) + (w - jax.lax.stop_gradient(w))  # + 0: the identity's gradient


def _names(path) -> list[str]:
    return [str(getattr(k, "name", getattr(k, "key", getattr(k, "idx", k)))) for k in path]


def _is_float(x) -> bool:
    return isinstance(x, jax.Array | np.ndarray) and jnp.issubdtype(x.dtype, jnp.floating)


def _map_matrices(model, fn, targets=None):
    """``model`` with ``fn(names, x)`` applied to every matrix (in ``targets`` when given)."""
    def one(path, x):
        names = _names(path)
        if not (_is_float(x) and is_matrix(names[-1] if names else "", x.shape)):
            return x
        return fn(names, x) if targets is None or group_of(names) in targets else x

    return jax.tree_util.tree_map_with_path(one, model)


def _check_targets(targets) -> None:
    if not all(t in TARGETS for t in targets):
        raise ValueError(f"quantization targets {tuple(targets)!r}: each must be one of {TARGETS}")


def quantize_model(model, fmt: "str | Format | None", targets=TARGETS, *, fake: bool = True):
    """Every matrix of the groups ``targets`` quantize-dequantized in ``fmt`` (None: ``model`` itself).

    ``fake=True``: with the straight-through gradient, for quantization-aware training inside a loss;
    ``fake=False``: without a gradient path, for post-training quantization. Works on a module or on its
    parameters (``eqx.partition``), under ``jit``."""
    if fmt is None:
        return model
    f = parse_format(fmt)
    _check_targets(targets)
    if fake:
        return _map_matrices(model, lambda n, x: fake_quant(x, f, axis=input_axis(n[-1])), targets)
    return _map_matrices(model, lambda n, x: jax.lax.stop_gradient(
        unpack(pack(x, f, axis=input_axis(n[-1])), x.dtype)), targets)


def pack_model(model, fmt: "str | Format | None", targets=TARGETS):
    """``model`` as stored in ``fmt``: the matrices of ``targets`` as :class:`Packed`, every other
    floating array in bfloat16 (None: ``model`` itself)."""
    if fmt is None:
        return model
    f = parse_format(fmt)
    _check_targets(targets)
    packed = _map_matrices(model, lambda n, x: pack(x, f, axis=input_axis(n[-1])), targets)
    return jax.tree_util.tree_map(lambda x: x.astype(SCALE_DTYPE) if _is_float(x) else x, packed,
                                  is_leaf=lambda x: isinstance(x, Packed))


def unpack_model(packed, like=None, *, dtype=jnp.float32, keep=None):
    """A float model back from :func:`pack_model`: every floating array (matrices dequantized) in the
    dtype of the same leaf of ``like``, or in ``dtype`` without it. ``keep``: a predicate on the
    :class:`Packed` matrices to leave packed (served from their codes, :func:`arch.decode.decodable`)."""
    is_packed = lambda x: isinstance(x, Packed)

    def one(x, ref=None):
        to = dtype if ref is None else ref.dtype
        if is_packed(x):
            return x if keep is not None and keep(x) else unpack(x, to)
        return x.astype(to) if _is_float(x) else x

    if like is None:
        return jax.tree_util.tree_map(one, packed, is_leaf=is_packed)
    return jax.tree_util.tree_map(one, packed, like, is_leaf=is_packed)


def packed_bytes(tree) -> int:
    """Bytes of every array in ``tree``, each :class:`Packed` counted as its ``nbytes``."""
    leaves = jax.tree_util.tree_leaves(tree, is_leaf=lambda x: isinstance(x, Packed))
    return sum(x.nbytes if isinstance(x, Packed) else _nbytes(x) for x in leaves
               if isinstance(x, Packed) or hasattr(x, "dtype"))


# EmbeddingGemma (Table 1) ---------------------------------------------------------------------------

SCHEMES = ("int8", "int4", "mixed")
BLOCK = 32
ATTENTION_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj")


def spec_for(scheme: str, path_names: list[str]) -> QuantSpec:
    """The quantization of one matrix under ``scheme`` (Table 1), from its path in the module tree."""
    if scheme == "int8":
        return QuantSpec(8, BLOCK)
    if scheme == "int4":
        return QuantSpec(4, BLOCK)
    if scheme == "mixed":
        return QuantSpec(8 if any(n in ATTENTION_NAMES for n in path_names) else 4, None)
    raise ValueError(f"quantization scheme {scheme!r}: must be one of {SCHEMES}")


def fake_quantize_model(model, scheme: str | None):
    """Every matrix of ``model`` fake-quantized under ``scheme`` (``None``: unchanged). Use inside the
    loss for QAT; gradients reach the float weights through the straight-through estimator."""
    if scheme is None:
        return model
    return _map_matrices(model, lambda n, x: fake_quant(x, spec_for(scheme, n)))


def deploy(model, scheme: str | None):
    """The model as deployed: each matrix stored as integer codes and scales, dequantized for the
    forward (no straight-through path; for evaluation)."""
    if scheme is None:
        return model
    return _map_matrices(model, lambda n, x: jax.lax.stop_gradient(_dequantized(x, spec_for(scheme, n), -1)))


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
