"""Sweep expansion, hashing, sharding, skip/resume, failure handling, parallel workers and collect."""

import dataclasses
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.container import ErrorbarContainer

import arch
from experiments.runconfig import RunConfig
from experiments.sweeps import cli
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


def test_the_cli_keeps_compiled_programs_under_out_unless_a_cache_is_set(tmp_path):
    import jax

    before = jax.config.jax_compilation_cache_dir
    try:
        jax.config.update("jax_compilation_cache_dir", None)
        assert cli.main(["gqa", "--scale", "quick", "--out", str(tmp_path), "--dry-run"]) == 0
        assert jax.config.jax_compilation_cache_dir == str(tmp_path.resolve() / ".jax-cache")
        jax.config.update("jax_compilation_cache_dir", str(tmp_path / "mine"))
        assert cli.main(["gqa", "--scale", "quick", "--out", str(tmp_path / "o"), "--dry-run"]) == 0
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "mine")
    finally:
        jax.config.update("jax_compilation_cache_dir", before)


def test_a_failed_run_fails_every_caller(fake, tmp_path, monkeypatch, capsys):
    """The CLI exits 1, raise_failures names the run and its error, and the notebooks' ensure_sweep
    raises instead of drawing from a table with a hole in it."""
    from experiments.sweeps import notebook

    assert cli.main(["tradeoff", "--scale", "default", "--out", str(tmp_path), "--no-plot"]) == 1
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
    assert cli.main(["tradeoff", "--scale", "default", "--out", str(out)]) == 0
    assert (out / "figures" / "default" / "tradeoff.png").exists() and not readme.exists()
    assert cli.main(["tradeoff", "--scale", "default", "--out", str(out), "--update-figures"]) == 0
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
    prepared = json.loads((tmp_path / "prepared.json").read_text())
    assert prepared["pid"] == os.getpid() and prepared["seeds"] == 1  # once, here, for the seeds run
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
        cli.main(["gqa", "--scale", "quick", "--out", str(tmp_path), "--workers", "0"])
    err = capsys.readouterr().err
    assert "--workers '0'" in err and f"between 1 and {cores}" in err
    with pytest.raises(SystemExit):
        cli.main(["gqa", "--scale", "quick", "--out", str(tmp_path), "--workers", str(cores + 1)])
    assert f"--workers '{cores + 1}'" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # the workers are the shards: one or the other
        cli.main(["gqa", "--scale", "quick", "--out", str(tmp_path), "--workers", "1", "--shard", "0/2"])
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
    assert cli.write_summary("embedding", "quick", tmp_path, tmp_path / "figures") is None
    assert not (tmp_path / "figures").exists()


def test_seed_replicas_keep_seed_zero_as_it_was_and_come_seed_major():
    """``expand(..., seeds=N)``: seed 0 is every point as listed (same keys, so the same directories
    as with one seed), then every point's seed 1, ...; each replica a distinct run with the same label
    and tags and the config's seed moved by its index."""
    for name in SWEEPS:
        if name == "tiny_workers":
            continue
        for scale in sw.SCALES:
            one, three = expand(name, scale), expand(name, scale, seeds=3)
            assert [r.key for r in three[:len(one)]] == [r.key for r in one]
            assert len({r.key for r in three}) == len(three)
    one, three = expand("inference_window", "quick"), expand("inference_window", "quick", seeds=3)
    assert len(three) == 3 * len(one)
    for i in range(3):
        for point, replica in zip(one, three[i * len(one):(i + 1) * len(one)]):
            assert replica == point.with_seed(i)
            assert (replica.label, replica.tags) == (point.label, point.tags)
            assert replica.config == point.config.replace(seed=point.config.seed + i)
            assert replica.eval_overrides == point.eval_overrides
            # a variant evaluates its trained config's replica, in that replica's shard
            assert sw.group_of(replica) == replica.config.short_hash()
            assert (replica.key == point.key) == (i == 0)
    assert one[0].with_seed(0) is one[0]
    with pytest.raises(ValueError, match="i=-1"):
        one[0].with_seed(-1)


def test_student_replicas_keep_their_teacher_and_its_shard():
    runs = expand("distill", "default", seeds=2)
    teacher = runs[0]
    students = [r for r in runs if r.config.teacher]
    assert len(students) == 2 * len([r for r in expand("distill", "default") if r.config.teacher])
    assert {r.config.teacher for r in students} == {"@" + teacher.config.short_hash()}
    assert {r.config.seed for r in students} == {teacher.config.seed, teacher.config.seed + 1}
    for n in (2, 3):
        home = next(shard(runs, i, n) for i in range(n) if teacher in shard(runs, i, n))
        assert all(s in home for s in students)
    # the teachers are trained once: seeds repeat the students only
    for name in ("distill", "teacher_size"):
        teachers = [r for r in expand(name, "default", seeds=3) if dict(r.tags)["role"] == "teacher"]
        assert teachers == [r for r in expand(name, "default") if dict(r.tags)["role"] == "teacher"]


