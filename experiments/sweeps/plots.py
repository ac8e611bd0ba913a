"""The plots every notebook and sweep uses. Each reads a ``collect(...)`` DataFrame and saves PNGs.

- ``plot_tradeoff``: the memory/quality trade-off (x: cache memory at 32K, y: validation perplexity,
  one labelled point per architecture), loss by position and probe accuracy vs distance.
- ``plot_ratio_window``: perplexity heatmap over local:global ratio x window (Gemma 3 Figs. 3-4).
- ``plot_bar``: one bar per run (Gemma 2 Tables 8-10).
- ``plot_long_context``: loss by position beyond the training length (Gemma 3 section 5.3).
- ``plot_distill``: student perplexity vs size, next-token vs distillation (Gemma 2 Table 7).
- ``plot_teacher_size``: small vs large teacher over training tokens (Gemma 3 Figure 8).

Each has the signature a sweep registers as its ``plot``: ``(DataFrame, figures folder, sweep name) ->
list of PNG paths``. Every plot reduces the seed replicas of a point (its rows under one label) to
their mean through :func:`experiments.sweeps.stats.summarize` and, where a point has more than one
seed, draws the 95% interval: error bars on points and bars, a shaded band around a curve. With one
seed per point there is no interval and nothing more is drawn. ``label_axes``, ``save_figure`` and
``draw_interval`` are shared with the other plot modules (``experiments.embed.plots``), so every figure
looks and is saved alike.
"""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files, not windows: works on headless machines and in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from experiments.sweeps import stats  # noqa: E402


def done_runs(df: pd.DataFrame, plot: str, needs: tuple[str, ...] = ()) -> pd.DataFrame:
    """The finished runs of ``df``; a ValueError naming ``plot`` when there are none, or when a
    column the plot needs (e.g. a sweep tag) is missing: a figure is never silently skipped."""
    done = df[df["status"] == "done"] if "status" in df else df
    if done.empty:
        counts = df["status"].value_counts().to_dict() if "status" in df else {}
        raise ValueError(f"{plot}: no finished runs to draw ({len(df)} rows, by status {counts})")
    missing = [c for c in needs if c not in done]
    if missing:
        raise ValueError(f"{plot}: the table has no column {', '.join(missing)} (is it the right sweep?)")
    return done


def _curve_columns(df: pd.DataFrame, *prefixes: str) -> list[str]:
    """The ``evals.<prefix><number>`` columns of ``df`` (a curve's points) for each prefix."""
    # "<prefix><n>" or a bucket "<prefix><lo>_<hi>" (plotted at lo)
    return [c for c in df.columns if any(re.fullmatch(rf"evals\.{p}\d+(?:_\d+)?", str(c)) for p in prefixes)]


def _series(row: pd.Series, prefix: str) -> list[tuple[float, float, float, float]]:
    """A :func:`~experiments.sweeps.stats.summarize` row's ``evals.<prefix><number>`` columns as
    sorted (number, mean, lo, hi), points without a mean left out."""
    points = []
    for col, value in row.items():
        m = re.fullmatch(rf"evals\.{prefix}(\d+)(?:_\d+)?", str(col))
        if m and pd.notna(value):
            points.append((float(m.group(1)), float(value), float(row[f"{col}.lo"]), float(row[f"{col}.hi"])))
    return sorted(points)


def _draw_curve(ax, row: pd.Series, prefix: str, **kw) -> bool:
    """Plot a summary row's ``prefix`` curve (means, labelled with its label) and, when the row has
    more than one seed, its 95% band; False when the row has no such curve."""
    points = _series(row, prefix)
    if not points:
        return False
    x, mean, lo, hi = (list(v) for v in zip(*points))
    (line,) = ax.plot(x, mean, marker="o", label=row["label"], **kw)
    if row["n"] > 1:
        ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2, lw=0)
    return True


