"""The recall sweep: its points cover the families at equal training, run end to end at quick scale,
and its figure draws every family with intervals when there are several seeds."""

import numpy as np
import pandas as pd
import pytest

from experiments.sweeps import recall
from experiments.sweeps.runner import expand, run_sweep


def test_default_points_cover_every_family_and_train_alike():
    runs = expand("recall", "default")
    families = {dict(r.tags)["family"] for r in runs}
    assert families == set(recall.FAMILIES)
    patterns = {r.label: dict(r.config.overrides)["pattern"] for r in runs}
    assert patterns["global-only"] == "G" and patterns["5:1"] == "LLLLLG" and patterns["hybrid RRG"] == "RRG"
    assert {dict(r.config.overrides).get("window") for r in runs if r.label.startswith("local-only")} == {
        2, 4, 8}
    # everything but the architecture is the same: data, task, optimisation, steps
    strip = {"pattern", "window", "lru_width", "lru_gate_blocks"}
    same = {r.config.replace(overrides=tuple((k, v) for k, v in r.config.overrides if k not in strip))
            for r in runs}
    assert len(same) == 1 and runs[0].config.pure_task


def test_quick_sweep_runs_and_draws(tmp_path):
    result = run_sweep("recall", scale="quick", out=tmp_path, progress=False, figures=tmp_path / "fig")
    assert result["failed"] == [] and len(result["done"]) == len(expand("recall", "quick"))
    assert (tmp_path / "fig" / "recall.png").exists()


def _fabricated(seeds: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for family, labels in (("attention L:G", ("global-only", "5:1")), ("local-only", ("local-only w8",)),
                           ("Hawk R", ("R lru32", "R lru64"))):
        for i, label in enumerate(labels):
            for s in range(seeds):
                rows.append({"label": label, "status": "done", "tag.family": family, "tag.knob": i,
                             "run.seed": s, "evals.task_acc_beyond": 0.5 + 0.1 * i + 0.02 * rng.normal(),
                             "evals.task_acc_window": 0.9, "evals.task_chance": 1 / 16,
                             "evals.cache_bytes_32k": 2**20 * (i + 1) * (3 if family == "Hawk R" else 1)})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("seeds", [1, 3])
def test_figure_draws_each_family_and_error_bars_with_seeds(tmp_path, seeds, monkeypatch):
    drawn = []
    monkeypatch.setattr(recall.plots, "save_figure", lambda fig, path: drawn.append(fig) or path)
    recall.plot_recall(_fabricated(seeds), tmp_path)
    ax = drawn[0].axes[0]
    assert {t.get_text() for t in ax.get_legend().get_texts()} >= {"attention L:G", "local-only", "Hawk R"}
    assert (len(ax.containers) > 0) == (seeds > 1)  # error bars only when there are several seeds


def test_base_points_are_one_per_pattern_at_the_scales_window_and_width():
    base = {r.label: dict(r.tags) for r in expand("recall", "default") if dict(r.tags)["base"]}
    assert sorted(base) == sorted(["global-only", "1:1", "3:1", "5:1", "7:1", "local-only w4", "R lru64",
                                   "RRL lru64", "hybrid RRG"])
    assert len({t["pattern"] for t in base.values()}) == len(base)


def _recall_summary(folder, seeds: int = 3):
    """A recall summary CSV as ``--update-figures`` writes it, from fabricated runs."""
    from experiments.sweeps.collect import per_label

    rows = []
    for s in range(seeds):
        for label, pattern, base, acc in (("global-only", "G", True, 0.9), ("local-only w4", "L", True, 0.06),
                                          ("local-only w8", "L", False, 0.05)):
            rows.append({"run": f"{label}{s}", "label": label, "tag.pattern": pattern, "tag.base": base,
                         "evals.task_acc_beyond": acc + 0.01 * s, "evals.task_acc_window": 0.95,
                         "evals.cache_bytes_32k": 2**22 if pattern == "G" else 2**12})
    metrics = ["evals.task_acc_beyond", "evals.task_acc_window", "evals.cache_bytes_32k"]
    folder.mkdir(parents=True, exist_ok=True)
    per_label(pd.DataFrame(rows), metrics).to_csv(folder / "recall.csv", index=False)


def test_tradeoff_table_and_figure_take_recall_from_the_summary_beside_them(tmp_path, monkeypatch):
    from experiments.sweeps import definitions, plots

    assert recall.tradeoff_recall(tmp_path) is None
    _recall_summary(tmp_path)
    picked = recall.tradeoff_recall(tmp_path)
    assert list(picked["label"]) == ["global-only", "local-only w4"]  # the base point of each pattern
    rows = pd.DataFrame({"label": ["global-only", "local-only", "Hawk R"], "tag.pattern": ["G", "L", "R"],
                         "evals.val_ppl": [40.0, 41.0, 39.0]})
    joined = definitions.with_recall(rows, tmp_path)
    assert joined["evals.task_acc_beyond"].round(2).tolist()[:2] == [0.91, 0.07]
    assert joined["evals.task_acc_beyond.lo"].iloc[0] < 0.91 < joined["evals.task_acc_beyond.hi"].iloc[0]
    assert np.isnan(joined["evals.task_acc_beyond"].iloc[2])  # no recall point for R in the summary
    drawn = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: drawn.append(fig) or path)
    runs = rows.assign(status="done", **{"evals.cache_bytes_32k": [2**22, 2**12, 2**10]})
    definitions.plot_tradeoff(runs, tmp_path)
    right = drawn[0].axes[1]
    assert {t.get_text() for t in right.texts} == {"global-only", "local-only"}  # tradeoff's labels
    (bars,) = right.containers  # error bars, cut to [0, 1]
    assert all(0 <= y <= 1 for seg in bars.lines[2][0].get_segments() for _, y in seg)
    before = len(drawn)
    definitions.plot_tradeoff(runs, tmp_path / "elsewhere")  # no summary there: the panel says so
    assert "no recall summary" in drawn[before].axes[1].texts[0].get_text()


def test_draw_interval_cuts_the_bars_at_the_bounds():
    import matplotlib.pyplot as plt

    from experiments.sweeps import plots

    summary = pd.DataFrame({"n": [3, 3], "acc": [0.5, 0.9], "acc.lo": [-0.4, 0.8], "acc.hi": [1.4, 1.0]})
    for bounds, low, high in ((None, -0.4, 1.4), ((0, 1), 0.0, 1.0)):
        fig, ax = plt.subplots()
        plots.draw_interval(ax, [1, 2], summary, "acc", bounds=bounds)
        ys = [y for seg in ax.containers[0].lines[2][0].get_segments() for _, y in seg]
        assert min(ys) == pytest.approx(low) and max(ys) == pytest.approx(high)
        plt.close(fig)
