"""Distillation losses (Gemma 2 section 3.2, Gemma 3 section 2.2), teachers and a tiny end-to-end run."""


import json
import math
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import checkpoint
from experiments.distill import losses as distill
from experiments.distill.teacher import load_teacher, load_teacher_model
from experiments.losses import LOSSES, get_loss, xent
from experiments.train import load_run_data, load_trained, train

V, T = 32, 10
NAMES = ("distill", "distill_kl", "distill_reverse_kl", "distill_topk", "distill_sampled")


def _logits(seed: int, scale: float = 2.0):
    return jax.random.normal(jax.random.key(seed), (T, V)) * scale


def _kw(name, teacher, key_seed=1, **extra):
    kw = {"teacher_logits": teacher, **extra}
    if name == "distill_sampled":
        kw.setdefault("k", 8)
        kw["key"] = jax.random.key(key_seed)
    if name == "distill_topk":
        kw.setdefault("k", 8)
    return kw


TARGETS, MASK = jnp.arange(T, dtype=jnp.int32) % V, jnp.ones(T)


def _entropy(z, tau=1.0):
    return float(jnp.mean(-jnp.sum(jax.nn.softmax(z / tau) * jax.nn.log_softmax(z / tau), -1)))


def test_one_registry():
    for name in NAMES:
        assert get_loss(name) is LOSSES[name]
    assert LOSSES["xent"] is xent and distill.needs_teacher("distill") and not distill.needs_teacher("xent")


@pytest.mark.parametrize("name", NAMES)
def test_value_at_teacher_and_away_from_it(name):
    zt, zs = _logits(0), _logits(1)
    fn = LOSSES[name]
    at = float(fn(zt, TARGETS, MASK, **_kw(name, zt)))
    away = float(fn(zs, TARGETS, MASK, **_kw(name, zt)))
    if name in ("distill_kl", "distill_reverse_kl"):
        assert at == pytest.approx(0.0, abs=1e-5)  # KLs: zero at p_S = p_T
    elif name == "distill":
        assert at == pytest.approx(_entropy(zt), rel=1e-5)  # cross-entropy: its minimum, H(p_T)
    else:
        assert at > 0  # sparse targets: H(q) - log m (q is the minimiser, not p_T)
    assert away > at + 0.1


def test_distill_minimum_is_at_the_teacher():
    zt = _logits(0)
    g = jax.grad(lambda s: distill.distill(s, TARGETS, MASK, teacher_logits=zt))(zt)
    assert float(jnp.max(jnp.abs(g))) < 1e-6
    assert float(distill.distill_kl(_logits(1), TARGETS, MASK, teacher_logits=zt)) == pytest.approx(
        float(distill.distill(_logits(1), TARGETS, MASK, teacher_logits=zt)) - _entropy(zt), rel=1e-5)


def test_chunking_does_not_change_values():
    zt, zs = _logits(0), _logits(1)
    for name in NAMES:
        a = LOSSES[name](zs, TARGETS, MASK, **_kw(name, zt), chunk=3)
        b = LOSSES[name](zs, TARGETS, MASK, **_kw(name, zt), chunk=T)
        if name != "distill_sampled":  # sampled: other chunks, other keys
            assert float(a) == pytest.approx(float(b), rel=1e-6)


def test_sampled_gradient_matches_full_in_expectation():
    """Monte Carlo: the sampled loss's gradient averaged over keys points where the full loss's does.
    k=8 of 32 entries; the renormalisation bias (module docstring) keeps the cosine just under 1."""
    zt, zs = _logits(0), _logits(1)
    full = jax.grad(lambda s: distill.distill(s, TARGETS, MASK, teacher_logits=zt))(zs)

    def one(key, k):
        return jax.grad(lambda s: distill.distill_sampled(s, TARGETS, MASK, teacher_logits=zt, key=key,
                                                          k=k))(zs)

    keys = jax.random.split(jax.random.key(2), 1000)
    for k, floor in ((8, 0.97), (24, 0.999)):
        mean = jax.vmap(lambda kk, k=k: one(kk, k))(keys).mean(0)
        cos = float(jnp.sum(mean * full) / jnp.linalg.norm(mean) / jnp.linalg.norm(full))
        assert cos > floor, (k, cos)
    # k = v draws every entry: exactly the full loss
    exact = one(jax.random.key(3), V)
    assert float(jnp.max(jnp.abs(exact - full))) < 1e-5