def test_teacher_size_poses_its_question():
    """Two teachers of clearly different size, three or more student horizons, a next-token baseline."""
    runs = expand("teacher_size", "default")
    teachers = {dict(r.tags)["teacher"]: r.config for r in runs if dict(r.tags)["role"] == "teacher"}
    sizes = {n: arch.count_params(c.base_model_config())["non_embedding"] for n, c in teachers.items()}
    assert sizes["T"] > 10 * sizes["T_small"]
    steps = sorted({dict(r.tags)["steps"] for r in runs if dict(r.tags)["role"] == "student"})
    assert len(steps) >= 3 and steps[-1] >= 9 * steps[0]
    assert {dict(r.tags)["teacher"] for r in runs if dict(r.tags)["role"] == "student"} == {
        "T", "T_small", "none"}


def test_embedding_replicas_vary_both_seeds_and_skip_the_deterministic_baselines():
    from experiments.embed import sweep as embed

    points, runs = expand("embedding", "default"), expand("embedding", "default", seeds=3)
    once = [p for p in points if p.kind in ("bm25", "teacher")]
    assert "bm25" in {p.kind for p in once} and all(p.with_seed(1) is None for p in once)
    assert len(runs) == 3 * len(points) - 2 * len(once)
    assert sum(r.kind == "bm25" for r in runs) == 1
    base = points[0]
    replica = base.with_seed(2)
    assert replica.config == embed.seed_replica(base.config, 2)
    assert replica.config.seed == base.config.seed + 2
    assert replica.config.init_seed == base.config.init_seed + 2
    soups = [r for r in runs if r.kind == "soup"]
    assert len(soups) == 3 and len({s.group for s in soups}) == 3 and soups[0] == next(
        p for p in points if p.kind == "soup")
    for n in (2, 3):
        parts = [shard(runs, i, n) for i in range(n)]
        for s in soups:  # each soup replica with its ingredients' replicas (and the deployed base's)
            home = next(p for p in parts if s in p)
            trained = {r.config.short_hash() for r in home if r.kind == "train"}
            assert {c.short_hash() for c in s.ingredients} <= trained
            assert s.config.short_hash() in trained
    # the replica of a soup soups the ingredients' replicas
    assert soups[1].ingredients == tuple(embed.seed_replica(c, 1) for c in soups[0].ingredients)


def test_seeds_must_be_at_least_one(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.main(["gqa", "--scale", "quick", "--out", str(tmp_path), "--seeds", "0"])
    assert "--seeds '0': must be an int >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["gqa", "--scale", "quick", "--out", str(tmp_path), "--seeds", "two"])
    assert "--seeds 'two'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="seeds=0: must be an int >= 1"):
        expand("gqa", "quick", seeds=0)
    with pytest.raises(ValueError, match="seeds=0"):
        run_sweep("gqa", scale="quick", out=tmp_path, seeds=0)
    assert not (tmp_path / "gqa").exists()


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="two workers need two cores")
def test_workers_are_given_the_seeds(tmp_path, monkeypatch):
    started = []

    class Worker:
        def __init__(self, argv, env):
            started.append(argv)

        def wait(self):
            return 0

    monkeypatch.setattr(sw.subprocess, "Popen", Worker)
    result = sw.run_workers("gqa", "quick", tmp_path, 2, seeds=3)
    assert len(started) == 2 and all(a[a.index("--seeds") + 1] == "3" for a in started)
    assert len(result["failed"]) == len(expand("gqa", "quick", seeds=3))  # none ran


def test_seed_is_a_config_column_for_language_model_and_embedding_rows(tmp_path):
    from experiments.embed import sweep as embed

    lm = expand("gqa", "quick", seeds=2)[-1]
    deploy = next(r for r in expand("embedding", "quick", seeds=2)[::-1] if r.kind == "deploy")
    for key, config in ((lm.key, lm.config.to_dict()), (deploy.key, deploy.spec())):
        d = tmp_path / "mixed" / key
        d.mkdir(parents=True)
        (d / "config.json").write_text(json.dumps(config))
    df = collect("mixed", out=tmp_path).set_index("run")
    assert df.loc[lm.key, "run.seed"] == lm.config.seed == expand("gqa", "quick")[-1].config.seed + 1
    assert df.loc[deploy.key, "run.seed"] == deploy.config.seed == embed.BASES["quick"].seed + 1


