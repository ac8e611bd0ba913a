"""Train-step throughput and MFU of our models, optionally against Hugging Face transformers on torch.

``python -m experiments.bench.train [--preset P ...] [--vs-hf]`` times one full AdamW train step
(forward, backward, update) at B=8, T=512 for the small Gemma 3 (LLLLLG), Gemma 2 (LG, soft-caps) and
RecurrentGemma (RRL) presets: vocab 8192, width 256, 6 layers, 4 heads, 1 KV head, head_dim 64, MLP
1024, window 128. Ours runs in f32 and in bf16 (bf16 products forward and backward, f32 accumulation,
f32 parameters and optimizer state), each with the RunConfig default of micro-steps and as
:func:`experiments.train.train` runs it, several steps per jitted call (``--steps-per-call``; times are
per step), on one device and (``ours-dpN``, on a CPU with N > 1 cores) data parallel over one device
per core: each core runs the micro-steps of its own rows and the gradients meet in one all-reduce.
With ``--vs-hf`` the same configs (``arch.hf_layouts.config_to_hf``) are built as ``*ForCausalLM`` in
torch on CPU and timed in this process with torch AdamW (one step per call, as torch runs eagerly), f32
and bf16 autocast, eager and sdpa attention; the table reports each family's ratio of our best to HF's
best. MFU is model FLOPs (:func:`experiments.flops.flops_per_token`) over the matmul peak measured here
for the dtype (on the whole CPU, however many devices it is split into).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import arch
from arch.hf_layouts import config_to_hf
from experiments import sharding as shd
from experiments.flops import measure_matmul_peak, mfu
from experiments.runconfig import RunConfig
from experiments.step import init_params, make_train_step, stack_steps
from experiments.train import STEPS_PER_CALL

FAMILIES = {"gemma3": "small_gemma3", "gemma2": "small_gemma2", "recurrentgemma": "small_recurrentgemma"}
SHAPE = dict(vocab_size=8192, width=256, num_layers=6, num_heads=4, num_kv_heads=1, head_dim=64,
             mlp_width=1024, window=128)


def bench_run(preset: str, dtype: str, batch: int, seq_len: int) -> RunConfig:
    extra = {"lru_width": 256} if "R" in arch.preset(preset).pattern else {}
    # doc_mask off: HF gets no segment ids either, so both sides do the same attention work.
    return RunConfig(preset=preset, overrides=tuple({**SHAPE, **extra}.items()), matmul_dtype=dtype,
                     batch=batch, seq_len=seq_len, doc_mask=False, steps=1000, warmup=10)


def _batch(vocab: int, batch: int, seq_len: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab, size=(batch, seq_len + 1)).astype(np.int32)


def ours_stepper(run: RunConfig, data_parallel: int = 1, steps_per_call: int = STEPS_PER_CALL):
    """A closure running one jitted call of train.py's step (blocking) and returning the last loss: over
    a data-parallel mesh of ``data_parallel`` devices when that is more than one, and
    ``steps_per_call`` train steps per call as :func:`experiments.train.train` runs them (its
    ``steps`` attribute says how many, so the timing is per step)."""
    cfg = run.model_config()
    params, static = init_params(cfg, 0)
    opt = run.optimizer()
    opt_state = opt.init(params)
    k = steps_per_call

    def rows(seed):
        toks = _batch(cfg.vocab_size, run.batch, run.seq_len, seed)
        return {"inputs": toks[:, :-1], "targets": toks[:, 1:],
                "segment_ids": np.zeros(toks[:, 1:].shape, np.int32)}

    per_step = [rows(j) for j in range(k)]  # a different batch for each step of a call
    batch = per_step[0] if k == 1 else stack_steps(per_step)
    mesh = shd.make_mesh(data_parallel, 1) if data_parallel > 1 else None
    if mesh is not None:
        params = jax.device_put(params, shd.state_shardings(mesh, params))
        opt_state = jax.device_put(opt_state, shd.state_shardings(mesh, opt_state))
        batch = shd.shard_batch(batch, shd.batch_sharding(mesh, leading=k > 1))
    else:
        batch = jax.device_put(batch)
    step_fn = make_train_step(static, opt, run, mesh=mesh, params=params, opt_state=opt_state,
                              steps_per_call=k)
    state = [params, opt_state, 0]

    def one() -> float:
        params, opt_state, i = state
        params, opt_state, m = step_fn(params, opt_state, batch, jnp.asarray(i, jnp.int32))
        state[:] = [params, opt_state, i + k]
        return float(np.asarray(m["loss"]).reshape(-1)[-1])  # blocks until the call is done

    one.steps = k
    return one


def hf_model(cfg: arch.ModelConfig, attn: str):
    """The transformers ``*ForCausalLM`` with the same config, randomly initialised, f32."""
    import transformers  # optional: the hf extra (only --vs-hf needs it)

    hf = config_to_hf(cfg)
    model_type, arch_name = hf.pop("model_type"), hf.pop("architectures")[0]
    hf_cfg = transformers.AutoConfig.for_model(model_type, **hf, max_position_embeddings=8192)
    model = getattr(transformers, arch_name)._from_config(hf_cfg, attn_implementation=attn)
    return model.float().train()


def hf_stepper(cfg: arch.ModelConfig, batch: int, seq_len: int, dtype: str, attn: str):
    """A closure running one torch train step (forward, cross-entropy, backward, clipping, AdamW)."""
    import torch  # optional: the hf extra

    torch.manual_seed(0)
    model = hf_model(cfg, attn)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)
    toks = torch.from_numpy(_batch(cfg.vocab_size, batch, seq_len).astype(np.int64))
    inputs, labels = toks[:, :-1].contiguous(), toks[:, 1:].contiguous()
    autocast = dtype == "bfloat16"

    def one() -> float:
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
        with ctx:
            logits = model(input_ids=inputs).logits
        loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]),
                                                 labels.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    return one


def time_interleaved(steppers: dict, rounds: int) -> dict:
    """One warm-up call each, then ``rounds`` rounds calling every stepper once in turn.

    Interleaving exposes every variant to the same background load, and the minimum over rounds is
    the least disturbed step (noise on a shared machine only ever adds time).
    """
    out = {}
    for name, one in steppers.items():
        start = time.perf_counter()
        one()
        out[name] = {"compile_s": time.perf_counter() - start, "wall": [], "cpu": []}
    for _ in range(rounds):
        for name, one in steppers.items():
            n = getattr(one, "steps", 1)  # train steps per call: times are per step
            start, c0 = time.perf_counter(), time.process_time()
            out[name]["loss"] = one()
            out[name]["wall"].append((time.perf_counter() - start) / n)
            out[name]["cpu"].append((time.process_time() - c0) / n)
    return {k: {"step_s": min(v["wall"]), "median_s": statistics.median(v["wall"]), "cpu_s": min(v["cpu"]),
                "loss": v["loss"], "compile_s": v["compile_s"]} for k, v in out.items()}


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(prog="python -m experiments.bench.train", description=__doc__.split("\n")[0])
    p.add_argument("--preset", action="append", help="a preset (default: the three small families)")
    p.add_argument("--vs-hf", action="store_true", help="also time Hugging Face transformers (torch CPU)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--steps", type=int, default=10,
                   help="timed rounds after a warm-up step (shared machines need several for a steady best)")
    p.add_argument("--dtype", action="append", choices=("float32", "bfloat16"))
    p.add_argument("--steps-per-call", type=int, default=STEPS_PER_CALL, dest="steps_per_call",
                   help="our train steps per jitted call, as experiments.train runs them (HF: one)")
    a = p.parse_args(argv)
    presets = a.preset or list(FAMILIES.values())
    dtypes = a.dtype or ["float32", "bfloat16"]
    # On a CPU, ours also runs data parallel with one device per core (see experiments.sharding).
    dp = max((n for n in range(1, (os.cpu_count() or 1) + 1) if a.batch % n == 0), default=1)
    if dp > 1:
        shd.split_cpu(dp)
        if jax.devices()[0].platform != "cpu":
            dp = 1
    if a.vs_hf:
        import torch  # optional: the hf extra

        torch.set_num_threads(os.cpu_count() or 1)
    tokens = a.batch * a.seq
    ncores = os.cpu_count() or 1
    rows = []

    def add(preset, impl, dtype, res, cfg):
        tok_s = tokens / res["step_s"]
        util = mfu(tok_s, cfg, a.seq, dtype=dtype)
        # tokens per CPU-second x cores: what the step would do alone on the machine (a shared
        # machine inflates wall time; thread spinning inflates CPU time: both are shown).
        cpu_tok_s = tokens * ncores / res["cpu_s"]
        rows.append(dict(preset=preset, impl=impl, dtype=dtype, step_ms=1e3 * res["step_s"],
                         median_ms=1e3 * res["median_s"], tokens_per_s=tok_s, cpu_tokens_per_s=cpu_tok_s,
                         mfu=util, loss=res["loss"]))
        print(f"  {preset:<22}{impl:<12}{dtype:<10}{1e3 * res['step_s']:>7.0f} ms (median "
              f"{1e3 * res['median_s']:>6.0f}){tok_s:>9,.0f} tok/s"
              f"{100 * util:>7.1f}% MFU{cpu_tok_s:>10,.0f} tok/CPU-s x cores  loss {res['loss']:.3f}",
              flush=True)

    print(f"device: {jax.devices()[0].device_kind}, {os.cpu_count()} cores; B={a.batch} T={a.seq}; "
          f"matmul peak f32 {measure_matmul_peak('float32') / 1e9:.0f} GFLOP/s, "
          f"bf16 {measure_matmul_peak('bfloat16') / 1e9:.0f} GFLOP/s", flush=True)
    for preset in presets:
        steppers, cfgs = {}, {}
        for dtype in dtypes:
            run = bench_run(preset, dtype, a.batch, a.seq)
            for n in dict.fromkeys((1, dp)):
                impl = "ours" if n == 1 else f"ours-dp{n}"
                steppers[(impl, dtype)] = ours_stepper(run, n, a.steps_per_call)
                cfgs[(impl, dtype)] = run.model_config()
        if a.vs_hf:
            cfg = bench_run(preset, "float32", a.batch, a.seq).model_config()
            for dtype in dtypes:
                for attn in ("eager", "sdpa"):
                    try:
                        steppers[(f"hf-{attn}", dtype)] = hf_stepper(cfg, a.batch, a.seq, dtype, attn)
                        cfgs[(f"hf-{attn}", dtype)] = cfg
                    except (ValueError, NotImplementedError) as e:  # Gemma 2 has no sdpa path
                        print(f"  {preset:<22}hf-{attn:<9}{dtype:<10} skipped: {str(e)[:70]}", flush=True)
        for (impl, dtype), res in time_interleaved(steppers, a.steps).items():
            add(preset, impl, dtype, res, cfgs[(impl, dtype)])
    print(table(rows))
    return rows


def table(rows: list[dict]) -> str:
    """One line per preset: our best and HF's best tokens/s and MFU, and their ratio; then the same
    ratio from median step times and from CPU time (a machine shared with other work slows some
    steps: the fastest is the least disturbed, the median shows what a typical step gets)."""
    lines = [f"{'preset':<22}{'ours best':>22}{'tok/s':>9}{'MFU':>7}{'HF best':>22}{'tok/s':>9}{'MFU':>7}"
             f"{'ours/HF':>9}{'(median)':>9}{'(CPU-time)':>11}"]
    for preset in dict.fromkeys(r["preset"] for r in rows):
        mine = [r for r in rows if r["preset"] == preset and r["impl"].startswith("ours")]
        hf = [r for r in rows if r["preset"] == preset and not r["impl"].startswith("ours")]
        best = max(mine, key=lambda r: r["tokens_per_s"])
        line = (f"{preset:<22}{best['impl'] + ' ' + best['dtype']:>22}{best['tokens_per_s']:>9,.0f}"
                f"{100 * best['mfu']:>6.1f}%")
        if hf:
            h = max(hf, key=lambda r: r["tokens_per_s"])
            line += (f"{h['impl'] + ' ' + h['dtype']:>22}{h['tokens_per_s']:>9,.0f}{100 * h['mfu']:>6.1f}%"
                     f"{best['tokens_per_s'] / h['tokens_per_s']:>8.2f}x"
                     f"{h['median_ms'] / best['median_ms']:>8.2f}x")
            hc = max(r["cpu_tokens_per_s"] for r in hf)
            line += f"{max(r['cpu_tokens_per_s'] for r in mine) / hc:>10.2f}x"
        lines.append(line)
    return "\n".join(lines)


if __name__ == "__main__":
    main()
