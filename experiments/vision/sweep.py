"""The ``vision`` sweep: encoder input resolution, soft tokens per image and pan & scan on reading
synthetic documents (Gemma 3 report Tables 7-8; DocVQA / InfoVQA / TextVQA at CPU scale).

    python -m experiments.sweeps vision [--scale quick|default] [--seeds N] [--workers N] [--update-figures]

Points: every resolution of :data:`~experiments.vision.config.RESOLUTIONS` x every count of
:data:`~experiments.vision.config.SOFT_TOKENS` is trained (:class:`ReadRun`, pages read whole), and
each trained model is also read with pan & scan (:class:`PanScanRun`: the same weights, the whole page
followed by its crops; as in the report, pan & scan is an inference-time option, never trained
with). Every point's ``evals`` hold exact match and answer-token accuracy over the held-out pages,
their wide part (aspect 2:1 and wider, where pan & scan cuts) and their narrow part.

The figure: exact match on the wide pages against resolution, one line per soft-token count, read
whole (solid) and with pan & scan (dashed), with the 95% intervals over seeds; beside it the same for
every page. ``<name>.csv`` beside it is the summary table (:func:`summary`).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from experiments.data.io import atomic_write_bytes, write_json
from experiments.sweeps import plots, stats
from experiments.sweeps.runner import Run, register
from experiments.vision import train as tr
from experiments.vision.config import BASES, RESOLUTIONS, SOFT_TOKENS, ReadConfig

SWEEP = "vision"
METRICS = ["evals.exact_match_wide", "evals.token_acc_wide", "evals.exact_match", "evals.token_acc",
           "evals.exact_match_narrow"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReadRun(Run):
    """A trained point: train (or reuse) ``config`` and read the held-out pages whole. Its directory
    is the config's hash."""

    config: ReadConfig

    @property
    def is_variant(self) -> bool:
        return False

    @property
    def group(self) -> str:  # a model and its pan & scan reading go to one shard
        return self.config.short_hash()

    @property
    def key(self) -> str:
        return self.config.short_hash()

    def replica(self, i: int) -> ReadRun:
        return dataclasses.replace(self, config=self.config.replace(seed=self.config.seed + i))

    def execute(self, sweep_dir: Path, *, progress: bool = True) -> dict:
        return tr.train_read(self.config, sweep_dir / self.config.short_hash(), label=self.label,
                             tags=dict(self.tags), progress=progress)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PanScanRun(ReadRun):
    """The trained ``config`` read with pan & scan; no training of its own (one not trained yet is
    trained first, in its own directory)."""

    @property
    def is_variant(self) -> bool:
        return True

    @property
    def key(self) -> str:
        return f"panscan-{self.config.short_hash()}"

    def execute(self, sweep_dir: Path, *, progress: bool = True) -> dict:
        d = sweep_dir / self.key
        if (d / "summary.json").exists():
            return json.loads((d / "summary.json").read_text())
        trained = sweep_dir / self.config.short_hash()
        base = tr.train_read(self.config, trained, progress=progress)
        d.mkdir(parents=True, exist_ok=True)
        write_json(d / "config.json", {**self.config.to_dict(), "pan_scan": True,
                                       "variant_of": self.config.short_hash()})
        model, _ = tr.load_model(trained)
        summary = {k: v for k, v in base.items() if k not in ("evals", "label", "tags")}
        summary |= {"label": self.label, "tags": dict(self.tags), "variant_of": trained.name,
                    "evals": tr.evaluate(model, self.config, pan_scan=True)}
        write_json(d / "summary.json", summary)
        return summary


def runs(scale: str) -> list[ReadRun]:
    """Every (resolution, soft tokens) trained and read whole, then each read with pan & scan."""
    b = BASES["quick" if scale == "quick" else "default"]
    trained, variants = [], []
    for soft in SOFT_TOKENS.get(scale, SOFT_TOKENS["default"]):
        for size in RESOLUTIONS.get(scale, RESOLUTIONS["default"]):
            c = b.replace(image_size=size, soft_tokens=soft)
            tags = (("scale", scale), ("resolution", size), ("soft_tokens", soft))
            quick = scale == "quick"
            trained.append(ReadRun(label=f"{size}px {soft} tok", config=c, quick=quick,
                                   tags=(*tags, ("pan_scan", False))))
            variants.append(PanScanRun(label=f"{size}px {soft} tok P&S", config=c, quick=quick,
                                       tags=(*tags, ("pan_scan", True))))
    return trained + variants


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """One row per point: resolution, soft tokens, pan & scan, seeds and each metric of
    :data:`METRICS` with its 95% interval over seeds (``.lo``, ``.hi``)."""
    done = plots.done_runs(df, SWEEP, ("tag.resolution", "tag.soft_tokens", "tag.pan_scan"))
    table = stats.summarize(done, [m for m in METRICS if m in done],
                            by=("label", "tag.resolution", "tag.soft_tokens", "tag.pan_scan"))
    table = table.sort_values(["tag.pan_scan", "tag.soft_tokens", "tag.resolution"], kind="stable")
    return table.rename(columns={"tag.resolution": "resolution", "tag.soft_tokens": "soft_tokens",
                                 "tag.pan_scan": "pan_scan"}).reset_index(drop=True)


def report(df: pd.DataFrame) -> str:
    """The summary table as text, each metric ``mean [lo, hi]``."""
    table = summary(df)
    return stats.fold(table, "{:.3f}".format).to_string(index=False)


def plot_vision(df: pd.DataFrame, figures: Path, name: str = SWEEP) -> list[Path]:
    """Exact match against encoder resolution: wide pages (left) and every page (right), one colour per
    soft-token count, whole page solid and pan & scan dashed, 95% intervals over seeds. Writes the
    summary table beside the figure as ``<name>.csv``."""
    table = summary(df)
    atomic_write_bytes(Path(figures) / f"{name}.csv", table.to_csv(index=False).encode())
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, metric, title in ((axes[0], "evals.exact_match_wide", "wide pages (2:1 and wider)"),
                              (axes[1], "evals.exact_match", "all held-out pages")):
        colors = {}
        for (soft, pan), part in table.groupby(["soft_tokens", "pan_scan"], sort=True):
            part = part.sort_values("resolution")
            kw = {"color": colors[soft]} if soft in colors else {}
            (line,) = ax.plot(part["resolution"], part[metric], marker="o", ls="--" if pan else "-",
                              label=f"{soft} soft tokens" + (", pan & scan" if pan else ""), **kw)
            colors[soft] = line.get_color()
            plots.draw_interval(ax, part["resolution"], part, metric, color=line.get_color(), bounds=(0, 1))
        ax.set_xscale("log", base=2)
        sizes = sorted(table["resolution"].unique())
        ax.set_xticks(sizes, [str(r) for r in sizes])
        plots.label_axes(ax, "encoder input (pixels per side)", "exact match of greedy answers",
                         f"Gemma 3 Tables 7-8 analogue: {title}")
    return [plots.save_figure(fig, Path(figures) / f"{name}.png")]


register(SWEEP, "Gemma 3 Tables 7-8 (encoder resolution, soft tokens, pan & scan on document reading)",
         plot=plot_vision, report=report)(runs)
