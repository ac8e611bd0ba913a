"""Sweep expansion, hashing, sharding, skip/resume, failure handling, parallel workers and collect."""

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from experiments.runconfig import RunConfig
from experiments.sweeps import runner as sw
from experiments.sweeps.collect import collect, markdown, table
from experiments.sweeps.runner import SWEEPS, Run, expand, get_sweep, run_sweep, shard


def test_every_sweep_expands_at_every_scale_without_duplicates():
    get_sweep("tradeoff")
    assert {"tradeoff", "ratio", "window", "inference_window", "gqa", "depth_width", "softcap_vs_qknorm",
            "long_context", "distill", "teacher_size", "embedding"} <= set(SWEEPS)
    for name in SWEEPS:
        for scale in sw.SCALES:
            runs = expand(name, scale)
            assert runs and len({r.key for r in runs}) == len(runs)
            for r in runs:
                if isinstance(r.config, RunConfig):  # the embedding sweep has its own config
                    cfg = r.config.base_model_config()  # every point is a valid model,
                    dataclasses.replace(cfg, **dict(r.eval_overrides))  # and so is every variant of one


def test_tradeoff_is_parameter_matched_and_covers_the_patterns():
    import arch

    runs = expand("tradeoff", "default")
    patterns = [r.config.base_model_config().pattern for r in runs]
    assert {"G", "LG", "LLLG", "LLLLLG", "LLLLLLLG", "L", "RRL", "RRG", "R"} == set(patterns)
    sizes = [arch.count_params(r.config.base_model_config())["non_embedding"] for r in runs]
    assert max(sizes) / min(sizes) < 1.01


def test_hash_is_stable_and_sensitive():
    a = RunConfig(preset="tiny_gemma3", steps=5)
    assert a.short_hash() == RunConfig(preset="tiny_gemma3", steps=5).short_hash()
    assert a.short_hash() != a.replace(steps=6).short_hash()
    assert a.short_hash() != a.with_model(window=4).short_hash()
    v1 = Run(label="x", config=a, eval_overrides=(("window", 4),))
    v2 = Run(label="y", config=a, eval_overrides=(("window", 2),))
    assert v1.key.startswith("eval-") and v1.key != v2.key and Run(label="z", config=a).key == a.short_hash()
    # the same in a fresh interpreter
    code = ("from experiments.runconfig import RunConfig; "
            "print(RunConfig(preset='tiny_gemma3', steps=5).short_hash())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == a.short_hash()


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_shards_are_disjoint_and_cover_all_runs(n):
    runs = expand("long_context", "default")
    parts = [shard(runs, i, n) for i in range(n)]
    keys = [r.key for p in parts for r in p]
    assert sorted(keys) == sorted(r.key for r in runs)  # cover, and no run twice
    for p in parts:  # a trained model and all its evaluation variants stay together
        trained = {r.config.short_hash() for r in p}
        others = {r.config.short_hash() for q in parts if q is not p for r in q}
        assert not trained & others


@pytest.mark.parametrize("n", [2, 3])
def test_shards_keep_students_with_their_teacher(n):
    runs = expand("distill", "default")
    students = [r for r in runs if getattr(r.config, "teacher", None)]
    assert students
    for i in range(n):
        part = shard(runs, i, n)
        hashes = {r.config.short_hash() for r in part}
        for r in part:
            if r.config.teacher and r.config.teacher.startswith("@"):
                assert r.config.teacher[1:] in hashes


@pytest.mark.parametrize("n", [2, 3])
def test_embedding_shards_keep_a_soup_with_its_ingredients_and_balance_training(n):
    runs = expand("embedding", "default")
    parts = [shard(runs, i, n) for i in range(n)]
    soup = next(r for r in runs if r.kind == "soup")
    home = next(p for p in parts if soup in p)
    trained_here = {r.config.short_hash() for r in home if r.kind == "train"}
    assert {c.short_hash() for c in soup.ingredients} <= trained_here
    for r in runs:  # a deployed model is evaluated where it is trained
        if r.kind == "deploy":
            assert r.config.short_hash() in {q.config.short_hash() for q in home if q.kind == "train"}
    loads = [sum(r.kind == "train" for r in p) for p in parts]
    assert sum(loads) == sum(r.kind == "train" for r in runs) and max(loads) - min(loads) <= 1


def test_bad_shard_and_scale_and_name():
    with pytest.raises(ValueError):
        shard([], 2, 2)
    with pytest.raises(ValueError, match="scale"):
        expand("tradeoff", "huge")
    with pytest.raises(ValueError, match="unknown sweep"):
        get_sweep("nope")


class FakeTraining:
    """Stands in for train/evaluate: records calls, fails for chosen labels."""

    def __init__(self, fail=()):
        self.trained, self.evaluated, self.fail = [], [], set(fail)

    def train(self, run, run_dir, progress=True):
        summary_path = run_dir / "summary.json"
        if summary_path.exists():
            return json.loads(summary_path.read_text())
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(run.to_dict()))
        if dict(run.overrides).get("pattern") in self.fail:
            raise RuntimeError("boom")
        self.trained.append(run.short_hash())
        summary = {"final_val_loss": 1.0, "model_config": {"pattern": dict(run.overrides).get("pattern")}}
        summary_path.write_text(json.dumps(summary))
        return summary

    def evaluate(self, run_dir, overrides=None, seq_len=None, quick=False):
        self.evaluated.append((run_dir.name, tuple(sorted((overrides or {}).items())), seq_len))
        return {"val_ppl": 2.0 + len(self.evaluated), "cache_bytes_32k": 1024.0, "passkey_mean": 0.5}


