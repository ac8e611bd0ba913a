"""Tile sizes and compiler parameters for the Pallas kernels, with defaults per backend.

Following the Pallas ops convention (``jax.experimental.pallas.ops.gpu.attention.BlockSizes``): a
frozen dataclass whose ``for_backend`` gives the defaults. Every block dimension is a power of two,
as the Triton lowering requires.
"""

import dataclasses

from jax.experimental.pallas import triton as plt

from gemma_kernels._platform import backend


def _check_pow2(obj) -> None:
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if f.name.startswith("block_") and (v < 1 or v & (v - 1)):
            raise ValueError(f"{type(obj).__name__}.{f.name}={v!r} must be a power of two")


def fit(block: int, n: int, floor: int = 8) -> int:
    """``block``, shrunk to the smallest power of two >= ``n`` (and >= ``floor``) for short inputs."""
    need = max(floor, 1 << max(0, (n - 1).bit_length()))
    return min(block, need)


@dataclasses.dataclass(frozen=True, kw_only=True)
class AttentionBlocks:
    """Query/key tile sizes of the flash attention kernels.

    ``block_q`` x ``block_k`` is the forward tile; the backward kernels (dq over key blocks, dk/dv
    over query blocks) use ``block_q_bwd`` x ``block_k_bwd``. ``num_warps`` / ``num_stages`` only
    matter for the Triton lowering (``None``: 4 warps for head_dim <= 64, else 8).
    """

    block_q: int = 64
    block_k: int = 64
    block_q_bwd: int = 64
    block_k_bwd: int = 64
    num_warps: int | None = None
    num_stages: int = 2

    def __post_init__(self):
        _check_pow2(self)

    @classmethod
    def for_backend(cls, name: str | None = None) -> "AttentionBlocks":
        match name or backend():
            case "gpu":
                return cls(block_q=128, block_k=64, block_q_bwd=64, block_k_bwd=64)
            case "tpu":
                return cls(block_q=128, block_k=128, block_q_bwd=128, block_k_bwd=128)
            case _:  # interpret mode: small tiles keep the simulated grid cheap
                return cls(block_q=32, block_k=32, block_q_bwd=32, block_k_bwd=32)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScanBlocks:
    """Tiles of the linear-recurrence kernel: ``block_r`` channels per program, time walked in
    blocks of ``block_t`` steps (unrolled inside each block)."""

    block_t: int = 16
    block_r: int = 128
    num_warps: int = 4
    num_stages: int = 1

    def __post_init__(self):
        _check_pow2(self)

    @classmethod
    def for_backend(cls, name: str | None = None) -> "ScanBlocks":
        match name or backend():
            case "gpu" | "tpu":
                return cls(block_t=16, block_r=128)
            case _:
                return cls(block_t=8, block_r=32)


def compiler_params(interpret: bool, *, num_warps: int, num_stages: int):
    """Triton parameters on GPU (a plain ``pallas_call`` would pick Mosaic GPU); ``None`` elsewhere."""
    if interpret or backend() != "gpu":
        return None
    return plt.CompilerParams(num_warps=num_warps, num_stages=num_stages)
