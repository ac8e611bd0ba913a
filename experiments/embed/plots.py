"""Tables and figures of the ``embedding`` sweep, from ``collect("embedding")`` only.

``tables(df)`` returns the report-table analogues as DataFrames and ``report(df)`` prints them as
text (what ``python -m experiments.sweeps embedding`` shows after a run); ``plot_all(df, figures,
name)`` draws every point against BM25, quality vs Matryoshka dimension (Tables 6-8) and quality vs
bits per weight (Table 1). The sweep registers both; they read the finished runs of ``df`` only.

A point run with several seeds (``--seeds N``) has one row per seed under its label: the tables give
each label's mean, with ``n`` and each metric's ``.lo``/``.hi`` (95% interval,
:func:`experiments.sweeps.stats.summarize`) when a label has more than one seed, the report prints them
as ``0.526 [0.520, 0.531]``, and the figures draw the intervals as error bars.
"""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from experiments.sweeps import stats
from experiments.sweeps.plots import draw_interval, label_axes, save_figure

METRICS = ("ndcg@10", "mrr@10", "recall@1", "recall@10")
TABLES = {  # name -> labels, in order (a label absent at a scale is skipped)
    "baselines (BM25, teacher, untrained floor)": ["BM25", "teacher", "untrained random", "untrained encoder",
                                                   "base"],
    "Table 2: initialisation": ["init random", "init decoder", "base"],
    "Table 3: pooling": ["base", "pooling first", "pooling last", "pooling attention"],
    "losses: spread-out x distillation": ["base", "no spread-out", "no distillation",
                                          "no spread-out, no distillation"],
    "Table 4: souping": ["base", "single mix2", "single mix3", "soup"],
    "Table 1: quantization": ["base", "base served bfloat16", "base served int8 (PTQ)", "QAT int8",
                              "base served mixed (PTQ)", "QAT mixed", "base served int4 (PTQ)", "QAT int4"],
}


def dims(df: pd.DataFrame, task: str = "code") -> list[int]:
    """The Matryoshka dimensions evaluated, largest first."""
    pattern = rf"evals\.{task}\.d(\d+)\.ndcg@10"
    found = {int(m.group(1)) for c in df.columns if (m := re.fullmatch(pattern, c))}
    return sorted(found, reverse=True)


def full_dim_column(df: pd.DataFrame, task: str, metric: str, row) -> float:
    """A row's metric at the largest dimension it has (BM25 has only one 'dimension')."""
    for d in dims(df, task):
        v = row.get(f"evals.{task}.d{d}.{metric}")
        if v is not None and pd.notna(v):
            return float(v)
    return float("nan")


def over_seeds(rows: pd.DataFrame) -> pd.DataFrame:
    """Per-run ``rows`` (a ``label`` column and metric columns) as one row per label, in the order labels
    first appear: the means, plus ``n`` and each metric's ``.lo``/``.hi`` (95% interval) when a label
    has more than one run; a table of one run per label comes back as it is."""
    if rows.empty or not rows["label"].duplicated().any():
        return rows
    return stats.summarize(rows, [c for c in rows.columns if c != "label"])


def summary_table(df: pd.DataFrame, labels: list[str] | None = None) -> pd.DataFrame:
    """One row per label: code-search metrics at full dimension, topic nDCG@10, bits per weight; the
    mean over a label's seeds, with intervals (:func:`over_seeds`)."""
    rows = []
    for _, r in df.iterrows():
        if labels is not None and r["label"] not in labels:
            continue
        row = {"label": r["label"]}
        for m in METRICS:
            row[f"code {m}"] = full_dim_column(df, "code", m, r)
        row["topic ndcg@10"] = full_dim_column(df, "topic", "ndcg@10", r)
        if "bits_per_weight" in r and pd.notna(r.get("bits_per_weight")):
            row["bits/weight"] = float(r["bits_per_weight"])
        rows.append(row)
    out = over_seeds(pd.DataFrame(rows))
    if labels is not None and not out.empty:
        out = out.set_index("label").loc[[x for x in labels if x in set(out["label"])]].reset_index()
    return out


def dimension_table(df: pd.DataFrame, labels: list[str] | None = None, metric: str = "ndcg@10"
                    ) -> pd.DataFrame:
    """Code-search ``metric`` at every Matryoshka prefix (Tables 6-8), one row per label (the mean
    over its seeds, with intervals: :func:`over_seeds`)."""
    ds = dims(df)
    view = df if labels is None else df[df["label"].isin(labels)]
    cols = {f"evals.code.d{d}.{metric}": f"d={d}" for d in ds}
    out = view[["label", *cols]].rename(columns=cols).reset_index(drop=True)
    return over_seeds(out.dropna(axis=0, how="all", subset=list(cols.values()))).reset_index(drop=True)