def test_three_seeds_give_intervals_in_the_summary_csv_and_its_table(fake, tmp_path, monkeypatch, capsys):
    """``--seeds 3 --update-figures``: one CSV row per label with ``n`` and the bounds of each figure,
    printed by the collect CLI as ``mean [lo, hi]``; the report table and the notebooks' helpers see
    the three seeds too."""
    from experiments.sweeps import collect as collect_mod
    from experiments.sweeps import notebook

    fake.fail.clear()
    readme = tmp_path / "readme_figures"
    monkeypatch.setattr(sw, "README_FIGURES", readme)
    out = tmp_path / "results"
    argv = ["tradeoff", "--scale", "default", "--out", str(out), "--seeds", "3", "--update-figures"]
    assert cli.main(argv) == 0
    report = capsys.readouterr().out  # the report table: one row per label, its seeds and intervals
    assert re.search(r"^ *label +n +val_ppl", report, re.M)
    assert re.search(r"^ *5:1 +3 +\d+\.\d{3} \[", report, re.M)
    points = expand("tradeoff", "default")
    summary = pd.read_csv(readme / "tradeoff.csv")
    assert list(summary["run"]) == [p.key for p in points]  # seed 0's directory names the label
    assert (summary["n"] == 3).all() and (summary["evals.val_ppl.lo"] < summary["evals.val_ppl"]).all()
    assert (summary["evals.val_ppl.hi"] > summary["evals.val_ppl"]).all()
    assert collect_mod.main([str(readme / "tradeoff.csv")]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0].startswith("| run | pattern | seeds | val perplexity")
    header, _, *rows = ([c.strip() for c in line.strip("|").split("|")] for line in text.splitlines())
    assert len(rows) == len(points)
    for row in rows:
        cell = dict(zip(header, row))
        assert cell["seeds"] == "3"
        assert re.fullmatch(r"\d+\.\d\d \[-?\d+\.\d, \d+\.\d\]", cell["val perplexity"])  # with its interval
        assert cell["cache at 32K (bf16)"] == "0.001 MiB"  # equal over the seeds: no interval to show
    # one seed: the CSV keeps one row per run and no interval columns (the README's table)
    assert cli.write_summary("tradeoff", "default", out, tmp_path / "one") is not None
    one = pd.read_csv(tmp_path / "one" / "tradeoff.csv")
    assert "n" not in one and not any(c.endswith(".lo") for c in one) and len(one) == len(points)
    assert "seeds" not in markdown(one)
    monkeypatch.setenv("GEMMA_LAB_RESULTS", str(out))
    assert notebook.complete("tradeoff", "default", seeds=3)
    assert not notebook.complete("tradeoff", "default", seeds=4)
    df, scale = notebook.ensure_sweep("tradeoff", "default", seeds=3)
    assert scale == "default" and len(df) == 3 * len(points) and sorted(set(df["run.seed"])) == [0, 1, 2]
    assert len(notebook.ensure_sweep("tradeoff", "default")[0]) == len(points)


