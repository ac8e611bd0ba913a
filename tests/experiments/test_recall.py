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
