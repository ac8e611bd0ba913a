"""``fit(state, advance, ...)``: the one training loop, shared by language models
(:func:`experiments.train.train`), the embedding fine-tuning (:mod:`experiments.embed.train`) and its
denoising adaptation (:mod:`experiments.embed.init`).

A recipe hands the loop its ``(params, opt_state)`` state and ``advance(state, step, n)``, which runs
``n`` optimizer steps from ``step`` and returns the new state and that call's metrics (device arrays:
``loss`` and any others, scalars or stacked ``[n]``). The loop owns everything else:

- the run directory: ``metrics.jsonl`` appended at every flush point, ``checkpoint/`` every
  ``ckpt_every`` steps and at the end (Orbax: sharded, atomic, checksummed; :mod:`experiments.checkpoint`);
- resumption: a checkpoint in the directory is restored and lines logged after it are dropped.
  Resuming is exact when ``advance`` is a pure function of ``(state, step)`` (batch ``s`` and the
  step's randomness derived from the seed and ``s``), which every recipe here guarantees;
- the flush schedule (log / evaluate / checkpoint / ``stop_at``), a non-finite loss stopping the run
  with the last good checkpoint named, throughput excluding compilation and evaluation, the bar;
- a multi-host job: every process runs the loop (the steps and checkpoints are collective), only
  process 0 writes ``metrics.jsonl`` and shows the bar (:func:`experiments.data.io.is_primary`).

``open_run`` returns a finished run's summary or writes (or checks) ``config.json``; the recipe writes
``summary.json`` last.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
from tqdm.auto import tqdm

from experiments import checkpoint
from experiments.data.io import atomic_write_bytes, is_primary, write_json


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or inf; the message names the step and the last good checkpoint."""


@dataclasses.dataclass
class Fitted:
    """What :func:`fit` returns: the final state, and how the run went."""

    state: Any
    resumed_from: int  # the checkpoint's step (0: a fresh start)
    train_seconds: float  # timed training, over every attempt (compilation and evaluation excluded)
    tokens_per_s: float  # this attempt's timed throughput; NaN when nothing after compilation was timed
    evals: dict | None  # the last ``evaluate`` result
    stopped_at: int | None = None  # set when ``stop_at`` ended the attempt early


def open_run(config, run_dir: str | Path) -> dict | None:
    """The summary of a finished run in ``run_dir`` (``summary.json`` is written last); else None,
    after creating the directory with ``config.json`` (``config.to_dict()``) or checking that the one
    there holds the same run (``from_dict`` of the class, compared by value)."""
    run_dir = Path(run_dir)
    if (run_dir / "summary.json").exists():
        return json.loads((run_dir / "summary.json").read_text())
    path = run_dir / "config.json"
    if path.exists():
        existing = type(config).from_dict(json.loads(path.read_text()))
        if existing != config:
            raise ValueError(f"{path} holds a different run ({existing.short_hash()}) than the one "
                             f"asked for ({config.short_hash()}); use another --out or --resume")
        return None
    if is_primary():
        run_dir.mkdir(parents=True, exist_ok=True)
    write_json(path, config.to_dict())
    return None


def truncate_metrics(path: Path, step: int) -> None:
    """On resume, drop lines logged after the checkpoint (they are about to be recomputed)."""
    if not is_primary() or not path.exists():
        return
    keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= step]
    atomic_write_bytes(path, "".join(ln + "\n" for ln in keep).encode())


def call_length(max_call: int, *intervals: int) -> int:
    """Steps per call: the largest count up to ``max_call`` that divides every flush interval (log,
    evaluation, checkpoint), so every flush point ends a call."""
    return math.gcd(max_call, *intervals)