def _finished(df: pd.DataFrame, what: str) -> pd.DataFrame:
    """The finished runs of ``df``; a ValueError naming ``what`` when there are none."""
    done = df[df["status"] == "done"].reset_index(drop=True) if "status" in df else df
    if done.empty or "label" not in done:
        raise ValueError(f"embedding {what}: no finished runs ({len(df)} rows)")
    return done


def tables(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The report's tables from the finished runs of ``df``; a ValueError when there are none."""
    df = _finished(df, "tables")
    out = {name: summary_table(df, labels) for name, labels in TABLES.items()}
    out["Tables 6-8: code nDCG@10 by Matryoshka dimension"] = dimension_table(
        df, [x for x in df["label"] if not x.startswith("BM25")])
    return {k: v for k, v in out.items() if not v.empty}


def report(df: pd.DataFrame) -> str:
    """:func:`tables` as plain text, one titled block per table; a metric with an interval over seeds
    as ``mean [lo, hi]`` (:func:`experiments.sweeps.stats.fold`)."""
    fmt = "{:.3f}".format
    return "\n".join(f"\n== {name}\n{stats.fold(table, fmt).to_string(float_format=fmt)}"
                     for name, table in tables(df).items())


def plot_all(df: pd.DataFrame, figures: Path, name: str = "embedding") -> list[Path]:
    """``<name>_ablations.png`` (every point's held-out code nDCG@10 against BM25), ``<name>_dims.png``
    and ``<name>_bits.png`` in ``figures``, from the finished runs of ``df``."""
    df = _finished(df, "plots")
    figures = Path(figures)
    paths = []
    bm25 = df[df["label"] == "BM25"]
    bm25_score = full_dim_column(df, "code", "ndcg@10", bm25.iloc[0]) if not bm25.empty else None

    order = [x for labels in TABLES.values() for x in labels]
    rows = summary_table(df, list(dict.fromkeys(x for x in order if x != "BM25")))
    if not rows.empty:
        fig, ax = plt.subplots(figsize=(7, 0.28 * len(rows) + 1.2))
        y = range(len(rows))[::-1]
        color = {"base": "C2", "teacher": "C3", "untrained random": "C7", "untrained encoder": "C7"}
        colors = [color.get(x, "C0") for x in rows["label"]]
        ax.barh(list(y), rows["code ndcg@10"], color=colors)
        draw_interval(ax, list(y), rows, "code ndcg@10", horizontal=True)
        ax.set_yticks(list(y), rows["label"], fontsize=8)
        if bm25_score is not None:
            ax.axvline(bm25_score, color="k", ls="--", lw=1, label=f"BM25 {bm25_score:.3f}")
        label_axes(ax, "held-out code nDCG@10 (full dimension)", "",
                   "Every ablation against BM25 (base green, teacher red)")
        paths.append(save_figure(fig, figures / f"{name}_ablations.png"))

    ds = dims(df)
    fig, ax = plt.subplots(figsize=(6, 4))
    curves = [f"evals.code.d{d}.ndcg@10" for d in ds]
    by_dim = stats.summarize(df, curves).set_index("label")
    for label in ("teacher", "base", "no MRL", "init random", "soup", "untrained encoder"):
        if label in by_dim.index:
            row = by_dim.loc[label]
            (line,) = ax.plot(ds, [row[c] for c in curves], marker="o", label=label)
            if row["n"] > 1:
                ax.fill_between(ds, [row[f"{c}.lo"] for c in curves], [row[f"{c}.hi"] for c in curves],
                                color=line.get_color(), alpha=0.2, lw=0)
    if bm25_score is not None:
        ax.axhline(bm25_score, color="k", ls="--", label="BM25")
    label_axes(ax, "embedding dimension (Matryoshka prefix)", "held-out code nDCG@10",
               "Quality vs dimension (EmbeddingGemma Tables 6-8)", xscale="log")
    ax.set_xticks(ds, [str(d) for d in ds])
    ax.minorticks_off()  # the log axis' own minor labels would overlap the prefixes
    paths.append(save_figure(fig, figures / f"{name}_dims.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    q = summary_table(df, TABLES["Table 1: quantization"])
    if not q.empty and "bits/weight" in q:
        for _, r in q.iterrows():
            qat = r["label"].startswith("QAT")
            ax.scatter(r["bits/weight"], r["code ndcg@10"], marker="s" if qat else "o",
                       color="C1" if qat else "C0")
            ax.annotate(r["label"], (r["bits/weight"], r["code ndcg@10"]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
        draw_interval(ax, q["bits/weight"], q, "code ndcg@10")
    if bm25_score is not None:  # the scale of the differences: what a lexical baseline scores
        ax.axhline(bm25_score, color="k", ls="--", lw=1, label="BM25")
    label_axes(ax, "bits per weight (codes + scales)", "held-out code nDCG@10",
               "Quality vs bits (EmbeddingGemma Table 1; squares: QAT)",
               legend=8 if bm25_score is not None else None)
    paths.append(save_figure(fig, figures / f"{name}_bits.png"))
    return paths
