"""The ``qat`` sweep: what each of Gemma 3's weight formats costs after post-training quantization, and
how much quantization-aware training buys back (Gemma 3 section 2.3 and Table 3).

For each pattern (5:1, 1:1, Griffin ``RRL``) the tradeoff sweep's trained model (same config, so the
same run hash: a results folder of one serves the other) is

- evaluated as trained (float32) and served in each format (``ModelConfig.weight_format`` through
  ``arch.reconfigure``: post-training quantization, no training), bfloat16 included;
- fine-tuned in each quantized format (QAT): the report's recipe scaled down, a short run that starts
  from the trained checkpoint (``RunConfig.init``) with the quantized forward and a straight-through
  gradient, and takes as targets the probabilities of the frozen non-quantized model (``distill``
  loss, ``RunConfig.teacher``): the report's "~5,000 steps" becomes :data:`QAT_STEPS` (the MQAR
  models: :data:`QAT_TASK_STEPS`).

The same is done for the recall sweep's models of these patterns (MQAR, the scale's window and width;
the QAT targets there are the float model's probabilities on the task rows), scored by recall beyond
the local reach (``evals.task_acc_beyond``). Every point carries its weight bytes in its format
(``evals.weights_bytes``, from ``arch.memory``). The figure draws the perplexity and recall costs
against weight bytes per pattern; :func:`recovery` states, per pattern and
format, the perplexity PTQ costs, what QAT leaves, and the fraction recovered, over paired seeds.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from arch import quant
from experiments.runconfig import RunConfig
from experiments.sweeps import plots, stats
from experiments.sweeps.definitions import MAIN_JOB, base, run, with_pattern
from experiments.sweeps.recall import recall
from experiments.sweeps.runner import Run, register

PATTERNS = [("5:1", "LLLLLG"), ("1:1", "LG"), ("Griffin RRL", "RRL")]
SERVED = ("bfloat16", *quant.FORMATS)  # post-training: every format the trained model is served in
# QAT fine-tuning steps per scale (the report: ~5,000 steps at Gemma 3's batch); the base's batch.
# Default scale: 144 of the corpus model's 160 steps. At 48 the 5:1 int4 model recovered 0.61
# [0.26, 0.95] of its PTQ cost (one seed under half); at 144, 0.89 on the same three seeds.
QAT_STEPS = {"quick": 4, "default": 144, "device": 200, "full": 5000}
# The MQAR models lose no recall to PTQ in 5:1 and 1:1 (1.00 in every format): a short fine-tune
# (48 of their 600 steps) is all the task models get.
QAT_TASK_STEPS = {"quick": 4, "default": 48, "device": 200, "full": 5000}
MEASURABLE = 0.001  # a PTQ cost under 0.1% of the perplexity: too small for a recovered fraction
QAT_LR_FRACTION = 0.1  # of the base's peak learning rate: a fine-tune, not a second pre-training


@dataclasses.dataclass(frozen=True, kw_only=True)
class QATRun(Run):
    """A QAT fine-tune of ``base``: its replica fine-tunes the base's replica of the same seed (a
    plain student keeps one teacher for every seed; this one follows its base)."""

    base: RunConfig

    def replica(self, i: int) -> Run:
        b = self.base.replace(seed=self.base.seed + i)
        ref = "@" + b.short_hash()
        return dataclasses.replace(self, base=b, config=self.config.replace(
            seed=self.config.seed + i, init=ref, teacher=ref))


def qat_config(trained: RunConfig, fmt: str, steps: int) -> RunConfig:
    """``trained`` fine-tuned for ``steps`` steps with its weights served in ``fmt``: started from its
    checkpoint, distilled from it (full distribution), the learning rate a tenth of its peak."""
    ref = "@" + trained.short_hash()
    every = max(steps // 2, 1)
    return trained.with_model(weight_format=fmt).replace(
        init=ref, teacher=ref, loss="distill", steps=steps, warmup=max(steps // 8, 1),
        lr=trained.lr * QAT_LR_FRACTION, eval_every=every, ckpt_every=every,
        log_every=max(min(10, steps // 4), 1))


def qat_sweep(scale: str) -> list[Run]:
    b = MAIN_JOB if scale == "default" else base(scale)
    patterns = PATTERNS if scale != "quick" else PATTERNS[:1]
    recall_models = {dict(r.tags)["pattern"]: r.config for r in recall(scale) if dict(r.tags)["base"]}
    runs = []
    for label, pattern in patterns:
        runs += _points(scale, label, with_pattern(b, pattern), pattern, QAT_STEPS[scale])
        if scale != "quick" and pattern in recall_models:  # quick: the corpus models only
            runs += _points(scale, f"{label} MQAR", recall_models[pattern], pattern, QAT_TASK_STEPS[scale])
    return runs


def _points(scale: str, label: str, trained: RunConfig, pattern: str, steps: int) -> list[Run]:
    """``trained`` as trained (float32), served in every format (PTQ) and fine-tuned in each quantized
    one for ``steps`` steps (QAT)."""
    formats = quant.FORMATS if scale != "quick" else ("int4",)
    tags = (("pattern", pattern), ("model", label))
    runs = [run(scale, f"{label} float32", trained, tags=(*tags, ("method", "float"), ("format", "float32")))]
    for fmt in SERVED if scale != "quick" else ("int4",):
        runs.append(run(scale, f"{label} PTQ {fmt}", trained, eval_overrides=(("weight_format", fmt),),
                        tags=(*tags, ("method", "PTQ"), ("format", fmt))))
    for fmt in formats:
        runs.append(QATRun(label=f"{label} QAT {fmt}", config=qat_config(trained, fmt, steps),
                           base=trained, quick=scale == "quick",
                           tags=(("scale", scale), *tags, ("method", "QAT"), ("format", fmt))))
    return runs


# the metric each model is scored by, and the sign that makes a cost positive when quantization hurts
PERPLEXITY, RECALL = ("evals.val_ppl", 1.0), ("evals.task_acc_beyond", -1.0)


def _paired(df: pd.DataFrame, metric: str) -> tuple[pd.DataFrame, list[str]]:
    """The quantized rows of ``df`` that have ``metric``, with the float32 value of their own model and
    seed beside them (column ``float``), and the columns a seed's rows share."""
    df = plots.done_runs(df, "qat", ("tag.model", "tag.method", "tag.format"))
    df = df[df[metric].notna()] if metric in df else df.iloc[:0].assign(**{metric: []})
    key = ["tag.model", *(["run.seed"] if "run.seed" in df else [])]
    floats = df[df["tag.method"] == "float"][[*key, metric]]
    quantized = df[df["tag.method"] != "float"]
    return quantized.merge(floats.rename(columns={metric: "float"}), on=key), key


