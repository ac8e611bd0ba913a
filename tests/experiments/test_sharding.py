"""The FSDP / data-parallel train step equals the single-device step (8 fake CPU devices, subprocess)."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from jax.sharding import PartitionSpec

from experiments.sharding import param_spec

REPO = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""
    import dataclasses, json
    import jax, jax.numpy as jnp, numpy as np
    from experiments import sharding as shd
    from experiments.runconfig import RunConfig
    from experiments.step import init_params, make_train_step

    assert len(jax.devices()) == 8, jax.devices()
    run = RunConfig(preset="tiny_gemma3", overrides=(("num_layers", 2), ("pattern", "LG")),
                    matmul_dtype="float32", vocab_size=256, batch=8, seq_len=16, lr=1e-4, warmup=0,
                    steps=3)
    cfg = run.model_config()
    rng = np.random.default_rng(0)
    toks = rng.integers(0, cfg.vocab_size, size=(8, 17)).astype(np.int32)
    seg = np.cumsum(rng.random((8, 16)) < 0.1, axis=1).astype(np.int32)
    # the same batch three times: the loss must fall, so a no-op step would fail the test. A small lr
    # because Adam divides by |g|: reduction-order noise in near-zero grads moves params by ~2% of lr.
    batches = [{"inputs": toks[:, :-1], "targets": toks[:, 1:], "segment_ids": seg}] * run.steps

    def go(mesh):
        params, static = init_params(cfg, run.seed)
        opt = run.optimizer()
        state = opt.init(params)
        put = jax.device_put
        if mesh is not None:
            params = jax.device_put(params, shd.state_shardings(mesh, params))
            state = jax.device_put(state, shd.state_shardings(mesh, state))
            put = lambda b: shd.shard_batch(b, shd.batch_sharding(mesh))
        step = make_train_step(static, opt, run, mesh=mesh, params=params, opt_state=state)
        losses = []
        for i, b in enumerate(batches):
            params, state, m = step(params, state, put(b), jnp.asarray(i, jnp.int32))
            losses.append(float(m["loss"]))
        specs = sorted({str(getattr(x.sharding, "spec", None)) for x in jax.tree_util.tree_leaves(params)})
        return losses, [np.asarray(x) for x in jax.tree_util.tree_leaves(params)], specs

    ref_loss, ref_params, _ = go(None)
    out = {"ref_loss": ref_loss}
    # 2x1: four rows per device, run as two micro-steps of run.microbatch=2 on each device
    for data, fsdp in ((2, 4), (8, 1), (1, 8), (2, 1)):
        loss, params, specs = go(shd.make_mesh(data, fsdp))
        diff = max(float(np.max(np.abs(a - b))) for a, b in zip(params, ref_params))
        out[f"{data}x{fsdp}"] = {"loss": loss, "max_param_diff": diff, "specs": specs}
    run = dataclasses.replace(run, matmul_dtype="bfloat16")  # bf16 products: the row-major copies
    cfg = run.model_config()
    ref_loss, ref_params, _ = go(None)
    loss, params, _ = go(shd.make_mesh(2, 1))
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(params, ref_params))
    out["bf16"] = {"ref_loss": ref_loss, "loss": loss, "max_param_diff": diff}
    print("RESULT" + json.dumps(out))
""")


@pytest.fixture(scope="module")
def sharded_results():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT"))
    return json.loads(line[len("RESULT"):])


@pytest.mark.parametrize("mesh", ["2x4", "8x1", "1x8", "2x1"])
def test_sharded_step_matches_single_device(sharded_results, mesh):
    ref, got = sharded_results["ref_loss"], sharded_results[mesh]
    assert len(ref) == 3 and ref[2] < ref[0]  # the steps did train
    assert got["loss"] == pytest.approx(ref, rel=1e-5, abs=1e-5)
    assert got["max_param_diff"] < 1e-5


def test_data_parallel_bf16_step_matches_single_device(sharded_results):
    got = sharded_results["bf16"]
    assert got["ref_loss"][2] < got["ref_loss"][0]
    # the same micro-steps on the same rows; only the order of the f32 gradient sums differs
    assert got["loss"] == pytest.approx(got["ref_loss"], rel=1e-5, abs=1e-5)
    assert got["max_param_diff"] < 1e-5


def test_parameters_are_actually_fsdp_sharded(sharded_results):
    specs = sharded_results["2x4"]["specs"]
    assert {"P('fsdp',)", "P('fsdp', None)", "P(None, 'fsdp')"} <= set(specs)  # gains and matrices split
    assert sharded_results["8x1"]["specs"] == ["P()"]  # pure data parallel: replicated


def test_param_spec_rule():
    assert param_spec((256, 64), 4) == PartitionSpec("fsdp", None)  # the largest divisible axis
    assert param_spec((6, 64), 4) == PartitionSpec(None, "fsdp")  # 6 does not divide by 4
    assert param_spec((3, 5), 4) == PartitionSpec()  # nothing divides: replicated
    assert param_spec((), 4) == PartitionSpec()
    assert param_spec((64,), 1) == PartitionSpec()


def test_split_cpu_refuses_bad_counts_and_a_started_backend():
    import jax

    from experiments.sharding import split_cpu

    with pytest.raises(ValueError, match="n=0"):
        split_cpu(0)
    held = jax.numpy.zeros(1)  # starts the backends and keeps an array on them
    with pytest.raises(RuntimeError, match="already started and hold arrays"):
        split_cpu(len(jax.devices()) + 1)
    del held
