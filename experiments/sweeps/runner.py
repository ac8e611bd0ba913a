"""Sweeps: named lists of runs, executed into ``results/<sweep>/<hash>/`` with skip and resume.

    python -m experiments.sweeps NAME [--scale quick|default|full] [--out DIR] [--shard i/n | --workers N]
        [--seeds N] [--dry-run] [--no-plot] [--figures DIR | --update-figures]

A run directory holds ``config.json`` (written first), ``metrics.jsonl`` (appended while training) and
``summary.json`` (written last, atomically). A run with a ``summary.json`` that already holds its
evaluations is skipped; one without is resumed from its checkpoint. A run that fails writes
``error.json`` (message and traceback) and the sweep goes on; the command exits non-zero at the end.

Two kinds of run: a training run (a ``RunConfig``), and an evaluation variant that re-evaluates a
trained run under inference-time overrides (another window, global layers turned local, longer
contexts, RoPE rescaling) without retraining (Gemma 2 Table 10, Gemma 3 section 5.3). Other
sweeps subclass :class:`Run` with an ``execute`` of their own (the embedding sweep's points).

``--seeds N`` runs every point as N seed replicas (:meth:`Run.with_seed`), seed-major: every point's
first seed (the point itself, in the directory it has with one seed) before any second seed, so an
interrupted sweep has answered every question once before it answers any twice. Tables, the summary
CSV and the plots then show each point's mean and 95% interval over its seeds
(:mod:`experiments.sweeps.stats`).

``--workers N`` runs the N shards side by side as processes pinned to one core each
(:func:`run_sweep`). Sweeps are registered with :func:`register` by the modules of
:data:`SWEEP_MODULES`, and by the modules named in ``GEMMA_LAB_SWEEPS`` (comma-separated, importable
from ``sys.path``): a sweep of one's own runs through the same CLI, workers and notebooks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import os
import subprocess
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from experiments import REPO_ROOT
from experiments import train as training
from experiments.data.io import write_json
from experiments.eval import run as evaluation
from experiments.runconfig import RunConfig
from experiments.sweeps.collect import DEFAULT_OUT, collect, table

# quick: CI and notebooks; default: minutes per run on a 2-core CPU; device: one large GPU (H100/H200
# class), the tradeoff and recall sweeps together in minutes (`make device`); full: a GPU at ~100M params
SCALES = ("quick", "default", "device", "full")
README_FIGURES = REPO_ROOT / "figures"  # only --update-figures writes here
# A worker's XLA: one thread (the process is pinned to one core), and at quick scale no backend
# optimisation, which compiles the tiny models in ~3 s instead of ~11 s and costs more than it saves.
WORKER_XLA_FLAGS = "--xla_cpu_multi_thread_eigen=false"
QUICK_XLA_FLAGS = "--xla_backend_optimization_level=0"


class SweepFailed(RuntimeError):
    """Some runs of a sweep failed (each wrote ``error.json``); raised by :func:`raise_failures`."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Run:
    """One point of a sweep. ``eval_overrides``/``eval_seq_len`` make it an evaluation variant of the
    trained ``config`` (no training of its own); ``tags`` are extra columns for tables and plots."""

    label: str
    config: RunConfig
    eval_overrides: tuple[tuple[str, Any], ...] = ()
    eval_seq_len: int | None = None
    tags: tuple[tuple[str, Any], ...] = ()
    quick: bool = False  # lighter probes (fewer trials); not part of the key
    # False: a shared baseline that seeds do not repeat, such as the teacher every student replica
    # distills from (seed 0 only); not part of the key
    replicated: bool = True

    @property
    def is_variant(self) -> bool:
        return bool(self.eval_overrides) or self.eval_seq_len is not None

    def with_seed(self, i: int) -> Run | None:
        """The ``i``-th seed replica of this point, or None when the point is not replicated (a
        deterministic baseline). ``i = 0`` is the point itself, unchanged: its key, and so its results
        directory, stay what they are with one seed. Other replicas come from :meth:`replica`."""
        if isinstance(i, bool) or not isinstance(i, int) or i < 0:
            raise ValueError(f"{type(self).__name__}.with_seed: i={i!r}: must be an int >= 0 "
                             "(0: the point itself)")
        if i == 0:
            return self
        return self.replica(i) if self.replicated else None

    def replica(self, i: int) -> Run | None:
        """The ``i``-th (``i >= 1``) seed replica: the same label and tags (the seed is already the
        ``run.seed`` column of ``collect``) with ``config.seed + i``. An evaluation variant replicates
        with its trained config's replica, so it evaluates that replica's model. A student whose
        ``RunConfig.teacher`` is ``"@<hash>"`` keeps that teacher: the replica varies the student's
        seed only, and stays in the teacher's shard (:func:`group_of`). Subclasses whose config has
        no ``seed`` (or more than one) override this."""
        seed = getattr(self.config, "seed", None)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"{type(self).__name__} {self.label!r}: config.seed={seed!r}: no int seed to "
                             f"replicate; override {type(self).__name__}.replica")
        return dataclasses.replace(self, config=self.config.replace(seed=seed + i))

    def execute(self, sweep_dir: Path, *, progress: bool = True) -> dict:
        """Train (or reuse) the model, evaluate it, return the summary. Other kinds of run override this."""
        return execute(self, sweep_dir, progress=progress)

    @property
    def key(self) -> str:
        """Directory name: the config's hash, or for a variant a hash of (config, evaluation)."""
        if not self.is_variant:
            return self.config.short_hash()
        spec = json.dumps([self.config.short_hash(), [list(p) for p in self.eval_overrides],
                           self.eval_seq_len], sort_keys=True)
        return "eval-" + hashlib.sha256(spec.encode()).hexdigest()[:10]