def costs(df: pd.DataFrame, score: tuple[str, float] = PERPLEXITY) -> pd.DataFrame:
    """Per pattern, method (PTQ, QAT) and format: how much worse than the float32 model of the same
    seed the metric of ``score`` is (``cost``: perplexity above, or recall below; mean and 95%
    interval over seeds), and the weight bytes of the format."""
    metric, sign = score
    both, _ = _paired(df, metric)
    both = both.assign(cost=sign * (both[metric] - both["float"]))
    by = ("tag.model", "tag.method", "tag.format")
    return stats.summarize(both, ["cost", "evals.weights_bytes"], by=by)


def recovery(df: pd.DataFrame, score: tuple[str, float] = PERPLEXITY) -> pd.DataFrame:
    """Per pattern and quantized format: what PTQ costs against the float32 model (perplexity added, or
    recall lost), what the QAT model still costs, and the fraction QAT recovers,
    ``1 - qat cost / ptq cost``; each a mean and 95% interval over seeds, the three models of a seed
    paired (``run.seed``)."""
    metric, sign = score
    both, key = _paired(df, metric)
    part = {m: both[both["tag.method"] == m][[*key, "tag.format", "float", metric]]
            .rename(columns={metric: m}) for m in ("PTQ", "QAT")}
    both = part["PTQ"].merge(part["QAT"].drop(columns="float"), on=[*key, "tag.format"])
    both["ptq_cost"] = sign * (both["PTQ"] - both["float"])
    both["qat_cost"] = sign * (both["QAT"] - both["float"])
    both["recovered"] = 1.0 - both["qat_cost"] / both["ptq_cost"]
    out = stats.summarize(both, ["float", "PTQ", "QAT", "ptq_cost", "qat_cost", "recovered"],
                          by=("tag.model", "tag.format"))
    return out.rename(columns={"tag.model": "model", "tag.format": "format"})


def report(df: pd.DataFrame) -> str:
    """The recovery tables as text (perplexity, then recall where the sweep has task models): each
    quantity as ``mean [lo, hi]``."""
    columns = ["model", "format", "n", "float", "ptq_cost", "qat_cost", "recovered"]
    parts = []
    for score in (PERPLEXITY, RECALL):
        table = recovery(df, score)
        if not table.empty:
            text = stats.fold(table, "{:.2f}".format)[columns].to_string(index=False)
            parts.append(f"{score[0]}:\n{text}")
    return "\n\n".join(parts)


