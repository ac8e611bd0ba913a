"""Per-token decode time against context length: global-only vs 5:1 local:global vs Griffin (RRL).

The RecurrentGemma report ("Inference Speed Benchmarks", Fig. 1) shows sampling throughput that stays
flat with length for a bounded state and falls for a growing KV cache; Gemma 3 section 5.2 makes the
same argument for memory. This script measures it for one sequence (batch 1) on whatever JAX runs on.

Model sets:

- ``published`` (the default; 2 minutes on a 2-core CPU, 10 GB of memory; writes
  ``figures/decode_time.png``, the README's figure): Gemma 3 1B (26 layers, 5:1,
  window 512, 1 KV head x 256), the same model with every layer global (``pattern="G"``, the
  global-only baseline) and RecurrentGemma 2B (RRL, window 2048), at their published shapes with
  random weights, bf16 weights and cache.
- ``small`` (half a minute): ``small_global``, ``small_gemma3``, ``small_recurrentgemma`` (width
  256, 6 layers), written to ``figures/decode_time_small.png``.
- or a comma list of ``preset[:pattern]`` (``figures/decode_time_custom.png``).

A decode step reads every weight once plus every global layer's whole cache; local rings and
recurrent states are fixed in size. So the 32K/1K ratio of a 5:1 model is roughly
1 + (global-layer cache bytes at 32K) / (weight bytes), which the table prints: small at the
published shapes (Gemma 3 1B: 4 global layers x 32K x 1 KiB = 0.13 GB against 2.0 GB of weights),
large for the small presets (their one global layer holds 8 MB at 32K against 16 MB of weights).

Method: the cache is ``arch.cache.filled_cache`` (exactly the slots and positions a prefill of
``ctx`` tokens leaves, random values, ``pos = ctx``), so no O(ctx^2) prefill is paid; the step's
work does not depend on the values. Each context is compiled and warmed up, then the contexts are
timed in interleaved rounds of one jitted single-token ``model.step`` each (argmax of the logits
included), and the fastest step per context is reported, in wall-clock time and in this process's
CPU time (the figure plots the latter; the weight products run on both cores through
:func:`gemma_kernels.matvec`, so CPU time exceeds wall-clock time): the machine may be shared, and
the median mostly measures other processes. The cache is donated to the step, as the sampling loop
carries it: the new token's key and value are written in place (:func:`gemma_kernels.set_rows`), so
a step reads a global layer's cache once, for attention, and copies none of it. XLA's CPU compiler is
told to use its memory-optimised scheduler (``CPU_FLAGS``), which here both saves memory and runs
the step about twice as fast.

Against the bandwidth floor and the peer (``--speed``, issue-style table; 6 minutes): a step must
read every weight and the cache once, so its floor is bytes read / read bandwidth, the bandwidth
measured in the same run (:func:`read_bandwidth`). ``--formats`` times the weights as stored in other
formats too (``int8``, ``int4``: served from their codes, :func:`arch.decode.decodable`; the cache
stays bf16), and ``--peer`` times transformers (torch, bf16, ``sdpa`` and ``eager``) on the same
shapes in its own process (:mod:`experiments.bench.decode_torch`). The table (ms per token, bytes
read, GB/s, times the floor, transformers' best, our speed-up over it) is written to
``figures/decode_speed.csv`` (``--update-figures``) and printed by
``python -m experiments.sweeps.collect figures/decode_speed.csv``.

    python -m experiments.bench.decode [--presets published|small|NAME[:PATTERN],...]
        [--contexts 1024,2048,...] [--rounds 8] [--dtype bfloat16|float32] [--out figures]
        [--formats bfloat16,int8,int4] [--peer] [--speed] [--update-figures] [--json FILE]

``--json`` also writes the timings (seconds per token, wall-clock and CPU, per model and context),
the device and the memory figures: the device check (``scripts/device_check.sh``) reads it.
"""

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import pandas as pd

import arch
import arch.decode
import arch.quant as quant
from arch import memory
from arch.cache import filled_cache, random_fill
from arch.hf_layouts import config_to_hf
from arch.params import abstract_model

