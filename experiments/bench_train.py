"""Train-step throughput and MFU of our models, optionally against Hugging Face transformers on torch.

``python -m experiments.bench_train [--preset P ...] [--vs-hf]`` times one full AdamW train step
(forward, backward, update) at B=8, T=512 for the small Gemma 3 (LLLLLG), Gemma 2 (LG, soft-caps) and
RecurrentGemma (RRL) presets: vocab 8192, width 256, 6 layers, 4 heads, 1 KV head, head_dim 64, MLP
1024, window 128. Ours runs in f32 and with bf16 matmul inputs (f32 accumulation). With ``--vs-hf``
the same configs (``arch.hf_layouts.config_to_hf``) are built as ``*ForCausalLM`` in torch on CPU and
timed in this process with torch AdamW, f32 and bf16 autocast, eager and sdpa attention; the table
reports each family's ratio of our best to HF's best. MFU is model FLOPs
(:func:`experiments.flops.flops_per_token`) over the matmul peak measured here for the dtype.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import arch
from experiments.flops import flops_per_token, measure_matmul_peak
from experiments.runconfig import RunConfig
from experiments.train import init_params, make_train_step

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


def time_ours(run: RunConfig, steps: int = 5, warmup: int = 2) -> dict:
    """Seconds per train step (median of ``steps`` after ``warmup``) of the jitted step of train.py."""
    cfg = run.model_config()
    params, static = init_params(cfg, 0)
    opt = run.optimizer()
    state = opt.init(params)
    step_fn = make_train_step(static, opt, run)
    toks = _batch(cfg.vocab_size, run.batch, run.seq_len)
    batch = jax.device_put({"inputs": toks[:, :-1], "targets": toks[:, 1:],
                           "segment_ids": np.zeros(toks[:, 1:].shape, np.int32)})
    t0 = time.perf_counter()
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        params, state, m = step_fn(params, state, batch, jnp.asarray(i, jnp.int32))
        jax.block_until_ready(m["loss"])
        times.append(time.perf_counter() - start)
        if i == 0:
            compile_s = time.perf_counter() - t0
    return {"step_s": statistics.median(times[warmup:]), "compile_s": compile_s,
            "loss": float(m["loss"])}


def hf_model(cfg: arch.ModelConfig, attn: str):
    """The transformers ``*ForCausalLM`` with the same config, randomly initialised, f32."""
    import transformers

    from arch.hf_layouts import config_to_hf

    hf = config_to_hf(cfg)
    model_type, arch_name = hf.pop("model_type"), hf.pop("architectures")[0]
    hf_cfg = transformers.AutoConfig.for_model(model_type, **hf, max_position_embeddings=8192)
    model = getattr(transformers, arch_name)._from_config(hf_cfg, attn_implementation=attn)
    return model.float().train()


def time_hf(cfg: arch.ModelConfig, batch: int, seq_len: int, dtype: str, attn: str,
            steps: int = 5, warmup: int = 2) -> dict:
    import contextlib

    import torch

    torch.manual_seed(0)
    model = hf_model(cfg, attn)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)
    toks = torch.from_numpy(_batch(cfg.vocab_size, batch, seq_len).astype(np.int64))
    inputs, labels = toks[:, :-1].contiguous(), toks[:, 1:].contiguous()
    ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if dtype == "bfloat16" else \
        contextlib.nullcontext
    times = []
    for _ in range(warmup + steps):
        start = time.perf_counter()
        with ctx():
            logits = model(input_ids=inputs).logits
        loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]),
                                                 labels.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return {"step_s": statistics.median(times[warmup:]), "loss": float(loss)}


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(prog="python -m experiments.bench_train", description=__doc__.split("\n")[0])
    p.add_argument("--preset", action="append", help="a preset (default: the three small families)")
    p.add_argument("--vs-hf", action="store_true", help="also time Hugging Face transformers (torch CPU)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--dtype", action="append", choices=("float32", "bfloat16"))
    a = p.parse_args(argv)
    presets = a.preset or list(FAMILIES.values())
    dtypes = a.dtype or ["float32", "bfloat16"]
    if a.vs_hf:
        import torch

        torch.set_num_threads(os.cpu_count() or 1)
    tokens = a.batch * a.seq
    rows = []

    def add(preset, impl, dtype, res, cfg):
        tok_s = tokens / res["step_s"]
        mfu = tok_s * flops_per_token(cfg, a.seq) / measure_matmul_peak(dtype)
        rows.append(dict(preset=preset, impl=impl, dtype=dtype, step_ms=1e3 * res["step_s"],
                         tokens_per_s=tok_s, mfu=mfu, loss=res["loss"]))
        print(f"  {preset:<22}{impl:<12}{dtype:<10}{1e3 * res['step_s']:>9.0f} ms{tok_s:>10,.0f} tok/s"
              f"{100 * mfu:>7.1f}% MFU", flush=True)

    print(f"device: {jax.devices()[0].device_kind}, {os.cpu_count()} cores; B={a.batch} T={a.seq}; "
          f"matmul peak f32 {measure_matmul_peak('float32') / 1e9:.0f} GFLOP/s, "
          f"bf16 {measure_matmul_peak('bfloat16') / 1e9:.0f} GFLOP/s", flush=True)
    for preset in presets:
        for dtype in dtypes:
            run = bench_run(preset, dtype, a.batch, a.seq)
            add(preset, "ours", dtype, time_ours(run, a.steps), run.model_config())
        if a.vs_hf:
            cfg = bench_run(preset, "float32", a.batch, a.seq).model_config()
            for dtype in dtypes:
                for attn in ("eager", "sdpa"):
                    try:
                        res = time_hf(cfg, a.batch, a.seq, dtype, attn, a.steps)
                    except (ValueError, NotImplementedError, RuntimeError) as e:  # e.g. sdpa unsupported
                        print(f"  {preset:<22}hf-{attn:<9}{dtype:<10} skipped: {str(e)[:80]}", flush=True)
                        continue
                    add(preset, f"hf-{attn}", dtype, res, cfg)
    print(table(rows))
    return rows


def table(rows: list[dict]) -> str:
    """One line per preset: our best and HF's best tokens/s and MFU, and their ratio."""
    lines = [f"{'preset':<22}{'ours best':>22}{'tok/s':>9}{'MFU':>7}{'HF best':>22}{'tok/s':>9}{'MFU':>7}"
             f"{'ours/HF':>9}"]
    for preset in dict.fromkeys(r["preset"] for r in rows):
        mine = [r for r in rows if r["preset"] == preset and r["impl"] == "ours"]
        hf = [r for r in rows if r["preset"] == preset and r["impl"] != "ours"]
        best = max(mine, key=lambda r: r["tokens_per_s"])
        line = (f"{preset:<22}{best['dtype']:>22}{best['tokens_per_s']:>9,.0f}{100 * best['mfu']:>6.1f}%")
        if hf:
            h = max(hf, key=lambda r: r["tokens_per_s"])
            line += (f"{h['impl'] + ' ' + h['dtype']:>22}{h['tokens_per_s']:>9,.0f}{100 * h['mfu']:>6.1f}%"
                     f"{best['tokens_per_s'] / h['tokens_per_s']:>8.2f}x")
        lines.append(line)
    return "\n".join(lines)


if __name__ == "__main__":
    main()