@pytest.fixture
def fake(monkeypatch):
    import experiments.eval.run
    import experiments.train

    f = FakeTraining(fail={"RRG"})
    monkeypatch.setattr(experiments.train, "train", f.train)
    monkeypatch.setattr(experiments.eval.run, "evaluate_run", f.evaluate)
    return f


def test_skip_resume_and_failures_are_recorded(fake, tmp_path):
    result = run_sweep("tradeoff", scale="default", out=tmp_path, progress=False, plot=False)
    runs = expand("tradeoff", "default")
    assert len(result["done"]) == len(runs) - 1 and len(result["failed"]) == 1
    failed = tmp_path / "tradeoff" / result["failed"][0] / "error.json"
    assert "RuntimeError: boom" in json.loads(failed.read_text())["error"]
    trained_once = list(fake.trained)
    # re-running trains nothing that finished and re-tries only the failed run
    fake.fail.clear()
    result = run_sweep("tradeoff", scale="default", out=tmp_path, progress=False, plot=False)
    assert not result["failed"] and len(fake.trained) == len(trained_once) + 1
    assert not failed.exists()
    evaluated = len(fake.evaluated)
    run_sweep("tradeoff", scale="default", out=tmp_path, progress=False, plot=False)
    assert len(fake.trained) == len(trained_once) + 1 and len(fake.evaluated) == evaluated


def test_interrupted_evaluation_is_redone_without_training(fake, tmp_path):
    runs = expand("inference_window", "quick")
    trained = runs[0]
    d = tmp_path / "inference_window" / trained.key
    fake.train(trained.config, d)  # finished training, killed before its evaluation
    run_sweep("inference_window", scale="quick", out=tmp_path, progress=False, plot=False)
    assert fake.trained == [trained.config.short_hash()]  # the one training, no retraining
    assert len(fake.evaluated) == len(runs)
    variants = [e for e in fake.evaluated if e[1]]
    assert {dict(e[1]).get("pattern") for e in variants} >= {"L"}


def test_collect_on_fabricated_results(tmp_path):
    sweep_dir = tmp_path / "demo"
    for i, status in enumerate(["done", "failed", "partial"]):
        d = sweep_dir / f"run{i}"
        d.mkdir(parents=True)
        cfg = RunConfig(preset="tiny_gemma3", steps=i + 1).with_model(window=4 + i)
        (d / "config.json").write_text(json.dumps(cfg.to_dict()))
        if status == "done":
            (d / "summary.json").write_text(json.dumps({
                "label": "a", "final_val_loss": 2.5, "tags": {"ratio": 5},
                "model_config": {"pattern": "LLLLLG", "window": 4},
                "evals": {"val_ppl": 12.0, "cache_bytes_32k": 2**21, "loss_pos": {"0": 3.0}}}))
        if status == "failed":
            (d / "error.json").write_text(json.dumps({"label": "b", "error": "ValueError: x"}))
    df = collect("demo", out=tmp_path)
    assert len(df) == 3
    by_run = df.set_index("run")
    assert by_run.loc["run0", "status"] == "done" and by_run.loc["run0", "evals.val_ppl"] == 12.0
    assert by_run.loc["run0", "model.pattern"] == "LLLLLG" and by_run.loc["run0", "tag.ratio"] == 5
    assert by_run.loc["run0", "evals.loss_pos.0"] == 3.0
    assert by_run.loc["run1", "status"] == "failed" and by_run.loc["run1", "error"] == "ValueError: x"
    assert by_run.loc["run2", "status"] == "partial" and by_run.loc["run2", "run.override.window"] == 6
    assert "2.000" in table(df)  # 2 MiB cache


def test_dry_run_lists_without_running(fake, tmp_path, capsys):
    run_sweep("gqa", scale="quick", out=tmp_path, dry_run=True, progress=False)
    out = capsys.readouterr().out
    assert "MHA" in out and "MQA" in out and "new" in out
    assert not fake.trained and not (tmp_path / "gqa").exists()


