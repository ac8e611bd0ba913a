"""The train loop: exact resume, summary skip, NaN stop, metrics, load_trained (tiny model, tiny corpus)."""

import json
import math
import re
import shutil

import numpy as np
import pytest

from experiments import checkpoint, losses
from experiments.loop import call_length
from experiments.runconfig import RunConfig
from experiments.train import NonFiniteLossError, load_trained, main, parse_args, parse_value, train


@pytest.fixture(scope="module")
def env(tmp_path_factory, write_corpus, tiny_run):
    """A tiny corpus, a private cache root, and a tiny 2-layer (L, G) run on it."""
    root = tmp_path_factory.mktemp("train")
    mp = pytest.MonkeyPatch()
    mp.setenv("GEMMA_ARCH_LAB_CACHE", str(root / "cache"))
    run = tiny_run(write_corpus(root / "corpus"), steps=6, warmup=2, lr=3e-3, eval_every=3, ckpt_every=3,
                   log_every=1)
    straight = root / "straight"
    summary = train(run, straight, progress=False)
    yield dict(root=root, run=run, straight=straight, summary=summary)
    mp.undo()


def _metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_run_directory_and_summary(env):
    run, d, s = env["run"], env["straight"], env["summary"]
    assert json.loads((d / "config.json").read_text()) == run.to_dict()
    m = _metrics(d)
    assert [r["step"] for r in m] == [1, 2, 3, 4, 5, 6]
    assert {"loss", "lr", "tokens_per_s", "grad_norm"} <= set(m[0])
    assert "val_loss" in m[2] and "val_loss" in m[5] and "val_loss" not in m[0]
    assert m[-1]["loss"] < m[0]["loss"]  # it learns something in 6 steps
    assert math.isclose(s["final_val_ppl"], math.exp(s["final_val_loss"]), rel_tol=1e-9)
    assert s["final_val_loss"] == m[-1]["val_loss"]
    assert s["tokens_seen"] == 6 * 4 * 32
    assert s["params"]["total"] > 0 and s["tokens_per_s"] > 0 and 0 < s["mfu"] < 1
    assert s["unigram_entropy"] > 0 and s["corpus_fingerprint"] and s["tokenizer_path"]
    lrs = [r["lr"] for r in m]  # warmup over 2 steps, then cosine down to min_lr_ratio * lr
    assert lrs[:3] == pytest.approx([0.0, 1.5e-3, 3e-3]) and lrs[2] > lrs[3] > lrs[4] > lrs[5] > 3e-4


def test_summary_skips_rerun(env):
    d = env["straight"]
    before = {p.name: p.stat().st_mtime_ns for p in d.iterdir()}
    assert train(env["run"], d, progress=False) == env["summary"]
    assert {p.name: p.stat().st_mtime_ns for p in d.iterdir()} == before


def test_resume_is_bitwise_exact(env):
    d = env["root"] / "resumed"
    out = train(env["run"], d, progress=False, stop_at=2)
    assert out["stopped_at"] == 2 and not (d / "summary.json").exists()
    assert checkpoint.read(d / checkpoint.CKPT_NAME)[1]["step"] == 2
    s = train(env["run"], d, progress=False)
    assert s["resumed_from"] == 2
    a, _ = checkpoint.read(env["straight"] / checkpoint.CKPT_NAME)
    b, _ = checkpoint.read(d / checkpoint.CKPT_NAME)
    assert len(a) == len(b) > 10
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert [r["loss"] for r in _metrics(d)] == [r["loss"] for r in _metrics(env["straight"])]
    assert s["final_val_loss"] == env["summary"]["final_val_loss"]


def test_different_config_in_same_dir_is_refused(env):
    d = env["root"] / "copy"
    shutil.copytree(env["straight"], d, dirs_exist_ok=True)
    (d / "summary.json").unlink()
    with pytest.raises(ValueError, match="different run"):
        train(env["run"].replace(seed=1), d, progress=False)


