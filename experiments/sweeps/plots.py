"""The plots every notebook and sweep uses. Each reads a ``collect(...)`` DataFrame and saves PNGs.

- ``plot_tradeoff``: the memory/quality trade-off (x: cache memory at 32K, y: validation perplexity,
  one labelled point per architecture), loss by position and probe accuracy vs distance.
- ``plot_ratio_window``: perplexity heatmap over local:global ratio x window (Gemma 3 Figs. 3-4).
- ``plot_bar``: one bar per run (Gemma 2 Tables 8-10).
- ``plot_long_context``: loss by position beyond the training length (Gemma 3 section 5.3).
- ``plot_distill``: student perplexity vs size, next-token vs distillation (Gemma 2 Table 7).
- ``plot_teacher_size``: small vs large teacher over training tokens (Gemma 3 Figure 8).

Each has the signature a sweep registers as its ``plot``: ``(DataFrame, figures folder, sweep name) ->
list of PNG paths``. ``label_axes`` and ``save_figure`` are shared with the other plot modules
(``experiments.embed.plots``), so every figure looks and is saved alike.
"""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files, not windows: works on headless machines and in CI
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def _done(df: pd.DataFrame, plot: str, needs: tuple[str, ...] = ()) -> pd.DataFrame:
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


def _series(row: pd.Series, prefix: str) -> list[tuple[float, float]]:
    """``evals.<prefix><number>`` columns of a row as sorted (number, value) pairs."""
    pairs = []
    for col, value in row.items():  # "<prefix><n>" or a bucket "<prefix><lo>_<hi>" (plotted at lo)
        m = re.fullmatch(rf"evals\.{prefix}(\d+)(?:_\d+)?", str(col))
        if m and pd.notna(value):
            pairs.append((float(m.group(1)), float(value)))
    return sorted(pairs)


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


def plot_tradeoff(df: pd.DataFrame, figures: Path, name: str = "tradeoff") -> list[Path]:
    df = _done(df, "plot_tradeoff")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    mib = df["evals.cache_bytes_32k"] / 2**20
    ax.scatter(mib, df["evals.val_ppl"], s=40)
    for x, y, label in zip(mib, df["evals.val_ppl"], df["label"]):
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    label_axes(ax, "decode cache at 32K tokens, bf16, batch 1 (MiB, log scale)", "validation perplexity",
               "Memory / quality trade-off of Gemma-family layer patterns", xscale="log", legend=None)
    paths = [save_figure(fig, Path(figures) / f"{name}.png")]
    paths += plot_loss_by_position(df, figures, name)
    paths += plot_probes(df, figures, name)
    return paths


def plot_loss_by_position(df: pd.DataFrame, figures: Path, name: str) -> list[Path]:
    df = _done(df, "plot_loss_by_position")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    drawn = False
    for _, row in df.iterrows():
        pts = _series(row, "loss_pos_")
        if pts:
            ax.plot([p for p, _ in pts], [v for _, v in pts], marker="o", label=row["label"])
            drawn = True
    if not drawn:
        plt.close(fig)
        return []
    if "evals.window" in df and df["evals.window"].notna().any():
        ax.axvline(float(df["evals.window"].dropna().iloc[0]), color="grey", ls="--", lw=1, label="window")
    label_axes(ax, "token position (start of bucket)", "validation loss (nats)", "Loss by position",
               legend=7, ncol=2)
    return [save_figure(fig, Path(figures) / f"{name}_loss_by_position.png")]


def plot_probes(df: pd.DataFrame, figures: Path, name: str) -> list[Path]:
    df = _done(df, "plot_probes")
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    drawn = False
    for ax, prefix, title in ((axes[0], "passkey_", "passkey retrieval"), (axes[1], "mqar_gap_", "MQAR")):
        for _, row in df.iterrows():
            pts = _series(row, prefix)
            if pts:
                ax.plot([p for p, _ in pts], [v for _, v in pts], marker="o", label=row["label"])
                drawn = True
        ax.set_ylim(-0.02, 1.02)
        label_axes(ax, "distance (tokens)", "accuracy", title, legend=None)
    if not drawn:
        plt.close(fig)
        return []
    axes[1].legend(fontsize=7)
    return [save_figure(fig, Path(figures) / f"{name}_probes.png")]


def plot_ratio_window(df: pd.DataFrame, figures: Path, name: str = "ratio_window") -> list[Path]:
    df = _done(df, "plot_ratio_window", ("tag.ratio",))
    grid = df.pivot_table(index="tag.ratio", columns="tag.window", values="evals.val_ppl")
    fig, ax = plt.subplots(figsize=(6, 4))
    im = ax.imshow(grid.values, cmap="viridis_r", aspect="auto")
    ax.set_xticks(range(len(grid.columns)), [str(int(c)) for c in grid.columns])
    ax.set_yticks(range(len(grid.index)), [f"{int(r)}:1" for r in grid.index])
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            if pd.notna(grid.values[i, j]):
                ax.text(j, i, f"{grid.values[i, j]:.2f}", ha="center", va="center", color="w", fontsize=8)
    ax.set_xlabel("sliding window")
    ax.set_ylabel("local:global")
    ax.set_title("Validation perplexity")
    fig.colorbar(im, ax=ax)
    return [save_figure(fig, Path(figures) / f"{name}.png")]