def test_a_failed_run_fails_every_caller(fake, tmp_path, monkeypatch, capsys):
    """The CLI exits 1, raise_failures names the run and its error, and the notebooks' ensure_sweep
    raises instead of drawing from a table with a hole in it."""
    from experiments.sweeps import notebook

    assert sw.main(["tradeoff", "--scale", "default", "--out", str(tmp_path), "--no-plot"]) == 1
    assert "1 run(s) failed" in capsys.readouterr().err
    result = run_sweep("tradeoff", scale="default", out=tmp_path, progress=False, plot=False)
    with pytest.raises(sw.SweepFailed, match="RuntimeError: boom"):
        sw.raise_failures(result, tmp_path / "tradeoff")
    assert sw.raise_failures({"done": ["x"], "failed": []}, tmp_path) == {"done": ["x"], "failed": []}
    monkeypatch.setenv("GEMMA_LAB_RESULTS", str(tmp_path / "nb"))
    with pytest.raises(sw.SweepFailed, match="hybrid|RRG"):
        notebook.ensure_sweep("tradeoff", "default")


def test_plots_and_tables_refuse_tables_without_finished_runs(tmp_path):
    import pandas as pd

    from experiments.embed import plots as embed_plots
    from experiments.sweeps import plots

    failed = pd.DataFrame([{"run": "a", "label": "x", "status": "failed", "error": "ValueError: v"}])
    for draw in (plots.plot_tradeoff, plots.plot_ratio_window, plots.plot_bar, plots.plot_long_context,
                 plots.plot_distill, plots.plot_teacher_size):
        for df in (pd.DataFrame(), failed):
            with pytest.raises(ValueError, match="no finished runs"):
                draw(df, tmp_path, "x")
    done = failed.assign(status="done")
    with pytest.raises(ValueError, match="tag.ratio"):
        plots.plot_ratio_window(done, tmp_path, "x")
    with pytest.raises(ValueError, match="no runs"):
        table(pd.DataFrame())
    for fn in (embed_plots.tables, embed_plots.report, lambda df: embed_plots.plot_all(df, tmp_path, "e")):
        for df in (pd.DataFrame(), failed):
            with pytest.raises(ValueError, match="no finished runs"):
                fn(df)
    assert not list(tmp_path.iterdir())


def test_figures_go_under_results_unless_the_readme_ones_are_asked_for(fake, tmp_path, monkeypatch):
    fake.fail.clear()
    readme = tmp_path / "readme_figures"
    monkeypatch.setattr(sw, "README_FIGURES", readme)
    out = tmp_path / "results"
    assert sw.main(["tradeoff", "--scale", "default", "--out", str(out)]) == 0
    assert (out / "figures" / "default" / "tradeoff.png").exists() and not readme.exists()
    assert sw.main(["tradeoff", "--scale", "default", "--out", str(out), "--update-figures"]) == 0
    assert (readme / "tradeoff.png").exists()
    # the README's table comes from the summary CSV written beside the figures, in the sweep's order
    summary = pd.read_csv(readme / "tradeoff.csv")
    assert list(summary["run"]) == [r.key for r in expand("tradeoff", "default")]
    assert summary["evals.val_ppl"].notna().all()
    text = markdown(summary)
    assert text.splitlines()[0].startswith("| run | pattern | val perplexity")
    assert "| `LLLLLG` |" in text and len(text.splitlines()) == len(summary) + 2


def test_readme_figures_are_the_checkouts_figures_folder():
    """--update-figures and the notebooks' repo_figure point at the figures the README shows."""
    from experiments import REPO_ROOT
    from experiments.sweeps import notebook

    assert (REPO_ROOT / "README.md").exists() and sw.README_FIGURES == REPO_ROOT / "figures"
    assert (sw.README_FIGURES / "tradeoff.png").exists() and notebook.repo_figure("tradeoff.png").exists()


@pytest.fixture
def tiny_sweep(monkeypatch):
    """The ``tiny_workers`` sweep of ``tiny_sweep.py``, registered here and in worker processes."""
    here = str(Path(__file__).parent)
    monkeypatch.setenv("GEMMA_LAB_SWEEPS", "tiny_sweep")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p))
    monkeypatch.syspath_prepend(here)
    sw.load_sweeps()
    yield "tiny_workers"
    SWEEPS.pop("tiny_workers", None)
    sys.modules.pop("tiny_sweep", None)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="two workers need two cores")