Plot = Callable[[pd.DataFrame, Path, str], list[Path]]
Prepare = Callable[[str, Path, int], None]
Report = Callable[[pd.DataFrame], str]
Extend = Callable[[pd.DataFrame, Path], pd.DataFrame]


@dataclasses.dataclass(frozen=True)
class Sweep:
    name: str
    mirrors: str  # the report table or figure it reproduces
    runs: Callable[[str], list[Run]]  # scale -> runs
    plot: Plot | None = None  # (results(...) of the scale and seeds, figures folder, sweep name) -> paths
    prepare: Prepare | None = None  # (scale, out, seeds): what the runs share, built before the workers
    report: Report = table  # results(...) of the scale and seeds -> the text the CLI prints after a run
    # (summary CSV rows, figures folder) -> the rows with columns from other sweeps' summaries there
    extend: Extend | None = None


SWEEPS: dict[str, Sweep] = {}


def register(name: str, mirrors: str, plot: Plot | None = None, prepare: Prepare | None = None,
             report: Report = table, extend: Extend | None = None):
    """Decorator: ``@register("ratio", "Gemma 3 Fig. 3", plot=plots.plot_ratio_window)`` on a
    ``scale -> list[Run]`` function. ``prepare(scale, out, seeds)`` builds what the runs of the sweep
    share (a tokenizer, a base model for each seed) before parallel workers start, so they never build
    it side by side. ``extend(rows, folder)`` adds columns to the sweep's summary CSV from the summaries
    of other sweeps in the same folder (the ``tradeoff`` table's recall columns)."""

    def wrap(fn):
        SWEEPS[name] = Sweep(name, mirrors, fn, plot, prepare, report, extend)
        return fn

    return wrap


SWEEP_MODULES = ("experiments.sweeps.definitions", "experiments.sweeps.recall", "experiments.distill.sweeps",
                 "experiments.sweeps.qat", "experiments.embed.sweep", "experiments.vision.sweep")


