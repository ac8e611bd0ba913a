"""Means and 95% Student-t intervals over seeds: the numbers, the per-label summary, the comparison
sentence and the interval text."""

import math

import numpy as np
import pandas as pd
import pytest

from experiments.sweeps import collect, stats


def test_interval_is_the_student_t_interval_computed_by_hand():
    mean, lo, hi, n = stats.interval([1, 2, 3])  # s = 1, t(2) = 4.303
    half = 4.302652730 / math.sqrt(3)
    assert (mean, n) == (2.0, 3) and lo == pytest.approx(2 - half) and hi == pytest.approx(2 + half)
    mean, lo, hi, n = stats.interval([2, 4, 4, 4, 5, 5, 7, 9])  # s = sqrt(32 / 7), t(7) = 2.365
    half = 2.364624252 * math.sqrt(32 / 7) / math.sqrt(8)
    assert (mean, n) == (5.0, 8) and (lo, hi) == (pytest.approx(5 - half), pytest.approx(5 + half))
    # NaN and missing values do not count
    assert stats.interval([1.0, float("nan"), 3.0, None])[::3] == (2.0, 2)
    # beyond the table: the expansion around the normal quantile (t(40) = 2.021075, t(200) = 1.971896)
    assert stats.t_quantile(40) == pytest.approx(2.021075, abs=1e-5)
    assert stats.t_quantile(200) == pytest.approx(1.971896, abs=1e-5)
    assert stats.t_quantile(30) == 2.042272456 and stats.t_quantile(1) == 12.706204736
    with pytest.raises(ValueError, match="df=0"):
        stats.t_quantile(0)


def test_one_value_has_no_interval_and_none_has_no_mean():
    mean, lo, hi, n = stats.interval([38.3])
    assert mean == 38.3 and n == 1 and math.isnan(lo) and math.isnan(hi)
    mean, lo, hi, n = stats.interval([])
    assert n == 0 and all(math.isnan(v) for v in (mean, lo, hi))
    # equal values: a zero-width interval, which the text shows as the value alone
    assert stats.interval([2.0, 2.0])[1:3] == (2.0, 2.0)
    assert stats.cell(2.0, 2.0, 2.0, "{:.1f}".format) == "2.0"
    assert stats.cell(38.333, float("nan"), float("nan"), "{:.2f}".format) == "38.33"
    assert stats.cell(38.333, 37.91, 38.77, "{:.2f}".format, "{:.1f}".format) == "38.33 [37.9, 38.8]"
    assert stats.cell(float("nan"), 1.0, 2.0) == ""


def _three_seeds() -> pd.DataFrame:
    """A ``collect`` table: 3 seeds of two labels, a failed run and a run missing one metric."""
    rows = []
    for label, ppl in (("global", (40.0, 41.0, 42.0)), ("5:1", (38.0, 38.5, 39.0))):
        for seed, value in enumerate(ppl):
            mqar = 0.1 * seed if label == "global" else None
            rows.append({"run": f"{label}-{seed}", "label": label, "status": "done", "run.seed": seed,
                         "evals.val_ppl": value, "evals.mqar_mean": mqar})
    rows.append({"run": "x", "label": "global", "status": "failed", "run.seed": 3, "evals.val_ppl": 99.0})
    return pd.DataFrame(rows)


