"""Every published Gemma-family model as a named ``ModelConfig``, plus small ones for CPU work.

Shapes: Gemma 2 report Table 1 and DeepMind ``gemma`` configs; Gemma 3 DeepMind configs and
published config.json files (the report prints only parameter counts); RecurrentGemma report Table 1
and ``recurrentgemma/common.py``; EmbeddingGemma config.json (report section 2.1).
``python -m arch.presets`` prints the table with the published parameter counts beside ours.
"""

from arch.config import ModelConfig
from arch.params import count_params
from arch.vision import VisionConfig, count_vision_params

_GEMMA2 = dict(
    vocab_size=256_128, pattern="LG", window=4096, attn_softcap=50.0, logit_softcap=30.0,
    rope_base_global=10_000.0, rope_base_local=10_000.0, post_norms=True,
)
_GEMMA3 = dict(
    vocab_size=262_144, pattern="LLLLLG", qk_norm=True, rope_base_global=1_000_000.0,
    rope_base_local=10_000.0, post_norms=True,
)
_GRIFFIN = dict(
    vocab_size=256_000, pattern="RRL", window=2048, num_kv_heads=1, head_dim=256, post_norms=False,
    mlp_bias=True, attn_out_bias=True, logit_softcap=30.0, partial_rotary=0.5, embed_scale_bf16=True,
    conv_width=4, rope_base_local=10_000.0, rope_base_global=10_000.0,
)

PRESETS: dict[str, ModelConfig] = {
    # Gemma 2 (report Table 1; 27B scales queries by d_model / num_heads = 144)
    "gemma2_2b": ModelConfig(**_GEMMA2, width=2304, num_layers=26, num_heads=8, num_kv_heads=4,
                             head_dim=256, mlp_width=9216),
    "gemma2_9b": ModelConfig(**_GEMMA2, width=3584, num_layers=42, num_heads=16, num_kv_heads=8,
                             head_dim=256, mlp_width=14336),
    "gemma2_27b": ModelConfig(**_GEMMA2, width=4608, num_layers=46, num_heads=32, num_kv_heads=16,
                              head_dim=128, mlp_width=36864, query_pre_attn_scalar=144.0),
    # Gemma 3 (1B: window 512, no RoPE scaling; 4B+: window 1024, global positions / 8)
    "gemma3_1b": ModelConfig(**_GEMMA3, width=1152, num_layers=26, num_heads=4, num_kv_heads=1,
                             head_dim=256, mlp_width=6912, window=512),
    "gemma3_4b": ModelConfig(**_GEMMA3, width=2560, num_layers=34, num_heads=8, num_kv_heads=4,
                             head_dim=256, mlp_width=10240, window=1024, rope_scale_global=8.0),
    "gemma3_12b": ModelConfig(**_GEMMA3, width=3840, num_layers=48, num_heads=16, num_kv_heads=8,
                              head_dim=256, mlp_width=15360, window=1024, rope_scale_global=8.0),
    "gemma3_27b": ModelConfig(**_GEMMA3, width=5376, num_layers=62, num_heads=32, num_kv_heads=16,
                              head_dim=128, mlp_width=21504, window=1024, rope_scale_global=8.0,
                              query_pre_attn_scalar=168.0),
    # RecurrentGemma (report Table 1): MQA local attention every third block, gates in num_heads blocks
    "recurrentgemma_2b": ModelConfig(**_GRIFFIN, width=2560, num_layers=26, num_heads=10,
                                     mlp_width=7680, lru_width=2560, lru_gate_blocks=10),
    "recurrentgemma_9b": ModelConfig(**_GRIFFIN, width=4096, num_layers=38, num_heads=16,
                                     mlp_width=12288, lru_width=4096, lru_gate_blocks=16),
    # EmbeddingGemma trunk: a bidirectional Gemma 3 (report section 2.1)
    "embeddinggemma_300m": ModelConfig(**_GEMMA3, width=768, num_layers=24, num_heads=3, num_kv_heads=1,
                                       head_dim=256, mlp_width=1152, window=512, causal=False),
}

# Small versions of each family for CPU experiments (a few million parameters; vocab follows the
# default 8192-piece tokenizer) and tiny ones for tests, whose 7 layers cut every pattern mid-period.
_SMALL = dict(vocab_size=8192, width=256, num_layers=6, num_heads=4, num_kv_heads=1, head_dim=64,
              mlp_width=1024, window=128)
_TINY = dict(vocab_size=256, width=64, num_layers=7, num_heads=4, num_kv_heads=2, head_dim=16,
             mlp_width=128, window=8)
for _size, _shape in (("small", _SMALL), ("tiny", _TINY)):
    PRESETS[f"{_size}_gemma2"] = PRESETS["gemma2_2b"].replace(**_shape)
    PRESETS[f"{_size}_gemma3"] = PRESETS["gemma3_1b"].replace(**_shape)
    PRESETS[f"{_size}_global"] = PRESETS["gemma3_1b"].replace(**_shape, pattern="G")
    PRESETS[f"{_size}_recurrentgemma"] = PRESETS["recurrentgemma_2b"].replace(
        **_shape | dict(num_kv_heads=1), lru_width=_shape["width"], lru_gate_blocks=_shape["num_heads"])
    PRESETS[f"{_size}_embeddinggemma"] = PRESETS["embeddinggemma_300m"].replace(**_shape)

PUBLISHED_MODELS = tuple(PRESETS)[:10]