def test_workers_run_the_shards_as_one_core_processes_and_lose_no_result(tiny_sweep, tmp_path):
    """Shard 0's worker dies on its second run, shard 1's has a failing run: what finished is done, the
    rest is failed; each shard ran in a process of its own on a core of its own, after ``prepare``."""
    figures = tmp_path / "figures"
    result = run_sweep(tiny_sweep, scale="quick", out=tmp_path, progress=False, figures=figures, workers=2)
    assert sorted(result["done"]) == ["ok_a", "ok_b"]
    assert sorted(result["failed"]) == ["after_crash", "crash", "fail"]
    error = json.loads((tmp_path / tiny_sweep / "fail" / "error.json").read_text())
    assert "RuntimeError: boom" in error["error"]
    ran = {k: json.loads((tmp_path / tiny_sweep / k / "summary.json").read_text()) for k in result["done"]}
    assert json.loads((tmp_path / "prepared.json").read_text())["pid"] == os.getpid()  # once, here
    pids = {s["pid"] for s in ran.values()}
    assert len(pids) == 2 and os.getpid() not in pids
    cores = [s["cores"] for s in ran.values()]
    assert all(len(c) == 1 for c in cores) and cores[0] != cores[1]
    for s in ran.values():
        assert "--xla_cpu_multi_thread_eigen=false" in s["xla_flags"]
        assert "--xla_backend_optimization_level=0" in s["xla_flags"]  # quick scale
    # the figures are drawn once, here, from the finished runs
    assert json.loads((figures / f"{tiny_sweep}.json").read_text()) == ["ok_a", "ok_b"]
    with pytest.raises(sw.SweepFailed, match="crash.*no error.json"):
        sw.raise_failures(result, tmp_path / tiny_sweep)


def test_workers_are_checked_against_the_cores(tmp_path, capsys):
    cores = len(os.sched_getaffinity(0))
    with pytest.raises(SystemExit):
        sw.main(["gqa", "--scale", "quick", "--out", str(tmp_path), "--workers", "0"])
    err = capsys.readouterr().err
    assert "--workers '0'" in err and f"between 1 and {cores}" in err
    with pytest.raises(SystemExit):
        sw.main(["gqa", "--scale", "quick", "--out", str(tmp_path), "--workers", str(cores + 1)])
    assert f"--workers '{cores + 1}'" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # the workers are the shards: one or the other
        sw.main(["gqa", "--scale", "quick", "--out", str(tmp_path), "--workers", "1", "--shard", "0/2"])
    assert "not allowed with" in capsys.readouterr().err
    with pytest.raises(ValueError, match=f"workers={cores + 1}: must be between 1 and {cores}"):
        run_sweep("gqa", scale="quick", out=tmp_path, workers=cores + 1)
    assert not (tmp_path / "gqa").exists()


def test_embedding_points_have_stable_distinct_keys():
    """One key per kind of point and what it evaluates (not its label, tags or group), the same in
    another interpreter, and the directory names results were written under before."""
    from experiments.embed import sweep as embed

    b = embed.BASES["quick"]
    points = {"train": embed.EmbedRun(label="x", config=b), "bm25": embed.BM25Run(label="x", config=b),
              "teacher": embed.TeacherRun(label="x", config=b),
              "untrained": embed.UntrainedRun(label="x", config=b),
              "soup": embed.SoupRun(label="x", config=b, ingredients=(b, b.replace(seed=1))),
              "deploy int8": embed.DeployRun(label="x", config=b, precision="int8"),
              "deploy int4": embed.DeployRun(label="x", config=b, precision="int4")}
    keys = {name: p.key for name, p in points.items()}
    assert len(set(keys.values())) == len(keys)
    assert embed.BM25Run(label="y", config=b, tags=(("scale", "quick"),), group="g").key == keys["bm25"]
    assert embed.SoupRun(label="x", config=b, ingredients=(b,)).key != keys["soup"]
    assert keys["train"] == b.short_hash()
    spec = json.dumps(["deploy", b.short_hash(), "int8", []])
    assert keys["deploy int8"] == "deploy-" + hashlib.sha256(spec.encode()).hexdigest()[:10]
    assert [p.is_variant for p in points.values()] == [False] + [True] * (len(points) - 1)
    code = ("from experiments.embed import sweep as e; b = e.BASES['quick']; "
            "print(e.DeployRun(label='z', config=b, precision='int8').key, "
            "e.UntrainedRun(label='z', config=b).key)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [keys["deploy int8"], keys["untrained"]]


def test_embedding_update_figures_writes_no_lm_summary(tmp_path):
    """The embedding sweep's results have none of the LM figures: no empty ``embedding.csv``."""
    d = tmp_path / "embedding" / "bm25-x"
    d.mkdir(parents=True)
    (d / "config.json").write_text("{}")
    (d / "summary.json").write_text(json.dumps({"label": "BM25", "tags": {"scale": "quick"},
                                                "evals": {"code": {"d32": {"ndcg@10": 0.5}}}}))
    assert sw.write_summary("embedding", "quick", tmp_path, tmp_path / "figures") is None
    assert not (tmp_path / "figures").exists()