def load_sweeps() -> dict[str, Sweep]:
    """Import the modules that register the named sweeps (once), those of :data:`SWEEP_MODULES` and of
    ``GEMMA_LAB_SWEEPS``, and return the registry."""
    extra = [m.strip() for m in os.environ.get("GEMMA_LAB_SWEEPS", "").split(",") if m.strip()]
    for module in (*SWEEP_MODULES, *extra):
        importlib.import_module(module)
    return SWEEPS


def get_sweep(name: str) -> Sweep:
    load_sweeps()
    if name not in SWEEPS:
        raise ValueError(f"unknown sweep {name!r}; known: {', '.join(sorted(SWEEPS))}")
    return SWEEPS[name]


def check_seeds(seeds: int) -> int:
    """``seeds`` when it is an int >= 1, else ValueError naming the value."""
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds={seeds!r}: must be an int >= 1 (1: every point once, as it is)")
    return seeds


def expand(name: str, scale: str, seeds: int = 1) -> list[Run]:
    """The runs of sweep ``name`` at ``scale``, each point as ``seeds`` replicas (:meth:`Run.with_seed`;
    points that are not replicated once), seed-major: every point's seed 0 first, in the sweep's order,
    then every point's seed 1, and so on. With ``seeds=1`` these are the sweep's points as listed."""
    if scale not in SCALES:
        raise ValueError(f"scale={scale!r}: must be one of {SCALES}")
    points = get_sweep(name).runs(scale)
    runs = [r for i in range(check_seeds(seeds)) for p in points if (r := p.with_seed(i)) is not None]
    keys = [r.key for r in runs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"sweep {name!r} at scale {scale!r} with seeds={seeds} lists the same run twice")
    return runs


def group_of(run: Run) -> str:
    """Runs that must go to one shard share a group: a trained model with its evaluation variants,
    a student with the teacher it names as ``@<hash>`` in the same sweep (every seed replica of the
    student: they keep the teacher), a run with the run it starts from (``RunConfig.init``), and runs
    that name a ``group`` of their own (e.g. a model soup with its ingredients; a soup's seed replica
    with its ingredients' replicas)."""
    if getattr(run, "group", None):
        return run.group
    for ref in (getattr(run.config, "teacher", None), getattr(run.config, "init", None)):
        if isinstance(ref, str) and ref.startswith("@"):
            return ref[1:]
    return run.config.short_hash()


def shard(runs: list[Run], i: int, n: int) -> list[Run]:
    """Runs of shard ``i`` of ``n`` (0-based): disjoint, together all runs, dependent runs together.

    Groups go, largest first (by trained models), to the shard with the fewest trained models so far,
    so shards run side by side finish at about the same time."""
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"--shard {i}/{n}: need 0 <= i < n")
    groups = [group_of(r) for r in runs]
    cost = {g: 0 for g in groups}
    for g, r in zip(groups, runs):
        cost[g] += not r.is_variant
    load, owner = [0] * n, {}
    for g in sorted(cost, key=lambda g: (-cost[g], g)):
        owner[g] = min(range(n), key=lambda k: (load[k], k))
        load[owner[g]] += max(cost[g], 1)
    return [r for g, r in zip(groups, runs) if owner[g] == i]


def status(run: Run, sweep_dir: Path) -> str:
    d = sweep_dir / run.key
    if (d / "summary.json").exists():
        summary = json.loads((d / "summary.json").read_text())
        return "done" if "evals" in summary else "trained"
    if (d / "error.json").exists():
        return "failed"
    return "partial" if d.exists() else "new"


