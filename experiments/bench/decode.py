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
CPU time (the figure plots the latter; on an idle machine they agree, as the step runs on one
core): the machine may be shared, and the median mostly measures other processes. The cache is
not donated: on CPU XLA a bf16 dynamic-update-slice is not done in place (it is widened to f32),
and with donation XLA adds a copy back into the donated buffer, so the step without donation (one
fused copy of the cache with the new token written) is the fastest there is. XLA's CPU compiler is
told to use its memory-optimised scheduler (``CPU_FLAGS``), which here both saves memory and runs
the step about twice as fast.

    python -m experiments.bench.decode [--presets published|small|NAME[:PATTERN],...]
        [--contexts 1024,2048,...] [--rounds 8] [--dtype bfloat16|float32] [--out figures]
        [--json FILE]

``--json`` also writes the timings (seconds per token, wall-clock and CPU, per model and context),
the device and the memory figures: the device check (``scripts/device_check.sh``) reads it.
"""

import argparse
import gc
import json
import os
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt

import arch
from arch import memory
from arch.cache import filled_cache, random_fill
from arch.params import abstract_model

MODEL_SETS = {
    "published": ("gemma3_1b", "gemma3_1b:G", "recurrentgemma_2b"),
    "small": ("small_global", "small_gemma3", "small_recurrentgemma"),
}
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


@eqx.filter_jit
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
    p.add_argument("--presets", default="published",
                   help="'published', 'small', or a comma list of preset[:pattern]")
    p.add_argument("--contexts", default=",".join(map(str, CONTEXTS)))
    p.add_argument("--rounds", type=int, default=8, help="timed steps per context (fastest kept)")
    p.add_argument("--dtype", default="bfloat16", choices=tuple(DTYPES), help="weights and cache")
    p.add_argument("--out", type=Path, default=Path("figures"))
    p.add_argument("--json", type=Path, default=None, help="also write the timings here as JSON")
    args = p.parse_args(argv)
    if "xla_cpu_scheduler_type" not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {CPU_FLAGS}".strip()
    specs = MODEL_SETS.get(args.presets, args.presets.split(","))
    contexts = [int(c) for c in args.contexts.split(",")]
    dtype = DTYPES[args.dtype]
    results, cpu, info = {}, {}, {}
    for spec in specs:
        cfg = model_config(spec, args.dtype)
        label = spec.replace(":", " pattern=")
        t0 = time.perf_counter()
        model = random_model(cfg, dtype)
        results[label], cpu[label] = time_contexts(model, contexts, rounds=args.rounds, dtype=dtype)
        weights = memory.weights_bytes(cfg, args.dtype)
        kv = memory.cache_breakdown(cfg, contexts[-1], dtype=args.dtype)
        info[label] = dict(pattern=cfg.pattern, weights=weights, global_cache=kv["global"])
        print(f"  {label}: {time.perf_counter() - t0:.0f} s", flush=True)
        del model
        gc.collect()

    device = jax.devices()[0].device_kind
    last, first = f"{contexts[-1] // 1024}K", f"{contexts[0] // 1024}K"
    head = f"{'model':<28}{'pattern':<8}" + "".join(f"{str(c // 1024) + 'K':>9}" for c in contexts)
    head += f"{'ratio ' + last + '/' + first:>13}"
    for title, table in (("wall-clock", results), ("CPU time of this process", cpu)):
        print(f"\nms per decoded token, fastest of {args.rounds} ({title}), batch 1, {args.dtype} weights "
              f"and cache, {device}")
        print(head + "\n" + "-" * len(head))
        for label, secs in table.items():
            row = f"{label:<28}{info[label]['pattern']:<8}" + "".join(f"{1e3 * s:>9.1f}" for s in secs)
            print(row + f"{secs[-1] / secs[0]:>13.2f}")
    print(f"\n{'model':<28}{'weights GB':>11}{'global KV ' + last + ' GB':>17}{'KV/weights':>12}")
    for label, i in info.items():
        print(f"{label:<28}{_gb(i['weights']):>11}{_gb(i['global_cache']):>17}"
              f"{i['global_cache'] / i['weights']:>12.2f}")
    args.out.mkdir(parents=True, exist_ok=True)
    title = f"Single-token decode, batch 1, {args.dtype}, random weights ({device})"
    path = args.out / ("decode_time.png" if args.presets == "published" else
                       f"decode_time_{args.presets if args.presets in MODEL_SETS else 'custom'}.png")
    plot(cpu, contexts, path, title, info)  # CPU time: robust to other processes taking the cores
    print(f"\nwrote {path}")
    if args.json is not None:
        models = {label: dict(info[label], wall_s=results[label], cpu_s=cpu[label]) for label in results}
        record = dict(device=device, backend=jax.default_backend(), jax=jax.__version__, dtype=args.dtype,
                      rounds=args.rounds, contexts=contexts, models=models)
        args.json.write_text(json.dumps(record, indent=1))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
