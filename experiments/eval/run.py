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
from experiments.data.batches import prepare_data
from experiments.data.corpus import load_corpus
from experiments.eval import suite as evals
from experiments.train import load_trained

CONTEXT_FOR_MEMORY = 32_768  # the reports compare caches at 32K (Gemma 3 Table 3, Figure 5)


def evaluate_run(run_dir: str | Path, *, overrides: dict[str, Any] | None = None, seq_len: int | None = None,
                 quick: bool = False) -> dict[str, Any]:
    """Flat dict of metrics for the model trained in ``run_dir`` (optionally reconfigured):
    ``val_loss``/``val_ppl`` at ``seq_len`` (default: the training length), ``loss_pos_<lo>_<hi>``,
    passkey and MQAR accuracies (:func:`experiments.eval.suite.run_probes`), decode cache bytes at 32K,
    weight bytes and parameter counts."""

    model, tokenizer, run = load_trained(run_dir)
    if overrides:
        model = arch.reconfigure(model, **overrides)
    cfg = model.cfg
    seq_len = seq_len or run.seq_len
    data = prepare_data(load_corpus(run.data), tokenizer, seq_len)
    val = data.validation_set(min(4 if quick else 16, len(data.validation)))
    has_local = "L" in cfg.layer_kinds
    window = cfg.window if has_local else seq_len // 4
    out: dict[str, Any] = {"eval_seq_len": seq_len}
    out.update(evals.run_probes(model, tokenizer, val, window=window, seq_len=seq_len, quick=quick,
                                batch_size=4))
    # loss by position over every validation sequence (the probes' own figure uses only a few rows)
    by_pos = evals.loss_by_position(evals.model_logits_fn(model), np.asarray(val.inputs),
                                    np.asarray(val.targets), buckets=evals.default_buckets(seq_len, window),
                                    batch_size=4)
    out.update({f"loss_pos_{lo}_{hi}": v for (lo, hi), v in by_pos.loss.items()})
    tokens = sum(by_pos.tokens.values())
    out["val_loss"] = sum(by_pos.loss[b] * n for b, n in by_pos.tokens.items()) / max(tokens, 1)
    out["val_ppl"] = math.exp(min(out["val_loss"], 50.0))
    out["cache_bytes_32k"] = int(arch.memory.cache_bytes(cfg, CONTEXT_FOR_MEMORY, dtype="bfloat16"))
    out["weights_bytes_bf16"] = int(arch.memory.weights_bytes(cfg, "bfloat16"))
    out["params_non_embedding"] = arch.count_params(cfg)["non_embedding"]
    out["pattern"] = cfg.pattern
    out["window"] = cfg.window if has_local else None
    return out