def test_summarize_gives_n_mean_and_bounds_per_label_of_finished_runs():
    summary = stats.summarize(_three_seeds(), ["evals.val_ppl", "evals.mqar_mean"])
    assert list(summary.columns) == ["label", "n", "evals.val_ppl", "evals.val_ppl.lo", "evals.val_ppl.hi",
                                     "evals.mqar_mean", "evals.mqar_mean.lo", "evals.mqar_mean.hi"]
    assert list(summary["label"]) == ["global", "5:1"]  # the order labels first appear in
    g, f = summary.iloc[0], summary.iloc[1]
    assert g["n"] == 3 and g["evals.val_ppl"] == 41.0  # the failed run's 99 does not count
    half = 4.302652730 / math.sqrt(3)
    assert g["evals.val_ppl.lo"] == pytest.approx(41 - half)
    assert g["evals.val_ppl.hi"] == pytest.approx(41 + half)
    assert f["evals.val_ppl"] == 38.5 and f["evals.val_ppl.hi"] == pytest.approx(38.5 + half / 2)
    assert g["evals.mqar_mean"] == pytest.approx(0.1)
    assert f["n"] == 3 and np.isnan(f["evals.mqar_mean"]) and np.isnan(f["evals.mqar_mean.lo"])
    # more grouping columns are kept; a missing column is named
    by_seed = stats.summarize(_three_seeds(), ["evals.val_ppl"], by=("label", "run.seed"))
    assert len(by_seed) == 6 and (by_seed["n"] == 1).all() and by_seed["evals.val_ppl.lo"].isna().all()
    with pytest.raises(ValueError, match="'evals.nope'"):
        stats.summarize(_three_seeds(), ["evals.nope"])


def test_overlap_and_the_comparison_sentence():
    assert stats.overlap(1, 2, 2, 3) and stats.overlap(1, 4, 2, 3) and not stats.overlap(1, 2, 2.5, 3)
    assert not stats.overlap(float("nan"), float("nan"), 1, 2)
    summary = pd.DataFrame([
        {"label": "global", "n": 3, "m": 39.1, "m.lo": 38.2, "m.hi": 40.0},
        {"label": "5:1", "n": 3, "m": 38.3, "m.lo": 37.9, "m.hi": 38.8},
        {"label": "far", "n": 3, "m": 30.0, "m.lo": 29.5, "m.hi": 30.5},
        {"label": "once", "n": 1, "m": 0.526, "m.lo": float("nan"), "m.hi": float("nan")}])
    assert (stats.compare(summary, "global", "5:1", "m")
            == "global: 39.1 [38.2, 40.0] vs 5:1: 38.3 [37.9, 38.8] — intervals overlap")
    assert stats.compare(summary, "global", "far", "m").endswith("— intervals do not overlap")
    assert stats.compare(summary, "once", "global", "m", decimals=3) == (
        "once: 0.526 vs global: 39.100 [38.200, 40.000] — one seed: no interval")
    with pytest.raises(ValueError, match="label='nope'"):
        stats.compare(summary, "global", "nope", "m")
    with pytest.raises(ValueError, match="metric='x'"):
        stats.compare(summary, "global", "5:1", "x")
    single = summary[["label", "m"]]  # one seed per point: the summary CSV has no bounds
    assert stats.compare(single, "global", "5:1", "m") == "global: 39.1 vs 5:1: 38.3 — one seed: no interval"


def test_fold_prints_each_metric_with_its_interval():
    summary = stats.summarize(_three_seeds(), ["evals.val_ppl"])
    text = stats.fold(summary, "{:.2f}".format)
    assert list(text.columns) == ["label", "n", "evals.val_ppl"]
    assert text["evals.val_ppl"].iloc[0] == f"41.00 [{41 - 2.484:.2f}, {41 + 2.484:.2f}]"


def test_collect_compares_points_of_a_summary_csv(tmp_path, capsys):
    csv = tmp_path / "s.csv"
    pd.DataFrame({"label": ["G", "L", "R"], "n": 3, "m": [0.2, 0.06, 0.1], "m.lo": [0.15, 0.05, 0.0],
                  "m.hi": [0.25, 0.07, 0.2]}).to_csv(csv, index=False)
    collect.main([str(csv), "--compare", "G", "R", "m", "--against", "L", "m"])
    assert capsys.readouterr().out.splitlines() == [
        "- G: 0.20 [0.15, 0.25] vs R: 0.10 [0.00, 0.20] — intervals overlap",
        "- G: 0.20 [0.15, 0.25] vs L: 0.06 [0.05, 0.07] — intervals do not overlap",
        "- R: 0.10 [0.00, 0.20] vs L: 0.06 [0.05, 0.07] — intervals overlap"]
    with pytest.raises(ValueError, match="label='X' not in the summary"):
        collect.main([str(csv), "--against", "X", "m"])
