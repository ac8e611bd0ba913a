"""Fine-tune an ``EmbeddingModel`` with EmbeddingGemma's recipe (report section 2.2-2.3).

    python -m experiments.embed.train [--init random|decoder|encoder] [--pooling mean|first|last|attention]
        [--spread-out W] [--distill W] [--qat int8|int4|mixed] [--scale quick|default|full] [--out DIR]

A run directory is the language models' (:mod:`experiments.loop`): ``config.json`` (written first),
``metrics.jsonl`` (appended while training), ``checkpoint/`` (the fine-tuned weights and optimizer
state; an interrupted run resumes from it) and ``summary.json`` (written last, atomically; a run that
has one is skipped). Evaluation is on the held-out modules at every Matryoshka dimension, with the model as
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
from experiments import checkpoint
from experiments import sharding as shd
from experiments.data.io import is_primary, write_json
from experiments.embed.config import BASES, EmbedConfig, config_for
from experiments.embed.data import EmbedData, prepare
from experiments.embed.evaluate import evaluate_model
from experiments.embed.init import initial_model
from experiments.embed.losses import embedding_loss
from experiments.loop import fit, open_run


def make_step(static, ec: EmbedConfig, optimizer, *, has_teacher: bool):
    """The jitted ``(params, opt_state, batch) -> (params, opt_state, metrics)``."""
    hard = ec.hard_negatives != "none"
    dims = ec.dims() if ec.mrl_train else None
    schedule = ec.schedule()

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

    def step(params, opt_state, b, at):
        (loss, parts), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, b)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, {
            "loss": loss, **parts, "grad_norm": optax.tree.norm(grads), "lr": schedule(at)}

    return jax.jit(step)  # not donated: the caller keeps the model it passed in


def tokens_per_step(ec: EmbedConfig) -> int:
    """Tokens one step encodes: each pair's query, positive and (with hard negatives) negative."""
    return ec.batch * (ec.q_len + ec.p_len * (2 if ec.hard_negatives != "none" else 1))


def fine_tune(ec: EmbedConfig, model: EmbeddingModel, data: EmbedData, run_dir: str | Path, *,
              progress: bool = False, desc: str = "embed") -> EmbeddingModel:
    """``ec.steps`` steps of the embedding objective from ``model`` by the one training loop
    (:func:`experiments.loop.fit`): logged, checkpointed and resumable in ``run_dir``."""
    params, static = eqx.partition(model, eqx.is_inexact_array)
    optimizer = ec.optimizer()
    has_teacher = data.teacher_queries is not None and ec.w_distill > 0
    step = make_step(static, ec, optimizer, has_teacher=has_teacher)

    def advance(state, s: int, n: int):  # batch s is a pure function of (ec.seed, s): exact resume
        params, opt_state, m = step(*state, data.batch(ec, s, with_teacher=has_teacher), s)
        return (params, opt_state), m

    fitted = fit((params, optimizer.init(params)), advance, run_dir=run_dir, steps=ec.steps, seed=ec.seed,
                 log_every=ec.log_every, ckpt_every=ec.ckpt_every, tokens_per_step=tokens_per_step(ec),
                 progress=progress, desc=desc)
    return eqx.combine(fitted.state[0], static)


def abstract_model(ec: EmbedConfig, vocab_size: int) -> EmbeddingModel:
    return eqx.filter_eval_shape(EmbeddingModel, ec.model_config(vocab_size), key=jax.random.key(0),
                                 dense_dims=ec.dense_dims(), pooling=ec.pooling)


def load_model(run_dir: str | Path) -> tuple[EmbeddingModel, EmbedConfig]:
    """The fine-tuned model of a finished run directory (its final checkpoint) and its config."""
    run_dir = Path(run_dir)
    ec = EmbedConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
    vocab = json.loads((run_dir / "summary.json").read_text())["vocab_size"]
    return checkpoint.load_params(run_dir / checkpoint.CKPT_NAME, abstract_model(ec, vocab)), ec


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
    """Fine-tune and evaluate ``ec`` in ``run_dir`` (skipped when its summary exists; resumed from its
    checkpoint when one is there)."""
    run_dir = Path(run_dir)
    if (summary := open_run(ec, run_dir)) is not None:
        return summary
    start = time.perf_counter()
    data = prepare(ec)
    lm_root = Path(lm_root) if lm_root else run_dir.parent.parent / "embedding_lm"
    model, init_info = initial_model(ec, data.tokenizer, lm_root=lm_root, key=jax.random.key(ec.init_seed),
                                     vocab_vectors=data.teacher_vocab, progress=progress)
    init_seconds = time.perf_counter() - start
    model = fine_tune(ec, model, data, run_dir, progress=progress, desc=f"embed {label or run_dir.name}")
    train_seconds = time.perf_counter() - start - init_seconds
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
    write_json(run_dir / "summary.json", summary)
    return summary


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m experiments.embed.train", description=__doc__.split("\n")[0])
    p.add_argument("--scale", choices=tuple(BASES), default="default")
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
    shd.add_process_flags(p)
    a = p.parse_args(argv)
    try:
        shd.start_processes(a)  # each process trains its own copy; process 0 writes the run's files
    except ValueError as e:
        p.error(str(e))
    kw = {k: getattr(a, k) for k in ("init", "pooling", "w_spread", "w_distill", "qat", "teacher", "steps",
                                     "tau", "seed") if getattr(a, k) is not None}
    ec = config_for(a.scale, **kw)
    out = a.out or Path("results") / "embedding" / ec.short_hash()
    summary = train_embedding(ec, out, lm_root=out.parent.parent / "embedding_lm",
                              tags={"scale": a.scale})
    if is_primary():
        print(json.dumps({"run_dir": str(out), "evals": summary["evals"]}, indent=1))
    return summary


if __name__ == "__main__":
    main()