# Non-embedding parameter counts: (as printed in the report, exact value it stands for, source).
# Gemma 3 and RecurrentGemma print rounded figures; the exact values are the reference sheet's
# derivations from the released shapes, and the printed figure must be their rounding.
PUBLISHED_NON_EMBEDDING = {
    "gemma2_2b": ("2,024,517,888", 2_024_517_888, "Gemma 2 Table 2"),
    "gemma2_9b": ("8,324,201,984", 8_324_201_984, "Gemma 2 Table 2"),
    "gemma2_27b": ("26,047,480,320", 26_047_480_320, "Gemma 2 Table 2"),
    "gemma3_1b": ("698M", 697_896_064, "Gemma 3 Table 1"),
    "gemma3_4b": ("3,209M", 3_209_010_688, "Gemma 3 Table 1"),
    "gemma3_12b": ("10,759M", 10_759_155_456, "Gemma 3 Table 1"),
    "gemma3_27b": ("25,600M", 25_599_716_096, "Gemma 3 Table 1"),
    "recurrentgemma_2b": ("2.03B", 2_027_502_080, "RecurrentGemma Table 1"),
    "recurrentgemma_9b": ("7.53B", 7_531_401_216, "RecurrentGemma Table 1"),
    "embeddinggemma_300m": ("101,536,512", 101_536_512, "EmbeddingGemma trunk (config)"),
}


# Gemma 3's vision encoder (report section 2.1, Table 1: 417M, shared by 4B/12B/27B; HF vision_config:
# SigLIP so400m at 896, 64 x 64 patches pooled 4 x 4 into 256 soft tokens), and small ones for CPU work.
VISION_PRESETS: dict[str, VisionConfig] = {
    "siglip_gemma3": VisionConfig(),
    "small_siglip": VisionConfig(image_size=224, patch_size=14, width=128, num_layers=4, num_heads=4,
                                 mlp_width=512, pool=4),  # 16 x 16 patches -> 16 soft tokens
    "tiny_siglip": VisionConfig(image_size=28, patch_size=7, width=32, num_layers=2, num_heads=4,
                                mlp_width=64, pool=2),  # 4 x 4 patches -> 4 soft tokens
}
# The encoder's parameters (patch embedding with bias, position embedding, 27 blocks, final norm; no
# projector), as Gemma 3 Table 1 prints them and exactly.
PUBLISHED_VISION_ENCODER = ("417M", 416_866_032, "Gemma 3 Table 1")


def vision_preset(name: str, **overrides) -> VisionConfig:
    """``vision_preset("siglip_gemma3", image_size=448)``: a named encoder config, some fields overridden."""
    if name not in VISION_PRESETS:
        raise ValueError(f"unknown vision preset {name!r}; known: {', '.join(VISION_PRESETS)}")
    return VISION_PRESETS[name].replace(**overrides) if overrides else VISION_PRESETS[name]


def preset(name: str, **overrides) -> ModelConfig:
    """``preset("gemma3_27b", window=512)``: a named config with some fields overridden."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name].replace(**overrides) if overrides else PRESETS[name]


def printed_matches(printed: str, exact: int) -> bool:
    """Does ``exact`` round to the figure as printed ("698M", "2.03B", "2,024,517,888")?"""
    text = printed.replace(",", "")
    unit = {"M": 10**6, "B": 10**9}.get(text[-1], 1)
    digits = text[:-1] if unit > 1 else text
    decimals = len(digits.split(".")[1]) if "." in digits else 0
    return round(exact / unit, decimals) == float(digits)


def table() -> str:

    head = (f"{'preset':<22}{'pattern':<8}{'layers':>7}{'L/G/R':>10}{'window':>8}"
            f"{'embedding':>16}{'non-embedding':>17}{'published':>16}  check")
    rows = [head, "-" * len(head)]
    for name, cfg in PRESETS.items():
        n = count_params(cfg)
        counts = f"{cfg.count('L')}/{cfg.count('G')}/{cfg.count('R')}"
        pub, check = "", ""
        if name in PUBLISHED_NON_EMBEDDING:
            printed, exact, _ = PUBLISHED_NON_EMBEDDING[name]
            ok = n["non_embedding"] == exact and printed_matches(printed, exact)
            ok &= n["embedding"] == cfg.vocab_size * cfg.width
            pub, check = printed, "✓" if ok else f"✗ off by {n['non_embedding'] - exact:+,}"
        rows.append(f"{name:<22}{cfg.pattern:<8}{cfg.num_layers:>7}{counts:>10}{cfg.window:>8}"
                    f"{n['embedding']:>16,}{n['non_embedding']:>17,}{pub:>16}  {check}")
    head = (f"{'vision preset':<22}{'image':>7}{'patch':>7}{'layers':>7}{'width':>7}{'soft tokens':>13}"
            f"{'encoder':>14}{'published':>11}  check")
    rows += ["-" * len(head), head, "-" * len(head)]
    for name, cfg in VISION_PRESETS.items():
        n = count_vision_params(cfg, text_width=1)["encoder"]
        printed, exact, _ = PUBLISHED_VISION_ENCODER
        pub, check = "", ""
        if name == "siglip_gemma3":
            pub, check = printed, "✓" if n == exact else f"✗ off by {n - exact:+,}"
        rows.append(f"{name:<22}{cfg.image_size:>7}{cfg.patch_size:>7}{cfg.num_layers:>7}{cfg.width:>7}"
                    f"{cfg.soft_tokens:>13}{n:>14,}{pub:>11}  {check}")
    return "\n".join(rows)