def plot_bar(df: pd.DataFrame, figures: Path, name: str = "bar", metric: str = "evals.val_ppl") -> list[Path]:
    df = _done(df, "plot_bar")
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(df["label"], df[metric])
    lo, hi = df[metric].min(), df[metric].max()
    ax.set_ylim(lo - 0.1 * (hi - lo + 1e-9) - 0.01 * lo, hi + 0.1 * (hi - lo + 1e-9))
    ax.set_ylabel(metric.removeprefix("evals."))
    ax.tick_params(axis="x", rotation=20)
    ax.grid(alpha=0.3, axis="y")
    return [save_figure(fig, Path(figures) / f"{name}.png")]


def plot_long_context(df: pd.DataFrame, figures: Path, name: str = "long_context") -> list[Path]:
    df = _done(df, "plot_long_context", ("tag.eval_len",))
    longest = df[df["tag.eval_len"] == df["tag.eval_len"].max()]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for _, row in longest.iterrows():
        pts = _series(row, "loss_pos_")
        if pts:
            ax.plot([p for p, _ in pts], [v for _, v in pts], marker="o", label=row["label"])
    train_len = df["run.seq_len"].dropna().iloc[0] if "run.seq_len" in df else None
    if train_len is not None:
        ax.axvline(float(train_len), color="grey", ls="--", lw=1, label="training length")
    label_axes(ax, "token position (start of bucket)", "validation loss (nats)",
               "Beyond the training length: RoPE base and rescaling", legend=7)
    return [save_figure(fig, Path(figures) / f"{name}.png")]


def plot_distill(df: pd.DataFrame, figures: Path, name: str = "distill") -> list[Path]:
    """Gemma 2 Table 7 analogue: student validation perplexity vs student size (non-embedding
    parameters), one line per training method, the teacher's perplexity as a dashed line."""
    df = _done(df, "plot_distill", ("tag.role",))
    students, teachers = df[df["tag.role"] == "student"], df[df["tag.role"] == "teacher"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method, part in students.groupby("tag.method", sort=False):
        part = part.sort_values("evals.params_non_embedding")
        ax.plot(part["evals.params_non_embedding"], part["evals.val_ppl"], marker="o", label=method)
    for _, row in teachers.iterrows():
        ax.axhline(row["evals.val_ppl"], color="grey", ls="--", lw=1,
                   label=f"{row['label']} ({row['evals.params_non_embedding'] / 1e6:.2f}M)")
    label_axes(ax, "student non-embedding parameters (log scale)", "validation perplexity",
               "Next-token training vs distillation at equal student tokens", xscale="log")
    return [save_figure(fig, Path(figures) / f"{name}.png")]


def plot_teacher_size(df: pd.DataFrame, figures: Path, name: str = "teacher_size") -> list[Path]:
    """Gemma 3 Figure 8 analogue. Left: student perplexity vs training tokens per teacher (and
    next-token training when present). Right: relative perplexity difference of each larger teacher's
    student against the smallest teacher's, ``ppl(large) / ppl(small) - 1`` (below 0: the larger
    teacher is better), vs tokens."""
    df = _done(df, "plot_teacher_size", ("tag.role",))
    students = df[df["tag.role"] == "student"]
    teachers = df[df["tag.role"] == "teacher"].sort_values("evals.params_non_embedding")
    if students.empty:
        raise ValueError("plot_teacher_size: no finished student runs to draw")
    fig, (ax, rel) = plt.subplots(1, 2, figsize=(11, 4.2))
    size = dict(zip(teachers["tag.teacher"], teachers["evals.params_non_embedding"] / 1e6))
    curves = {}
    for who, part in students.groupby("tag.teacher", sort=False):
        part = part.sort_values("tag.tokens")
        curves[who] = part.set_index("tag.tokens")["evals.val_ppl"]
        ax.plot(part["tag.tokens"], part["evals.val_ppl"], marker="o",
                label="next-token" if who == "none" else f"from {who} ({size.get(who, float('nan')):.2f}M)")
    label_axes(ax, "student training tokens", "student validation perplexity",
               "student perplexity by teacher", xscale="log")
    order = [t for t in teachers["tag.teacher"] if t in curves]
    for big in order[1:]:
        diff = (curves[big] / curves[order[0]] - 1.0).dropna()
        rel.plot(diff.index, 100 * diff.values, marker="o", label=f"{big} vs {order[0]}")
    rel.axhline(0.0, color="grey", lw=1)
    label_axes(rel, "student training tokens", "relative perplexity difference (%)",
               "below 0: the larger teacher is better", xscale="log")
    return [save_figure(fig, Path(figures) / f"{name}.png")]
