"""Per-token decode time against context length: global-only vs 5:1 local:global vs Griffin (RRL).

The RecurrentGemma report ("Inference Speed Benchmarks", Fig. 1) shows sampling throughput that stays
flat with length for a bounded state and falls for a growing KV cache; Gemma 3 section 5.2 makes the
same argument for memory. This script measures it on CPU for the small presets.

Method: a cache of ``max_len = ctx + steps`` is filled as if ``ctx`` tokens had been processed
(random K/V, the slot positions a real prefill writes, ``pos = ctx``; recurrent states random). The
step's work does not depend on the values, so this times exactly what decoding at that context costs
without paying an O(ctx * max_len) prefill. Then ``--steps`` jitted single-token steps are timed
after a warm-up; the fastest step is reported (the machine is shared: the median mostly measures
other processes). Prefill is never timed. The cache is not donated: on CPU XLA, donating it made the
global-only step slower still (measured 51 vs 31 ms at 32K), while the sampler's ``while_loop``
updates it in place anyway.

    python -m experiments.bench_decode [--contexts 1024,2048,...] [--steps 20] [--out figures]
"""

import argparse
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import arch
from arch.attention import KVCache
from arch.rglru import ConvState

PRESETS = ("small_global", "small_gemma3", "small_recurrentgemma")
CONTEXTS = (1024, 2048, 4096, 8192, 16384, 32768)


def filled_cache(cfg: arch.ModelConfig, ctx: int, max_len: int, *, seed: int = 0) -> arch.Cache:
    """A cache in the state a prefill of ``ctx`` tokens leaves (values random, positions exact)."""
    cache = arch.init_cache(cfg, max_len, dtype=jnp.float32)
    key = jax.random.key(seed)
    layers = []
    for layer in cache.layers:
        key, k1, k2 = jax.random.split(key, 3)
        if isinstance(layer, KVCache):
            size = layer.pos.shape[0]
            slots = np.arange(size)
            if size == max_len:  # global: slot = position
                pos = np.where(slots < ctx, slots, -1)
            else:  # ring: slot s holds the newest position p < ctx with p % size == s
                pos = slots + size * ((ctx - 1 - slots) // size)
                pos = np.where(pos >= 0, pos, -1)
            layers.append(KVCache(k=0.1 * jax.random.normal(k1, layer.k.shape),
                                  v=jax.random.normal(k2, layer.v.shape), pos=jnp.asarray(pos, jnp.int32)))
        elif isinstance(layer, ConvState):
            layers.append(ConvState(conv=jax.random.normal(k1, layer.conv.shape),
                                    h=0.1 * jax.random.normal(k2, layer.h.shape)))
        else:
            raise TypeError(type(layer).__name__)
    return arch.Cache(layers=tuple(layers), pos=jnp.int32(ctx))


@eqx.filter_jit
def _step(model, token, cache):
    logits, cache = model.step(token, cache)
    return jnp.argmax(logits[-1]).astype(jnp.int32)[None], cache


def time_decode(model: arch.LM, ctx: int, steps: int, warmup: int = 3) -> float:
    """Fastest of ``steps`` timed single-token steps at context ``ctx`` (seconds)."""
    cache = filled_cache(model.cfg, ctx, ctx + steps + warmup)
    token = jnp.zeros((1,), jnp.int32)
    for _ in range(warmup):
        token, cache = _step(model, token, cache)
    jax.block_until_ready(token)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        token, cache = _step(model, token, cache)
        jax.block_until_ready(token)
        times.append(time.perf_counter() - t0)
    return min(times)


def plot(results: dict[str, list[float]], contexts, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, secs in results.items():
        cfg = arch.preset(name)
        ax.plot(contexts, [1e3 * s for s in secs], marker="o",
                label=f"{name} ({cfg.pattern}, window {cfg.window})")
    ax.set_xscale("log", base=2)
    ax.set_xticks(contexts, [f"{c // 1024}K" for c in contexts])
    ax.set_xlabel("context length already in the cache (tokens)")
    ax.set_ylabel("decode time per token (ms, best of steps)")
    ax.set_title(f"Single-token decode on {jax.devices()[0].platform.upper()}, batch 1, float32")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", default=",".join(PRESETS))
    p.add_argument("--contexts", default=",".join(map(str, CONTEXTS)))
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--out", type=Path, default=Path("figures"))
    args = p.parse_args(argv)
    presets = args.presets.split(",")
    contexts = [int(c) for c in args.contexts.split(",")]
    results = {}
    for name in presets:
        model = arch.LM(arch.preset(name), key=jax.random.key(0))
        results[name] = [time_decode(model, c, args.steps) for c in contexts]
        print(f"  {name}: done", flush=True)

    head = f"{'preset':<22}{'pattern':<8}" + "".join(f"{str(c // 1024) + 'K':>9}" for c in contexts)
    head += f"{'ratio ' + str(contexts[-1] // 1024) + 'K/' + str(contexts[0] // 1024) + 'K':>14}"
    print(f"\nms per decoded token (best of {args.steps}), {jax.devices()[0].device_kind}")
    print(head + "\n" + "-" * len(head))
    for name, secs in results.items():
        row = f"{name:<22}{arch.preset(name).pattern:<8}" + "".join(f"{1e3 * s:>9.3f}" for s in secs)
        print(row + f"{secs[-1] / secs[0]:>14.2f}")
    args.out.mkdir(parents=True, exist_ok=True)
    plot(results, contexts, args.out / "decode_time.png")
    print(f"\nwrote {args.out / 'decode_time.png'}")


if __name__ == "__main__":
    main()
