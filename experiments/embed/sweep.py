"""The ``embedding`` sweep: EmbeddingGemma's ablations at lab scale (report Tables 1-4 and 6-8).

    python -m experiments.embed.sweep [--scale quick|default|full] [--out results] [--figures DIR] [--dry-run]
        [--shard i/n] [--workers N]

Points, one factor at a time around a base recipe (encoder init, mean pooling, spread-out and, when a
teacher is found, distillation on, MRL on, mixture 1; at default scale the token table starts from the
teacher's vectors of the vocabulary and every block starts near the identity), plus:

- Table 2 init: random / decoder-only / encoder (denoising-adapted decoder);
- Table 3 pooling: mean / first / last / attention;
- losses: spread-out on/off x distillation on/off;
- Tables 6-8 MRL: every run is evaluated at every prefix; MRL training on vs off;
- Table 4 souping: three mixtures (code/topic weights and seeds) and their uniform parameter average;
- Table 1 quantization: the base served in bf16 and post-training quantized, and QAT int8 / int4 /
  mixed runs served quantized;
- baselines: BM25 and the untrained models (the floor).

The generic runner (``python -m experiments.sweeps``) executes LM ``RunConfig``s only; the points are
registered there (so ``expand``/``status``/``collect`` and ``--dry-run`` work) and executed here.
Every point writes ``results/embedding/<key>/`` with ``config.json`` and ``summary.json`` (``label``,
``tags``, ``evals``), so ``experiments.sweeps.collect.collect("embedding")`` reads them.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from arch import quant
from experiments.embed import teacher as teacher_mod
from experiments.embed import train as tr
from experiments.embed.config import BASES, EmbedConfig
from experiments.embed.data import prepare
from experiments.embed.evaluate import evaluate_bm25, evaluate_embeddings
from experiments.embed.init import initial_model
from experiments.embed.plots import plot_all, tables
from experiments.embed.soup import soup
from experiments.sweeps.collect import collect
from experiments.sweeps.runner import (
    DEFAULT_OUT,
    Run,
    SweepFailed,
    parse_shard,
    register,
    run_sweep,
    status,
    write_json,
)

SWEEP = "embedding"
QUICK_XLA_FLAGS = "--xla_backend_optimization_level=0"  # compile in ~3 s instead of ~11 s
MIXTURES = {"mix1": ((("code", 0.9), ("topic", 0.1)), 0), "mix2": ((("code", 0.7), ("topic", 0.3)), 1),
            "mix3": ((("code", 1.0), ("topic", 0.0)), 2)}  # name -> (weights, seed)

@dataclasses.dataclass(frozen=True, kw_only=True)
class EmbedRun(Run):
    """A point of the embedding sweep. ``config`` is the trained model's ``EmbedConfig`` (for a
    baseline: the base config, whose data settings it shares)."""

    kind: str = "train"  # train | bm25 | teacher | untrained | soup | deploy
    group: str | None = None  # runs sharing a group go to one shard (a soup and its ingredients)
    precision: str | None = None  # deploy: "bfloat16" or a quantization scheme
    ingredients: tuple[EmbedConfig, ...] = ()  # soup

    @property
    def is_variant(self) -> bool:
        return self.kind != "train"

    @property
    def key(self) -> str:
        if self.kind == "train":
            return self.config.short_hash()
        spec = json.dumps([self.kind, self.config.short_hash(), self.precision,
                           [c.short_hash() for c in self.ingredients]])
        return f"{self.kind}-{hashlib.sha256(spec.encode()).hexdigest()[:10]}"

    def spec(self) -> dict:
        return {"kind": self.kind, "precision": self.precision, **self.config.to_dict(),
                "ingredients": [c.short_hash() for c in self.ingredients]}

    def execute(self, sweep_dir: Path, *, progress: bool = True) -> dict:
        return execute(self, sweep_dir, lm_root=sweep_dir.parent / "embedding_lm", progress=progress)


def _tags(scale: str, c: EmbedConfig, **extra) -> tuple[tuple[str, Any], ...]:
    mix = next((m for m, (w, s) in MIXTURES.items() if w == c.mixture and s == c.seed), "other")
    tags = dict(scale=scale, init=c.init, pooling=c.pooling, spread_out=c.w_spread > 0,
                distill=c.w_distill > 0, mrl_train=c.mrl_train, mixture=mix, precision=c.qat or "float32",
                qat=c.qat is not None, base=False)
    return tuple((tags | extra).items())


def runs(scale: str) -> list[EmbedRun]:
    """The points, headline first (base, baselines, the base served quantized), then the ablations:
    an interrupted sweep has already answered "does it beat BM25, and at what precision"."""
    b = BASES[scale]
    quick = scale == "quick"
    out: list[EmbedRun] = []
    soup_group = f"soup-{b.short_hash()}"

    def train(label: str, c: EmbedConfig, group: str | None = None, **extra):
        out.append(EmbedRun(label=label, config=c, quick=quick, group=group, tags=_tags(scale, c, **extra)))
        return c

    base = train("base", b, group=soup_group, base=True)
    out.append(EmbedRun(label="BM25", kind="bm25", config=b, quick=quick,
                        tags=_tags(scale, b, init="none", pooling="none", precision="none")))
    if b.teacher not in (None, "none"):
        out.append(EmbedRun(label="teacher", kind="teacher", config=b, quick=quick,
                            tags=_tags(scale, b, init="none", pooling="mean", precision="float32")))
    for init in ("random", "encoder"):
        out.append(EmbedRun(label=f"untrained {init}", kind="untrained", config=b.replace(init=init),
                            quick=quick, tags=_tags(scale, b.replace(init=init))))
    for precision in ("bfloat16", "int8", "int4", "mixed") if not quick else ("int8",):
        out.append(EmbedRun(label=f"base served {precision} (PTQ)" if precision != "bfloat16" else
                            "base served bfloat16", kind="deploy", precision=precision, config=base,
                            quick=quick, group=soup_group,
                            tags=_tags(scale, b, precision=precision, qat=False)))
    for init in ("random", "decoder"):
        train(f"init {init}", b.replace(init=init))
    for pooling in ("first", "last", "attention") if not quick else ("attention",):
        train(f"pooling {pooling}", b.replace(pooling=pooling))
    train("no spread-out", b.replace(w_spread=0.0))
    if not quick:
        train("no distillation", b.replace(w_distill=0.0))
        train("no spread-out, no distillation", b.replace(w_spread=0.0, w_distill=0.0))
    train("no MRL", b.replace(mrl_train=False))
    mixes = [base]
    for name in ("mix2", "mix3") if not quick else ("mix2",):
        weights, seed = MIXTURES[name]
        mixes.append(train(f"single {name}", b.replace(mixture=weights, seed=seed), group=soup_group))
    out.append(EmbedRun(label="soup", kind="soup", config=b, ingredients=tuple(mixes), quick=quick,
                        group=soup_group, tags=_tags(scale, b, mixture="soup")))
    for scheme in ("int8", "int4", "mixed") if not quick else ("int8",):
        train(f"QAT {scheme}", b.replace(qat=scheme))
    return out

register(SWEEP, "EmbeddingGemma Tables 1-4, 6-8 (init, pooling, losses, MRL, souping, quantization)")(runs)


def execute(r: EmbedRun, sweep_dir: Path, *, lm_root: Path, progress: bool = True) -> dict:
    """Run (or reuse) one point and return its summary."""

    d = sweep_dir / r.key
    if (d / "summary.json").exists():
        return json.loads((d / "summary.json").read_text())
    tags = dict(r.tags)
    if r.kind == "train":
        return tr.train_embedding(r.config, d, lm_root=lm_root, label=r.label, tags=tags, progress=progress)
    d.mkdir(parents=True, exist_ok=True)
    write_json(d / "config.json", r.spec())
    data = prepare(r.config)
    extra: dict[str, Any] = {}
    if r.kind == "bm25":
        evals = {name: {f"d{r.config.dims()[0]}": evaluate_bm25(task)} for name, (task, _, _) in
                 data.eval_tasks.items()}
    elif r.kind == "teacher":  # the distillation target: the teacher projected to the student's width
        evals, extra = teacher_evals(r.config, data)
    else:
        import jax


        if r.kind == "untrained":

            model, extra = initial_model(r.config, data.tokenizer, lm_root=lm_root,
                                         key=jax.random.key(r.config.init_seed),
                                         vocab_vectors=data.teacher_vocab)
        elif r.kind == "soup":

            dirs = [sweep_dir / c.short_hash() for c in r.ingredients]
            for c, cd in zip(r.ingredients, dirs):  # ingredients are listed before the soup; if not, train
                tr.train_embedding(c, cd, lm_root=lm_root, progress=progress)
            model = soup([tr.load_model(cd)[0] for cd in dirs])
            extra = {"ingredients": [str(x.name) for x in dirs]}
        else:
            trained = sweep_dir / r.config.short_hash()
            tr.train_embedding(r.config, trained, lm_root=lm_root, progress=progress)
            model, _ = tr.load_model(trained)
        evals = tr.evaluate(model, data, r.config.dims(), r.precision)
        scheme = r.precision if r.precision in quant.SCHEMES else None
        extra["bits_per_weight"] = quant.bits_per_weight(model, scheme, float_bits=16 if r.precision ==
                                                         "bfloat16" else 32)
    summary = {"label": r.label, "tags": tags, "kind": r.kind, "precision": r.precision, "evals": evals,
               **extra}
    write_json(d / "summary.json", summary)
    return summary


def teacher_evals(ec: EmbedConfig, data) -> tuple[dict, dict]:
    """The teacher's held-out metrics on raw texts: projected on the distillation basis (what the
    student is trained to match, as ``evals`` at the student's width) and at its own width (the
    ceiling, as ``teacher_full_width``)."""

    if data.teacher_basis is None:
        raise ValueError(f"EmbedConfig.teacher={ec.teacher!r}: no teacher found to evaluate")
    evals, full = {}, {}
    for name, (task, _, _) in data.eval_tasks.items():
        q, d = (teacher_mod.embeddings(list(texts), data.teacher_name) for texts in (task.queries, task.docs))
        evals[name] = evaluate_embeddings(teacher_mod.project(q, data.teacher_basis),
                                          teacher_mod.project(d, data.teacher_basis), task, ec.dims())
        full[name] = evaluate_embeddings(q, d, task, (q.shape[1],))
    return evals, {"teacher": data.teacher_name, "teacher_full_width": full}


def run_embedding_sweep(scale: str = "default", *, out: Path = DEFAULT_OUT, figures: Path | None = None,
                        dry_run: bool = False, progress: bool = True, shard_spec: tuple[int, int] = (0, 1),
                        workers: int = 1) -> dict[str, list[str]]:
    """Execute every point of the sweep at ``scale`` (or of one shard, or as ``workers`` one-core
    processes: :func:`run_workers`) into ``out/embedding/``; plots into ``figures``."""

    if workers > 1 and not dry_run:
        result = run_workers(scale, Path(out), workers)
    else:
        result = run_sweep(SWEEP, scale=scale, out=Path(out), dry_run=dry_run, progress=progress, plot=False,
                           shard_spec=shard_spec)
    if figures is not None and result["done"]:

        for path in plot_all(collect_embedding(scale, out=out), Path(figures)):
            print(f"figure: {path}")
    return result


def prepare_shared(scale: str, out: Path) -> None:
    """Build what every point shares (tokenizer, pairs, teacher cache, the decoder LM and its
    denoising-adapted encoder) once, so parallel workers never build it side by side."""
    import jax


    b = BASES[scale]
    data = prepare(b)
    if b.init in ("decoder", "encoder"):
        initial_model(b, data.tokenizer, lm_root=Path(out) / "embedding_lm", key=jax.random.key(b.init_seed),
                      vocab_vectors=data.teacher_vocab)


def run_workers(scale: str, out: Path, workers: int) -> dict[str, list[str]]:
    """The sweep as ``workers`` processes, shard ``i`` pinned to core ``i`` with one XLA thread.

    Small embedding models keep two threads of one process only partly busy: on the 2-core CPU two
    one-core workers train 1.3x more steps per second than one two-thread process (0.55 s per step
    each against 0.37 s for one)."""
    cores = sorted(os.sched_getaffinity(0))
    if workers > len(cores):
        raise ValueError(f"--workers {workers}: this process may use {len(cores)} cores")
    prepare_shared(scale, out)
    env = dict(os.environ, XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} --xla_cpu_multi_thread_eigen=false")
    procs = [subprocess.Popen([sys.executable, "-m", "experiments.embed.sweep", "--scale", scale, "--out",
                               str(out), "--shard", f"{i}/{workers}", "--core", str(cores[i])], env=env)
             for i in range(workers)]
    crashed = any(p.wait() for p in procs)

    points = runs(scale)
    done = [r.key for r in points if status(r, Path(out) / SWEEP) == "done"]
    return {"done": done, "failed": [r.key for r in points if r.key not in done] if crashed else []}


def collect_embedding(scale: str | None = None, *, out: Path = DEFAULT_OUT):
    """``experiments.sweeps.collect.collect("embedding")`` restricted to finished runs of ``scale``."""

    df = collect(SWEEP, out=out, scale=scale)
    return df[df["status"] == "done"].reset_index(drop=True) if "status" in df else df


def complete(scale: str, out: Path) -> bool:

    return all(status(r, Path(out) / SWEEP) == "done" for r in runs(scale))


def ensure_embedding(scale: str | None = None):
    """``(DataFrame of finished runs, scale)`` for the notebook: ``GEMMA_LAB_SCALE`` (``auto``: default
    scale when complete, else quick) under ``GEMMA_LAB_RESULTS``; runs what is missing first."""
    out = Path(os.environ.get("GEMMA_LAB_RESULTS", "results"))
    scale = scale or os.environ.get("GEMMA_LAB_SCALE", "auto")
    if scale == "auto":
        scale = next((s for s in ("full", "default") if complete(s, out)), "quick")
    if not complete(scale, out):
        print(f"running `python -m experiments.embed.sweep --scale {scale}` (results missing)")
        env = dict(os.environ)
        if scale == "quick":  # tiny models: XLA's CPU backend optimisation costs more than it saves
            env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {QUICK_XLA_FLAGS}".strip()
        workers = min(2, len(os.sched_getaffinity(0)))  # compiles and small models: one core each
        done = subprocess.run([sys.executable, "-m", "experiments.embed.sweep", "--scale", scale, "--out",
                               str(out), "--workers", str(workers)], env=env, capture_output=True, text=True)
        if done.returncode:

            raise SweepFailed(f"the {scale} embedding sweep failed (exit {done.returncode}); see "
                              f"error.json in {out / SWEEP}/<run>/\n{done.stdout[-3000:]}\n"
                              f"{done.stderr[-3000:]}")
    df = collect_embedding(scale, out=out)
    if df.empty:
        raise ValueError(f"embedding sweep: no finished run at scale {scale!r} in {out / SWEEP}")
    return df, scale


def main(argv: list[str] | None = None) -> int:

    p = argparse.ArgumentParser(prog="python -m experiments.embed.sweep", description=__doc__.split("\n")[0])
    p.add_argument("--scale", choices=tuple(BASES), default="default")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--figures", type=Path, default=None, help="where plots go (default: none drawn)")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--shard", type=parse_shard, default=(0, 1), metavar="i/n",
                   help="run only shard i of n (a soup stays with its ingredients)")
    p.add_argument("--workers", type=int, default=1,
                   help="run the shards as N processes, one core each (2 on the 2-core CPU: 1.3x sooner)")
    p.add_argument("--core", type=int, default=None, help=argparse.SUPPRESS)  # a worker's core
    a = p.parse_args(argv)
    if a.core is not None:  # before JAX starts: its thread pools are sized from this affinity
        os.sched_setaffinity(0, {a.core})
    if a.workers < 1:
        p.error(f"--workers {a.workers}: must be >= 1")
    result = run_embedding_sweep(a.scale, out=a.out, figures=a.figures, dry_run=a.dry_run, shard_spec=a.shard,
                                 workers=a.workers)
    if not a.dry_run and a.core is None:

        for name, table in tables(collect_embedding(a.scale, out=a.out)).items():
            print(f"\n== {name}\n{table.to_string(float_format=lambda x: f'{x:.3f}')}")
    return 1 if result["failed"] else 0

if __name__ == "__main__":
    sys.exit(main())
