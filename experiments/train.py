"""``train(run, run_dir)``: a language model trained on the corpus (AdamW, warmup + cosine, global-norm
clipping) by the one training loop, :func:`experiments.loop.fit`.

Run directory (DESIGN.md, "Experiments and results"): ``config.json`` written first,
``metrics.jsonl`` appended as training goes, ``checkpoint/`` every ``ckpt_every`` steps (sharded, atomic,
checksummed; see :mod:`experiments.checkpoint`) and ``summary.json`` written last, atomically. A run
with a summary is done and is returned as is; a run with a checkpoint resumes from it, bit for bit:
batch ``s`` is a pure function of ``(data, batch, seed, s)`` and the step's RNG key is
``fold_in(key(seed), s)``.

CLI: ``python -m experiments.train --preset small_gemma3 [--override window=64 ...]``.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import arch
from experiments import REPO_ROOT
from experiments import sharding as shd
from experiments.data.batches import Data, prepare_data
from experiments.data.corpus import load_corpus, unigram_entropy
from experiments.data.io import is_primary, write_json
from experiments.data.tasks import TASKS, task_data
from experiments.data.tokenizer import get_tokenizer
from experiments.distill.teacher import load_teacher
from experiments.flops import flops_per_token, measure_matmul_peak, mfu
from experiments.loop import NonFiniteLossError, call_length, fit, open_run  # noqa: F401  (re-exported)
from experiments.runconfig import RunConfig
from experiments.step import batch_arrays, init_params, make_eval_step, make_train_step, stack_steps
from experiments.trained import initial_params, load_trained  # noqa: F401  (load_trained: re-exported)

STEPS_PER_CALL = 10  # train steps per jitted call, at most (see train())


def git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                             timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


# ---------------------------------------------------------------------------------------------- train
def load_run_data(run: RunConfig) -> Data:
    """The corpus (default or ``run.data``), its tokenizer (trained and cached, or ``run.tokenizer``),
    packed into sequences of ``run.seq_len``; or the run's synthetic task, alone or mixed into them
    (:func:`experiments.data.tasks.task_data`)."""
    if run.pure_task:
        return task_data(run.task_spec())
    corpus = load_corpus(run.data)
    tok = get_tokenizer(corpus, vocab_size=run.vocab_size, model_file=run.tokenizer)
    data = prepare_data(corpus, tok, run.seq_len)
    return data if run.task is None else task_data(run.task_spec(tok.vocab_size), data, run.task_fraction)


def evaluate(eval_step, params, val, batch_size: int, put, divisor: int = 1) -> float:
    """Mean validation cross-entropy (nats/token) over the fixed validation sequences, in chunks of
    ``batch_size`` (a last chunk is cut to a multiple of ``divisor``, the number of devices)."""
    total, count = 0.0, 0.0
    arrays = batch_arrays(val)
    for i in range(0, val.inputs.shape[0], batch_size):
        rows = min(batch_size, val.inputs.shape[0] - i) // divisor * divisor
        if rows == 0:
            continue
        s, n = eval_step(params, put({k: v[i : i + rows] for k, v in arrays.items()}))
        total, count = total + float(s), count + float(n)
    return total / max(count, 1.0)


def train(run: RunConfig, run_dir: str | Path, *, progress: bool = True, mesh=None,
          stop_at: int | None = None, steps_per_call: int = STEPS_PER_CALL) -> dict:
    """Train ``run`` in ``run_dir`` (resuming if a checkpoint is there); returns the summary dict.

    ``mesh``: a ``("data", "fsdp")`` mesh from :func:`experiments.sharding.make_mesh`; None = one device.
    ``stop_at``: checkpoint after that many steps and return ``{"stopped_at": step}`` without a summary
    (a preemption on purpose: the next call resumes).
    ``steps_per_call``: train steps per jitted call (see :func:`call_length`). One call allocates its
    working memory once for all its steps, and a fresh allocation costs page faults on every page: on
    a CPU, about 1 us per 4 KiB, 15% of a small_gemma3 step. The steps themselves are the same
    computation (bit for bit on CPU); steps left before a flush point that do not fill a call run one
    by one.
    """
    if not isinstance(steps_per_call, int) or steps_per_call < 1:
        raise ValueError(f"train(steps_per_call={steps_per_call!r}): must be an int >= 1")
    run_dir = Path(run_dir)
    if (summary := open_run(run, run_dir)) is not None:
        return summary
    wall_start = time.perf_counter()
    data = load_run_data(run)
    teacher = load_teacher(run, data, run_dir)  # None without run.teacher (experiments.distill.teacher)
    cfg = run.model_config(data.tokenizer.vocab_size)
    optimizer = run.optimizer()
    params, static = init_params(cfg, run.seed)
    params = initial_params(run, run_dir, params, data.tokenizer)  # RunConfig.init: a trained start
    opt_state = optimizer.init(params)
    k = call_length(steps_per_call, run.log_every, run.eval_every, run.ckpt_every)
    # each process reads only its rows of every batch (the whole batch on one process)
    rows = None if mesh is None else shd.process_rows(shd.batch_sharding(mesh), run.batch)
    put, put_k, put_val = jax.device_put, jax.device_put, jax.device_put
    if mesh is not None:
        put = lambda b: shd.put_local(b, shd.batch_sharding(mesh), run.batch)
        put_k = lambda b: shd.put_local(b, shd.batch_sharding(mesh, leading=True), run.batch)
        put_val = lambda b: shd.shard_batch(b, shd.batch_sharding(mesh))  # the whole set on every host
    if mesh is not None:
        params = jax.device_put(params, shd.state_shardings(mesh, params))
        opt_state = jax.device_put(opt_state, shd.state_shardings(mesh, opt_state))
    n_dev = 1 if mesh is None else mesh.size
    step_fn = make_train_step(static, optimizer, run, mesh=mesh, params=params, opt_state=opt_state,
                              teacher=teacher)
    call_fn = step_fn if k == 1 else make_train_step(static, optimizer, run, mesh=mesh, params=params,
                                                     opt_state=opt_state, teacher=teacher, steps_per_call=k)
    eval_step = make_eval_step(static, doc_mask=run.doc_mask)
    batches = data.batches(run.batch, run.seed)
    val = data.validation_set(run.eval_batches * run.batch)

    def arrays_at(step: int) -> dict:
        return batch_arrays(batches.batch(step, rows))

    def advance(state, step: int, n: int):
        at = jnp.asarray(step, jnp.int32)
        if n > 1:
            stacked = stack_steps([arrays_at(s) for s in range(step, step + n)])
            params, opt_state, m = call_fn(*state, put_k(stacked), at)
        else:
            params, opt_state, m = step_fn(*state, put(arrays_at(step)), at)
        return (params, opt_state), m

    def validation(state) -> dict:
        loss = evaluate(eval_step, state[0], val, run.batch, put_val, n_dev)
        return {"val_loss": loss, "val_ppl": math.exp(min(loss, 50.0))}

    fitted = fit((params, opt_state), advance, run_dir=run_dir, steps=run.steps, seed=run.seed,
                 log_every=run.log_every, ckpt_every=run.ckpt_every, eval_every=run.eval_every,
                 evaluate=validation, tokens_per_step=run.tokens_per_step, max_call=k, stop_at=stop_at,
                 progress=progress, desc=f"train {run.preset}")
    if fitted.stopped_at is not None:
        return {"stopped_at": fitted.stopped_at, "run_dir": str(run_dir)}
    val_loss, tokens_per_s = fitted.evals["val_loss"], fitted.tokens_per_s
    fpt = flops_per_token(cfg, run.seq_len)
    peak = measure_matmul_peak(cfg.matmul_dtype)
    summary = {
        "run": run.short_hash(), "preset": run.preset, "steps": run.steps,
        "final_val_loss": val_loss, "final_val_ppl": math.exp(min(val_loss, 50.0)),
        "unigram_entropy": unigram_entropy(np.asarray(data.train.stream)),
        "tokens_seen": run.steps * run.tokens_per_step, "tokens_per_s": tokens_per_s,
        "flops_per_token": fpt, "matmul_peak_flops": peak,
        "mfu": mfu(tokens_per_s, cfg, run.seq_len, devices=n_dev),
        "train_seconds": fitted.train_seconds, "wall_seconds": time.perf_counter() - wall_start,
        "resumed_from": fitted.resumed_from or None, "corpus": data.corpus.source,
        "corpus_fingerprint": data.corpus.fingerprint,
        "tokenizer_path": str(data.tokenizer.path) if data.tokenizer.path else None,
        "tokenizer_fingerprint": data.tokenizer.fingerprint, "git_sha": git_sha(),
        "params": arch.count_params(cfg), "device_kind": jax.devices()[0].device_kind,
        "num_devices": n_dev, "mesh": None if mesh is None else dict(mesh.shape),
        "model_config": cfg.to_dict(), "teacher": teacher.info if teacher else None,
    }
    write_json(run_dir / "summary.json", summary)  # process 0 only
    return summary


# ------------------------------------------------------------------------------------------------ CLI
def parse_value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_args(argv: list[str] | None = None) -> tuple[RunConfig, Path, tuple[int, int], bool, int]:
    """``(run, out_dir, (data_parallel, fsdp), progress, steps_per_call)`` from the command line."""
    return parse_command(argv)[0]


def parse_command(argv: list[str] | None = None) -> tuple[tuple, argparse.Namespace]:
    """:func:`parse_args`' tuple and every flag parsed (the multi-host ones and ``--stop-at`` too)."""
    p = argparse.ArgumentParser(prog="python -m experiments.train", description=__doc__.split("\n")[0])
    p.add_argument("--preset", help="a name of arch.PRESETS (default small_gemma3)")
    p.add_argument("--override", action="append", default=[], metavar="K=V",
                   help="ModelConfig override, value parsed as a Python literal (else a string)")
    p.add_argument("--data", help="text folder/files, .jsonl or .parquet (default: the stdlib corpus)")
    p.add_argument("--task", choices=TASKS, help="train on a synthetic task (experiments.data.tasks), "
                   "alone or, with --task-fraction < 1, mixed into the corpus")
    p.add_argument("--task-kwarg", action="append", default=[], metavar="K=V", dest="task_kwarg",
                   help="a task size (pairs, keys, values, key_len, gap, max_gap), e.g. pairs=8")
    p.add_argument("--task-fraction", type=float, dest="task_fraction",
                   help="share of rows from the task (default 1: the task alone)")
    p.add_argument("--tokenizer", help="an existing SentencePiece .model (default: train one)")
    p.add_argument("--vocab-size", type=int, dest="vocab_size")
    p.add_argument("--steps", type=int)
    p.add_argument("--batch", type=int)
    p.add_argument("--seq", type=int, dest="seq_len")
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--matmul-dtype", choices=("float32", "bfloat16"), dest="matmul_dtype")
    p.add_argument("--out", help="run directory (default results/train/<short hash>/)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its config.json")
    p.add_argument("--fsdp", type=int, default=1)
    p.add_argument("--data-parallel", type=int, default=1, dest="data_parallel",
                   help="devices the batch splits over (on one CPU host: one device per core)")
    p.add_argument("--steps-per-call", type=int, default=STEPS_PER_CALL, dest="steps_per_call",
                   help="train steps per jitted call, at most (each call allocates its memory once)")
    p.add_argument("--stop-at", type=int, dest="stop_at", metavar="STEP",
                   help="checkpoint after STEP steps and exit without a summary (a later run resumes)")
    p.add_argument("--no-progress", action="store_true")
    shd.add_process_flags(p)
    a = p.parse_args(argv)
    fields = ("data", "tokenizer", "vocab_size", "steps", "batch", "seq_len", "lr", "seed", "matmul_dtype",
              "task", "task_fraction")
    if a.resume:
        if not a.out:
            p.error("--resume needs --out DIR (a run directory with a config.json)")
        flag = {act.dest: act.option_strings[0] for act in p._actions if act.option_strings}
        given = [flag[k] for k in ("preset", "override", "task_kwarg", *fields) if getattr(a, k)]
        if given:
            p.error(f"--resume continues the run in --out exactly as its config.json says; "
                    f"{', '.join(given)} cannot change it (start a new run with another --out instead)")
        run = RunConfig.from_dict(json.loads((Path(a.out) / "config.json").read_text()))
    else:
        def pairs(flag: str, items: list[str]) -> tuple[tuple[str, Any], ...]:
            out = []
            for item in items:
                key, sep, value = item.partition("=")
                if not sep:
                    p.error(f"{flag} {item!r}: expected KEY=VALUE")
                out.append((key.strip(), parse_value(value.strip())))
            return tuple(out)

        kw = {k: getattr(a, k) for k in fields if getattr(a, k) is not None}
        run = RunConfig(preset=a.preset or "small_gemma3", overrides=pairs("--override", a.override),
                        task_kwargs=pairs("--task-kwarg", a.task_kwarg), **kw)
    out = Path(a.out) if a.out else REPO_ROOT / "results" / "train" / run.short_hash()
    if a.steps_per_call < 1:
        p.error(f"--steps-per-call {a.steps_per_call}: must be >= 1")
    if a.stop_at is not None and a.stop_at < 1:
        p.error(f"--stop-at {a.stop_at}: must be >= 1")
    try:
        shd.process_settings(a)
    except ValueError as e:
        p.error(str(e))
    return (run, out, (a.data_parallel, a.fsdp), not a.no_progress, a.steps_per_call), a


def main(argv: list[str] | None = None) -> dict:
    (run, out, (data_parallel, fsdp), progress, steps_per_call), a = parse_command(argv)
    # one host: a CPU becomes one device per core; several processes: each brings its share
    shd.start_processes(a, devices=data_parallel * fsdp)
    mesh = shd.make_mesh(data_parallel, fsdp) if data_parallel * fsdp > 1 else None
    summary = train(run, out, progress=progress, mesh=mesh, steps_per_call=steps_per_call, stop_at=a.stop_at)
    keys = ("final_val_loss", "final_val_ppl", "unigram_entropy", "tokens_per_s", "mfu", "train_seconds")
    if is_primary():
        print(json.dumps({"run_dir": str(out), **{k: summary.get(k) for k in keys}}, indent=1))
    return summary


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
