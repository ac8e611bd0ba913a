"""How the plain-JAX attention scales with sequence length: local layers must grow linearly.

    python -m gemma_kernels.bench_scaling [--window 128] [--lengths 1024 8192] [--heads 4 --kv-heads 1]

Times the jitted forward of ``gemma_kernels.attention(impl="xla")`` for a local (sliding-window) layer and
a global causal layer at each length and prints each time relative to the shortest length, measured
in the same run. Linear growth gives a ratio near t_max / t_min (8x for 1024 -> 8192); quadratic
growth gives its square (64x).
"""

import argparse
import time

import jax

from gemma_kernels import attention


def time_forward(t: int, window: int | None, heads: int, kv_heads: int, head_dim: int, repeats: int) -> float:
    keys = jax.random.split(jax.random.key(0), 3)
    q = jax.random.normal(keys[0], (t, heads, head_dim))
    k = jax.random.normal(keys[1], (t, kv_heads, head_dim))
    v = jax.random.normal(keys[2], (t, kv_heads, head_dim))
    fn = jax.jit(lambda q, k, v: attention(q, k, v, window=window, impl="xla"))
    fn(q, k, v).block_until_ready()  # compile
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn(q, k, v).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--window", type=int, default=128)
    p.add_argument("--lengths", type=int, nargs="+", default=[1024, 8192])
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=1)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    shape = (args.heads, args.kv_heads, args.head_dim, args.repeats)
    print(f"device: {jax.devices()[0].device_kind}; heads {args.heads}, kv heads {args.kv_heads}, "
          f"head_dim {args.head_dim}, window {args.window}")
    print(f"{'t':>7} {'local ms':>10} {'global ms':>10} {'local x':>8} {'global x':>9}")
    base = None
    for t in args.lengths:
        local, full = time_forward(t, args.window, *shape), time_forward(t, None, *shape)
        base = base or (local, full)
        times = f"{local * 1e3:>10.2f} {full * 1e3:>10.2f}"
        print(f"{t:>7} {times} {local / base[0]:>8.1f} {full / base[1]:>9.1f}")
    ratio = args.lengths[-1] / args.lengths[0]
    print(f"length ratio {ratio:.0f}x: linear growth ~{ratio:.0f}x, quadratic ~{ratio**2:.0f}x")


if __name__ == "__main__":
    main()
