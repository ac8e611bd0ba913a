"""Times every attention and scan implementation against baselines measured in the same run.

    python -m gemma_kernels.bench [--device cpu|gpu|tpu] [--quick] [--out FILE.json]

For each shape, every implementation is timed forward and forward+backward (one ``jax.vjp`` call:
forward, then the pullback of a random cotangent), jitted, after a warm-up. Attention reports
achieved TFLOP/s over the *visible* (q, k) pairs only: ``4 e`` flops per pair forward and 2.5x that
backward (FlashAttention-2's accounting), so masked or skipped work earns nothing. The scan reports
GB/s over the arrays it must touch (forward: read a, x, write y; backward: read a, y, dy, write dx,
da) next to a plain ``x + 0`` copy timed on the same device. Ratios are ``baseline ms / impl ms``
(above 1: faster than the baseline). The GPU shapes are the targets in ``kernels/BENCHMARKS.md``.

Peers measured in the same run: ``jax.nn.dot_product_attention`` (cuDNN on GPU, XLA on CPU),
``jax.lax.associative_scan`` for the scan, and, when the optional ``tokamax`` library (DeepMind's
maintained Pallas kernels) is installed, its attention kernels (Triton and Mosaic GPU) wherever they
accept the case; a peer that is missing or declines the case (``NotImplementedError``) is left out and
named in the output, not counted as a failure.
"""

import argparse
import datetime
import importlib.metadata
import json
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

from gemma_kernels._platform import resolve_interpret
from gemma_kernels.attention import attention_reference
from gemma_kernels.attention.pallas import attention_pallas
from gemma_kernels.attention.xla import attention_xla
from gemma_kernels.scan import linear_scan_assoc, linear_scan_reference
from gemma_kernels.scan.pallas import linear_scan_pallas


@dataclass(frozen=True)
class AttnShape:
    name: str
    b: int
    t: int
    h: int
    kv: int
    e: int
    window: int | None
    dtype: str
    impls: tuple[str, ...]
    baselines: tuple[str, ...]


@dataclass(frozen=True)
class ScanShape:
    name: str
    b: int
    t: int
    r: int
    dtype: str
    impls: tuple[str, ...]
    baselines: tuple[str, ...]


@dataclass
class Row:
    shape: str
    impl: str
    pass_: str  # "fwd" or "fwd+bwd"
    ms: float | None = None
    rate: float | None = None  # TFLOP/s (attention) or GB/s (scan)
    unit: str = ""
    ratios: dict = field(default_factory=dict)
    error: str | None = None


# tokamax's implementation names, keyed by the row name. "xla_chunked" is its plain-JAX path: on CPU it
# checks the call (layout, window, GQA) that the GPU kernels receive.
TOKAMAX = {"tokamax_triton": "triton", "tokamax_mosaic": "mosaic", "tokamax_xla_chunked": "xla_chunked"}


class PeerUnavailable(Exception):
    """A peer that is not installed here (or fails to import): its rows are left out."""


def tokamax_module():
    """The optional ``tokamax`` package, or the reason it cannot be used (not installed, or its own
    imports fail on this jax)."""
    try:
        import tokamax  # optional: a peer only, never a dependency of the lab
        from absl import flags  # optional: tokamax's own dependency
    except Exception as err:  # ImportError, or an incompatible dependency failing at import
        return None, first_line(err)
    # tokamax reads its options as absl flags and, unparsed, parses sys.argv: this script's own
    # arguments (--device) are no absl flags. Its defaults are what we measure.
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
    return tokamax, None


def first_line(err: Exception, n: int = 100) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0][:n]}" if text else type(err).__name__


