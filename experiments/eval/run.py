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
from experiments.data.tasks import Task
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
    out: dict[str, Any] = {"eval_seq_len": seq_len, **memory_figures(cfg)}
    if run.task is not None:
        out.update(task_evals(model, run.task_spec(cfg.vocab_size), quick=quick))
    if run.pure_task:  # no text to measure perplexity or the text probes on
        return out
    data = prepare_data(load_corpus(run.data), tokenizer, seq_len)
    val = data.validation_set(min(4 if quick else 16, len(data.validation)))
    has_local = "L" in cfg.layer_kinds
    window = cfg.window if has_local else seq_len // 4
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
    return out


def memory_figures(cfg: arch.ModelConfig) -> dict[str, Any]:
    """Decode-cache bytes at 32K (bf16), weight bytes (in bf16, and in the format the model serves its
    weights in: ``cfg.weight_format``, float32 when unset), parameters, and the pattern and window."""
    return {"cache_bytes_32k": int(arch.memory.cache_bytes(cfg, CONTEXT_FOR_MEMORY, dtype="bfloat16")),
            "weights_bytes_bf16": int(arch.memory.weights_bytes(cfg, "bfloat16")),
            "weights_bytes": int(arch.memory.weights_bytes(cfg, cfg.weight_format or "float32")),
            "params_non_embedding": arch.count_params(cfg)["non_embedding"], "pattern": cfg.pattern,
            "window": cfg.window if "L" in cfg.layer_kinds else None}


TASK_BUCKETS = ("window", "field", "beyond")  # inside the window, inside L local layers' reach, beyond


def task_evals(model, task: Task, *, quick: bool = False) -> dict[str, Any]:
    """Accuracy on held-out rows of the run's task (stream 1) by answer distance: ``task_acc_window``
    (inside the local window), ``task_acc_field`` (inside what ``num_layers`` local layers of that window
    reach), ``task_acc_beyond`` (out of a local-only stack's reach), overall ``task_acc``, and the
    chance level. Buckets come from the config's window even for a model without local layers, so
    every model of a sweep is scored on the same distances."""
    rows = task.rows(1, range(64 if quick else 256))
    cfg = model.cfg
    edges = evals.distance_edges(cfg.window, cfg.num_layers)
    got = evals.task_accuracy(evals.model_logits_fn(model), rows.tokens[:, :-1], rows.tokens[:, 1:],
                              rows.answer, rows.distance, task.answer_ids(), edges=edges, batch_size=8)
    out = {f"task_acc_{name}": acc for name, acc in zip(TASK_BUCKETS, got.accuracy.values())}
    out |= {f"task_answers_{name}": n for name, n in zip(TASK_BUCKETS, got.answers.values())}
    pairs = [(a, n) for a, n in zip(got.accuracy.values(), got.answers.values()) if n]
    out["task_acc"] = sum(a * n for a, n in pairs) / max(sum(n for _, n in pairs), 1)
    return out | {"task_chance": got.chance, "task_edges": list(edges)}
