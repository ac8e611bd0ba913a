"""The decode path: products for a few rows that read each weight once, float or packed.

Decoding reads every weight once per token, so its time is bytes read over bandwidth, and the form
of each product decides how close it gets (``python -m experiments.bench.decode --speed`` puts a
step against that floor). :func:`matvec` takes a float ``[out, in]`` weight as XLA's CPU compiler
runs it fastest for its shape: a dot when the input is the short side (Gemma 3 1B's up and gate
projections and tied head: 20-25 GB/s on a 2-core CPU), a fused multiply-and-reduce along the rows
when it is the long side (the down projection: 16 GB/s, where the dot falls to 2 GB/s).

Serving from packed weights (Gemma 3 section 2.3 quantizes for exactly this): in the model that
:func:`decodable` returns, each :class:`arch.quant.Packed` matrix of a ``Linear`` or the embedding
table becomes a :class:`Served` one, its codes laid out once as ``[out, in]`` (int4: ``[out, in / 2]``
bytes) or ``[out, blocks, block]``: a few rows (a decode step) multiply the integer codes directly,
one fused multiply-and-reduce that widens each code as it is read and applies the scales to the
partial sums; a long chunk (a prefill) dequantizes the matrix and takes the matmul path. Values equal
the dequantized matrix's product up to f32 summation order.

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
from gemma_kernels import materialize


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
        return _widened(self, None).reshape(self.shape).astype(dtype)


def _codes(w: Served, rows: Int[Array, " r"] | None) -> tuple[Array, ...]:
    """The codes of ``rows`` (all when None) as integers: int8 one array, int4 the low and high
    nibbles (the even and odd inputs)."""
    codes = w.codes if rows is None else w.codes[rows]
    if w.bits == 8:
        return (codes,)
    b = jax.lax.bitcast_convert_type(codes, jnp.int8)  # arithmetic shifts sign-extend each nibble,
    return (b << 4) >> 4, b >> 4  # in 8-bit lanes (widening to int32 first ran 3.5x slower)


def _widened(w: Served, rows) -> Float[Array, "r ..."]:
    """The dequantized rows, in the codes' layout (``[r, in]`` or ``[r, blocks, block]``), float32."""
    codes = _codes(w, rows)
    if len(codes) == 1:
        x = codes[0].astype(jnp.float32)
    else:
        lo, hi = codes
        x = jnp.stack([lo, hi], axis=-1).reshape(*lo.shape[:-1], -1).astype(jnp.float32)
    scales = (w.scales if rows is None else w.scales[rows]).astype(jnp.float32)
    return x * scales[..., None]


def matvec(x: Float[Array, "... i"], w: "Float[Array, 'o i'] | Served") -> Float[Array, "... o"]:
    """``x @ w.T`` for a few rows of ``x`` (a decode step), f32 accumulation and result: a float
    ``w`` in ``x``'s dtype, a :class:`Served` one from its codes."""
    if isinstance(w, Served):
        return _served_matvec(x, w)
    w = w.astype(x.dtype)
    if w.shape[1] <= w.shape[0]:
        return jnp.matmul(x, w.T, preferred_element_type=jnp.float32)
    xs = materialize(x.astype(jnp.float32))
    return (w.astype(jnp.float32) * xs[..., None, :]).sum(-1)


def _served_matvec(x: Float[Array, "... i"], w: Served) -> Float[Array, "... o"]:
    """Reads the codes once, widening each as it is read; the scales multiply partial sums.

    A single row is reduced as ``codes [out, in] * x [in]``: with a unit leading axis
    (``[1, out, in]``) XLA's CPU reduce of widened int8 ran 13x slower."""
    lead, (n_out, n_in) = x.shape[:-1], w.shape
    xs = materialize(x.astype(jnp.float32)).reshape(-1, n_in)
    xs = xs[0] if xs.shape[0] == 1 else xs[:, None, :]
    if w.block is not None:  # inputs as [..., blocks, block] against codes [out, blocks, block]
        xs = xs.reshape(*xs.shape[:-1], n_in // w.block, w.block)
    codes = _codes(w, None)
    if len(codes) == 1:
        part = (codes[0].astype(jnp.float32) * xs).sum(-1)
    else:  # int4: byte m holds inputs 2m (low nibble) and 2m + 1 (high nibble)
        lo, hi = codes
        part = (lo.astype(jnp.float32) * xs[..., 0::2] + hi.astype(jnp.float32) * xs[..., 1::2]).sum(-1)
    part = part * w.scales.astype(jnp.float32)
    out = part if w.block is None else part.sum(-1)
    return out.reshape(*lead, n_out)


def rows(w: Served, idx: Int[Array, "..."], dtype) -> Float[Array, "... i"]:
    """Rows ``idx`` of the dequantized matrix (an embedding lookup), reading only those rows."""
    flat = idx.reshape(-1)
    return _widened(w, flat).reshape(*idx.shape, w.shape[1]).astype(dtype)


def decodable(packed, like=None):
    """The model that serves ``packed`` (:func:`arch.quant.pack_model`) from its codes: servable
    matrices (:func:`servable`) become :class:`Served`, the rest as :func:`arch.quant.unpack_model`
    gives it (in ``like``'s dtypes, else bf16). Its ``cfg.weight_format`` must be None (the weights
    already are the served ones)."""
    model = unpack_model(packed, like, dtype=jnp.bfloat16, keep=servable)
    return jax.tree_util.tree_map(lambda x: Served.of(x) if isinstance(x, Packed) else x, model,
                                  is_leaf=lambda x: isinstance(x, Packed))
