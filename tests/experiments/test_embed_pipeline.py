"""The embedding recipe end to end on a tiny model: train, skip on re-run, deploy quantized, soup,
BM25, and ``collect("embedding")`` reading the result directories."""

import json

import numpy as np

from experiments.embed.sweep import BASES, BM25Run, DeployRun, SoupRun
from experiments.embed.train import load_model, train_embedding
from experiments.sweeps.collect import collect


def test_quick_pipeline_end_to_end(tmp_path):
    ec = BASES["quick"].replace(init="random", steps=12, max_train_pairs=256, eval_queries=24,
                                eval_docs=64, overrides=(*BASES["quick"].overrides, ("num_layers", 1)))
    sweep_dir, lm_root = tmp_path / "embedding", tmp_path / "embedding_lm"
    run_dir = sweep_dir / ec.short_hash()
    summary = train_embedding(ec, run_dir, lm_root=lm_root, label="base", tags={"scale": "quick"},
                              progress=False)
    assert json.loads((run_dir / "config.json").read_text())["pooling"] == "mean"
    assert set(summary["evals"]) == {"code", "topic"}
    assert set(summary["evals"]["code"]) == {"d32", "d16", "d8"}
    for task in summary["evals"].values():
        for m in task.values():
            assert set(m) == {"ndcg@10", "mrr@10", "recall@1", "recall@10"}
            assert all(0.0 <= v <= 1.0 for v in m.values())
    assert summary["distillation"] == "off" and summary["teacher"] is None
    log = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in log if "step" in r and "phase" not in r]
    assert steps[0]["step"] == 5 and steps[-1]["step"] == 12  # logged every 5 steps and at the end
    assert np.mean([r["contrastive"] for r in steps[-2:]]) < steps[0]["contrastive"]  # it learns

    # done runs are skipped: the summary comes back untouched
    mtime = (run_dir / "summary.json").stat().st_mtime_ns
    assert train_embedding(ec, run_dir, lm_root=lm_root, progress=False) == summary
    assert (run_dir / "summary.json").stat().st_mtime_ns == mtime

    model, loaded = load_model(run_dir)
    assert loaded == ec and model.dim == 32

    tags = (("scale", "quick"),)
    deploy = DeployRun(label="int8", precision="int8", config=ec, tags=tags)
    soup = SoupRun(label="soup", config=ec, ingredients=(ec, ec), tags=tags)
    bm25 = BM25Run(label="BM25", config=ec, tags=tags)
    out = {r.label: r.execute(sweep_dir, progress=False) for r in (deploy, soup, bm25)}  # LMs: lm_root
    # a soup of one model twice is that model
    assert out["soup"]["evals"] == summary["evals"]
    assert 8.0 < out["int8"]["bits_per_weight"] < 9.5
    full, q8 = summary["evals"]["code"]["d32"]["ndcg@10"], out["int8"]["evals"]["code"]["d32"]["ndcg@10"]
    assert abs(full - q8) < 0.1
    assert out["BM25"]["evals"]["code"]["d32"]["ndcg@10"] > 0.3  # the lexical baseline works here

    df = collect("embedding", out=tmp_path, scale="quick")
    assert set(df["label"]) == {"base", "int8", "soup", "BM25"} and set(df["status"]) == {"done"}
    assert "evals.code.d16.ndcg@10" in df


def test_teacher_point_scores_an_oracle_teacher_perfectly(tmp_path):
    """The sweep's teacher baseline: at its own width and projected on the distillation basis, a
    teacher that maps each query onto its relevant document retrieves it first."""
    import types

    from experiments.embed.pairs import RetrievalTask
    from experiments.embed.sweep import teacher_evals
    from experiments.embed.teacher import basis

    rng = np.random.default_rng(0)
    docs = tuple(f"def f{i}(): pass" for i in range(12))
    queries = tuple(f"function {i}" for i in range(12))
    task = RetrievalTask("code", queries, docs, tuple(frozenset([(i * 5) % 12]) for i in range(12)))
    doc_vecs = rng.normal(size=(12, 24))
    vecs = np.concatenate([doc_vecs[[(i * 5) % 12 for i in range(12)]], doc_vecs])  # queries, then docs
    np.save(tmp_path / "t.npy", vecs)
    (tmp_path / "t.texts.json").write_text(json.dumps(list(queries + docs)))
    data = types.SimpleNamespace(eval_tasks={"code": (task, None, None)},
                                 teacher_name=str(tmp_path / "t.npy"),
                                 teacher_basis=basis(rng.normal(size=(50, 24)), 8))
    evals, extra = teacher_evals(BASES["quick"].replace(mrl_dims=(8, 4)), data)
    assert evals["code"]["d8"]["ndcg@10"] == 1.0
    assert extra["teacher_full_width"]["code"]["d24"]["mrr@10"] == 1.0
    assert set(evals["code"]) == {"d8", "d4"}
    with np.testing.assert_raises(ValueError):  # no teacher: a clear error, not a silent zero
        teacher_evals(BASES["quick"], types.SimpleNamespace(teacher_basis=None))
