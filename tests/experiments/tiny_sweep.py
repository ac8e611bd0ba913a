"""A sweep of cheap runs for the runner's tests, registered as ``tiny_workers`` on import: the worker
processes of ``run_sweep(..., workers=2)`` import it through ``GEMMA_LAB_SWEEPS``.

Two groups, so two shards: shard 0 holds ``ok_a``, ``crash`` (ends its worker process) and
``after_crash`` (never reached); shard 1 holds ``ok_b`` and ``fail`` (raises). A finished run records
the process, the cores and the XLA flags it ran with; every run checks that ``prepare`` ran first."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pandas as pd

from experiments.data.io import write_json
from experiments.sweeps.runner import Run, register

NAME = "tiny_workers"


@dataclasses.dataclass(frozen=True, kw_only=True)
class TinyRun(Run):
    config: None = None
    group: str

    @property
    def key(self) -> str:
        return self.label

    def execute(self, sweep_dir: Path, *, progress: bool = True) -> dict:
        if not (sweep_dir.parent / "prepared.json").exists():
            raise RuntimeError("the sweep's prepare did not run before its workers")
        if self.label == "crash":
            os._exit(3)
        if self.label == "fail":
            raise RuntimeError("boom")
        d = sweep_dir / self.key
        write_json(d / "config.json", {"label": self.label})
        summary = {"label": self.label, "tags": dict(self.tags), "evals": {"ok": 1.0}, "pid": os.getpid(),
                   "cores": sorted(os.sched_getaffinity(0)), "xla_flags": os.environ.get("XLA_FLAGS", "")}
        write_json(d / "summary.json", summary)
        return summary


def prepare(scale: str, out: Path, seeds: int) -> None:
    write_json(Path(out) / "prepared.json", {"pid": os.getpid(), "scale": scale, "seeds": seeds})


def plot(df: pd.DataFrame, folder: Path, name: str) -> list[Path]:
    """``<name>.json``: the labels of the finished runs it was given, written straight into ``folder``
    (the runner makes it: a plot may write tables before any figure)."""
    path = Path(folder) / f"{name}.json"
    path.write_text(json.dumps(sorted(df.loc[df["status"] == "done", "label"])))
    return [path]


@register(NAME, "the runner's tests", plot=plot, prepare=prepare)
def runs(scale: str) -> list[TinyRun]:
    tags = (("scale", scale),)
    return [TinyRun(label=label, group=group, tags=tags)
            for label, group in (("ok_a", "a"), ("crash", "a"), ("after_crash", "a"), ("ok_b", "b"),
                                 ("fail", "b"))]