def shapes(device: str, quick: bool):
    """The GPU/TPU shapes of BENCHMARKS.md, or tiny CPU ones (Pallas there runs interpreted)."""
    peers = tuple(TOKAMAX)
    if device == "cpu":
        t = 256 if quick else 1024
        pallas = ("pallas",) if quick else ()  # the interpreter is for correctness, not speed
        impls = pallas + ("xla", "jaxnn_xla", "reference") + peers  # its kernels decline CPU: left out
        base = ("reference", "jaxnn_xla", "tokamax_xla_chunked")
        return [
            AttnShape("local", 1, t, 4, 1, 64, 32, "float32", impls, base),
            AttnShape("global_causal", 1, t, 4, 1, 64, None, "float32", impls, base),
        ], [ScanShape("scan", 2, 128 if quick else 2048, 64 if quick else 512, "float32",
                      pallas + ("xla", "assoc", "copy"), ("assoc", "xla", "copy"))]
    gpu_only = ("cudnn_causal", "cudnn_local") if device == "gpu" else ()
    kernels = peers[:2]  # Triton and Mosaic GPU (on TPU, Mosaic TPU)
    base = ("cudnn_causal",) if device == "gpu" else ()
    t_local, t_global = (8192, 2048) if quick else (32768, 8192)
    return [
        AttnShape(f"local_w1024_t{t_local}", 1, t_local, 8, 1, 128, 1024, "bfloat16",
                  ("pallas", "xla") + gpu_only + kernels, base + gpu_only[1:] + kernels + ("xla",)),
        AttnShape(f"global_causal_t{t_global}", 4, t_global, 8, 1, 128, None, "bfloat16",
                  ("pallas", "xla") + gpu_only[:1] + kernels, base + kernels + ("xla",)),
    ], [ScanShape(f"scan_b8_t{t_global}_r2560", 8, t_global, 2560, "bfloat16",
                  ("pallas", "xla", "assoc", "copy"), ("assoc", "copy"))]


def visible_pairs(t: int, window: int | None) -> int:
    """(q, k) pairs a causal layer computes: sum over i of min(i + 1, window)."""
    w = t if window is None else min(window, t)
    return w * (w + 1) // 2 + (t - w) * w


def attn_fn(impl: str, s: AttnShape) -> Callable:
    """A batched ``f(q, k, v)`` on ``[b, t, h, e]`` inputs."""
    opts = dict(window=s.window, causal=True)
    per_seq = {
        "pallas": lambda q, k, v: attention_pallas(q, k, v, interpret=resolve_interpret(None), **opts),
        "xla": lambda q, k, v: attention_xla(q, k, v, **opts),
        "reference": lambda q, k, v: attention_reference(q, k, v, **opts),
    }
    if impl in per_seq:
        return jax.vmap(per_seq[impl])
    local = None if s.window is None else (s.window - 1, 0)  # i - window < j <= i
    if impl in TOKAMAX:
        tokamax, why = tokamax_module()
        if tokamax is None:
            raise PeerUnavailable(f"tokamax not installed ({why})")
        return lambda q, k, v: tokamax.dot_product_attention(
            q, k, v, is_causal=True, local_window_size=local, implementation=TOKAMAX[impl])
    match impl:
        case "cudnn_causal":  # the dense baseline: full causal attention at the same length
            return lambda q, k, v: jax.nn.dot_product_attention(
                q, k, v, is_causal=True, implementation="cudnn")
        case "cudnn_local":
            return lambda q, k, v: jax.nn.dot_product_attention(
                q, k, v, is_causal=True, local_window_size=local, implementation="cudnn")
        case "jaxnn_xla":
            return lambda q, k, v: jax.nn.dot_product_attention(
                q, k, v, is_causal=True, local_window_size=local, implementation="xla")
    raise ValueError(impl)


def scan_fn(impl: str) -> Callable:
    """A batched ``f(a, x) -> y`` on ``[b, t, r]`` inputs."""
    one = {
        "pallas": lambda a, x: linear_scan_pallas(a, x, interpret=resolve_interpret(None))[0],
        "xla": lambda a, x: linear_scan_reference(a, x)[0],
        "assoc": lambda a, x: linear_scan_assoc(a, x)[0],
        "copy": lambda a, x: x + 0,  # the bandwidth ceiling: read x, write y
    }[impl]
    return jax.vmap(one)