def draw_interval(ax, x, summary: pd.DataFrame, metric: str, *, color=None, horizontal: bool = False,
                  bounds: tuple[float, float] | None = None) -> None:
    """Error bars of the 95% intervals of ``summary[metric]`` (:func:`experiments.sweeps.stats.summarize`)
    at positions ``x`` (vertical bars; ``horizontal``: the metric runs along x and ``x`` are the y
    positions), for the rows that have one (more than one seed); nothing when none has: a figure of
    one seed per point has no error bars. ``bounds``: the metric's range (an accuracy's ``(0, 1)``),
    where the bars are cut: a t-interval over a few bimodal seeds (learned / not) may reach past it."""
    if "n" not in summary:
        return
    keep = ((summary["n"] > 1) & summary[f"{metric}.lo"].notna() & summary[f"{metric}.hi"].notna()).to_numpy()
    if not keep.any():
        return
    mean, lo, hi = (summary[f"{metric}{end}"].to_numpy(float)[keep] for end in ("", ".lo", ".hi"))
    if bounds is not None:
        lo, hi = np.clip(lo, *bounds), np.clip(hi, *bounds)
    at, err = np.asarray(x)[keep], np.stack([mean - lo, hi - mean])
    style = dict(fmt="none", ecolor=color or "k", elinewidth=1, capsize=3)
    if horizontal:
        ax.errorbar(mean, at, xerr=err, **style)
    else:
        ax.errorbar(at, mean, yerr=err, **style)


def _ylim(ax, summary: pd.DataFrame, metric: str) -> None:
    """y limits around the means (and intervals) of ``summary[metric]``, 10% of the spread as margin."""
    lo = pd.concat([summary[metric], summary[f"{metric}.lo"]]).min()
    hi = pd.concat([summary[metric], summary[f"{metric}.hi"]]).max()
    ax.set_ylim(lo - 0.1 * (hi - lo + 1e-9) - 0.01 * lo, hi + 0.1 * (hi - lo + 1e-9))


def label_axes(ax, x: str, y: str, title: str, *, xscale: str | None = None, legend: int | None = 8,
               ncol: int = 1) -> None:
    """Axis labels, title, optional log x-axis, legend (font size; None: no legend) and a light grid."""
    if xscale:
        ax.set_xscale(xscale)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(title)
    if legend:
        ax.legend(fontsize=legend, ncol=ncol)
    ax.grid(alpha=0.3)


