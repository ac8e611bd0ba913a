"""Evaluate a trained run: validation loss (overall and by position), long-range probes, memory.

Used by every sweep after training, and for inference-time variants (another window, global layers
turned local, longer contexts, RoPE rescaling) through ``arch.reconfigure`` — same weights, new config.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

import arch

CONTEXT_FOR_MEMORY = 32_768  # the reports compare caches at 32K (Gemma 3 Table 3, Figure 5)


def evaluate_run(run_dir: str | Path, *, overrides: dict[str, Any] | None = None, seq_len: int | None = None,
                 quick: bool = False, num_sequences: int | None = None) -> dict[str, Any]:
    """Flat dict of metrics for the model trained in ``run_dir`` (optionally reconfigured)."""
    from experiments import evals
    from experiments.corpus import load_corpus
    from experiments.data import prepare_data
    from experiments.train import load_trained

    model, tokenizer, run = load_trained(run_dir)
    if overrides:
        model = arch.reconfigure(model, **overrides)
    seq_len = seq_len or run.seq_len
    data = prepare_data(load_corpus(run.data), tokenizer, seq_len)
    n = num_sequences or (4 if quick else 32)
    val = data.validation_set(min(n, len(data.validation)))
    logits_fn = evals.model_logits_fn(model)
    inputs, targets = np.asarray(val.inputs), np.asarray(val.targets)
    by_pos = evals.loss_by_position(logits_fn, inputs, targets, batch_size=4 if quick else 8)
    cfg = model.cfg
    out: dict[str, Any] = {"eval_seq_len": seq_len, **_flatten("loss_pos", by_pos)}
    out["val_loss"] = by_pos["mean"] if "mean" in by_pos else float(np.nan)
    out["val_ppl"] = math.exp(min(out["val_loss"], 50.0))
    window = cfg.window if "L" in cfg.layer_kinds else None
    out.update(evals.run_probes(model, tokenizer, val, window=window or cfg.window, seq_len=seq_len,
                                quick=quick))
    out["cache_bytes_32k"] = int(arch.memory.cache_bytes(cfg, CONTEXT_FOR_MEMORY, dtype="bfloat16"))
    out["weights_bytes_bf16"] = int(arch.memory.weights_bytes(cfg, "bfloat16"))
    out["params_non_embedding"] = arch.count_params(cfg)["non_embedding"]
    out["pattern"] = cfg.pattern
    out["window"] = cfg.window
    return out


def _flatten(prefix: str, d: dict) -> dict:
    flat = {}
    for k, v in d.items():
        if isinstance(v, dict):
            flat.update(_flatten(f"{prefix}_{k}", v))
        elif isinstance(v, int | float | np.floating | np.integer):
            flat[f"{prefix}_{k}"] = float(v)
    return flat