def execute(run: Run, sweep_dir: Path, *, progress: bool = True) -> dict:
    """Train (or reuse) the run's model, evaluate it, and return the finished summary."""
    base_dir = sweep_dir / run.config.short_hash()
    summary = training.train(run.config, base_dir, progress=progress)
    run_dir = sweep_dir / run.key
    if run.is_variant:
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / "summary.json"
        if path.exists():
            return json.loads(path.read_text())
        write_json(run_dir / "config.json", {**run.config.to_dict(), "variant_of": run.config.short_hash(),
                                             "eval_overrides": [list(p) for p in run.eval_overrides],
                                             "eval_seq_len": run.eval_seq_len})
        summary = {k: v for k, v in summary.items() if k not in ("evals",)}
    elif "evals" in summary:
        return summary
    evals = evaluation.evaluate_run(base_dir, overrides=dict(run.eval_overrides), seq_len=run.eval_seq_len,
                         quick=run.quick)
    summary = {**summary, "label": run.label, "tags": dict(run.tags), "evals": evals,
               "variant_of": run.config.short_hash() if run.is_variant else None}
    write_json(run_dir / "summary.json", summary)
    (run_dir / "error.json").unlink(missing_ok=True)
    return summary


def figures_dir(out: Path, scale: str) -> Path:
    """Where a sweep's figures go: under its results folder, one folder per scale."""
    return Path(out) / "figures" / scale


def raise_failures(result: dict[str, list[str]], sweep_dir: Path) -> dict[str, list[str]]:
    """``result`` of :func:`run_sweep` unchanged when no run failed; otherwise :class:`SweepFailed`
    naming each failed run with the error its ``error.json`` holds."""
    if not result["failed"]:
        return result
    lines = []
    for key in result["failed"]:
        path = Path(sweep_dir) / key / "error.json"
        error = json.loads(path.read_text()) if path.exists() else {}
        lines.append(f"  {key} ({error.get('label', '?')}): {error.get('error', 'no error.json')}")
    raise SweepFailed(f"{len(lines)} run(s) of {Path(sweep_dir).name} failed (see error.json in "
                      f"{sweep_dir}/<run>/):\n" + "\n".join(lines))


def check_workers(workers: int) -> int:
    """``workers`` when it is between 1 and the number of cores this process may use, else ValueError."""
    cores = len(os.sched_getaffinity(0))
    if not 1 <= workers <= cores:
        raise ValueError(f"workers={workers}: must be between 1 and {cores} (the cores this process may use)")
    return workers


def results(name: str, scale: str, out: Path = DEFAULT_OUT, seeds: int = 1) -> pd.DataFrame:
    """``collect(name, out=out, scale=scale)`` restricted to the runs the sweep lists at that scale and
    number of seeds (:func:`expand`): what its tables and plots show. Runs of other configs under the
    same folder (an older version of the sweep, more seeds than asked for) are left out, so they are
    never averaged with a point's replicas."""
    df = collect(name, out=out, scale=scale)
    if "run" not in df:
        return df
    return df[df["run"].isin({r.key for r in expand(name, scale, seeds)})].reset_index(drop=True)


def run_sweep(name: str, *, scale: str = "default", out: Path = DEFAULT_OUT,
              shard_spec: tuple[int, int] = (0, 1), dry_run: bool = False, progress: bool = True,
              plot: bool = True, figures: Path | None = None, workers: int = 1,
              seeds: int = 1) -> dict[str, list[str]]:
    """Execute a sweep, every point as ``seeds`` replicas (:func:`expand`); returns ``{"done": [...],
    "failed": [...]}`` (run directory names): callers check ``failed`` (:func:`raise_failures`). With
    ``workers`` > 1 the sweep's shards run side by side as processes (:func:`run_workers`). Figures go
    to ``figures`` (default :func:`figures_dir`), never to the README's ``figures/`` unless asked for."""
    check_workers(workers)
    check_seeds(seeds)
    if workers > 1 and shard_spec != (0, 1):
        raise ValueError(f"shard_spec={shard_spec} with workers={workers}: the workers are the shards; "
                         "give one or the other")
    sweep = get_sweep(name)
    runs = shard(expand(name, scale, seeds), *shard_spec)
    sweep_dir = Path(out) / name
    if dry_run:
        per = f" ({seeds} seeds per point)" if seeds > 1 else ""
        print(f"sweep {name} ({sweep.mirrors}), scale {scale}: {len(runs)} runs{per} in {sweep_dir}/")
        for r in runs:
            kind = "eval " if r.is_variant else "train"
            seed = f" (seed {r.config.seed})" if seeds > 1 else ""
            print(f"  {r.key:<16} {kind} {status(r, sweep_dir):<8} {r.label}{seed}")
        return {"done": [], "failed": []}
    sweep_dir.mkdir(parents=True, exist_ok=True)
    if workers > 1:
        result = run_workers(name, scale, Path(out), workers, seeds)
    else:
        result = _run_in_process(runs, sweep_dir, name, progress)
    if plot and sweep.plot is not None and result["done"]:
        figures = Path(figures or figures_dir(out, scale))
        figures.mkdir(parents=True, exist_ok=True)  # a plot may write its tables before its figure
        for path in sweep.plot(results(name, scale, out, seeds), figures, name):
            print(f"figure: {path}")
    return result


