"""Bytes of weights and decode caches for any config, context length, batch and dtype.

Weights are counted from the module tree (``arch.params.abstract_model``), caches from
``jax.eval_shape`` of :func:`arch.init_cache`: nothing is allocated and no formula can drift from the
code. :mod:`experiments.bench.table3` sets these numbers beside Gemma 3 report Table 3.

Conventions:

- 1 GB = 1e9 bytes.
- Parameters: the text decoder from the module tree, the tied embedding counted once (as Gemma 3
  Table 1 and Gemma 2 Table 2 count it); ``vision_params`` adds the SigLIP encoder of 4B+
  (:data:`GEMMA3_VISION_PARAMS`, counted from :class:`arch.vision.VisionEncoder`: Table 1's 417M).
- Formats: ``float32`` 4 bytes, ``bfloat16`` 2, and the quantised ``arch.quant.FORMATS``, whose byte
  rule is :func:`arch.quant.stored_bytes` (exactly what :func:`arch.quant.pack_model` stores): ``int8``
  and ``int4`` are per output channel (1 or 0.5 byte per weight + one bf16 scale per output channel);
  ``int4_block32`` is 0.5 byte per weight + one bf16 scale per 32 weights; ``sfp8`` (switched fp8) is
  1 byte per weight (its per-tensor scale sits in the tensor's header, like its shape, and is not
  counted). In the quantised formats vectors (norm scales, biases, including the RG-LRU's ``[n, b]``
  gate biases, and RG-LRU Lambda; < 0.1% of the weights) stay bf16 (:func:`arch.quant.is_matrix`).

Caches hold K and V (and, for recurrent layers, the Conv1D tail in the cache dtype plus the float32
RG-LRU state, as :func:`arch.init_cache` builds them). The int32 slot positions the implementation
keeps for its ring buffers are bookkeeping, reported separately and not counted in ``cache_bytes``.
"""

import functools
import math

import jax
import jax.numpy as jnp

import arch.quant as quant
from arch.attention import KVCache
from arch.cache import init_cache
from arch.config import ModelConfig
from arch.params import abstract_model
from arch.rglru import ConvState
from arch.vision import VisionConfig, count_vision_params

GB = 1e9
WEIGHT_FORMATS = ("float32", "bfloat16", *quant.FORMATS)
CACHE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "int8": jnp.int8,
                "float8": jnp.float8_e4m3fn}
# the SigLIP encoder shared by Gemma 3 4B/12B/27B, from its module tree (416,866,032; Table 1: 417M)
GEMMA3_VISION_PARAMS = count_vision_params(VisionConfig(), text_width=1)["encoder"]
BITS = {"float32": 32, "bfloat16": 16} | {f: quant.parse_format(f).bits for f in quant.FORMATS}
SCALE_BYTES = jnp.dtype(quant.SCALE_DTYPE).itemsize  # bf16 scales


def _check_format(dtype: str) -> None:
    if dtype not in WEIGHT_FORMATS:
        raise ValueError(f"weight dtype {dtype!r} is not one of {WEIGHT_FORMATS}")


def tensor_bytes(name: str, shape: tuple[int, ...], dtype: str, *, scale_bytes: int = SCALE_BYTES
                 ) -> float:
    """Bytes of one parameter tensor stored in ``dtype`` (see the module docstring); quantised
    formats carry one scale of ``scale_bytes`` per output channel or per block of 32."""
    _check_format(dtype)
    size = math.prod(shape)
    if dtype in ("float32", "bfloat16"):
        return size * BITS[dtype] / 8
    if not quant.is_matrix(name, shape):  # vectors stay bf16 in quantised checkpoints
        return size * 2
    return quant.stored_bytes(shape, dtype, axis=quant.input_axis(name), scale_bytes=scale_bytes)


def _leaves(cfg_or_model):
    model = abstract_model(cfg_or_model) if isinstance(cfg_or_model, ModelConfig) else cfg_or_model
    for path, leaf in jax.tree_util.tree_flatten_with_path(model)[0]:
        if hasattr(leaf, "shape"):
            name = getattr(path[-1], "name", str(path[-1]))
            is_embedding = getattr(path[0], "name", None) in ("embed", "lm_head")
            yield name, tuple(leaf.shape), is_embedding


