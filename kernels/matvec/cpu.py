""":func:`gemma_kernels.matvec` on the CPU as a compiled kernel (``matvec.cc``), called through XLA's FFI.

XLA's CPU compiler widens each weight to f32 in generated loops that run at 4-5 G weights/s per core,
so a decode step of bf16 or int8 weights was bound by that, not by memory (int8 no faster than bf16).
The kernel widens in registers and reads each weight once at the memory's speed, on every core.

The source is compiled on first use with the host's C++ compiler (``$CXX``, else ``c++``) for this CPU
(``-march=native``) against jaxlib's FFI headers, into ``$GEMMA_KERNELS_CACHE`` (default
``~/.cache/gemma_kernels``), named by a hash of the source, flags, jaxlib version and CPU, and written
atomically, so concurrent processes share one build. :func:`build_error` says why it is unavailable.
"""

import ctypes
import functools
import hashlib
import os
import platform
import subprocess
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from gemma_kernels.matvec.ref import code_bits, matvec_reference

SOURCE = Path(__file__).with_name("matvec.cc")
TARGETS = {None: "gemma_matvec_bf16", 8: "gemma_matvec_int8", 4: "gemma_matvec_int4"}
FLAGS = ("-O3", "-std=c++17", "-shared", "-fPIC", "-fopenmp-simd", "-w")
ARCH_FLAGS = (("-march=native",), ())  # the second try, for compilers that refuse -march=native
MAX_ROWS = 4  # more rows re-read each weight row from cache per row; XLA's dot serves those better


def _cpu_id() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
        lines = (line for line in text.splitlines() if line.startswith(("flags", "Features")))
        return next(lines, text[:4096])
    except OSError:
        return platform.processor() + platform.machine()


def _cache_dir() -> Path:
    return Path(os.environ.get("GEMMA_KERNELS_CACHE") or Path.home() / ".cache" / "gemma_kernels")


def _compile(out: Path, arch: tuple[str, ...]) -> str | None:
    """Compiles to ``out`` (atomically); the compiler's message on failure."""
    cmd = [os.environ.get("CXX", "c++"), *FLAGS, *arch, f"-I{jax.ffi.include_dir()}", str(SOURCE)]
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        tmp_out = Path(tmp) / out.name
        try:
            done = subprocess.run([*cmd, "-o", str(tmp_out)], capture_output=True, text=True, check=False)
        except OSError as e:
            return f"{cmd[0]}: {e}"
        if done.returncode != 0:
            return f"{' '.join(cmd)}\n{done.stderr[-2000:]}"
        os.replace(tmp_out, out)
    return None


@functools.cache
def _library() -> ctypes.CDLL | str:
    """The loaded, registered library, or why there is none."""
    if jax.default_backend() != "cpu":
        return f"the kernel runs on the CPU backend only (this process runs {jax.default_backend()!r})"
    errors = []
    for arch in ARCH_FLAGS:
        key = hashlib.sha256(repr((SOURCE.read_bytes(), FLAGS, arch, jax.__version__, _cpu_id())).encode())
        path = _cache_dir() / f"matvec-{key.hexdigest()[:16]}.so"
        error = None if path.exists() else _compile(path, arch)
        if error is None:
            lib = ctypes.cdll.LoadLibrary(str(path))
            for name in TARGETS.values():
                jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(lib, name)), platform="cpu")
            return lib
        errors.append(error)
    return "could not compile gemma_kernels/matvec/matvec.cc:\n" + "\n".join(errors)


def build_error() -> str | None:
    """None when the CPU kernel is built and registered (building it on first call), else why not."""
    lib = _library()
    return lib if isinstance(lib, str) else None


def supports(x: Array, w: Array, scales: Array | None) -> bool:
    """Shapes and dtypes the kernel takes: at most ``MAX_ROWS`` rows against bf16 weights or per-row
    int8/int4 codes, all ``[out, in]``."""
    rows = x.size // x.shape[-1] if x.shape[-1] else 0
    if w.ndim != 2 or rows > MAX_ROWS:
        return False
    bits = code_bits(w)
    return (w.dtype == jnp.bfloat16 and scales is None) or (bits is not None and scales is not None
                                                             and scales.shape == (w.shape[0],))


def _call(x, w, scales):
    lead, n_out = x.shape[:-1], w.shape[0]
    xs = x.astype(jnp.float32).reshape(-1, x.shape[-1])
    if code_bits(w) == 4:  # even inputs, then odd ones: the low and high nibbles of each byte
        xs = xs.reshape(xs.shape[0], -1, 2).transpose(0, 2, 1)
    scales = jnp.zeros((0,), jnp.float32) if scales is None else scales.astype(jnp.float32)
    return _kernel(xs, w, scales).reshape(*lead, n_out)


@jax.custom_batching.custom_vmap
def _kernel(xs: Array, w: Array, scales: Array) -> Float[Array, "r o"]:
    """One FFI call: ``xs [rows, in]`` (int4: ``[rows, 2, in / 2]``), no scales for bf16 (empty)."""
    args = (xs, w) if code_bits(w) is None else (xs, w, scales)
    out = jax.ShapeDtypeStruct((xs.shape[0], w.shape[0]), jnp.float32)
    return jax.ffi.ffi_call(TARGETS[code_bits(w)], out)(*args)


@_kernel.def_vmap
def _kernel_vmap(axis_size, in_batched, xs, w, scales):
    """``jax.vmap`` over sequences (batched decoding): the batch's rows share one read of the weights;
    batched weights (rare) are taken one at a time."""
    x_b, w_b, s_b = in_batched
    if not (w_b or s_b):
        out = _kernel(xs.reshape(-1, *xs.shape[2:]), w, scales)
        return out.reshape(axis_size, xs.shape[1], -1), True
    bcast = lambda a, b: a if b else jnp.broadcast_to(a, (axis_size, *a.shape))
    return jax.lax.map(lambda a: _kernel(*a), (bcast(xs, x_b), bcast(w, w_b), bcast(scales, s_b))), True


@jax.custom_vjp
def matvec_cpu(x: Float[Array, "... i"], w: Array, scales: Array | None = None) -> Float[Array, "... o"]:
    """``x @ W.T`` (f32) by the compiled kernel; the caller checks :func:`build_error` and
    :func:`supports`. Gradients (to ``x``, and to float weights) are the reference's."""
    return _call(x, w, scales)


def _fwd(x, w, scales):
    return _call(x, w, scales), (x, w, scales)


def _bwd(res, g):
    x, w, scales = res
    if scales is None:
        gx, gw = jax.vjp(matvec_reference, x, w)[1](g)
        return gx, gw, None
    gx = jax.vjp(lambda x: matvec_reference(x, w, scales), x)[1](g)[0]
    return gx, None, None


matvec_cpu.defvjp(_fwd, _bwd)