def timed(fn: Callable, args, iters: int) -> float:
    """Median wall time in ms of a jitted call, after one compile-and-run."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def fwd_bwd(fn: Callable) -> Callable:
    def run(*args_and_ct):
        *args, ct = args_and_ct
        out, pullback = jax.vjp(fn, *args)
        return out, pullback(ct)

    return jax.jit(run)


def bench_attention(s: AttnShape, iters: int, omitted: dict[str, str]) -> list[Row]:
    dtype = jnp.dtype(s.dtype)
    ks = jax.random.split(jax.random.key(0), 4)
    q = jax.random.normal(ks[0], (s.b, s.t, s.h, s.e), dtype)
    k = jax.random.normal(ks[1], (s.b, s.t, s.kv, s.e), dtype)
    v = jax.random.normal(ks[2], (s.b, s.t, s.kv, s.e), dtype)
    ct = jax.random.normal(ks[3], q.shape, dtype)
    rows = []
    for impl in s.impls:
        # cudnn_causal computes every causal pair whatever the window: credit it with that work.
        pairs = visible_pairs(s.t, None if impl == "cudnn_causal" else s.window)
        fwd_flops = 4 * s.e * pairs * s.h * s.b
        for pass_, flops in (("fwd", fwd_flops), ("fwd+bwd", 3.5 * fwd_flops)):
            row = Row(s.name, impl, pass_, unit="TFLOP/s")
            try:
                fn = attn_fn(impl, s)
                f, args = (jax.jit(fn), (q, k, v)) if pass_ == "fwd" else (fwd_bwd(fn), (q, k, v, ct))
                row.ms = timed(f, args, iters)
                row.rate = flops / (row.ms * 1e-3) / 1e12
            except PeerUnavailable as err:
                omitted[impl] = str(err)
                break
            except Exception as err:  # an unavailable backend (cuDNN on CPU) is a row, not a crash
                if impl in TOKAMAX and isinstance(err, NotImplementedError):
                    # tokamax declines what a kernel does not support (any kernel on CPU, some masks)
                    omitted[f"{impl} on {s.name}"] = f"not supported: {first_line(err)}"
                    break
                row.error = first_line(err)
            rows.append(row)
    return rows


def bench_scan(s: ScanShape, iters: int) -> list[Row]:
    dtype = jnp.dtype(s.dtype)
    ks = jax.random.split(jax.random.key(1), 3)
    a = jax.random.uniform(ks[0], (s.b, s.t, s.r), minval=0.9, maxval=1.0).astype(dtype)
    x = jax.random.normal(ks[1], (s.b, s.t, s.r), dtype)
    ct = jax.random.normal(ks[2], x.shape, dtype)
    size = x.size * dtype.itemsize
    rows = []
    for impl in s.impls:
        moved = {"fwd": 2 * size if impl == "copy" else 3 * size, "fwd+bwd": 8 * size}
        for pass_ in ("fwd",) if impl == "copy" else ("fwd", "fwd+bwd"):  # copy: a ceiling, no bwd
            row = Row(s.name, impl, pass_, unit="GB/s")
            try:
                fn = scan_fn(impl)
                f, args = (jax.jit(fn), (a, x)) if pass_ == "fwd" else (fwd_bwd(fn), (a, x, ct))
                row.ms = timed(f, args, iters)
                row.rate = moved[pass_] / (row.ms * 1e-3) / 1e9
            except Exception as err:
                row.error = first_line(err)
            rows.append(row)
    return rows


def add_ratios(rows: list[Row], baselines: tuple[str, ...]) -> None:
    """``ratios[b] = ms(b) / ms(impl)`` for each baseline measured in this run, per pass."""
    for row in rows:
        for b in baselines:
            ref = next((r for r in rows if r.impl == b and r.pass_ == row.pass_ and r.ms), None)
            if ref is not None and row.ms and b != row.impl:
                row.ratios[b] = ref.ms / row.ms


def table(rows: list[Row]) -> str:
    lines = [f"{'shape':<26} {'impl':<19} {'pass':<8} {'ms':>10} {'rate':>16}  ratios (baseline ms / ms)"]
    for r in rows:
        if r.error:
            lines.append(f"{r.shape:<26} {r.impl:<19} {r.pass_:<8} {'-':>10} {'-':>16}  n/a: {r.error}")
            continue
        ratios = "  ".join(f"vs {b} {x:.2f}x" for b, x in r.ratios.items())
        rate = f"{r.rate:.3g} {r.unit}"
        lines.append(f"{r.shape:<26} {r.impl:<19} {r.pass_:<8} {r.ms:>10.3f} {rate:>16}  {ratios}")
    return "\n".join(lines)


def targets(rows: list[Row]) -> list[str]:
    """The acceptance checks of BENCHMARKS.md that this run can evaluate."""
    def find(prefix, impl, pass_):
        return next((r for r in rows if r.shape.startswith(prefix) and r.impl == impl and r.pass_ == pass_
                     and r.ms), None)

    out = []
    checks = [  # (shape prefix, pass, baseline, least speedup over it, what BENCHMARKS.md asks)
        ("local", "fwd+bwd", "cudnn_causal", 10.0, "sliding window fwd+bwd >= 10x full causal cuDNN"),
        ("global_causal", "fwd", "cudnn_causal", 1 / 1.25, "global causal fwd within 1.25x of cuDNN"),
        ("global_causal", "fwd+bwd", "cudnn_causal", 1 / 1.25, "global causal fwd+bwd within 1.25x of cuDNN"),
        ("scan", "fwd", "assoc", 3.0, "scan >= 3x faster than assoc"),
    ]
    for prefix, pass_, base, least, text in checks:
        r = find(prefix, "pallas", pass_)
        if r is not None and base in r.ratios:
            out.append(f"{'PASS' if r.ratios[base] >= least else 'FAIL'}  {text}: {r.ratios[base]:.2f}x")
    scan, copy = find("scan", "pallas", "fwd"), find("scan", "copy", "fwd")
    if scan is not None and copy is not None:
        frac = scan.rate / copy.rate
        out.append(f"{'PASS' if frac >= 0.6 else 'FAIL'}  scan >= 60% of copy bandwidth: {100 * frac:.0f}%")
    return out


def gpu_driver() -> str | None:
    """The NVIDIA driver version from ``nvidia-smi``; None where there is none."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip().splitlines()[0] if out.strip() else None


