"""What the notebooks call: results of a sweep as a DataFrame, running the quick sweep when missing.

No model code lives in notebooks; they read ``collect(...)`` through :func:`ensure_sweep` and draw
with :mod:`experiments.plots`.

Environment: ``GEMMA_LAB_SCALE`` (``auto`` by default: the default-scale results when a sweep has
them all, else quick), ``GEMMA_LAB_RESULTS`` (default ``results``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from experiments.collect import collect
from experiments.sweep import expand, run_sweep, status


def results_dir() -> Path:
    return Path(os.environ.get("GEMMA_LAB_RESULTS", "results"))


def figures_dir(scale: str) -> Path:
    """Notebook figures go under results/ (not the README's figures/), one folder per scale."""
    return results_dir() / "figures" / scale


def complete(sweep: str, scale: str) -> bool:
    sweep_dir = results_dir() / sweep
    return all(status(r, sweep_dir) == "done" for r in expand(sweep, scale))


def choose_scale(sweep: str, scale: str | None = None) -> str:
    scale = scale or os.environ.get("GEMMA_LAB_SCALE", "auto")
    if scale != "auto":
        return scale
    return next((s for s in ("full", "default") if complete(sweep, s)), "quick")


def ensure_sweep(sweep: str, scale: str | None = None) -> tuple[pd.DataFrame, str]:
    """``(DataFrame of finished runs, scale used)``; runs what is missing at that scale first."""
    scale = choose_scale(sweep, scale)
    if not complete(sweep, scale):
        print(f"running `python -m experiments.sweep {sweep} --scale {scale}` (results missing)")
        run_sweep(sweep, scale=scale, out=results_dir(), progress=False, plot=False)
    df = collect(sweep, out=results_dir(), scale=scale)
    return df[df["status"] == "done"].reset_index(drop=True), scale


def repo_figure(name: str) -> Path:
    """A figure the repository ships under ``figures/`` (made by the memory and decode scripts)."""
    return Path(__file__).resolve().parents[1] / "figures" / name


def header(sweep: str, df: pd.DataFrame, scale: str) -> str:
    return (f"{sweep}: {len(df)} finished runs at scale {scale!r}; "
            f"rerun: python -m experiments.sweep {sweep} --scale default")
