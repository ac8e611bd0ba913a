"""The decode path: products for a few rows that read each weight once, float or packed.

Decoding reads every weight once per token, so its time is bytes read over bandwidth, and the form
of each product decides how close it gets (``python -m experiments.bench.decode --speed`` puts a
step against that floor). :func:`matvec` hands each ``[out, in]`` product to
:func:`gemma_kernels.matvec`: on the CPU a compiled kernel that widens bf16 weights or int8/int4 codes
in registers at the memory's speed, elsewhere the plain-JAX forms XLA runs fastest.

Serving from packed weights (Gemma 3 section 2.3 quantizes for exactly this): in the model that
:func:`decodable` returns, each :class:`arch.quant.Packed` matrix of a ``Linear`` or the embedding
table becomes a :class:`Served` one, its codes laid out once as ``[out, in]`` (int4: ``[out, in / 2]``
bytes) or ``[out, blocks, block]``: a few rows (a decode step) multiply the integer codes directly,
and the scales multiply the partial sums; a long chunk (a prefill) dequantizes the matrix and takes
the matmul path. Values equal the dequantized matrix's product up to f32 summation order.

Kept packed: integer formats with one scale per row (``int8``, ``int4``) or per block along the input
axis (``int4_block32``), when each row holds whole blocks (and whole bytes for int4). Every other
packed tensor (sfp8, the RG-LRU's block-diagonal gates, the Conv1D taps, rows that straddle blocks)
is dequantized once to bf16.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from arch.quant import Packed, unpack_model
from gemma_kernels import dequantize
from gemma_kernels import matvec as kernel_matvec


def servable(p: Packed) -> bool:
    """Can ``p`` (a ``[out, in]`` matrix, input axis last) be served from its codes?"""
    if p.fmt.kind != "int" or len(p.shape) != 2 or p.axis != 1:
        return False
    n_in = p.shape[1]
    block = p.fmt.block or n_in
    return n_in % block == 0 and (p.fmt.bits == 8 or block % 2 == 0)


class Served(eqx.Module):
    """A packed ``[out, in]`` matrix laid out for decoding: ``codes`` ``[out, in]`` int8 (int4: uint8
    ``[out, in / 2]``, inputs 2m and 2m + 1 in byte m's low and high nibble), or ``[out, blocks,
    block]`` (bytes) for a block format; ``scales`` ``[out]`` or ``[out, blocks]``, as stored.

    The stored order is kept: the flat codes of :class:`arch.quant.Packed` are only reshaped, since
    XLA's CPU compiler widens a flat int8 array before reshaping it (2.4x slower than from 2-D)."""

    codes: Array
    scales: Array
    shape: tuple[int, int] = eqx.field(static=True)
    bits: int = eqx.field(static=True)
    block: int | None = eqx.field(static=True)

    @staticmethod
    def of(p: Packed) -> "Served":
        if not servable(p):
            raise ValueError(f"Served.of: a {p.fmt.name} tensor of shape {p.shape} (input axis {p.axis}) "
                             f"cannot be served from its codes; see arch.decode.servable")
        (n_out, n_in), block = p.shape, p.fmt.block
        width = n_in if p.fmt.bits == 8 else n_in // 2
        if block is None:
            codes, scales = p.codes.reshape(n_out, width), p.scales.reshape(n_out)
        else:
            codes = p.codes.reshape(n_out, n_in // block, width * block // n_in)
            scales = p.scales.reshape(n_out, n_in // block)
        return Served(codes, scales, p.shape, p.fmt.bits, block)

    def dense(self, dtype=jnp.float32) -> Float[Array, "o i"]:
        """The dequantized matrix (a prefill's matmul)."""
        return dequantize(self.codes, self.scales).reshape(self.shape).astype(dtype)


def matvec(x: Float[Array, "... i"], w: "Float[Array, 'o i'] | Served") -> Float[Array, "... o"]:
    """``x @ w.T`` for a few rows of ``x`` (a decode step), f32 accumulation and result: a float
    ``w`` in ``x``'s dtype, a :class:`Served` one from its codes."""
    if isinstance(w, Served):
        return kernel_matvec(x, w.codes, w.scales)
    return kernel_matvec(x, w.astype(x.dtype))


def rows(w: Served, idx: Int[Array, "..."], dtype) -> Float[Array, "... i"]:
    """Rows ``idx`` of the dequantized matrix (an embedding lookup), reading only those rows."""
    flat = idx.reshape(-1)
    return dequantize(w.codes[flat], w.scales[flat]).reshape(*idx.shape, w.shape[1]).astype(dtype)


def decodable(packed, like=None):
    """The model that serves ``packed`` (:func:`arch.quant.pack_model`) from its codes: servable
    matrices (:func:`servable`) become :class:`Served`, the rest as :func:`arch.quant.unpack_model`
    gives it (in ``like``'s dtypes, else bf16). Its ``cfg.weight_format`` must be None (the weights
    already are the served ones)."""
    model = unpack_model(packed, like, dtype=jnp.bfloat16, keep=servable)
    return jax.tree_util.tree_map(lambda x: Served.of(x) if isinstance(x, Packed) else x, model,
                                  is_leaf=lambda x: isinstance(x, Packed))
