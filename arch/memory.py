"""Bytes of weights and decode caches for any config, context length, batch and dtype.

Weights are counted from the module tree (``arch.params.abstract_model``), caches from
``jax.eval_shape`` of :func:`arch.init_cache`: nothing is allocated and no formula can drift from the
code. ``table3()`` sets our numbers beside Gemma 3 report Table 3 (raw vs QAT checkpoints at 32,768
tokens of context).

Conventions (``table3`` and ``format_table3`` print every cell beside the published one):

- 1 GB = 1e9 bytes (in GiB no column matches: 27B bf16 would be 50.3, printed 54.0).
- Parameters: the text decoder from the module tree, the tied embedding counted once (as Gemma 3
  Table 1 and Gemma 2 Table 2 count it); ``vision_params`` adds the 417M SigLIP encoder of 4B+.
- No single convention reproduces every cell. The bf16 column is nominal size x 2 bytes
  (1/4/12/27 -> 2/8/24/54): text-only gives 2.0 / 7.8 / 23.5 / 54.0 (4B -0.2, 12B -0.5), text +
  SigLIP 2.0 / 8.6 / 24.4 / 54.9. The quantised columns of 4B/12B/27B sit above text-only counts by
  0.1-0.7 GB; including the SigLIP encoder brings them to within 0.5 GB (in the same format:
  mean |diff| 0.28 GB, 27B sfp8 exact; kept in bf16: 0.29 GB). 1B (no encoder) matches in every
  column except int4 blocks=32 (0.6 vs 0.7: one bf16 scale per 32 weights is +6%, the table implies
  ~+40%).
- "+KV" (the increment, identical in every column: 0.9 / 4.7 / 14.9 / 18.7 GB) matches a cache in
  which **every** layer, local ones included, holds all 32,768 positions in 16 bits
  (``kv_bytes_full_length``: 0.87 / 4.56 / 12.88 / 16.64 GB), not the sliding-window cache
  (0.15 / 0.79 / 2.48 / 3.12) and not an 8-bit one (half of either), despite the caption's
  "quantized in 8 bits". 1B and 4B agree to rounding (-0.03, -0.14); 12B and 27B are ~2.0 GB above
  it, unexplained.
- Formats: ``float32`` 4 bytes, ``bfloat16`` 2; ``int8`` and ``int4`` are per output channel
  (1 or 0.5 byte per weight + one bf16 scale per output channel); ``int4_block32`` is 0.5 byte per
  weight + one bf16 scale per 32 weights; ``sfp8`` (switched fp8) is 1 byte per weight. In the
  quantised formats vectors (norm scales, biases, RG-LRU Lambda; < 0.1% of the weights) stay bf16.

Caches hold K and V (and, for recurrent layers, the Conv1D tail in the cache dtype plus the float32
RG-LRU state, as :func:`arch.init_cache` builds them). The int32 slot positions the implementation
keeps for its ring buffers are bookkeeping, reported separately and not counted in ``cache_bytes``.
"""

import functools
import math

import jax
import jax.numpy as jnp

from arch.attention import KVCache
from arch.cache import init_cache
from arch.config import ModelConfig
from arch.params import abstract_model
from arch.rglru import ConvState

GB = 1e9
WEIGHT_FORMATS = ("float32", "bfloat16", "int8", "int4", "int4_block32", "sfp8")
CACHE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "int8": jnp.int8,
                "float8": jnp.float8_e4m3fn}
GEMMA3_VISION_PARAMS = 417_000_000  # SigLIP encoder shared by Gemma 3 4B/12B/27B (Table 1, rounded)
_BITS = {"float32": 32, "bfloat16": 16, "int8": 8, "int4": 4, "int4_block32": 4, "sfp8": 8}
_SCALE_BYTES = 2  # bf16 scales


def _check_format(dtype: str) -> None:
    if dtype not in WEIGHT_FORMATS:
        raise ValueError(f"weight dtype {dtype!r} is not one of {WEIGHT_FORMATS}")


def _output_channels(name: str, shape: tuple[int, ...]) -> int:
    """Scales of a per-channel format: one per output channel of the matrix as the model uses it."""
    size = math.prod(shape)
    if name == "conv_weight":  # [w, r] depthwise: one channel per r
        return shape[-1]
    if name.endswith("gate_weight"):  # [n, b_in, b_out] block-diagonal: n * b_out outputs
        return size // shape[-2]
    return size // shape[-1]  # Linear [out, in] and the embedding [v, d] (tied output head: v rows)


def tensor_bytes(name: str, shape: tuple[int, ...], dtype: str) -> float:
    """Bytes of one parameter tensor stored in ``dtype`` (see the module docstring)."""
    _check_format(dtype)
    size = math.prod(shape)
    if dtype in ("float32", "bfloat16"):
        return size * _BITS[dtype] / 8
    if len(shape) < 2:  # vectors stay bf16 in quantised checkpoints
        return size * 2
    data = math.ceil(size * _BITS[dtype] / 8)
    if dtype in ("int8", "int4"):
        return data + _SCALE_BYTES * _output_channels(name, shape)
    if dtype == "int4_block32":
        return data + _SCALE_BYTES * math.ceil(size / 32)
    return data  # sfp8


def _leaves(cfg_or_model):
    model = abstract_model(cfg_or_model) if isinstance(cfg_or_model, ModelConfig) else cfg_or_model
    for path, leaf in jax.tree_util.tree_flatten_with_path(model)[0]:
        if hasattr(leaf, "shape"):
            name = getattr(path[-1], "name", str(path[-1]))
            is_embedding = getattr(path[0], "name", None) in ("embed", "lm_head")
            yield name, tuple(leaf.shape), is_embedding


