"""Quantization-aware training of the language models (Gemma 3 section 2.3): a run that starts from a
trained checkpoint (``RunConfig.init``), the quantized forward with a straight-through gradient
(``ModelConfig.weight_format``), distilled from the frozen float model; the ``qat`` sweep's points,
its recovery table and figure."""

import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import arch
from arch import quant
from experiments import checkpoint
from experiments.eval.run import evaluate_run
from experiments.losses import get_loss
from experiments.step import batch_loss
from experiments.sweeps import qat
from experiments.sweeps.runner import expand, group_of, shard
from experiments.train import load_run_data, load_trained, train
from experiments.trained import initial_params, load_served, save_served


def test_a_qat_step_reduces_the_distillation_loss():
    """The quantized model (int4 per channel) against its own float weights as the teacher: the KL is
    above zero from the quantization alone and falls under gradient steps through the STE."""
    cfg = arch.preset("tiny_gemma3", num_layers=2, pattern="LG", vocab_size=64, weight_format="int4")
    student = arch.LM(cfg, key=jax.random.key(0))
    teacher = arch.reconfigure(student, weight_format=None)
    params, static = eqx.partition(student, eqx.is_inexact_array)
    tokens = jax.random.randint(jax.random.key(1), (4, 17), 0, 64)
    batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "segment_ids": jnp.zeros((4, 16), jnp.int32)}
    loss = jax.jit(lambda p: batch_loss(p, static, batch, get_loss("distill_kl"), {"teacher": teacher})[0])
    grad = jax.jit(jax.grad(loss))
    first = float(loss(params))
    assert first > 1e-4  # the int4 forward is not the float one
    for _ in range(5):
        params = jax.tree_util.tree_map(lambda p, g: p - 0.05 * g, params, grad(params))
    assert float(loss(params)) < 0.7 * first


def test_served_format_is_what_the_forward_runs():
    """``weight_format`` quantizes every forward (call, hidden states, decode) the same way; None and
    a reconfigure back give the float model."""
    cfg = arch.preset("tiny_gemma3", num_layers=2, pattern="LG", vocab_size=64)
    model = arch.LM(cfg, key=jax.random.key(0))
    x = jnp.arange(12, dtype=jnp.int32)
    served = arch.reconfigure(model, weight_format="int4_block32")
    deployed = quant.quantize_model(model, "int4_block32", fake=False)
    np.testing.assert_array_equal(np.asarray(served(x)), np.asarray(deployed(x)))
    assert float(jnp.abs(served(x) - model(x)).max()) > 1e-4
    logits, _ = served.step(x, served.init_cache(16))
    np.testing.assert_allclose(np.asarray(logits), np.asarray(served(x)), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(arch.reconfigure(served, weight_format=None)(x)),
                                  np.asarray(model(x)))
    with pytest.raises(ValueError, match="weight_format='int3'"):
        cfg.replace(weight_format="int3")
    with pytest.raises(ValueError, match="quant_targets"):
        cfg.replace(quant_targets=("mlp", "ffn"))
    # only the named groups change: MLP-only int4 leaves attention and the embedding as they were
    mlp = quant.quantize_model(model, "int4", ("mlp",), fake=False)
    assert jnp.array_equal(mlp.embed, model.embed)
    assert not jnp.array_equal(mlp.blocks[0].mlp.gate_proj.weight, model.blocks[0].mlp.gate_proj.weight)


@pytest.fixture(scope="module")
def base_run(tmp_path_factory, write_corpus, tiny_run):
    root = tmp_path_factory.mktemp("qat")
    mp = pytest.MonkeyPatch()
    mp.setenv("GEMMA_ARCH_LAB_CACHE", str(root / "cache"))
    base = tiny_run(write_corpus(root / "corpus"), steps=6, warmup=1, eval_every=6, ckpt_every=6, log_every=2)
    sweep = root / "sweep"
    summary = train(base, sweep / base.short_hash(), progress=False)
    yield dict(root=root, base=base, sweep=sweep, summary=summary)
    mp.undo()


