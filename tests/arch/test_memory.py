"""arch.memory: cache bytes against hand counts, weights against Gemma 3 Table 3 (reference sheet 3.1)."""

import math

import pytest

import arch
from arch import memory

BYTES = {"bfloat16": 2, "float32": 4, "int8": 1}


def hand_cache_bytes(cfg: arch.ModelConfig, ctx: int, dtype: str, batch: int = 1) -> int:
    """Global layers: ctx positions; local: min(window, ctx); recurrent: conv tail + f32 state."""
    per_pos = 2 * cfg.num_kv_heads * cfg.head_dim * BYTES[dtype]  # K and V
    total = 0
    for kind in cfg.layer_kinds:
        if kind == "G":
            total += ctx * per_pos
        elif kind == "L":
            total += min(cfg.window, ctx) * per_pos
        else:
            total += (cfg.conv_width - 1) * cfg.lru_width * BYTES[dtype] + cfg.lru_width * 4
    return total * batch


def test_gemma3_27b_cache_at_32k_exact():
    # 10 global x 32768 + 52 local x 1024 positions x 16 kv heads x 128 x (K, V) x 2 bytes
    assert (10 * 32768 + 52 * 1024) * 16 * 128 * 2 * 2 == 3_120_562_176
    assert memory.cache_bytes(arch.preset("gemma3_27b"), 32_768) == 3_120_562_176
    parts = memory.cache_breakdown(arch.preset("gemma3_27b"), 32_768)
    assert parts["global"] == 10 * 32768 * 8192 and parts["local"] == 52 * 1024 * 8192
    assert parts["recurrent"] == 0


@pytest.mark.parametrize("name", [n for n in arch.PRESETS if arch.PRESETS[n].causal])
def test_cache_bytes_match_hand_count_for_every_preset(name):
    cfg = arch.PRESETS[name]
    for ctx, dtype in ((32_768, "bfloat16"), (300, "float32")):  # 300: shorter than most windows
        assert memory.cache_bytes(cfg, ctx, dtype=dtype) == hand_cache_bytes(cfg, ctx, dtype)


def test_cache_scales_with_batch_and_dtype():
    cfg = arch.preset("recurrentgemma_2b")
    one = memory.cache_bytes(cfg, 8192)
    assert memory.cache_bytes(cfg, 8192, batch=4) == 4 * one == hand_cache_bytes(cfg, 8192, "bfloat16", 4)
    assert memory.cache_bytes(cfg, 8192, dtype="int8") == hand_cache_bytes(cfg, 8192, "int8")
    # RecurrentGemma's state stops growing at the window (report: "bounded state"), ~17.2 MB for 2B
    assert memory.cache_bytes(cfg, 1_000_000) == one
    assert round(one / 1e6, 1) == 17.2


def test_full_length_kv_counts_every_attention_layer():
    cfg = arch.preset("gemma3_1b")
    assert memory.kv_bytes_full_length(cfg, 32_768) == 26 * 32_768 * 2 * 1 * 256 * 2
    assert memory.kv_bytes_full_length(cfg, 100) == memory.cache_bytes(cfg.replace(pattern="G"), 100)


def test_bidirectional_has_no_cache():
    with pytest.raises(ValueError, match="bidirectional"):
        memory.cache_bytes(arch.preset("embeddinggemma_300m"), 2048)


@pytest.mark.parametrize("name", ["gemma2_2b", "gemma3_27b", "recurrentgemma_9b", "tiny_recurrentgemma"])
def test_float_weights_are_params_times_itemsize(name):
    total = arch.count_params(arch.PRESETS[name])["total"]
    assert memory.weights_bytes(arch.PRESETS[name], "bfloat16") == 2 * total
    assert memory.weights_bytes(arch.PRESETS[name], "float32") == 4 * total


def test_quantised_formats_by_hand_on_a_tiny_model():
    cfg = arch.preset("tiny_global")  # no biases: matrices and norm vectors only
    d, h, k, e, f, v, n = cfg.width, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.mlp_width, \
        cfg.vocab_size, cfg.num_layers
    # (out, in) of every matrix; the embedding [v, d] has v output rows (tied output head)
    mats = [(v, d)] + n * [(h * e, d), (k * e, d), (k * e, d), (d, h * e), (f, d), (f, d), (d, f)]
    vectors = n * (4 * d + 2 * e) + d  # 4 norms + QK-norm per layer, final norm
    weights = sum(o * i for o, i in mats)
    outs = sum(o for o, _ in mats)
    assert memory.weights_bytes(cfg, "int8") == weights + 2 * outs + 2 * vectors
    assert memory.weights_bytes(cfg, "int4") == weights / 2 + 2 * outs + 2 * vectors
    blocks = sum(math.ceil(o * i / 32) for o, i in mats)
    assert memory.weights_bytes(cfg, "int4_block32") == weights / 2 + 2 * blocks + 2 * vectors
    assert memory.weights_bytes(cfg, "sfp8") == weights + 2 * vectors
    with pytest.raises(ValueError, match="int3"):
        memory.weights_bytes(cfg, "int3")
