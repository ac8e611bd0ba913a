"""ModelConfig validation, the pattern language and presets."""

import dataclasses

import jax
import pytest

import arch
from arch.presets import PUBLISHED_MODELS, PUBLISHED_NON_EMBEDDING, printed_matches

BASE = dict(vocab_size=64, width=32, num_layers=4, num_heads=4, num_kv_heads=2, head_dim=8, mlp_width=64)


def test_ratio_builds_patterns():
    assert arch.ratio(L=5, G=1) == "LLLLLG"
    assert arch.ratio(R=2, L=1) == "RRL"
    assert arch.ratio(G=1) == "G"


@pytest.mark.parametrize("kwargs", [dict(X=1), dict(L=-1), dict(L=0, G=0)])
def test_ratio_rejects_bad_counts(kwargs):
    with pytest.raises(ValueError):
        arch.ratio(**kwargs)


def test_pattern_is_tiled_and_cut_not_padded():
    cfg = arch.ModelConfig(**BASE | dict(num_layers=8), pattern="LLLLLG")
    assert cfg.layer_kinds == ("L", "L", "L", "L", "L", "G", "L", "L")
    g27 = arch.preset("gemma3_27b")
    globals_ = [i for i, k in enumerate(g27.layer_kinds) if k == "G"]
    assert globals_ == list(range(5, 62, 6)) and g27.layer_kinds[60:] == ("L", "L")
    assert arch.preset("gemma2_2b").layer_kinds[:3] == ("L", "G", "L")  # layer 0 is local
    rg = arch.preset("recurrentgemma_2b")
    assert (rg.count("R"), rg.count("L")) == (18, 8) and rg.layer_kinds[:3] == ("R", "R", "L")


BAD = [
    (dict(pattern="LGX"), "pattern"),
    (dict(pattern=""), "pattern"),
    (dict(window=0), "window"),
    (dict(num_heads=6, num_kv_heads=4), "num_heads"),
    (dict(head_dim=7), "head_dim"),
    (dict(partial_rotary=0.3), "partial_rotary"),
    (dict(partial_rotary=0.0), "partial_rotary"),
    (dict(width=0), "width"),
    (dict(vocab_size=-3), "vocab_size"),
    (dict(num_layers=0), "num_layers"),
    (dict(mlp_width=0), "mlp_width"),
    (dict(attn_softcap=0.0), "attn_softcap"),
    (dict(logit_softcap=-30.0), "logit_softcap"),
    (dict(query_pre_attn_scalar=0.0), "query_pre_attn_scalar"),
    (dict(rope_base_global=0.0), "rope_base_global"),
    (dict(rope_scale_global=-1.0), "rope_scale_global"),
    (dict(pattern="RRL"), "lru_width"),
    (dict(pattern="RRL", lru_width=30, lru_gate_blocks=4), "lru_gate_blocks"),
    (dict(pattern="RRL", lru_width=32, lru_gate_blocks=0), "lru_gate_blocks"),
    (dict(conv_width=0), "conv_width"),
    (dict(mlp_activation="swish9"), "mlp_activation"),
    (dict(attn_impl="cuda"), "attn_impl"),
    (dict(scan_impl="fast"), "scan_impl"),
    (dict(matmul_dtype="float16"), "matmul_dtype"),
    (dict(pattern="RL", lru_width=32, causal=False), "causal"),
]


@pytest.mark.parametrize("overrides,field", BAD, ids=[f for _, f in BAD])
def test_validation_names_field_value_and_rule(overrides, field):
    with pytest.raises(ValueError) as err:
        arch.ModelConfig(**BASE | overrides)
    message = str(err.value)
    assert f"ModelConfig.{field}=" in message
    assert repr((BASE | overrides).get(field)) in message


def test_config_is_frozen_hashable_and_replace_validates():
    cfg = arch.ModelConfig(**BASE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.width = 3
    assert hash(cfg) == hash(arch.ModelConfig(**BASE))
    assert cfg.replace(window=16).window == 16
    with pytest.raises(ValueError, match="window"):
        cfg.replace(window=0)
    with pytest.raises(ValueError, match="unknown ModelConfig field"):
        cfg.replace(windw=3)
    with pytest.raises(TypeError):
        arch.ModelConfig(64, 32, 4)  # keyword-only


def test_preset_overrides_and_unknown_name():
    cfg = arch.preset("gemma3_27b", window=512)
    assert cfg.window == 512 and cfg.width == 5376
    with pytest.raises(ValueError, match="unknown preset 'gemma5'"):
        arch.preset("gemma5")


def test_query_scale_27b_uses_width_over_heads():
    assert arch.preset("gemma2_27b").query_scale == pytest.approx(144**-0.5)
    assert arch.preset("gemma3_27b").query_scale == pytest.approx(168**-0.5)
    assert arch.preset("gemma3_4b").query_scale == pytest.approx(256**-0.5)


@pytest.mark.parametrize("name", list(arch.PRESETS))
def test_every_preset_builds_under_eval_shape(name):
    cfg = arch.preset(name)
    model = arch.params.abstract_model(cfg)
    assert len(model.blocks) == cfg.num_layers
    assert model.embed.shape == (cfg.vocab_size, cfg.width)
    out = jax.eval_shape(lambda m: m(jax.numpy.zeros((5,), jax.numpy.int32)), model)
    assert out.shape == (5, cfg.vocab_size)


@pytest.mark.parametrize("name", PUBLISHED_MODELS)
def test_published_parameter_counts_are_exact(name):
    cfg = arch.preset(name)
    printed, exact, _ = PUBLISHED_NON_EMBEDDING[name]
    counts = arch.count_params(cfg)
    assert counts["non_embedding"] == exact
    assert printed_matches(printed, counts["non_embedding"])
    assert counts["embedding"] == cfg.vocab_size * cfg.width
    assert counts["total"] == counts["embedding"] + counts["non_embedding"]


def test_printed_matches_rounding():
    assert printed_matches("698M", 697_896_064)
    assert not printed_matches("698M", 697_400_000)
    assert printed_matches("2.03B", 2_027_502_080)
    assert not printed_matches("2,024,517,888", 2_024_517_889)


def test_count_params_model_equals_config():
    cfg = arch.preset("tiny_recurrentgemma")
    model = arch.LM(cfg, key=jax.random.key(0))
    assert arch.count_params(model) == arch.count_params(cfg)


def test_presets_table_marks_every_published_model():
    from arch.presets import table

    rows = [r for r in table().splitlines() if r.split()[0] in PUBLISHED_MODELS]
    assert len(rows) == 10 and all(r.endswith("✓") for r in rows)
