"""What the notebooks call: results of a sweep as a DataFrame, running the quick sweep when missing.

No model code lives in notebooks; they read ``collect(...)`` through :func:`ensure_sweep` and draw
with :mod:`experiments.sweeps.plots`.

Environment: ``GEMMA_LAB_SCALE`` (``auto`` by default: the default-scale results when a sweep has
them all, else quick), ``GEMMA_LAB_RESULTS`` (default ``results``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from experiments.sweeps.runner import README_FIGURES, expand, raise_failures, results, run_sweep, status
from experiments.sweeps.runner import figures_dir as sweep_figures_dir


def results_dir() -> Path:
    return Path(os.environ.get("GEMMA_LAB_RESULTS", "results"))


def figures_dir(scale: str) -> Path:
    """Notebook figures go under results/ (not the README's figures/), one folder per scale."""
    return sweep_figures_dir(results_dir(), scale)


def complete(sweep: str, scale: str, seeds: int = 1) -> bool:
    """Whether every run of ``sweep`` at ``scale``, each point as ``seeds`` replicas, is done."""
    sweep_dir = results_dir() / sweep
    return all(status(r, sweep_dir) == "done" for r in expand(sweep, scale, seeds))


def choose_scale(sweep: str, scale: str | None = None, seeds: int = 1) -> str:
    scale = scale or os.environ.get("GEMMA_LAB_SCALE", "auto")
    if scale != "auto":
        return scale
    return next((s for s in ("full", "default") if complete(sweep, s, seeds)), "quick")


def ensure_sweep(sweep: str, scale: str | None = None, workers: int = 1,
                 seeds: int = 1) -> tuple[pd.DataFrame, str]:
    """``(DataFrame of finished runs, scale used)``: one row per run, so ``seeds`` rows per point (the
    plots and :func:`experiments.sweeps.stats.summarize` reduce them to a mean and 95% interval). Runs
    what is missing at that scale first, as ``workers`` one-core processes when more than one (see
    :func:`experiments.sweeps.runner.run_sweep`).

    Raises :class:`experiments.sweeps.runner.SweepFailed` when a run fails, and ValueError when no run of
    that scale finished: a notebook never draws from a partial or empty table."""
    scale = choose_scale(sweep, scale, seeds)
    if not complete(sweep, scale, seeds):
        more = (f" --workers {workers}" if workers > 1 else "") + (f" --seeds {seeds}" if seeds > 1 else "")
        print(f"running `python -m experiments.sweeps {sweep} --scale {scale}{more}` (results missing)")
        result = run_sweep(sweep, scale=scale, out=results_dir(), progress=False, plot=False, workers=workers,
                           seeds=seeds)
        raise_failures(result, results_dir() / sweep)
    df = results(sweep, scale, results_dir(), seeds)
    df = df[df["status"] == "done"].reset_index(drop=True) if "status" in df else df
    if df.empty:
        raise ValueError(f"sweep {sweep!r}: no finished run at scale {scale!r} in {results_dir() / sweep}")
    return df, scale


def repo_figure(name: str) -> Path:
    """A figure the repository ships under ``figures/`` (made by the memory and decode scripts)."""
    return README_FIGURES / name


def header(sweep: str, df: pd.DataFrame, scale: str) -> str:
    return (f"{sweep}: {len(df)} finished runs at scale {scale!r}; "
            f"rerun: python -m experiments.sweeps {sweep} --scale default")