def _run_in_process(runs: list[Run], sweep_dir: Path, name: str, progress: bool) -> dict[str, list[str]]:
    """Execute ``runs`` one after the other; a failing run writes ``error.json`` and the rest go on."""
    result: dict[str, list[str]] = {"done": [], "failed": []}
    bar = None
    if progress:
        bar = tqdm(total=len(runs), desc=f"sweep {name}", unit="run", position=0)
    for r in runs:
        if bar is not None:
            bar.set_postfix_str(r.label)
        try:
            r.execute(sweep_dir, progress=progress)
            result["done"].append(r.key)
        except Exception as err:  # one failing run must not stop the sweep
            (sweep_dir / r.key).mkdir(parents=True, exist_ok=True)
            error = {"label": r.label, "error": f"{type(err).__name__}: {err}",
                     "traceback": traceback.format_exc()}
            write_json(sweep_dir / r.key / "error.json", error)
            result["failed"].append(r.key)
            print(f"\nrun {r.key} ({r.label}) failed: {type(err).__name__}: {err}", file=sys.stderr)
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()
    return result


def run_workers(name: str, scale: str, out: Path, workers: int, seeds: int = 1) -> dict[str, list[str]]:
    """The sweep as ``workers`` processes: shard ``i`` of ``workers`` runs as
    ``python -m experiments.sweeps NAME --shard i/N --seeds S --core C``, pinned to the ``i``-th core
    this process may use, with one XLA thread (:data:`WORKER_XLA_FLAGS`). The sweep's ``prepare`` runs
    here first (for every seed), so the workers never build what they share side by side.

    Small models keep two threads of one process only partly busy: on the 2-core CPU two one-core
    workers train the embedding sweep's models 1.3x more steps per second than one two-thread process
    (0.55 s per step each against 0.37 s for one).

    The result is read back from the run directories, so a worker that crashed loses nothing that
    finished: a worker that exits cleanly has finished all its runs, so every run not done afterwards
    is failed (with ``error.json``, or lost with its worker)."""
    cores = sorted(os.sched_getaffinity(0))[:check_workers(workers)]
    sweep = get_sweep(name)
    if sweep.prepare is not None:
        sweep.prepare(scale, out, seeds)
    flags = [os.environ.get("XLA_FLAGS", ""), WORKER_XLA_FLAGS, QUICK_XLA_FLAGS if scale == "quick" else ""]
    env = dict(os.environ, XLA_FLAGS=" ".join(f for f in flags if f))
    procs = [subprocess.Popen([sys.executable, "-m", "experiments.sweeps", name, "--scale", scale, "--out",
                               str(out), "--shard", f"{i}/{workers}", "--seeds", str(seeds), "--no-plot",
                               "--core", str(core)],
                              env=env)
             for i, core in enumerate(cores)]
    for i, p in enumerate(procs):
        if code := p.wait():
            print(f"worker {i} (--shard {i}/{workers}) exited with code {code}", file=sys.stderr)
    states = {r.key: status(r, Path(out) / name) for r in expand(name, scale, seeds)}
    return {"done": [k for k, s in states.items() if s == "done"],
            "failed": [k for k, s in states.items() if s != "done"]}
