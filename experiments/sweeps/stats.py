"""Means and 95% intervals over the seed replicas of sweep points (``python -m experiments.sweeps NAME
--seeds N``), for the summary tables, the plots and the sentences that compare two points.

- :func:`interval`: the mean of some values and its two-sided 95% Student-t interval;
- :func:`summarize`: a ``collect(...)`` DataFrame reduced to one row per label (or other grouping):
  ``n``, and for each metric ``<metric>``, ``<metric>.lo`` and ``<metric>.hi``;
- :func:`overlap` and :func:`compare`: whether two points' intervals overlap, as a sentence;
- :func:`cell` and :func:`fold`: an interval as text, ``38.33 [37.9, 38.8]``.

With one seed there is no interval: its bounds are NaN (never a zero-width interval that would read
as certainty), and the text shows the value alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import pandas as pd

# The 0.975 quantile of Student's t with df = 1..30 degrees of freedom (two-sided 95%).
T975 = (12.706204736, 4.302652730, 3.182446305, 2.776445105, 2.570581836, 2.446911851, 2.364624252,
        2.306004135, 2.262157163, 2.228138852, 2.200985160, 2.178812830, 2.160368656, 2.144786688,
        2.131449546, 2.119905299, 2.109815578, 2.100922040, 2.093024054, 2.085963447, 2.079613845,
        2.073873068, 2.068657610, 2.063898562, 2.059538553, 2.055529439, 2.051830516, 2.048407142,
        2.045229642, 2.042272456)
Z975 = 1.959963984540054  # the normal's 0.975 quantile: the limit of T975 as df grows


def t_quantile(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom: the exact table
    :data:`T975` up to 30, beyond it the Cornish-Fisher expansion around the normal quantile
    (Abramowitz & Stegun 26.7.5; within 1e-5 of the exact value from df = 31 on)."""
    if not isinstance(df, int | np.integer) or df < 1:
        raise ValueError(f"t_quantile: df={df!r}: must be an int >= 1")
    if df <= len(T975):
        return T975[df - 1]
    z = Z975
    return (z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
            + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3))


def interval(values: Iterable[float]) -> tuple[float, float, float, int]:
    """``(mean, lo, hi, n)`` of the values that are not NaN: their mean and two-sided 95% Student-t
    interval ``mean -+ t(n - 1) * s / sqrt(n)`` (``s``: the sample standard deviation). One value
    has no interval (lo = hi = NaN); none gives a NaN mean and n = 0."""
    x = pd.to_numeric(pd.Series(list(values), dtype=object), errors="coerce").to_numpy(float)
    x = x[~np.isnan(x)]
    n = len(x)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    mean = float(x.mean())
    if n == 1:
        return mean, math.nan, math.nan, 1
    half = t_quantile(n - 1) * float(x.std(ddof=1)) / math.sqrt(n)
    return mean, mean - half, mean + half, n


def summarize(df: pd.DataFrame, metrics: Sequence[str], by: Sequence[str] = ("label",)) -> pd.DataFrame:
    """One row per group of the finished runs of ``df`` (a ``collect(...)`` DataFrame; every row when
    it has no ``status``), groups in the order they first appear: the ``by`` columns, ``n`` (the
    group's finished runs) and, for each metric, ``<metric>`` (the mean), ``<metric>.lo`` and
    ``<metric>.hi`` (:func:`interval`; a run whose metric is NaN does not count for that metric).

    Group by ``label`` to put a point's seed replicas together; add columns that are constant per
    label (sweep tags) to ``by`` to keep them."""
    by, metrics = list(by), list(metrics)
    missing = [c for c in (*by, *metrics) if c not in df]
    if missing:
        raise ValueError(f"summarize: no column {', '.join(map(repr, missing))} in the table "
                         f"(columns: {', '.join(map(str, df.columns))})")
    done = df[df["status"] == "done"] if "status" in df else df
    columns = [*by, "n", *(f"{m}{end}" for m in metrics for end in ("", ".lo", ".hi"))]
    rows = []
    for keys, part in done.groupby(by, sort=False, dropna=False):
        row = dict(zip(by, keys)) | {"n": len(part)}
        for m in metrics:
            row[m], row[f"{m}.lo"], row[f"{m}.hi"], _ = interval(part[m])
        rows.append(row)
    return pd.DataFrame(rows, columns=columns)