def versions() -> dict:
    """What the numbers were measured with: card-independent facts for the report."""
    def dist(name):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    tokamax, _ = tokamax_module()
    return dict(jax=jax.__version__, jaxlib=dist("jaxlib"), python=platform.python_version(),
                tokamax=getattr(tokamax, "__version__", None), driver=gpu_driver(),
                date=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=("cpu", "gpu", "tpu"), default=None, help="default: jax's backend")
    p.add_argument("--quick", action="store_true", help="smaller shapes, fewer iterations")
    p.add_argument("--out", default=None, help="write the rows as JSON here")
    args = p.parse_args(argv)
    device = args.device or jax.default_backend()
    iters = 5 if args.quick else 20
    dev = jax.devices(device)[0]
    header = f"device: {dev.device_kind} ({device}); jax {jax.__version__}; quick={args.quick}"
    print(header, flush=True)
    if device == "cpu":
        print("pallas rows on cpu run in interpret mode: a correctness path, not a speed number")
    rows: list[Row] = []
    omitted: dict[str, str] = {}
    attn_shapes, scan_shapes = shapes(device, args.quick)
    meta = dict(device=device, device_kind=dev.device_kind, quick=args.quick, host=platform.node(),
                **versions(), omitted=omitted, shapes=[asdict(s) for s in attn_shapes + scan_shapes])

    def write(checks: list[str], complete: bool) -> None:
        """After every shape, so a run stopped by a time box still leaves what it measured."""
        if args.out:
            with open(args.out, "w") as f:
                json.dump(dict(meta=meta, complete=complete, rows=[asdict(r) for r in rows], targets=checks),
                          f, indent=1, default=lambda o: float(o) if isinstance(o, np.floating) else str(o))

    with jax.default_device(dev):
        for s in attn_shapes + scan_shapes:
            part = bench_attention(s, iters, omitted) if isinstance(s, AttnShape) else bench_scan(s, iters)
            add_ratios(part, s.baselines)
            rows += part
            print(table(part), flush=True)
            write([], complete=False)
    for peer, why in omitted.items():
        print(f"left out: {peer}: {why}")
    # The targets are GPU numbers; elsewhere (above all the CPU interpreter) they would mislead.
    checks = targets(rows) if device == "gpu" else []
    print("\n".join(checks) if checks else f"targets (BENCHMARKS.md) are checked on GPU only, not {device}")
    write(checks, complete=True)
    if args.out:
        print(f"wrote {args.out}")

if __name__ == "__main__":
    main()