def fit(state: Any, advance: Callable[[Any, int, int], tuple[Any, dict]], *, run_dir: str | Path,
        steps: int, seed: int, log_every: int, ckpt_every: int, tokens_per_step: int,
        eval_every: int | None = None, evaluate: Callable[[Any], dict] | None = None, max_call: int = 1,
        stop_at: int | None = None, progress: bool = True, desc: str = "train") -> Fitted:
    """Run ``advance`` from ``state`` (or from the run directory's checkpoint) to ``steps``.

    ``max_call``: steps one ``advance`` call may run (see :func:`call_length`); steps left before a
    flush point that do not fill a call run one by one. ``evaluate(state)``: a dict of figures logged
    every ``eval_every`` steps and at the end. ``stop_at``: checkpoint after that many steps and
    return early (a preemption on purpose: the next call resumes). A log line holds the mean loss
    since the last one and every other metric at its last step."""
    run_dir = Path(run_dir)
    primary = is_primary()
    if primary:
        run_dir.mkdir(parents=True, exist_ok=True)
    eval_every = eval_every or steps
    k = call_length(max_call, log_every, eval_every, ckpt_every)
    ckpt_path, metrics_path = run_dir / checkpoint.CKPT_NAME, run_dir / "metrics.jsonl"
    start, prior_seconds, last_good = 0, 0.0, None
    if checkpoint.exists(ckpt_path):  # an old single-file checkpoint fails here, saying how to convert
        state, meta = checkpoint.restore(ckpt_path, state)
        start, prior_seconds, last_good = meta["step"], meta.get("train_seconds", 0.0), meta["step"]
        truncate_metrics(metrics_path, start)

    def save(step: int, seconds: float) -> None:
        meta = {"step": step, "data_position": step, "seed": seed, "train_seconds": seconds,
                "rng": np.asarray(jax.random.key_data(jax.random.key(seed))).tolist()}
        checkpoint.save(ckpt_path, state, meta)

    def is_flush(done: int) -> bool:
        return (done % log_every == 0 or done % eval_every == 0 or done % ckpt_every == 0
                or done == steps or done == stop_at)

    bar = tqdm(total=steps, initial=start, desc=desc, unit="step", disable=not (progress and primary))
    pending: list[tuple[int, Any]] = []  # (first step, device metrics of its call): no host sync per step
    timed_tokens, timed_seconds, t_mark, untimed = 0, 0.0, None, 0
    evals = None
    done = start
    with open(metrics_path, "a") if primary else open(os.devnull, "w") as log:
        while done < steps:
            step = done
            n = k if step % k == 0 and not any(is_flush(d) for d in range(step + 1, step + k)) else 1
            state, m = advance(state, step, n)
            pending.append((step, m))
            done = step + n
            if t_mark is None:  # exclude compilation from the throughput
                jax.block_until_ready(m)
                t_mark, untimed = time.perf_counter(), done
            if not is_flush(done):
                continue
            fetched = [{key: np.atleast_1d(v) for key, v in mm.items()}
                       for mm in jax.device_get([p[1] for p in pending])]
            now = time.perf_counter()
            timed_tokens += (done - max(untimed, pending[0][0])) * tokens_per_step
            timed_seconds += now - t_mark
            t_mark = now
            for (first, _), mm in zip(pending, fetched):
                for i, loss in enumerate(mm["loss"]):
                    if not math.isfinite(float(loss)):
                        where = (f"{ckpt_path} (step {last_good})" if last_good is not None
                                 else "none written yet")
                        raise NonFiniteLossError(
                            f"loss is {float(loss)} at step {first + i + 1} of run {run_dir}; training "
                            f"stopped; last good checkpoint: {where}")
            # NaN until a call after the first (which compiles) has been timed: not measured, not zero
            tok_s = timed_tokens / timed_seconds if timed_tokens and timed_seconds > 0 else float("nan")
            rec = {"step": done, "loss": float(np.mean(np.concatenate([mm["loss"] for mm in fetched])))}
            rec |= {key: float(v[-1]) for key, v in fetched[-1].items() if key != "loss"}
            rec |= {"tokens": done * tokens_per_step, "tokens_per_s": tok_s}
            pending.clear()
            if evaluate is not None and (done % eval_every == 0 or done == steps):
                evals = evaluate(state)
                rec |= evals
                t_mark = time.perf_counter()  # evaluation time is not training throughput
            log.write(json.dumps(rec) + "\n")
            log.flush()
            bar.set_postfix(loss=f"{rec['loss']:.3f}", tok_s=f"{tok_s:,.0f}", refresh=False)
            if done % ckpt_every == 0 or done == steps or done == stop_at:
                save(done, prior_seconds + timed_seconds)
                last_good = done
                t_mark = time.perf_counter()
            bar.update(done - bar.n)
            if done == stop_at:
                bar.close()
                return Fitted(state, start, prior_seconds + timed_seconds, tok_s, evals, stopped_at=done)
    bar.close()
    if evaluate is not None and evals is None:  # resumed from a checkpoint taken at the last step
        evals = evaluate(state)
    tokens_per_s = timed_tokens / timed_seconds if timed_tokens and timed_seconds > 0 else float("nan")
    return Fitted(state, start, prior_seconds + timed_seconds, tokens_per_s, evals)