@functools.lru_cache(maxsize=256)
def _weights_cfg(cfg: ModelConfig, dtype: str, scale_bytes: int = SCALE_BYTES) -> dict[str, float]:
    out = {"embedding": 0.0, "non_embedding": 0.0}
    for name, shape, is_embedding in _leaves(cfg):
        out["embedding" if is_embedding else "non_embedding"] += tensor_bytes(
            name, shape, dtype, scale_bytes=scale_bytes)
    return out


def weights_breakdown(cfg_or_model, dtype: str = "bfloat16", *, vision_params: int = 0,
                      vision_dtype: str | None = None, scale_bytes: int = SCALE_BYTES) -> dict[str, float]:
    """``{"embedding", "non_embedding", "vision", "total"}`` in bytes.

    ``vision_params`` adds an encoder outside the decoder (Gemma 3 4B+: ``GEMMA3_VISION_PARAMS``),
    stored in ``vision_dtype`` (default: the same format; counted as plain weights, no scales).
    """
    _check_format(dtype)
    if isinstance(cfg_or_model, ModelConfig):
        out = dict(_weights_cfg(cfg_or_model, dtype, scale_bytes))
    else:
        out = {"embedding": 0.0, "non_embedding": 0.0}
        for name, shape, is_embedding in _leaves(cfg_or_model):
            out["embedding" if is_embedding else "non_embedding"] += tensor_bytes(
                name, shape, dtype, scale_bytes=scale_bytes)
    vdtype = vision_dtype or dtype
    _check_format(vdtype)
    out["vision"] = vision_params * BITS[vdtype] / 8
    out["total"] = out["embedding"] + out["non_embedding"] + out["vision"]
    return out


def weights_bytes(cfg_or_model, dtype: str = "bfloat16", **vision) -> float:
    """Total bytes of the weights in ``dtype`` (one of ``WEIGHT_FORMATS``)."""
    return weights_breakdown(cfg_or_model, dtype, **vision)["total"]


@functools.lru_cache(maxsize=1024)
def cache_breakdown(cfg: ModelConfig, ctx: int, *, dtype: str = "bfloat16", batch: int = 1
                    ) -> dict[str, int]:
    """Bytes of the decode cache for ``ctx`` tokens, per layer kind, from ``jax.eval_shape``.

    Keys: ``global``, ``local``, ``recurrent`` (what decode must keep), ``total`` (their sum) and
    ``bookkeeping`` (int32 slot positions and the position counter; not in ``total``).
    Raises ValueError for a bidirectional config (it has no decode cache).
    """
    if dtype not in CACHE_DTYPES:
        raise ValueError(f"cache dtype {dtype!r} is not one of {tuple(CACHE_DTYPES)}")
    shapes = jax.eval_shape(lambda: init_cache(cfg, ctx, dtype=CACHE_DTYPES[dtype], batch=batch))
    nbytes = lambda x: math.prod(x.shape) * jnp.dtype(x.dtype).itemsize
    out = {"global": 0, "local": 0, "recurrent": 0, "bookkeeping": nbytes(shapes.pos)}
    for kind, layer in zip(cfg.layer_kinds, shapes.layers):
        if isinstance(layer, KVCache):
            out["global" if kind == "G" else "local"] += nbytes(layer.k) + nbytes(layer.v)
            out["bookkeeping"] += nbytes(layer.pos)
        elif isinstance(layer, ConvState):
            out["recurrent"] += nbytes(layer.conv) + nbytes(layer.h)
        else:
            raise TypeError(f"unknown cache entry {type(layer).__name__} for a {kind} layer")
    out["total"] = out["global"] + out["local"] + out["recurrent"]
    return out


def cache_bytes(cfg: ModelConfig, ctx: int, *, dtype: str = "bfloat16", batch: int = 1) -> int:
    """Bytes a decode cache for ``ctx`` tokens holds: global layers ``ctx`` positions, local layers
    ``min(window, ctx)``, recurrent layers a fixed state (RecurrentGemma report, "Inference Speed")."""
    return cache_breakdown(cfg, ctx, dtype=dtype, batch=batch)["total"]


def kv_bytes_full_length(cfg: ModelConfig, ctx: int, dtype: str = "bfloat16", *, batch: int = 1) -> int:
    """The cache if every attention layer, local ones included, held all ``ctx`` positions.

    This is the reading of Gemma 3 Table 3's "+KV" rows that fits best (reference sheet 3.1);
    recurrent layers keep their fixed state. Computed as the real cache with the window widened.
    """
    return cache_bytes(cfg.replace(window=max(ctx, cfg.window)), ctx, dtype=dtype, batch=batch)