def test_corrupted_checkpoint_stops_training_naming_the_file(env):
    d = env["root"] / "corrupt"
    train(env["run"], d, progress=False, stop_at=3)
    path = d / checkpoint.CKPT_NAME
    data = max((p for p in path.rglob("*") if p.is_file() and "ocdbt.process_" in str(p)),
               key=lambda p: p.stat().st_size)  # the largest file of array data
    raw = data.read_bytes()
    data.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(checkpoint.CheckpointError, match=str(path)):
        train(env["run"], d, progress=False)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(env):
    # lr 1e30 from step 1 on: the first loss is finite, then the weights blow up within a few steps.
    run = env["run"].replace(lr=1e30, warmup=0, ckpt_every=1)
    d = env["root"] / "nan"
    with pytest.raises(NonFiniteLossError) as err:
        train(run, d, progress=False)
    m = re.search(r"loss is (\S+) at step (\d+) .*last good checkpoint: (\S+) \(step (\d+)\)", str(err.value))
    assert m, str(err.value)
    bad, good = int(m.group(2)), int(m.group(4))
    assert 2 <= bad < run.steps and good == bad - 1 and m.group(3) == str(d / checkpoint.CKPT_NAME)
    assert not math.isfinite(float(m.group(1)))
    leaves, meta = checkpoint.read(d / checkpoint.CKPT_NAME)  # intact and readable
    assert meta["step"] == good and len(leaves) > 10
    logged = _metrics(d)
    assert [r["step"] for r in logged] == list(range(1, good + 1))
    assert all(math.isfinite(r["loss"]) for r in logged)
    assert not (d / "summary.json").exists()


def test_nan_from_a_registered_loss_names_step_one(env, monkeypatch):
    monkeypatch.setitem(losses.LOSSES, "always_nan", lambda logits, targets, mask: logits.sum() * np.nan)
    run = env["run"].replace(loss="always_nan", steps=2, warmup=0)
    with pytest.raises(NonFiniteLossError, match="at step 1 .*none written yet"):
        train(run, env["root"] / "nan2", progress=False)


def test_load_trained_reproduces_validation_loss(env):
    import equinox as eqx
    import jax.numpy as jnp

    model, tok, run = load_trained(env["straight"])
    assert run == env["run"] and tok.vocab_size == 300
    ids = jnp.asarray(tok.encode("def value(self):\n    return data\n")[:16], jnp.int32)
    logits = eqx.filter_jit(model)(ids)
    assert logits.shape == (ids.shape[0], 300) and bool(jnp.isfinite(logits).all())


def test_cli_builds_the_run_and_resume_reads_config(env):
    assert parse_value("64") == 64 and parse_value("None") is None and parse_value("LG") == "LG"
    argv = ["--preset", "tiny_gemma3", "--override", "num_layers=2", "--override", "pattern=LG",
            "--steps", "7", "--seq", "32", "--lr", "1e-3", "--fsdp", "2"]
    run, out, mesh, progress, per_call = parse_args(argv)
    assert run == RunConfig(preset="tiny_gemma3", overrides=(("pattern", "LG"), ("num_layers", 2)),
                            steps=7, seq_len=32, lr=1e-3)
    assert out.name == run.short_hash() and out.parent.name == "train" and mesh == (1, 2) and progress
    assert per_call == 10 and parse_args(argv + ["--steps-per-call", "1"])[4] == 1
    summary = main(["--resume", "--out", str(env["straight"]), "--no-progress"])
    assert summary == env["summary"]
    assert parse_args([])[0].preset == "small_gemma3"


@pytest.mark.parametrize("extra", [["--preset", "tiny_gemma2"], ["--override", "window=4"], ["--seq", "64"]])
def test_resume_refuses_flags_that_would_change_the_run(extra, tmp_path, capsys):
    with pytest.raises(SystemExit):
        parse_args(["--resume", "--out", str(tmp_path), *extra])
    err = capsys.readouterr().err
    assert extra[0] in err and "config.json" in err


def test_runconfig_hash_roundtrip_and_overrides():
    import subprocess
    import sys

    a = RunConfig(preset="tiny_gemma3", overrides=(("window", 4), ("num_layers", 2)))
    b = RunConfig(preset="tiny_gemma3", overrides=[["num_layers", 2], ["window", 4]])
    assert a == b and hash(a) == hash(b) and a.short_hash() == b.short_hash()
    assert len(a.short_hash()) == 10 and a.short_hash() != a.replace(seed=1).short_hash()
    assert RunConfig.from_dict(a.to_dict()) == a
    assert RunConfig.from_dict(json.loads(json.dumps(a.to_dict()))) == a
    assert a.with_model(window=8).model_config().window == 8
    assert a.model_config(vocab_size=300).vocab_size == 300 and a.model_config().num_layers == 2
    assert a.model_config().matmul_dtype == a.matmul_dtype
    code = ("from experiments.runconfig import RunConfig; print(RunConfig(preset='tiny_gemma3', "
            "overrides=(('window', 4), ('num_layers', 2))).short_hash())")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert other.stdout.strip() == a.short_hash()  # stable across processes (no hash randomisation)
    with pytest.raises(ValueError, match="ModelConfig field"):
        RunConfig(preset="tiny_gemma3", overrides=(("widht", 3),))
    with pytest.raises(ValueError, match="unknown; known"):
        RunConfig(preset="nope")