def _fabricated(seeds: int) -> pd.DataFrame:
    """A ``collect`` table of ``seeds`` seeds per point with every column the LM plots read."""
    rng = np.random.default_rng(0)
    points = [("teacher T_small", "teacher", "T_small", "teacher", None, 2e6),
              ("teacher T", "teacher", "T", "teacher", None, 4e6)]
    for tokens in (1000, 3000):
        for who in ("T_small", "T", "none"):
            method = "next-token" if who == "none" else "full distillation"
            points.append((f"{tokens} from {who}", "student", who, method, tokens, 5e5 + (who == "none")))
    rows = []
    for seed in range(seeds):
        for i, (label, role, who, method, tokens, params) in enumerate(points):
            rows.append({"run": f"r{i}s{seed}", "label": label, "status": "done", "run.seed": seed,
                         "run.seq_len": 64, "tag.ratio": 1 + i % 3, "tag.window": 16 * (1 + i // 3),
                         "tag.role": role, "tag.teacher": who, "tag.method": method, "tag.tokens": tokens,
                         "tag.eval_len": 128, "evals.val_ppl": 30 + i + rng.normal(),
                         "evals.cache_bytes_32k": 2.0 ** (20 + i), "evals.params_non_embedding": params,
                         "evals.loss_pos_0": 4 + rng.normal() / 10,
                         "evals.loss_pos_64": 3 + rng.normal() / 10,
                         "evals.passkey_16": rng.uniform(), "evals.mqar_gap_8": rng.uniform(),
                         "evals.window": 16.0})
    return pd.DataFrame(rows)


def _fabricated_embedding(seeds: int) -> pd.DataFrame:
    """A ``collect("embedding")`` table of ``seeds`` seeds per trained point (BM25 once)."""
    rng = np.random.default_rng(1)
    rows = []
    for seed in range(seeds):
        labels = ["BM25", "base", "teacher", "no MRL", "base served int8 (PTQ)", "QAT int8"]
        for i, label in enumerate(labels):
            if seed and label in ("BM25", "teacher"):
                continue
            row = {"run": f"e{i}s{seed}", "label": label, "status": "done", "run.seed": seed,
                   "bits_per_weight": 8.5 if "int8" in label else 32.0}
            for d in (32, 16):
                for m in ("ndcg@10", "mrr@10", "recall@1", "recall@10"):
                    row[f"evals.code.d{d}.{m}"] = 0.3 + 0.01 * i + rng.normal() / 100
                row[f"evals.topic.d{d}.ndcg@10"] = 0.6 + rng.normal() / 100
            rows.append(row)
    return pd.DataFrame(rows)


@pytest.fixture
def drawn(monkeypatch):
    """The Axes of every figure the plot modules save, by file name."""
    from experiments.embed import plots as embed_plots
    from experiments.sweeps import plots

    axes = {}

    def save(fig, path):
        axes[Path(path).name] = fig.axes
        return original(fig, path)

    original = plots.save_figure
    monkeypatch.setattr(plots, "save_figure", save)
    monkeypatch.setattr(embed_plots, "save_figure", save)
    return axes


def _intervals(axes) -> int:
    """Error-bar containers plus shaded bands (and the ratio heatmap's "±" labels) on ``axes``."""
    return sum(sum(isinstance(c, ErrorbarContainer) for c in ax.containers)
               + sum(isinstance(c, PolyCollection) for c in ax.collections)
               + sum("±" in t.get_text() for t in ax.texts) for ax in axes)


def test_distill_figure_draws_the_horizons_of_the_small_student(drawn, tmp_path):
    """The distill sweep's horizon runs: the left panel keeps the main horizon (every size), the right
    panel one line per method over the small student's horizons, each with its seed interval."""
    from experiments.distill.sweeps import METHODS
    from experiments.sweeps import plots

    runs = expand("distill", "default", seeds=3)
    rng = np.random.default_rng(2)
    rows = []
    for i, r in enumerate(runs):
        tags = dict(r.tags)
        rows.append({"run": f"r{i}", "label": r.label, "status": "done", "run.seed": r.config.seed,
                     **{f"tag.{k}": v for k, v in tags.items()},
                     "evals.params_non_embedding": {"S": 1e5, "M": 3e5, "T": 2e6}[tags["size"]],
                     "evals.val_ppl": 50 + 1000 / tags.get("steps", 400) + rng.normal()})
    plots.plot_distill(pd.DataFrame(rows), tmp_path, "distill")
    left, right = drawn["distill.png"]
    named = [line for line in left.lines if not line.get_label().startswith("_")]
    assert [line.get_label() for line in named[:-1]] == list(METHODS)  # then the teacher's line
    assert all(len(line.get_xdata()) == 2 for line in named[:-1])  # sizes S and M, one horizon
    horizons = sorted({dict(r.tags)["steps"] for r in runs if dict(r.tags)["role"] == "student"})
    assert len(horizons) >= 3
    named = [line for line in right.lines if not line.get_label().startswith("_")]
    assert sorted(line.get_label() for line in named) == ["full distillation", "next-token"]
    assert all(list(line.get_xdata()) == horizons for line in named)
    assert _intervals([right]) == 2


@pytest.mark.parametrize("seeds", [1, 3])
def test_plots_draw_intervals_over_seeds_and_none_for_one_seed(drawn, tmp_path, seeds):
    from experiments.embed import plots as embed_plots
    from experiments.sweeps import plots

    df = _fabricated(seeds)
    for draw in (plots.plot_tradeoff, plots.plot_ratio_window, plots.plot_bar, plots.plot_long_context,
                 plots.plot_distill, plots.plot_teacher_size):
        assert draw(df, tmp_path, draw.__name__)
    embed_plots.plot_all(_fabricated_embedding(seeds), tmp_path, "embedding")
    assert set(drawn) == {
        "plot_tradeoff.png", "plot_tradeoff_loss_by_position.png", "plot_tradeoff_probes.png",
        "plot_ratio_window.png", "plot_bar.png", "plot_long_context.png", "plot_distill.png",
        "plot_teacher_size.png", "embedding_ablations.png", "embedding_dims.png", "embedding_bits.png"}
    for name, axes in drawn.items():
        assert (_intervals(axes) > 0) == (seeds > 1), name
    bar = drawn["plot_bar.png"][0]
    assert len(bar.patches) == df["label"].nunique()  # one bar per point, not per seed
    errors = [c for c in bar.containers if isinstance(c, ErrorbarContainer)]
    segments = [len(c.lines[2][0].get_segments()) for c in errors]
    assert segments == ([df["label"].nunique()] if seeds > 1 else [])
    report = embed_plots.report(_fabricated_embedding(seeds))
    assert ("[" in report) == (seeds > 1) and len(re.findall(r"^\d+ +BM25 ", report, re.M)) == 1