def test_qat_run_starts_from_the_trained_model_and_serves_quantized(base_run):
    base, sweep = base_run["base"], base_run["sweep"]
    run = qat.qat_config(base, "int4", 4)
    assert run.init == run.teacher == "@" + base.short_hash() and run.loss == "distill"
    data = load_run_data(run)
    fresh = eqx.filter(arch.LM(run.model_config(data.tokenizer.vocab_size), key=jax.random.key(9)),
                       eqx.is_inexact_array)
    start = initial_params(run, sweep / run.short_hash(), fresh, data.tokenizer)
    trained, _, _ = load_trained(sweep / base.short_hash())
    weights = jax.tree_util.tree_leaves(eqx.filter(trained, eqx.is_inexact_array))
    for a, b in zip(jax.tree_util.tree_leaves(start), weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    summary = train(run, sweep / run.short_hash(), progress=False)
    assert summary["teacher"]["run"] == base.short_hash()
    model, _, _ = load_trained(sweep / run.short_hash())
    assert model.cfg.weight_format == "int4"
    evals = evaluate_run(sweep / run.short_hash(), quick=True)
    ptq = evaluate_run(sweep / base.short_hash(), overrides={"weight_format": "int4"}, quick=True)
    assert evals["weights_bytes"] == ptq["weights_bytes"] == int(arch.memory.weights_bytes(model.cfg, "int4"))
    assert np.isfinite(evals["val_ppl"]) and np.isfinite(ptq["val_ppl"])
    lines = (sweep / run.short_hash() / "metrics.jsonl").read_text().splitlines()
    losses = [json.loads(x)["loss"] for x in lines if "loss" in json.loads(x)]
    assert losses and all(np.isfinite(losses))


@pytest.mark.parametrize("fmt", quant.FORMATS)
def test_served_checkpoint_reloads_bit_for_bit_and_weighs_what_memory_counts(base_run, tmp_path, fmt):
    """A trained model stored packed in ``fmt``: its arrays take exactly ``arch.memory``'s bytes (the
    file adds only its headers), and they, and the model they serve, come back unchanged."""
    model, _, _ = load_trained(base_run["sweep"] / base_run["base"].short_hash())
    path = tmp_path / f"{fmt}.ckpt"
    stored = save_served(model, path, fmt)
    assert stored == arch.memory.weights_bytes(model.cfg, fmt)
    arrays, meta = checkpoint.read(path)
    # SFP8's one f32 scale per tensor sits in gemma.cpp's tensor header beside the shape: a header too
    headers = sum(p.tensor_scale.nbytes for p in jax.tree_util.tree_leaves(
        quant.pack_model(model, fmt), is_leaf=lambda x: isinstance(x, quant.Packed))
        if isinstance(p, quant.Packed) and p.tensor_scale is not None)
    assert sum(a.nbytes for a in arrays) - headers == stored and meta["weight_format"] == fmt
    # the rest of the folder: Orbax's metadata, the JSON meta and checksums, each array's headers
    on_disk = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    assert 0 < on_disk - stored < 8192 + 1000 * len(arrays)  # about 800 bytes of metadata per array
    packed, served = load_served(path)
    expected = jax.tree_util.tree_leaves(quant.pack_model(model, fmt))
    got = jax.tree_util.tree_leaves(packed)
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        a, b = np.asarray(a), np.asarray(b)
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
    x = jnp.arange(16, dtype=jnp.int32) % model.cfg.vocab_size
    reference = quant.unpack_model(quant.pack_model(model, fmt), model)
    np.testing.assert_array_equal(np.asarray(served(x)), np.asarray(reference(x)))
    assert served.cfg.weight_format is None
    with pytest.raises(ValueError, match="format 'int3'"):
        save_served(model, tmp_path / "x.ckpt", "int3")


def test_init_errors_name_the_problem(base_run):
    base, sweep = base_run["base"], base_run["sweep"]
    data = load_run_data(base)
    params = eqx.filter(arch.LM(base.model_config(data.tokenizer.vocab_size), key=jax.random.key(0)),
                        eqx.is_inexact_array)
    with pytest.raises(ValueError, match="is not a finished run"):
        initial_params(base.replace(init="@0000000000"), sweep / "x", params, data.tokenizer)
    wide = base.with_model(width=96).replace(init="@" + base.short_hash())
    wide_params = eqx.filter(arch.LM(wide.model_config(data.tokenizer.vocab_size), key=jax.random.key(0)),
                             eqx.is_inexact_array)
    with pytest.raises(ValueError, match="do not have this run's shapes"):
        initial_params(wide, sweep / "x", wide_params, data.tokenizer)
    other = load_run_data(base.replace(vocab_size=280))
    with pytest.raises(ValueError, match="tokenizer"):
        initial_params(base.replace(init="@" + base.short_hash()), sweep / "x", params, other.tokenizer)
    with pytest.raises(ValueError, match="RunConfig.init=''"):
        base.replace(init="")
    assert base.replace(init=None).short_hash() == base.short_hash()  # an old run keeps its name


def test_qat_sweep_points_follow_their_base_per_seed():
    runs = expand("qat", "default", seeds=3)
    bases = [r for r in runs if dict(r.tags)["method"] == "float"]
    corpus = {r.config.short_hash() for r in bases if r.config.task is None}
    task = {r.config.short_hash() for r in bases if r.config.task is not None}
    # the tradeoff and recall sweeps' trained models, reused
    assert corpus <= {r.config.short_hash() for r in expand("tradeoff", "default", seeds=3)}
    assert task <= {r.config.short_hash() for r in expand("recall", "default", seeds=3)}
    assert len(corpus) == len(task) == 3 * len(qat.PATTERNS)
    by_key = {r.key: i for i, r in enumerate(runs)}
    for r in runs:
        tags = dict(r.tags)
        if tags["method"] == "PTQ":
            assert r.is_variant and dict(r.eval_overrides)["weight_format"] == tags["format"]
        if tags["method"] != "QAT":
            continue
        ref = r.config.init
        assert ref == r.config.teacher and r.config.seed == r.base.seed
        assert ref[1:] == r.base.short_hash() and by_key[ref[1:]] < by_key[r.key]  # trained first
        assert dict(r.config.overrides)["weight_format"] == tags["format"]
        assert group_of(r) == ref[1:]
    for n in (2, 3):
        for i in range(n):
            part = shard(runs, i, n)
            keys = {r.key for r in part}
            assert all(r.config.init[1:] in keys for r in part if isinstance(r, qat.QATRun))
    assert {dict(r.tags)["format"] for r in runs if dict(r.tags)["method"] == "QAT"} == set(quant.FORMATS)


def _fabricated(seeds: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for seed in range(seeds):
        for model in ("5:1", "RRL"):
            floor = 100 + rng.normal()
            rows.append({"label": f"{model} float32", "tag.model": model, "tag.method": "float",
                         "tag.format": "float32", "evals.val_ppl": floor, "evals.weights_bytes": 4e6})
            for fmt, cost, bytes_ in (("int8", 1.0, 1e6), ("int4", 10.0, 5e5)):
                rows.append({"label": f"{model} PTQ {fmt}", "tag.model": model, "tag.method": "PTQ",
                             "tag.format": fmt, "evals.val_ppl": floor + cost, "evals.weights_bytes": bytes_})
                rows.append({"label": f"{model} QAT {fmt}", "tag.model": model, "tag.method": "QAT",
                             "tag.format": fmt, "evals.val_ppl": floor + cost * (0.25 + 0.1 * seed),
                             "evals.weights_bytes": bytes_})
    df = pd.DataFrame(rows)
    return df.assign(status="done", **{"run.seed": np.repeat(range(seeds), len(df) // seeds)})


def test_recall_costs_are_recall_lost_and_get_their_own_panel_and_table(tmp_path):
    ppl = _fabricated()
    task = ppl.assign(**{"tag.model": ppl["tag.model"] + " MQAR", "label": ppl["label"] + " MQAR",
                         "evals.task_acc_beyond": 1.0 - (ppl["evals.val_ppl"] - 100) / 100,
                         "evals.val_ppl": np.nan})
    df = pd.concat([ppl, task], ignore_index=True)
    lost = qat.recovery(df, qat.RECALL)
    row = lost[(lost["model"] == "5:1 MQAR") & (lost["format"] == "int4")].iloc[0]
    assert row["ptq_cost"] == pytest.approx(0.10) and row["recovered"] == pytest.approx(0.65)
    assert set(qat.recovery(df)["model"]) == {"5:1", "RRL"}  # perplexity rows only
    qat.plot_qat(df, tmp_path)
    assert pd.read_csv(tmp_path / "qat_recall.csv")["label"].str.endswith("MQAR int4").any()
    assert "evals.task_acc_beyond" in qat.report(df)


def test_recovery_pairs_each_seed_with_its_own_float_model():
    table = qat.recovery(_fabricated())
    row = table[(table["model"] == "5:1") & (table["format"] == "int4")].iloc[0]
    assert row["n"] == 3
    assert row["ptq_cost"] == pytest.approx(10.0)  # exact: each seed against its own float model
    assert row["recovered"] == pytest.approx(1 - 0.35) and row["recovered.lo"] < 0.65 < row["recovered.hi"]
    assert set(table["format"]) == {"int8", "int4"}


def test_qat_figure_draws_both_panels_with_intervals(tmp_path):
    from matplotlib.container import ErrorbarContainer

    import experiments.sweeps.plots as plots

    seen = {}
    original = plots.save_figure

    def save(fig, path):
        seen["axes"] = fig.axes
        return original(fig, path)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(plots, "save_figure", save)
        (path,) = qat.plot_qat(_fabricated(), tmp_path)
    assert path.exists()
    left, right = seen["axes"]
    assert sum(isinstance(c, ErrorbarContainer) for c in left.containers) >= 4
    assert len(right.patches) == 4 and any(isinstance(c, ErrorbarContainer) for c in right.containers)
