"""Model FLOPs count the keys each layer's mask lets a query see (causal and bidirectional)."""

import jax.numpy as jnp
import jax.random as jr
import pytest

import arch
import gemma_kernels
from arch.attention import Attention
from arch.masks import kernel_window
from experiments.flops import flops_per_token


@pytest.mark.parametrize("name", ["tiny_gemma3", "tiny_gemma2", "tiny_recurrentgemma", "tiny_embeddinggemma"])
@pytest.mark.parametrize("t", [5, 40])
def test_attention_flops_follow_the_built_layers_masks(name, t):
    """The model's own layers (not the pattern letters) say which keys each query sees."""
    cfg = arch.preset(name)
    model = arch.LM(cfg, key=jr.key(0))
    pos = jnp.arange(t)
    keys = 0.0
    for block in model.blocks:
        if isinstance(block.mixer, Attention):
            w = kernel_window(block.mixer.window, cfg.causal)
            mask = gemma_kernels.visible(pos, pos, window=w, causal=cfg.causal)
            keys += float(jnp.broadcast_to(mask, (t, t)).sum()) / t  # a global mask may come as [1, t]
    matmuls = 2.0 * arch.count_params(cfg)["non_embedding"] + 2.0 * cfg.width * cfg.vocab_size
    attention = flops_per_token(cfg, t, training=False) - matmuls
    assert attention == pytest.approx(4.0 * cfg.num_heads * cfg.head_dim * keys, rel=1e-9)
    assert flops_per_token(cfg, t) == pytest.approx(3 * (matmuls + attention))


def test_attention_window_names_each_letter():
    cfg = arch.preset("tiny_gemma3")
    assert cfg.attention_window("G") is None and cfg.attention_window("L") == cfg.window
    with pytest.raises(ValueError, match="'R'"):
        cfg.attention_window("R")


def test_mfu_is_model_flops_over_the_measured_peak(monkeypatch):
    from experiments import flops

    monkeypatch.setattr(flops, "measure_matmul_peak", lambda dtype: {"float32": 1e9, "bfloat16": 2e9}[dtype])
    cfg = arch.preset("tiny_gemma3", matmul_dtype="float32")
    per_token = flops_per_token(cfg, 32)
    assert flops.mfu(100.0, cfg, 32) == pytest.approx(100 * per_token / 1e9)
    assert flops.mfu(100.0, cfg, 32, dtype="bfloat16") == pytest.approx(100 * per_token / 2e9)
    # a CPU split into one device per core was measured whole: devices do not divide it again
    assert flops.mfu(100.0, cfg, 32, devices=2) == flops.mfu(100.0, cfg, 32)
