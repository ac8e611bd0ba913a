"""``gemma_kernels.matvec``: ``x @ W.T`` for a few rows (a decode step), reading each weight once.

Decoding reads every weight once per token, so its time is bytes read over bandwidth (the Gemma 3
report, section 2.3, serves quantized weights for exactly this). ``W`` is ``[out, in]``: float, or
integer codes with scales (:mod:`gemma_kernels.matvec.ref` gives the layouts). Implementations:

- ``"cpu"``: a compiled kernel (:mod:`gemma_kernels.native`) for bf16 weights and per-row int8 or
  int4 codes, up to ``MAX_ROWS`` rows; the default on the CPU backend wherever it builds;
- ``"xla"``: plain JAX in the forms XLA's CPU compiler runs fastest (:mod:`gemma_kernels.matvec.xla`);
  everything else, and every other backend.

The result is f32 and equals :func:`matvec_reference` up to the order of f32 additions.
"""

from jaxtyping import Array, Float

from gemma_kernels._platform import MATVEC_IMPLS, backend
from gemma_kernels.matvec.cpu import MAX_ROWS, matvec_cpu, supports
from gemma_kernels.matvec.ref import code_bits, dequantize, matvec_reference, signed_codes
from gemma_kernels.matvec.xla import matvec_xla
from gemma_kernels.native import build_error


def matvec(x: Float[Array, "... i"], w: Array, scales: Array | None = None, *,
           impl: str = "auto") -> Float[Array, "... o"]:
    """``x @ W.T`` in f32; ``impl="cpu"`` raises, naming the reason, where the kernel cannot run."""
    if impl not in MATVEC_IMPLS:
        raise ValueError(f"matvec: impl={impl!r} is not one of {MATVEC_IMPLS}")
    bits = code_bits(w)
    if (w.ndim == 2 and x.shape[-1] != w.shape[1] * (2 if bits == 4 else 1)
            or (scales is None) != (bits is None)):
        raise ValueError(f"matvec: x {x.shape} against weights {w.shape} {w.dtype} with "
                         f"scales {None if scales is None else scales.shape}: x's last axis must be W's "
                         "inputs, and integer codes (only) need scales")
    if impl == "xla" or (impl == "auto" and backend() != "cpu"):
        return matvec_xla(x, w, scales)
    fits = supports(x, w, scales)
    if impl == "cpu" and not fits:
        raise ValueError(f"matvec(impl='cpu'): x {x.shape} against {w.dtype} weights {w.shape} is not "
                         f"a shape the CPU kernel takes (at most {MAX_ROWS} rows; bf16, int8 or int4 "
                         "[out, in])")
    error = build_error() if fits else None
    if impl == "cpu" and error is not None:
        raise RuntimeError(f"matvec(impl='cpu'): {error}")
    return matvec_cpu(x, w, scales) if fits and error is None else matvec_xla(x, w, scales)


__all__ = [
    "MAX_ROWS", "build_error", "code_bits", "dequantize", "matvec", "matvec_reference", "matvec_xla",
    "signed_codes",
]