def _draw_costs(ax, points: pd.DataFrame, ylabel: str, title: str) -> dict[str, str]:
    """Each model's cost against weight bytes, PTQ dashed and QAT solid; returns the colours used."""
    colors = {}
    for model, part in points.groupby("tag.model", sort=False):
        for method, marker, ls in (("PTQ", "o", "--"), ("QAT", "s", "-")):
            sub = part[part["tag.method"] == method].sort_values("evals.weights_bytes")
            if sub.empty:
                continue
            kw = {"color": colors[model]} if model in colors else {}
            (line,) = ax.plot(sub["evals.weights_bytes"], sub["cost"], marker=marker, ls=ls,
                              label=f"{model} {method}", **kw)
            colors[model] = line.get_color()
            plots.draw_interval(ax, sub["evals.weights_bytes"], sub, "cost", color=line.get_color())
            if method == "PTQ" and model == next(iter(colors)):
                for _, row in sub.iterrows():
                    ax.annotate(row["tag.format"], (row["evals.weights_bytes"], 0), fontsize=7, rotation=90,
                                xytext=(2, 4), textcoords="offset points", color="grey")
    ax.axhline(0.0, color="grey", lw=1)
    plots.label_axes(ax, "weight bytes (log scale)", ylabel, title, xscale="log", legend=7)
    return colors


def plot_qat(df: pd.DataFrame, figures: Path, name: str = "qat") -> list[Path]:
    """Left: the perplexity each format adds to the float32 model of the same seed, against weight
    bytes, per pattern, after post-training quantization (dashed) and after QAT (solid); middle (when
    the sweep has the recall models): the recall beyond the local reach each format loses, the same
    way. Right: the fraction of the PTQ perplexity cost QAT recovers, per format and pattern, where the
    PTQ cost is measurable (its interval above 0, its mean above :data:`MEASURABLE` of the
    perplexity): the ratio of two costs near 0 means nothing and is left out. The recovery tables are
    written beside the figure as ``<name>_recovery.csv`` (perplexity) and ``<name>_recall.csv``
    (``python -m experiments.sweeps.collect`` prints them)."""
    recall_points = costs(df, RECALL)
    panels = 3 if len(recall_points) else 2
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 4.5))
    ax, rec = axes[0], axes[-1]
    colors = _draw_costs(ax, costs(df), "perplexity above the float32 model",
                         "post-training quantization (dashed) vs QAT (solid)")
    if len(recall_points):
        _draw_costs(axes[1], recall_points, "recall beyond the local reach lost",
                    "MQAR models: PTQ (dashed) vs QAT (solid)")
        lost = recovery(df, RECALL)
        lost.assign(label=lost["model"] + " " + lost["format"]).to_csv(Path(figures) / f"{name}_recall.csv",
                                                                        index=False)
    table = recovery(df)
    # the right panel's numbers, per seed already paired, beside the figure (the README's table)
    table.assign(label=table["model"] + " " + table["format"]).to_csv(
        Path(figures) / f"{name}_recovery.csv", index=False)
    formats = list(dict.fromkeys(table["format"]))
    models = list(dict.fromkeys(table["model"]))
    width = 0.8 / max(len(models), 1)
    for j, model in enumerate(models):
        part = table[table["model"] == model].set_index("format").reindex(formats).reset_index()
        x = pd.Series([i + (j - (len(models) - 1) / 2) * width for i in range(len(formats))])
        lo = part["ptq_cost.lo"] if "ptq_cost.lo" in part else part["ptq_cost"]
        measurable = ((lo > 0) & (part["ptq_cost"] > MEASURABLE * part["float"])).to_numpy()
        shown = part[measurable]
        rec.bar(x[measurable], shown["recovered"], width, label=model, color=colors.get(model))
        plots.draw_interval(rec, x[measurable], shown, "recovered", color="black", bounds=(-0.5, 1.5))
        for xi in x[~measurable]:
            rec.text(xi, 0.02, "no measurable\nPTQ cost", fontsize=6, ha="center", rotation=90)
    rec.set_xticks(range(len(formats)), formats)
    rec.set_ylim(-0.5, 1.5)
    rec.axhline(0.5, color="grey", ls=":", lw=1)
    rec.axhline(1.0, color="grey", lw=1)
    plots.label_axes(rec, "weight format", "fraction of the PTQ cost recovered by QAT",
                     "1 - (QAT - float) / (PTQ - float), paired by seed")
    return [plots.save_figure(fig, Path(figures) / f"{name}.png")]


register("qat", "Gemma 3 section 2.3 / Table 3 (PTQ vs QAT per weight format)", plot=plot_qat,
         report=report)(qat_sweep)