MODEL_SETS = {
    "published": ("gemma3_1b", "gemma3_1b:G", "recurrentgemma_2b"),
    "small": ("small_global", "small_gemma3", "small_recurrentgemma"),
    "speed": ("gemma3_1b", "recurrentgemma_2b"),  # --speed: the bandwidth and peer table
}
SPEED = dict(presets="speed", contexts="1024,32768", formats="bfloat16,int8,int4")
PEER_IMPLS = ("sdpa", "eager")
CONTEXTS = (1024, 2048, 4096, 8192, 16384, 32768)
DTYPES = {"bfloat16": jnp.bfloat16, "float32": jnp.float32}
# XLA's CPU compiler widens bf16 weights to f32 temporaries for its matrix-vector products, and its
# default scheduler keeps all of them alive at once (11 GB of temporaries for RecurrentGemma 2B);
# the memory-optimised scheduler frees each after use (3.9 GB). Set before JAX starts its backend.
CPU_FLAGS = "--xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"


def model_config(spec: str, dtype: str = "bfloat16") -> arch.ModelConfig:
    """``"preset"`` or ``"preset:PATTERN"``; matmuls in ``dtype`` so weights are read as stored."""
    name, _, pattern = spec.partition(":")
    overrides = {"pattern": pattern} if pattern else {}
    return arch.preset(name, matmul_dtype=dtype, **overrides)


def random_model(cfg: arch.ModelConfig, dtype=jnp.bfloat16, *, seed: int = 0) -> arch.LM:
    """An ``LM`` with random weights built directly in ``dtype`` (no float32 copy of a 2B model):
    matrices Normal(0, 1/fan_in) (a tiled pool, :func:`arch.cache.random_fill`), vectors zero."""
    leaves, treedef = jax.tree_util.tree_flatten(abstract_model(cfg))
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    out = []
    for key, leaf in zip(keys, leaves):
        if isinstance(leaf, jax.ShapeDtypeStruct) and jnp.issubdtype(leaf.dtype, jnp.floating):
            if len(leaf.shape) >= 2:
                leaf = random_fill(key, shape=leaf.shape, dtype=dtype, scale=leaf.shape[-1] ** -0.5)
            else:
                leaf = jnp.zeros(leaf.shape, dtype)
        out.append(leaf)
    return jax.tree_util.tree_unflatten(treedef, out)


def served_model(cfg: arch.ModelConfig, fmt: str, *, seed: int = 0) -> arch.LM:
    """Random weights as served in ``fmt``: a float dtype, or a packed format read from its codes
    (:func:`arch.decode.decodable`, every other array bf16)."""
    if fmt in DTYPES:
        return random_model(cfg, DTYPES[fmt], seed=seed)
    packed = quant.pack_model(random_model(cfg, jnp.bfloat16, seed=seed), fmt, cfg.quant_targets)
    return arch.decode.decodable(packed)


