"""Compiled CPU kernels, called through XLA's FFI: ``matvec.cc`` (:func:`gemma_kernels.matvec`'s
``"cpu"`` path) and ``set_row.cc`` (:func:`gemma_kernels.set_rows` for one decode row, in place).

XLA's CPU compiler widens each weight to f32 in generated loops that run at 4-5 G weights/s per core,
so a decode step of bf16 or int8 weights was bound by that, not by memory; and it copies a donated
bf16 cache whole to write one row. These few kernels do what it cannot.

The sources are compiled together on first use with the host's C++ compiler (``$CXX``, else ``c++``)
for this CPU (``-march=native``, retried without it) against jaxlib's FFI headers, into
``$GEMMA_KERNELS_CACHE`` (default ``~/.cache/gemma_kernels``), named by a hash of the sources, flags,
JAX version and CPU, and written atomically, so concurrent processes share one build.
:func:`build_error` says why they are unavailable (no compiler, another backend); callers then take
their plain-JAX forms.
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

SOURCES = tuple(sorted(Path(__file__).parent.glob("*.cc")))
TARGETS = ("gemma_matvec_bf16", "gemma_matvec_int8", "gemma_matvec_int4", "gemma_set_row")
FLAGS = ("-O3", "-std=c++17", "-shared", "-fPIC", "-fopenmp-simd", "-w")
ARCH_FLAGS = (("-march=native",), ())  # the second try, for compilers that refuse -march=native


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
    cmd = [os.environ.get("CXX", "c++"), *FLAGS, *arch, f"-I{jax.ffi.include_dir()}", *map(str, SOURCES)]
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
    """The loaded library with every target registered, or why there is none."""
    if jax.default_backend() != "cpu":
        return f"the native kernels run on the CPU backend only (this process runs {jax.default_backend()!r})"
    errors = []
    sources = [p.read_bytes() for p in SOURCES]
    for arch in ARCH_FLAGS:
        key = hashlib.sha256(repr((sources, FLAGS, arch, jax.__version__, _cpu_id())).encode())
        path = _cache_dir() / f"native-{key.hexdigest()[:16]}.so"
        error = None if path.exists() else _compile(path, arch)
        if error is None:
            lib = ctypes.cdll.LoadLibrary(str(path))
            for name in TARGETS:
                jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(lib, name)), platform="cpu")
            return lib
        errors.append(error)
    return "could not compile gemma_kernels/native/*.cc:\n" + "\n".join(errors)


def build_error() -> str | None:
    """None when the kernels are built and registered (building them on first call), else why not."""
    lib = _library()
    return lib if isinstance(lib, str) else None