def test_microbatching_matches_whole_batch():
    import jax
    import jax.numpy as jnp

    from experiments.step import init_params, make_train_step

    base = RunConfig(preset="tiny_gemma3", overrides=(("num_layers", 2), ("pattern", "LG")), vocab_size=256,
                     matmul_dtype="float32", batch=4, seq_len=16, lr=1e-4, warmup=0)
    toks = np.random.default_rng(0).integers(0, 256, size=(4, 17)).astype(np.int32)
    seg = np.repeat(np.array([[0] * 10 + [1] * 6]), 4, axis=0).astype(np.int32)
    batch = {"inputs": toks[:, :-1], "targets": toks[:, 1:], "segment_ids": seg}
    out = {}
    for micro in (0, 1, 2):
        run = base.replace(microbatch=micro)
        params, static = init_params(run.model_config(), 0)
        opt = run.optimizer()
        step = make_train_step(static, opt, run)
        params, _, m = step(params, opt.init(params), batch, jnp.asarray(0, jnp.int32))
        out[micro] = (float(m["loss"]), float(m["grad_norm"]), jax.tree_util.tree_leaves(params))
    for micro in (1, 2):
        assert out[micro][0] == pytest.approx(out[0][0], rel=1e-6)
        assert out[micro][1] == pytest.approx(out[0][1], rel=1e-5)
        diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(out[micro][2], out[0][2]))
        assert diff < 1e-6
    with pytest.raises(ValueError, match="microbatch=3"):
        base.replace(microbatch=3)


def test_call_length_divides_every_flush_interval(env):
    run = env["run"].replace(log_every=10, eval_every=100, ckpt_every=50)
    assert call_length(10, 10, 100, 50) == 10 and call_length(4, 10, 100, 50) == 2
    assert call_length(1, 10, 100, 50) == 1 and call_length(10, 3, 100, 50) == 1
    with pytest.raises(ValueError, match="steps_per_call=0"):
        train(run, env["root"] / "k0", progress=False, steps_per_call=0)


def test_several_steps_per_call_train_the_same_weights(env):
    """Steps run in calls of two (a scan over steps) give the one-step-per-call run bit for bit, also
    when a stop mid-call (step 3) makes the resumed run start off the call grid."""
    run = env["run"].replace(steps=8, log_every=2, eval_every=4, ckpt_every=4)
    one = train(run, env["root"] / "k1", progress=False, steps_per_call=1)
    two = train(run, env["root"] / "k2", progress=False, steps_per_call=2)
    d = env["root"] / "k2_resumed"
    assert train(run, d, progress=False, steps_per_call=2, stop_at=3)["stopped_at"] == 3
    resumed = train(run, d, progress=False, steps_per_call=2)
    ref, _ = checkpoint.read(env["root"] / "k1" / checkpoint.CKPT_NAME)
    for other in ("k2", "k2_resumed"):
        got, _ = checkpoint.read(env["root"] / other / checkpoint.CKPT_NAME)
        for x, y in zip(ref, got):
            np.testing.assert_array_equal(x, y)
    m1, m2 = _metrics(env["root"] / "k1"), _metrics(env["root"] / "k2")
    assert [r["step"] for r in m2] == [2, 4, 6, 8] and [r["loss"] for r in m2] == [r["loss"] for r in m1]
    assert one["final_val_loss"] == two["final_val_loss"] == resumed["final_val_loss"]
    assert two["tokens_per_s"] > 0
    assert math.isnan(m2[0]["tokens_per_s"]) and m2[1]["tokens_per_s"] > 0  # the first call compiles


def test_nan_inside_a_call_names_its_own_step(env):
    run = env["run"].replace(lr=1e30, warmup=0, steps=8, log_every=4, eval_every=4, ckpt_every=4)
    named = []
    for k in (4, 1):  # one call of four steps, then four calls of one: the same first bad step
        d = env["root"] / f"nan_k{k}"
        with pytest.raises(NonFiniteLossError) as err:
            train(run, d, progress=False, steps_per_call=k)
        named.append(int(re.search(r"loss is \S+ at step (\d+) ", str(err.value)).group(1)))
        assert not (d / checkpoint.CKPT_NAME).exists() and not (d / "summary.json").exists()
    assert named[0] == named[1] and 2 <= named[0] <= 4, named