def read_bandwidth(nbytes: int = 1 << 30, rounds: int = 5) -> float:
    """Bytes per second of the fastest whole read of a bf16 array larger than any cache (its sum, which
    XLA runs on every core): the floor's denominator, measured in the same process and run."""
    a = jnp.ones((nbytes // 2,), jnp.bfloat16)
    total = jax.jit(lambda a: a.astype(jnp.float32).sum())
    jax.block_until_ready(total(a))
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        jax.block_until_ready(total(a))
        best = min(best, time.perf_counter() - t0)
    del a
    return nbytes / best


def peer_times(specs, contexts, rounds: int) -> dict:
    """transformers' fastest step per model, attention implementation and context (bf16), timed by
    :mod:`experiments.bench.decode_torch` in its own process, run from outside the repository."""
    request = dict(contexts=list(contexts), rounds=rounds, impls=list(PEER_IMPLS),
                   models=[dict(label=spec, dtype="bfloat16", hf_config=config_to_hf(model_config(spec)))
                           for spec in specs])
    script = Path(__file__).with_name("decode_torch.py")
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run([sys.executable, str(script)], input=json.dumps(request), cwd=tmp,
                              capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"experiments.bench.decode_torch failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout)


def speed_rows(timings: dict, peer: dict | None, contexts, bandwidth: float) -> list[dict]:
    """One row per model, format and context: ms per token (wall-clock, fastest step), bytes read
    (weights as stored + the whole cache at that context), GB/s, times the floor (bytes / bandwidth)
    and, for bf16, transformers' best implementation and our speed-up over it."""
    rows = []
    for (spec, fmt), t in timings.items():
        for i, ctx in enumerate(contexts):
            secs, read = t["wall_s"][i], t["weight_bytes"] + t["cache_bytes"][i]
            row = dict(label=f"{spec} {fmt}", context=ctx, ms_per_token=1e3 * secs, read_gb=read / 1e9,
                       gb_per_s=read / secs / 1e9, x_floor=secs / (read / bandwidth))
            if peer is not None and fmt == "bfloat16":
                best = min(peer["models"][spec][impl]["wall_s"][i] for impl in PEER_IMPLS)
                row.update(transformers_ms=1e3 * best, speedup=best / secs)
            rows.append(row)
    return rows


@eqx.filter_jit(donate="all-except-first")
def _step(model, token, cache):
    logits, cache = model.step(token, cache)
    return jnp.argmax(logits[-1]).astype(jnp.int32)[None], cache


def time_contexts(model: arch.LM, contexts, *, rounds: int, dtype, warmup: int = 2
                  ) -> tuple[list[float], list[float]]:
    """Fastest single-token step at each context, contexts interleaved round by round: wall-clock
    seconds and this process's CPU seconds (the latter does not count time spent waiting for a core
    that another process holds)."""
    state = {}
    for ctx in contexts:
        cache = filled_cache(model.cfg, ctx, ctx + warmup + rounds + 1, dtype=dtype)
        token = jnp.zeros((1,), jnp.int32)
        for _ in range(warmup):  # the first call compiles
            token, cache = _step(model, token, cache)
        state[ctx] = (jax.block_until_ready(token), cache)
    wall = {ctx: float("inf") for ctx in contexts}
    cpu = dict(wall)
    for r in range(rounds):
        order = contexts[r % len(contexts):] + contexts[: r % len(contexts)]  # rotate the order
        for ctx in order:
            token, cache = state.pop(ctx)
            t0, c0 = time.perf_counter(), time.process_time()
            token, cache = _step(model, token, cache)
            jax.block_until_ready(token)
            wall[ctx] = min(wall[ctx], time.perf_counter() - t0)
            cpu[ctx] = min(cpu[ctx], time.process_time() - c0)
            state[ctx] = (token, cache)
    return [wall[c] for c in contexts], [cpu[c] for c in contexts]


def _gb(x: float) -> str:
    return f"{x / 1e9:.3f}"


def plot(results: dict[str, list[float]], contexts, path: Path, title: str, info: dict) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, secs in results.items():
        ax.plot(contexts, [1e3 * s for s in secs], marker="o",
                label=f"{label} ({info[label]['pattern']}): {secs[-1] / secs[0]:.2f}x at "
                      f"{contexts[-1] // 1024}K")
    ax.set_xscale("log", base=2)
    ax.set_xticks(contexts, [f"{c // 1024}K" for c in contexts])
    ax.set_xlabel("context length already in the cache (tokens)")
    ax.set_ylabel("CPU time per decoded token (ms, fastest step)")
    ax.set_title(title, fontsize=10)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", default=None,
                   help="'published' (the default), 'small', 'speed', or a comma list of preset[:pattern]")
    p.add_argument("--contexts", default=None, help=f"comma list (default {','.join(map(str, CONTEXTS))})")
    p.add_argument("--rounds", type=int, default=8, help="timed steps per context (fastest kept)")
    p.add_argument("--dtype", default="bfloat16", choices=tuple(DTYPES), help="float weights and cache")
    p.add_argument("--formats", default=None,
                   help=f"comma list of weight formats to time: {tuple(DTYPES)} or {quant.FORMATS} "
                        "(default: --dtype)")
    p.add_argument("--peer", action="store_true", help="time transformers on the same shapes (bf16)")
    p.add_argument("--speed", action="store_true",
                   help=f"the bandwidth and peer table: {SPEED} and --peer unless given otherwise")
    p.add_argument("--update-figures", action="store_true",
                   help="with --speed: write the table to OUT/decode_speed.csv")
    p.add_argument("--out", type=Path, default=Path("figures"))
    p.add_argument("--json", type=Path, default=None, help="also write the timings here as JSON")
    args = p.parse_args(argv)
    if args.speed:
        args.presets = args.presets or SPEED["presets"]
        args.contexts = args.contexts or SPEED["contexts"]
        args.formats = args.formats or SPEED["formats"]
        args.peer = True
    args.presets = args.presets or "published"
    if "xla_cpu_scheduler_type" not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {CPU_FLAGS}".strip()
    specs = MODEL_SETS.get(args.presets, args.presets.split(","))
    contexts = [int(c) for c in (args.contexts or ",".join(map(str, CONTEXTS))).split(",")]
    formats = (args.formats or args.dtype).split(",")
    for fmt in formats:
        if fmt not in DTYPES and fmt not in quant.FORMATS:
            p.error(f"--formats: {fmt!r} is not one of {(*DTYPES, *quant.FORMATS)}")
    cache_dtype = DTYPES[args.dtype]
    bandwidth = read_bandwidth()
    print(f"read bandwidth (sum of a 1 GiB bf16 array, fastest of 5): {bandwidth / 1e9:.1f} GB/s", flush=True)
    timings, info = {}, {}
    for spec in specs:
        cfg = model_config(spec, args.dtype)
        label = spec.replace(":", " pattern=")
        info[label] = dict(pattern=cfg.pattern, weights=memory.weights_bytes(cfg, args.dtype),
                           global_cache=memory.cache_breakdown(cfg, contexts[-1], dtype=args.dtype)["global"])
        for fmt in formats:
            t0 = time.perf_counter()
            model = served_model(cfg, fmt)
            wall, cpu = time_contexts(model, contexts, rounds=args.rounds, dtype=cache_dtype)
            timings[spec, fmt] = dict(
                wall_s=wall, cpu_s=cpu, weight_bytes=quant.packed_bytes(model),
                cache_bytes=[memory.cache_bytes(cfg, c, dtype=args.dtype) for c in contexts])
            print(f"  {label} {fmt}: {time.perf_counter() - t0:.0f} s", flush=True)
            del model
            gc.collect()
    peer = peer_times(specs, contexts, args.rounds) if args.peer else None

    device = jax.devices()[0].device_kind
    last, first = f"{contexts[-1] // 1024}K", f"{contexts[0] // 1024}K"
    head = f"{'model':<28}{'pattern':<8}{'format':<14}"
    head += "".join(f"{str(c // 1024) + 'K':>9}" for c in contexts)
    head += f"{'ratio ' + last + '/' + first:>13}"
    for title, key in (("wall-clock", "wall_s"), ("CPU time of this process", "cpu_s")):
        print(f"\nms per decoded token, fastest of {args.rounds} ({title}), batch 1, {args.dtype} cache, "
              f"{device}")
        print(head + "\n" + "-" * len(head))
        for (spec, fmt), t in timings.items():
            secs, label = t[key], spec.replace(":", " pattern=")
            row = f"{label:<28}{info[label]['pattern']:<8}{fmt:<14}"
            row += "".join(f"{1e3 * x:>9.1f}" for x in secs)
            print(row + f"{secs[-1] / secs[0]:>13.2f}")
    print(f"\n{'model':<28}{'weights GB':>11}{'global KV ' + last + ' GB':>17}{'KV/weights':>12}")
    for label, i in info.items():
        print(f"{label:<28}{_gb(i['weights']):>11}{_gb(i['global_cache']):>17}"
              f"{i['global_cache'] / i['weights']:>12.2f}")
    speed = pd.DataFrame(speed_rows(timings, peer, contexts, bandwidth))
    print(f"\nAgainst the floor (bytes read / {bandwidth / 1e9:.1f} GB/s)"
          + (" and transformers (best of sdpa and eager, bf16, same shapes, own process)" if peer else ""))
    print(speed.to_string(index=False, float_format="{:.2f}".format))
    if args.speed and args.update_figures:
        args.out.mkdir(parents=True, exist_ok=True)
        speed.round(3).to_csv(args.out / "decode_speed.csv", index=False)
        print(f"wrote {args.out / 'decode_speed.csv'}")
    if not args.speed:
        args.out.mkdir(parents=True, exist_ok=True)
        title = f"Single-token decode, batch 1, {formats[0]}, random weights ({device})"
        path = args.out / ("decode_time.png" if args.presets == "published" else
                           f"decode_time_{args.presets if args.presets in MODEL_SETS else 'custom'}.png")
        cpu = {spec.replace(":", " pattern="): t["cpu_s"] for (spec, fmt), t in timings.items()
               if fmt == formats[0]}
        plot(cpu, contexts, path, title, info)  # CPU time: robust to other processes taking the cores
        print(f"\nwrote {path}")
    if args.json is not None:
        models = {f"{spec.replace(':', ' pattern=')} {fmt}": dict(info[spec.replace(":", " pattern=")], **t)
                  for (spec, fmt), t in timings.items()}
        record = dict(device=device, backend=jax.default_backend(), jax=jax.__version__, dtype=args.dtype,
                      rounds=args.rounds, contexts=contexts, read_bandwidth=bandwidth, models=models,
                      peer=peer)
        args.json.write_text(json.dumps(record, indent=1))
        print(f"wrote {args.json}")

if __name__ == "__main__":
    main()