@functools.lru_cache(maxsize=256)
def _weights_cfg(cfg: ModelConfig, dtype: str) -> dict[str, float]:
    out = {"embedding": 0.0, "non_embedding": 0.0}
    for name, shape, is_embedding in _leaves(cfg):
        out["embedding" if is_embedding else "non_embedding"] += tensor_bytes(name, shape, dtype)
    return out


def weights_breakdown(cfg_or_model, dtype: str = "bfloat16", *, vision_params: int = 0,
                      vision_dtype: str | None = None) -> dict[str, float]:
    """``{"embedding", "non_embedding", "vision", "total"}`` in bytes.

    ``vision_params`` adds an encoder outside the decoder (Gemma 3 4B+: ``GEMMA3_VISION_PARAMS``),
    stored in ``vision_dtype`` (default: the same format; counted as plain weights, no scales).
    """
    _check_format(dtype)
    if isinstance(cfg_or_model, ModelConfig):
        out = dict(_weights_cfg(cfg_or_model, dtype))
    else:
        out = {"embedding": 0.0, "non_embedding": 0.0}
        for name, shape, is_embedding in _leaves(cfg_or_model):
            out["embedding" if is_embedding else "non_embedding"] += tensor_bytes(name, shape, dtype)
    vdtype = vision_dtype or dtype
    _check_format(vdtype)
    out["vision"] = vision_params * _BITS[vdtype] / 8
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


# Gemma 3 report Table 3 (GB): weights and weights + KV at 32,768 tokens, as printed.
TABLE3_COLUMNS = ("bfloat16", "int4", "int4_block32", "sfp8")
TABLE3 = {
    "gemma3_1b": {"weights": (2.0, 0.5, 0.7, 1.0), "+KV": (2.9, 1.4, 1.6, 1.9)},
    "gemma3_4b": {"weights": (8.0, 2.6, 2.9, 4.4), "+KV": (12.7, 7.3, 7.6, 9.1)},
    "gemma3_12b": {"weights": (24.0, 6.6, 7.1, 12.4), "+KV": (38.9, 21.5, 22.0, 27.3)},
    "gemma3_27b": {"weights": (54.0, 14.1, 15.3, 27.4), "+KV": (72.7, 32.8, 34.0, 46.1)},
}
TABLE3_CTX = 32_768
# Readings of the "+KV" increment (the same in every column: 0.9 / 4.7 / 14.9 / 18.7 GB)
KV_READINGS = {
    "window bf16": lambda cfg: cache_bytes(cfg, TABLE3_CTX, dtype="bfloat16"),
    "window 8-bit": lambda cfg: cache_bytes(cfg, TABLE3_CTX, dtype="int8"),
    "full-length bf16": lambda cfg: kv_bytes_full_length(cfg, TABLE3_CTX, "bfloat16"),
    "full-length 8-bit": lambda cfg: kv_bytes_full_length(cfg, TABLE3_CTX, "int8"),
}


def table3() -> list[dict]:
    """One row per (model, column) of Gemma 3 Table 3 with our numbers in GB beside the printed ones.

    ``text``: decoder only (the docstring's convention); ``text+vision``: plus the 417M SigLIP encoder
    in the same format (4B+); ``text+vision_bf16``: plus the encoder kept in bf16. ``kv`` maps each
    reading of the "+KV" increment to GB; ``kv_published`` is the printed increment.
    """
    from arch.presets import preset

    rows = []
    for name, printed in TABLE3.items():
        cfg = preset(name)
        vision = 0 if name == "gemma3_1b" else GEMMA3_VISION_PARAMS
        kv = {reading: f(cfg) / GB for reading, f in KV_READINGS.items()}
        for i, col in enumerate(TABLE3_COLUMNS):
            rows.append(dict(
                model=name, column=col, published=printed["weights"][i],
                published_kv_total=printed["+KV"][i],
                kv_published=round(printed["+KV"][i] - printed["weights"][i], 1),
                text=weights_bytes(cfg, col) / GB,
                text_vision=weights_bytes(cfg, col, vision_params=vision) / GB,
                text_vision_bf16=weights_bytes(cfg, col, vision_params=vision,
                                               vision_dtype="bfloat16") / GB,
                kv=kv,
            ))
    return rows


def format_table3() -> str:
    """Table 3 side by side: printed GB, ours (rounded to the printed 0.1) and the difference."""
    head = (f"{'model':<12}{'format':<14}{'printed':>8}{'text':>7}{'diff':>7}{'+vis':>7}{'diff':>7}"
            f"{'+vis16':>8}{'diff':>7}")
    lines = ["Gemma 3 Table 3, weights (GB = 1e9 bytes)", head, "-" * len(head)]
    for r in table3():
        cells = "".join(f"{r[k]:>{w}.1f}{round(r[k], 1) - r['published']:>+7.1f}"
                        for k, w in (("text", 7), ("text_vision", 7), ("text_vision_bf16", 8)))
        lines.append(f"{r['model']:<12}{r['column']:<14}{r['published']:>8.1f}{cells}")
    lines += ["", "Table 3 '+KV' increment at 32,768 tokens (printed '+KV' minus weights, GB)"]
    readings = list(KV_READINGS)
    head = f"{'model':<12}{'printed':>8}" + "".join(f"{k:>22}" for k in readings)
    lines += [head, "-" * len(head)]
    for r in table3()[:: len(TABLE3_COLUMNS)]:
        cells = "".join(f"{r['kv'][k]:>12.2f} ({r['kv'][k] - r['kv_published']:>+6.2f})" for k in readings)
        lines.append(f"{r['model']:<12}{r['kv_published']:>8.1f}{cells}")
    return "\n".join(lines)