def overlap(a_lo: float, a_hi: float, b_lo: float, b_hi: float) -> bool:
    """Whether the closed intervals [a_lo, a_hi] and [b_lo, b_hi] share a point; False when a bound
    is NaN (one seed: no interval to overlap)."""
    return bool(a_lo <= b_hi and b_lo <= a_hi)


def has_interval(lo: float, hi: float) -> bool:
    """Whether ``[lo, hi]`` is an interval worth showing: both bounds known and apart (a figure equal
    over all seeds, such as a cache size, has none)."""
    return bool(pd.notna(lo) and pd.notna(hi) and hi > lo)


def cell(mean: float, lo: float, hi: float, fmt: Callable[[float], str] = "{:.3f}".format,
         bound_fmt: Callable[[float], str] | None = None) -> str:
    """``"38.33 [37.9, 38.8]"``: ``fmt(mean)`` and, when :func:`has_interval`, the bounds in brackets
    (``bound_fmt``, default ``fmt``); the value alone otherwise; ``""`` for a NaN mean."""
    if pd.isna(mean):
        return ""
    if not has_interval(lo, hi):
        return fmt(mean)
    bound = bound_fmt or fmt
    return f"{fmt(mean)} [{bound(lo)}, {bound(hi)}]"


def fold(summary: pd.DataFrame, fmt: Callable[[float], str] = "{:.3f}".format) -> pd.DataFrame:
    """``summary`` (of :func:`summarize`) with each metric's ``<m>``, ``<m>.lo`` and ``<m>.hi``
    folded into one text column ``<m>`` of :func:`cell` s, for printing; other columns unchanged."""
    out = summary.copy()
    for m in [c for c in summary.columns if f"{c}.lo" in summary and f"{c}.hi" in summary]:
        out[m] = [cell(v, lo, hi, fmt) for v, lo, hi in zip(summary[m], summary[f"{m}.lo"],
                                                            summary[f"{m}.hi"])]
        out = out.drop(columns=[f"{m}.lo", f"{m}.hi"])
    return out


def _decimals(*values: float) -> int:
    """Decimals that give the largest of ``values`` three significant digits (39.1, 0.526, 6386)."""
    top = max((abs(v) for v in values if pd.notna(v) and v != 0), default=1.0)
    return max(0, 2 - math.floor(math.log10(top)))


def compare(summary: pd.DataFrame, label_a: str, label_b: str, metric: str,
            decimals: int | None = None) -> str:
    """One sentence comparing two points of ``summary`` (:func:`summarize` by label) on ``metric``:
    ``"global: 39.1 [38.2, 40.0] vs 5:1: 38.3 [37.9, 38.8] — intervals overlap"`` (or "do not
    overlap"); with one seed of either (or no bounds in ``summary``), "one seed: no interval".
    ``decimals`` defaults to three significant digits of the larger mean."""
    if metric not in summary:
        raise ValueError(f"compare: metric={metric!r} is not in the summary; columns: {', '.join(summary)}")
    if f"{metric}.lo" not in summary:  # a summary of one seed per point (collect's CSV) has no bounds
        summary = summary.assign(**{f"{metric}.lo": float("nan"), f"{metric}.hi": float("nan")})
    rows = {}
    for label in (label_a, label_b):
        match = summary[summary["label"] == label]
        if match.empty:
            raise ValueError(f"compare: label={label!r} not in the summary; labels: "
                             f"{', '.join(map(str, summary['label']))}")
        rows[label] = match.iloc[0]
    a, b = rows[label_a], rows[label_b]
    d = _decimals(a[metric], b[metric]) if decimals is None else decimals
    fmt = f"{{:.{d}f}}".format
    text = " vs ".join(f"{label}: {cell(r[metric], r[f'{metric}.lo'], r[f'{metric}.hi'], fmt)}"
                       for label, r in ((label_a, a), (label_b, b)))
    bounds = [a[f"{metric}.lo"], a[f"{metric}.hi"], b[f"{metric}.lo"], b[f"{metric}.hi"]]
    if any(pd.isna(x) for x in bounds):
        return f"{text} — one seed: no interval"
    return f"{text} — intervals {'overlap' if overlap(*bounds) else 'do not overlap'}"
