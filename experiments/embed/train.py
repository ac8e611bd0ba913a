"""Fine-tune an ``EmbeddingModel`` with EmbeddingGemma's recipe (report section 2.2-2.3).

    python -m experiments.embed.train [--init random|decoder|encoder] [--pooling mean|first|last|attention]
        [--spread-out W] [--distill W] [--qat int8|int4|mixed] [--scale quick|default|full] [--out DIR]

A run directory holds ``config.json`` (written first), ``metrics.jsonl`` (appended while training),
``model.eqx`` (the fine-tuned weights) and ``summary.json`` (written last, atomically; a run that has
one is skipped). Evaluation is on the held-out modules at every Matryoshka dimension, with the model as
deployed (weights quantized and dequantized when the run is quantization-aware).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

import arch
from arch import quant
from arch.embedding import EmbeddingModel
from experiments.data.io import write_json
from experiments.embed.config import EmbedConfig, config_for
from experiments.embed.data import EmbedData, prepare
from experiments.embed.evaluate import evaluate_model
from experiments.embed.init import initial_model
from experiments.embed.losses import embedding_loss
from experiments.optim import adamw


def make_step(static, ec: EmbedConfig, optimizer, *, has_teacher: bool):
    """The jitted ``(params, opt_state, batch) -> (params, opt_state, metrics)``."""
    hard = ec.hard_negatives != "none"
    dims = ec.dims() if ec.mrl_train else None

    def loss_fn(params, b):
        model = quant.fake_quantize_model(eqx.combine(params, static), ec.qat)  # QAT: STE
        enc = model  # the whole [B, T] batch in one call (no per-example weight gradients)
        q = enc(b["q_tok"], b["q_mask"])
        if hard:  # positives and hard negatives share a length: one batched pass
            pn = enc(jnp.concatenate([b["p_tok"], b["n_tok"]]), jnp.concatenate([b["p_mask"], b["n_mask"]]))
            p, n = jnp.split(pn, 2)
        else:
            p, n = enc(b["p_tok"], b["p_mask"]), None
        teacher = (b["tq"], b["tp"], b["tn"]) if has_teacher else None
        total, parts = embedding_loss(
            q, p, n, b["q_ids"], b["p_ids"], n_valid=b["n_valid"] if hard else None, teacher=teacher,
            dims=dims, tau=ec.tau, alpha=ec.alpha, w_spread=ec.w_spread,
            w_distill=ec.w_distill if has_teacher else 0.0, distill_kind=ec.distill_kind,
            distill_mrl=ec.distill_mrl)
        return total, parts

    @jax.jit
    def step(params, opt_state, b):
        (loss, parts), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, b)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, {"loss": loss, **parts}

    return step


def optimizer_for(ec: EmbedConfig) -> optax.GradientTransformation:
    """The common recipe (:func:`experiments.optim.adamw`), with AdamW's own b2 = 0.999 as this
    recipe has always trained, and decay to 0.1 x ``lr``."""
    return adamw(ec.lr, ec.steps, warmup=ec.warmup, min_lr_ratio=0.1, weight_decay=ec.weight_decay,
                 clip=ec.clip)


def fine_tune(ec: EmbedConfig, model: EmbeddingModel, data: EmbedData, *, log=None) -> EmbeddingModel:
    """``ec.steps`` steps of the embedding objective from ``model``."""
    params, static = eqx.partition(model, eqx.is_inexact_array)
    optimizer = optimizer_for(ec)
    opt_state = optimizer.init(params)
    has_teacher = data.teacher_queries is not None and ec.w_distill > 0
    step = make_step(static, ec, optimizer, has_teacher=has_teacher)
    start = time.perf_counter()
    for s in range(ec.steps):
        batch = data.batch(ec, s, with_teacher=has_teacher)
        params, opt_state, m = step(params, opt_state, batch)
        if log is not None and (s % ec.log_every == 0 or s == ec.steps - 1):
            log({"step": s, **{k: float(v) for k, v in m.items()},
                 "seconds": round(time.perf_counter() - start, 2)})
    return eqx.combine(params, static)


def abstract_model(ec: EmbedConfig, vocab_size: int) -> EmbeddingModel:
    return eqx.filter_eval_shape(EmbeddingModel, ec.model_config(vocab_size), key=jax.random.key(0),
                                 dense_dims=ec.dense_dims(), pooling=ec.pooling)


def load_model(run_dir: str | Path) -> tuple[EmbeddingModel, EmbedConfig]:
    """The fine-tuned model of a finished run directory and its config."""
    run_dir = Path(run_dir)
    ec = EmbedConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
    vocab = json.loads((run_dir / "summary.json").read_text())["vocab_size"]
    return eqx.tree_deserialise_leaves(run_dir / "model.eqx", abstract_model(ec, vocab)), ec


def evaluate(model: EmbeddingModel, data: EmbedData, dims, precision: str | None = None) -> dict:
    """Held-out metrics of ``model`` served at ``precision``: None (f32), "bfloat16" (weights rounded)
    or a quantization scheme (weights quantized and dequantized)."""
    if precision == "bfloat16":
        served = quant.cast(model, jnp.bfloat16)
    else:
        served = quant.deploy(model, precision)
    return evaluate_model(served, data.eval_tasks, dims)


def train_embedding(ec: EmbedConfig, run_dir: str | Path, *, lm_root: str | Path | None = None,
                    label: str | None = None, tags: dict | None = None, progress: bool = True) -> dict:
    """Fine-tune and evaluate ``ec`` in ``run_dir`` (skipped when its summary exists)."""
    run_dir = Path(run_dir)
    summary_path = run_dir / "summary.json"
    if summary_path.exists():
        return json.loads(summary_path.read_text())
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "config.json", {**ec.to_dict(), "kind": "train"})
    metrics_path = run_dir / "metrics.jsonl"
    metrics_path.unlink(missing_ok=True)  # no resume: a run is short; start its log again
    start = time.perf_counter()
    with open(metrics_path, "a") as f:
        def log(rec):
            f.write(json.dumps(rec) + "\n")
            f.flush()
            if progress and "step" in rec:
                print(f"  [{label or run_dir.name}] {json.dumps(rec)}", flush=True)

        data = prepare(ec)
        lm_root = Path(lm_root) if lm_root else run_dir.parent.parent / "embedding_lm"
        model, init_info = initial_model(ec, data.tokenizer, lm_root=lm_root,
                                         key=jax.random.key(ec.init_seed), log=log,
                                         vocab_vectors=data.teacher_vocab)
        init_seconds = time.perf_counter() - start
        model = fine_tune(ec, model, data, log=log)
    train_seconds = time.perf_counter() - start - init_seconds
    eqx.tree_serialise_leaves(run_dir / "model.eqx", model)
    evals = evaluate(model, data, ec.dims(), ec.qat)
    summary = {
        "label": label or run_dir.name, "tags": tags or {}, "kind": "train", "evals": evals,
        "precision": ec.qat or "float32", "bits_per_weight": quant.bits_per_weight(model, ec.qat),
        "teacher": data.teacher_name if ec.w_distill > 0 else None,
        "distillation": ("on" if ec.w_distill > 0 and data.teacher_queries is not None else
                         "off (no teacher found)" if ec.w_distill > 0 else "off"),
        "vocab_size": data.tokenizer.vocab_size, "train_pairs": data.num_pairs,
        "model_config": model.cfg.to_dict(), "params": arch.count_params(model.trunk)["total"],
        "init_seconds": round(init_seconds, 1), "train_seconds": round(train_seconds, 1), **init_info,
    }
    write_json(summary_path, summary)
    return summary


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m experiments.embed.train", description=__doc__.split("\n")[0])
    p.add_argument("--scale", choices=("quick", "default", "full"), default="default")
    p.add_argument("--init", choices=("random", "decoder", "encoder"))
    p.add_argument("--pooling", choices=arch.embedding.POOLINGS)
    p.add_argument("--spread-out", type=float, dest="w_spread")
    p.add_argument("--distill", type=float, dest="w_distill")
    p.add_argument("--qat", choices=quant.SCHEMES)
    p.add_argument("--teacher", help="'auto', 'none', a sentence-transformers folder or an .npy")
    p.add_argument("--steps", type=int)
    p.add_argument("--tau", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--out", type=Path, help="run directory (default results/embedding/<hash>/)")
    a = p.parse_args(argv)
    kw = {k: getattr(a, k) for k in ("init", "pooling", "w_spread", "w_distill", "qat", "teacher", "steps",
                                     "tau", "seed") if getattr(a, k) is not None}
    ec = config_for(a.scale, **kw)
    out = a.out or Path("results") / "embedding" / ec.short_hash()
    summary = train_embedding(ec, out, lm_root=out.parent.parent / "embedding_lm",
                              tags={"scale": a.scale})
    print(json.dumps({"run_dir": str(out), "evals": summary["evals"]}, indent=1))
    return summary


if __name__ == "__main__":
    main()