def save_figure(fig, path: Path) -> Path:
    """Save ``fig`` as ``path`` (folders made, tight layout, 120 dpi), close it, return ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_tradeoff(df: pd.DataFrame, figures: Path, name: str = "tradeoff",
                  recall: pd.DataFrame | None = None) -> list[Path]:
    """Perplexity against decode cache (left) and, from ``recall`` (the recall sweep's summary rows,
    one per layer pattern: ``tag.pattern``, ``evals.task_acc_beyond`` and its cache), MQAR recall
    beyond the local reach against that model's cache (right), each point with its 95% interval; then
    loss by position and the zero-shot probes."""
    df = done_runs(df, "plot_tradeoff")
    points = stats.summarize(df, ["evals.cache_bytes_32k", "evals.val_ppl"])
    fig, (ax, right) = plt.subplots(1, 2, figsize=(12, 4.6))
    mib = points["evals.cache_bytes_32k"] / 2**20
    ax.scatter(mib, points["evals.val_ppl"], s=40)
    draw_interval(ax, mib, points, "evals.val_ppl", color="C0")
    for x, y, label in zip(mib, points["evals.val_ppl"], points["label"]):
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    label_axes(ax, "decode cache at 32K tokens, bf16, batch 1 (MiB, log scale)", "validation perplexity",
               "Quality: perplexity on the corpus", xscale="log", legend=None)
    _recall_panel(right, df, recall)
    paths = [save_figure(fig, Path(figures) / f"{name}.png")]
    paths += plot_loss_by_position(df, figures, name)
    paths += plot_probes(df, figures, name)
    return paths


def _recall_panel(ax, df: pd.DataFrame, recall: pd.DataFrame | None) -> None:
    """The tradeoff's patterns on ``recall`` (labelled as in ``df``), or a note naming what is missing."""
    names = dict(zip(df.get("tag.pattern", ()), df["label"]))
    rows = None if recall is None else recall[recall["tag.pattern"].isin(names)]
    title = "Recall: MQAR beyond the local reach"
    if rows is None or rows.empty:
        ax.text(0.5, 0.5, "no recall summary beside this figure:\nrun the recall sweep at this scale",
                ha="center", va="center", transform=ax.transAxes)
        label_axes(ax, "", "", title, legend=None)
        return
    mib = rows["evals.cache_bytes_32k"].to_numpy(float) / 2**20
    ax.scatter(mib, rows["evals.task_acc_beyond"], s=40, color="C1")
    draw_interval(ax, mib, rows, "evals.task_acc_beyond", color="C1", bounds=(0, 1))
    for x, y, pattern in zip(mib, rows["evals.task_acc_beyond"], rows["tag.pattern"]):
        ax.annotate(names[pattern], (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_ylim(-0.03, 1.05)
    label_axes(ax, "decode state at 32K tokens of the recall model (MiB, log scale)",
               "accuracy (held-out answers)", title, xscale="log", legend=None)


def plot_loss_by_position(df: pd.DataFrame, figures: Path, name: str) -> list[Path]:
    df = done_runs(df, "plot_loss_by_position")
    curves = stats.summarize(df, _curve_columns(df, "loss_pos_"))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    drawn = False
    for _, row in curves.iterrows():
        drawn = _draw_curve(ax, row, "loss_pos_") or drawn
    if not drawn:
        plt.close(fig)
        return []
    if "evals.window" in df and df["evals.window"].notna().any():
        ax.axvline(float(df["evals.window"].dropna().iloc[0]), color="grey", ls="--", lw=1, label="window")
    label_axes(ax, "token position (start of bucket)", "validation loss (nats)", "Loss by position",
               legend=7, ncol=2)
    return [save_figure(fig, Path(figures) / f"{name}_loss_by_position.png")]


def plot_probes(df: pd.DataFrame, figures: Path, name: str) -> list[Path]:
    df = done_runs(df, "plot_probes")
    curves = stats.summarize(df, _curve_columns(df, "passkey_", "mqar_gap_"))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    drawn = False
    for ax, prefix, title in ((axes[0], "passkey_", "passkey retrieval"), (axes[1], "mqar_gap_", "MQAR")):
        for _, row in curves.iterrows():
            drawn = _draw_curve(ax, row, prefix) or drawn
        ax.set_ylim(-0.02, 1.02)
        label_axes(ax, "distance (tokens)", "accuracy", title, legend=None)
    if not drawn:
        plt.close(fig)
        return []
    axes[1].legend(fontsize=7)
    return [save_figure(fig, Path(figures) / f"{name}_probes.png")]


def plot_ratio_window(df: pd.DataFrame, figures: Path, name: str = "ratio_window") -> list[Path]:
    """Validation perplexity over local:global ratio x window; a cell of more than one seed shows its
    mean and, below it, the half-width of its 95% interval."""
    df = done_runs(df, "plot_ratio_window", ("tag.ratio", "tag.window"))
    cells = stats.summarize(df, ["evals.val_ppl"], by=("label", "tag.ratio", "tag.window"))
    cells["half"] = (cells["evals.val_ppl.hi"] - cells["evals.val_ppl.lo"]) / 2
    grid = cells.pivot_table(index="tag.ratio", columns="tag.window", values="evals.val_ppl")
    half = cells.pivot_table(index="tag.ratio", columns="tag.window", values="half", dropna=False)
    half = half.reindex(index=grid.index, columns=grid.columns)
    fig, ax = plt.subplots(figsize=(6, 4))
    im = ax.imshow(grid.values, cmap="viridis_r", aspect="auto")
    ax.set_xticks(range(len(grid.columns)), [str(int(c)) for c in grid.columns])
    ax.set_yticks(range(len(grid.index)), [f"{int(r)}:1" for r in grid.index])
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            if pd.notna(grid.values[i, j]):
                text = f"{grid.values[i, j]:.2f}"
                if pd.notna(half.values[i, j]):
                    text += f"\n±{half.values[i, j]:.2f}"
                ax.text(j, i, text, ha="center", va="center", color="w", fontsize=8)
    ax.set_xlabel("sliding window")
    ax.set_ylabel("local:global")
    ax.set_title("Validation perplexity" + (" (± 95% interval)" if (cells["n"] > 1).any() else ""))
    fig.colorbar(im, ax=ax)
    return [save_figure(fig, Path(figures) / f"{name}.png")]


def plot_bar(df: pd.DataFrame, figures: Path, name: str = "bar", metric: str = "evals.val_ppl") -> list[Path]:
    df = done_runs(df, "plot_bar")
    bars = stats.summarize(df, [metric])
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(bars["label"], bars[metric])
    draw_interval(ax, bars["label"], bars, metric)
    _ylim(ax, bars, metric)
    ax.set_ylabel(metric.removeprefix("evals."))
    ax.tick_params(axis="x", rotation=20)
    ax.grid(alpha=0.3, axis="y")
    return [save_figure(fig, Path(figures) / f"{name}.png")]


def plot_long_context(df: pd.DataFrame, figures: Path, name: str = "long_context") -> list[Path]:
    df = done_runs(df, "plot_long_context", ("tag.eval_len",))
    longest = df[df["tag.eval_len"] == df["tag.eval_len"].max()]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for _, row in stats.summarize(longest, _curve_columns(longest, "loss_pos_")).iterrows():
        _draw_curve(ax, row, "loss_pos_")
    train_len = df["run.seq_len"].dropna().iloc[0] if "run.seq_len" in df else None
    if train_len is not None:
        ax.axvline(float(train_len), color="grey", ls="--", lw=1, label="training length")
    label_axes(ax, "token position (start of bucket)", "validation loss (nats)",
               "Beyond the training length: RoPE base and rescaling", legend=7)
    return [save_figure(fig, Path(figures) / f"{name}.png")]


def plot_distill(df: pd.DataFrame, figures: Path, name: str = "distill") -> list[Path]:
    """Gemma 2 Table 7 analogue. Left: student validation perplexity vs student size (non-embedding
    parameters) at the sweep's main horizon, one line per training method, the teacher's perplexity as
    a dashed line. Right, when the table holds several horizons (``tag.steps``): each method's
    perplexity against student training steps, so a gain that closes (or opens) with training shows."""
    df = done_runs(df, "plot_distill", ("tag.role", "tag.method"))
    metrics = ["evals.params_non_embedding", "evals.val_ppl"]
    by = ("label", "tag.role", "tag.method", *(("tag.size", "tag.steps") if "tag.steps" in df else ()))
    points = stats.summarize(df, metrics, by=by)
    students, teachers = points[points["tag.role"] == "student"], points[points["tag.role"] == "teacher"]
    horizons = students["tag.steps"].dropna().unique() if "tag.steps" in students else []
    main = students
    if len(horizons) > 1:  # the main horizon: the one every size was trained at
        main_steps = students.groupby("tag.steps")["tag.size"].nunique().idxmax()
        main = students[students["tag.steps"] == main_steps]
    fig, axes = plt.subplots(1, 2 if len(horizons) > 1 else 1, figsize=(12 if len(horizons) > 1 else 7, 4.5),
                             squeeze=False)
    ax = axes[0, 0]
    for method, part in main.groupby("tag.method", sort=False):
        part = part.sort_values("evals.params_non_embedding")
        (line,) = ax.plot(part["evals.params_non_embedding"], part["evals.val_ppl"], marker="o", label=method)
        draw_interval(ax, part["evals.params_non_embedding"], part, "evals.val_ppl", color=line.get_color())
    for _, row in teachers.iterrows():
        ax.axhline(row["evals.val_ppl"], color="grey", ls="--", lw=1,
                   label=f"{row['label']} ({row['evals.params_non_embedding'] / 1e6:.2f}M)")
        if stats.has_interval(row["evals.val_ppl.lo"], row["evals.val_ppl.hi"]):
            ax.axhspan(row["evals.val_ppl.lo"], row["evals.val_ppl.hi"], color="grey", alpha=0.15, lw=0)
    label_axes(ax, "student non-embedding parameters (log scale)", "validation perplexity",
               "Next-token training vs distillation at equal student tokens", xscale="log")
    if len(horizons) > 1:
        over = axes[0, 1]
        sizes = students.groupby("tag.size")["tag.steps"].nunique()
        curves = students[students["tag.size"] == sizes.idxmax()]
        for method, part in curves.groupby("tag.method", sort=False):
            if part["tag.steps"].nunique() < 2:
                continue
            part = part.sort_values("tag.steps")
            (line,) = over.plot(part["tag.steps"], part["evals.val_ppl"], marker="o", label=method)
            draw_interval(over, part["tag.steps"], part, "evals.val_ppl", color=line.get_color())
        label_axes(over, "student training steps (log scale)", "validation perplexity",
                   f"student {sizes.idxmax()} over training horizons", xscale="log")
        over.set_yscale("log")
    return [save_figure(fig, Path(figures) / f"{name}.png")]


def plot_teacher_size(df: pd.DataFrame, figures: Path, name: str = "teacher_size") -> list[Path]:
    """Gemma 3 Figure 8 analogue. Left: student perplexity vs training tokens per teacher (and
    next-token training when present). Right: relative perplexity difference of each larger teacher's
    student against the smallest teacher's, ``ppl(large) / ppl(small) - 1`` (below 0: the larger
    teacher is better), vs tokens; with seeds, the mean and 95% interval of that difference over the
    seeds, each student paired with the other teacher's student of the same seed (``run.seed``)."""
    df = done_runs(df, "plot_teacher_size", ("tag.role", "tag.teacher", "tag.tokens"))
    students = df[df["tag.role"] == "student"]
    teachers = stats.summarize(df[df["tag.role"] == "teacher"], ["evals.params_non_embedding"],
                               by=("label", "tag.teacher")).sort_values("evals.params_non_embedding")
    if students.empty:
        raise ValueError("plot_teacher_size: no finished student runs to draw")
    fig, (ax, rel) = plt.subplots(1, 2, figsize=(11, 4.2))
    size = dict(zip(teachers["tag.teacher"], teachers["evals.params_non_embedding"] / 1e6))
    points = stats.summarize(students, ["evals.val_ppl"], by=("label", "tag.teacher", "tag.tokens"))
    for who, part in points.groupby("tag.teacher", sort=False):
        part = part.sort_values("tag.tokens")
        (line,) = ax.plot(part["tag.tokens"], part["evals.val_ppl"], marker="o",
                          label="next-token" if who == "none" else
                          f"from {who} ({size.get(who, float('nan')):.2f}M)")
        draw_interval(ax, part["tag.tokens"], part, "evals.val_ppl", color=line.get_color())
    label_axes(ax, "student training tokens", "student validation perplexity",
               "student perplexity by teacher", xscale="log")
    order = [t for t in teachers["tag.teacher"] if t in set(points["tag.teacher"])]
    pair = ["tag.tokens", "run.seed"] if "run.seed" in students else ["tag.tokens"]
    small = students[students["tag.teacher"] == order[0]][[*pair, "evals.val_ppl"]] if order else None
    for big in order[1:]:
        both = students[students["tag.teacher"] == big][[*pair, "evals.val_ppl"]].merge(
            small, on=pair, suffixes=("", ".small"))
        both["diff"] = 100 * (both["evals.val_ppl"] / both["evals.val_ppl.small"] - 1.0)
        diff = stats.summarize(both, ["diff"], by=("tag.tokens",)).dropna(subset=["diff"])
        diff = diff.sort_values("tag.tokens")
        (line,) = rel.plot(diff["tag.tokens"], diff["diff"], marker="o", label=f"{big} vs {order[0]}")
        draw_interval(rel, diff["tag.tokens"], diff, "diff", color=line.get_color())
    rel.axhline(0.0, color="grey", lw=1)
    label_axes(rel, "student training tokens", "relative perplexity difference (%)",
               "below 0: the larger teacher is better", xscale="log")
    return [save_figure(fig, Path(figures) / f"{name}.png")]