def test_topk_with_k_equal_v_is_full():
    zt, zs = _logits(0), _logits(1)
    assert float(distill.distill_topk(zs, TARGETS, MASK, teacher_logits=zt, k=V)) == pytest.approx(
        float(distill.distill(zs, TARGETS, MASK, teacher_logits=zt)), rel=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_mixing(name):
    zt, zs = _logits(0), _logits(1)
    fn = LOSSES[name]
    x = float(xent(zs, TARGETS, MASK))
    assert float(fn(zs, TARGETS, MASK, **_kw(name, zt), alpha=0.0)) == x  # exactly xent
    pure = float(fn(zs, TARGETS, MASK, **_kw(name, zt)))
    assert float(fn(zs, TARGETS, MASK, **_kw(name, zt), alpha=1.0)) == pure
    half = float(fn(zs, TARGETS, MASK, **_kw(name, zt), alpha=0.25))
    assert half == pytest.approx(0.25 * pure + 0.75 * x, rel=1e-6)


def test_temperature_scaling():
    zt, zs = _logits(0), _logits(1)
    tau = 2.0
    # tau divides both logits and multiplies the term by tau^2
    got = float(distill.distill_kl(zs, TARGETS, MASK, teacher_logits=zt, tau=tau))
    want = tau**2 * float(distill.distill_kl(zs / tau, TARGETS, MASK, teacher_logits=zt / tau))
    assert got == pytest.approx(want, rel=1e-6)
    at = float(distill.distill(zt, TARGETS, MASK, teacher_logits=zt, tau=tau))
    assert at == pytest.approx(tau**2 * _entropy(zt, tau), rel=1e-5)


def test_errors_name_the_problem():
    zt, zs = _logits(0), _logits(1)
    with pytest.raises(ValueError, match=r"unknown loss 'distil'.*distill_sampled"):
        get_loss("distil")
    wide = jnp.zeros((T, V + 1))
    for name in NAMES:
        with pytest.raises(ValueError, match=r"do not match student logits.*same vocab_size"):
            LOSSES[name](zs, TARGETS, MASK, **_kw(name, wide))
        with pytest.raises(ValueError, match="needs teacher_logits"):
            LOSSES[name](zs, TARGETS, MASK)
    with pytest.raises(ValueError, match=r"tau=0.0; must be > 0"):
        distill.distill(zs, TARGETS, MASK, teacher_logits=zt, tau=0.0)
    with pytest.raises(ValueError, match=r"alpha=1.5; must be in \[0, 1\]"):
        distill.distill(zs, TARGETS, MASK, teacher_logits=zt, alpha=1.5)
    with pytest.raises(ValueError, match=r"k=64; must be an int in \[1, vocab_size=32\]"):
        distill.distill_topk(zs, TARGETS, MASK, teacher_logits=zt, k=64)
    with pytest.raises(ValueError, match="needs a PRNG key"):
        distill.distill_sampled(zs, TARGETS, MASK, teacher_logits=zt, k=8)


def test_sampled_teacher_entries_are_distinct_and_weighted_by_the_teacher():
    zt = _logits(0)
    idx, w = distill.sample_teacher(zt, jax.random.key(5), 8)
    srt = np.sort(np.asarray(idx), -1)
    assert idx.shape == w.shape == (T, 8) and np.all(srt[:, 1:] != srt[:, :-1])  # no repeats
    p = np.asarray(jax.nn.softmax(zt, -1))
    np.testing.assert_allclose(np.asarray(w), np.take_along_axis(p, np.asarray(idx), -1), rtol=1e-5)


# ------------------------------------------------------------------------------- teachers, end to end
@pytest.fixture(scope="module")
def trained(tmp_path_factory, write_corpus, tiny_run):
    """A tiny teacher trained 4 steps in a sweep-like folder, and a student config beside it."""
    root = tmp_path_factory.mktemp("distill")
    mp = pytest.MonkeyPatch()
    mp.setenv("GEMMA_ARCH_LAB_CACHE", str(root / "cache"))
    base = tiny_run(write_corpus(root / "corpus"), steps=4, warmup=1, eval_every=4, ckpt_every=4, log_every=2)
    teacher = base.with_model(width=96, mlp_width=192)
    sweep = root / "sweep"
    summary = train(teacher, sweep / teacher.short_hash(), progress=False)
    yield dict(root=root, base=base, teacher=teacher, sweep=sweep, teacher_summary=summary)
    mp.undo()


def test_distillation_run_records_its_teacher(trained):
    t = trained["teacher"]
    student = trained["base"].replace(loss="distill", teacher="@" + t.short_hash())
    s = train(student, trained["sweep"] / student.short_hash(), progress=False)
    assert s["teacher"]["kind"] == "run" and s["teacher"]["run"] == t.short_hash()
    assert s["teacher"]["final_val_ppl"] == pytest.approx(trained["teacher_summary"]["final_val_ppl"])
    losses = [json.loads(x)["loss"] for x in (trained["sweep"] / student.short_hash() / "metrics.jsonl")
              .read_text().splitlines()]
    assert all(np.isfinite(losses)) and math.isfinite(s["final_val_loss"])
    # the teacher is frozen: its checkpoint is untouched by the student's training
    assert train(t, trained["sweep"] / t.short_hash(), progress=False) == trained["teacher_summary"]


def test_teacher_errors_are_clear(trained):
    t, base = trained["teacher"], trained["base"]
    other = load_run_data(base.replace(vocab_size=280))  # another tokenizer
    with pytest.raises(ValueError, match="do not share a tokenizer: teacher tokenizer fingerprint"):
        load_teacher(base.replace(loss="distill", teacher=str(trained["sweep"] / t.short_hash())), other)
    with pytest.raises(ValueError, match="is not a trained run directory"):
        load_teacher(base.replace(loss="distill", teacher=str(trained["root"])), other)
    half = trained["root"] / "half"
    half.mkdir(exist_ok=True)
    (half / "config.json").write_text("{}")
    (half / "checkpoint.ckpt").write_text("")  # the older single-file format
    with pytest.raises(ValueError, match="python -m experiments.checkpoint convert"):
        load_teacher(base.replace(loss="distill", teacher=str(half)), other)
    shutil.copytree(trained["sweep"] / t.short_hash() / checkpoint.CKPT_NAME, half / checkpoint.CKPT_NAME)
    with pytest.raises(ValueError, match="not trained yet"):
        load_teacher(base.replace(loss="distill", teacher=str(half)), other)
    with pytest.raises(ValueError, match="distils: set RunConfig.teacher"):
        base.replace(loss="distill")
    with pytest.raises(ValueError, match="which ignores it"):
        base.replace(teacher="somewhere")
    with pytest.raises(ValueError, match="unknown loss 'kd'"):
        base.replace(loss="kd")


def test_hf_folder_teacher(trained, tmp_path):
    import arch

    t = trained["teacher"]
    model, tok, _ = load_trained(trained["sweep"] / t.short_hash())
    arch.to_hf(model, tmp_path / "hf")
    loaded, info = load_teacher_model(tmp_path / "hf", tok)
    assert info["kind"] == "hf" and info["params"] == trained["teacher_summary"]["params"]["total"]
    x = jnp.arange(8, dtype=jnp.int32)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), rtol=2e-2, atol=2e-2)


def test_sweeps_train_each_teacher_before_its_students():
    from experiments.sweeps.runner import expand

    for name in ("distill", "teacher_size"):
        for scale in ("quick", "default", "full"):
            runs = expand(name, scale)
            seen = set()
            for r in runs:
                if r.config.teacher is not None:
                    assert r.config.teacher.lstrip("@") in seen, (name, scale, r.label)
                seen.add(r.config.short_hash())
            methods = {dict(r.tags).get("method") for r in runs}
            if name == "distill":
                assert {"next-token", "full distillation", "sampled-256", "top-256"} <= methods
