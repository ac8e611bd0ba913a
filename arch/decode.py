"""The decode path: products for a few rows that read each weight once, float or packed.

Decoding reads every weight once per token, so its time is bytes read over bandwidth, and the form
of each product decides how close it gets (measured by ``python -m experiments.bench.decode``, which
times the forms side by side). :func:`matvec` takes a float ``[out, in]`` weight as XLA's CPU compiler
runs it fastest for its shape: a dot when the input is the short side (Gemma 3 1B's up and gate
projections and tied head: 20-25 GB/s on a 2-core CPU), a fused multiply-and-reduce along the rows
when it is the long side (the down projection: 16 GB/s, where the dot falls to 2 GB/s).

Serving from packed weights (Gemma 3 section 2.3 quantizes for exactly this): a
:class:`arch.quant.Packed` matrix of a ``Linear`` or the embedding
table stays packed in the model that :func:`decodable` returns: a few rows (a decode step) multiply
the integer codes directly, one fused multiply-and-reduce that widens each code as it is read and
applies the scales to the partial sums; a long chunk (a prefill) dequantizes the matrix once to bf16
and takes the matmul path. Values equal the dequantized matrix's product up to f32 summation order.

Kept packed: integer formats with one scale per row (``int8``, ``int4``) or per block along the input
axis (``int4_block32``), when each row holds whole blocks (and whole bytes for int4). Every other
packed tensor (sfp8, the RG-LRU's block-diagonal gates, the Conv1D taps, rows that straddle blocks)
is dequantized once to bf16.
"""

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from arch.quant import Packed, unpack


def servable(p: Packed) -> bool:
    """Can ``p`` (a ``[out, in]`` matrix, input axis last) be read as codes by :func:`matvec`?"""
    if p.fmt.kind != "int" or len(p.shape) != 2 or p.axis != 1:
        return False
    n_in = p.shape[1]
    block = p.fmt.block or n_in
    return n_in % block == 0 and (p.fmt.bits == 8 or block % 2 == 0)


def _codes(p: Packed, rows: Int[Array, " r"] | None = None) -> tuple[Array, ...]:
    """The codes as ``[rows, groups, k]`` integers (int8: one array; int4: the low and high nibbles,
    i.e. the even and odd inputs), optionally only the given rows."""
    n_out, n_in = p.shape
    block = p.fmt.block or n_in
    if p.fmt.bits == 8:
        codes = p.codes.reshape(n_out, n_in // block, block)
        return (codes if rows is None else codes[rows],)
    b = p.codes.reshape(n_out, n_in // block, block // 2)
    b = (b if rows is None else b[rows]).astype(jnp.int32)
    lo, hi = b & 0xF, b >> 4
    return lo - ((lo & 8) << 1), hi - ((hi & 8) << 1)  # sign-extend bit 3


def _scales(p: Packed, rows=None) -> Float[Array, "r g"]:
    n_out, n_in = p.shape
    s = p.scales.reshape(n_out, n_in // (p.fmt.block or n_in)).astype(jnp.float32)
    return s if rows is None else s[rows]


def materialize(x: Array) -> Array:
    """``x`` itself, computed once into its own buffer: a scatter is a fusion boundary XLA keeps.

    XLA's CPU compiler hands a multiply-and-reduce to a library fusion together with the elementwise
    ops that produce its input, and that fusion evaluates them again for every tile of rows: a tanh
    GELU feeding the MLP's down projection made the decode step's MLP 1.6x slower."""
    flat = x.reshape(-1)
    idx = jnp.arange(flat.shape[0])
    return jnp.zeros_like(flat).at[idx].set(flat, unique_indices=True).reshape(x.shape)


def matvec(x: Float[Array, "... i"], w: "Float[Array, 'o i'] | Packed") -> Float[Array, "... o"]:
    """``x @ w.T`` for a few rows of ``x`` (a decode step), f32 accumulation and result: a float
    ``w`` in ``x``'s dtype, a :class:`Packed` one (:func:`servable`) from its codes."""
    if isinstance(w, Packed):
        return _packed_matvec(x, w)
    w = w.astype(x.dtype)
    if w.shape[1] <= w.shape[0]:
        return jnp.matmul(x, w.T, preferred_element_type=jnp.float32)
    xs = materialize(x.astype(jnp.float32))
    return (w.astype(jnp.float32) * xs[..., None, :]).sum(-1)


def _packed_matvec(x: Float[Array, "... i"], p: Packed) -> Float[Array, "... o"]:
    """Reads ``p``'s codes once, widening each as it is read; the scales multiply partial sums."""
    n_in = p.shape[1]
    block = p.fmt.block or n_in
    xs = materialize(x.astype(jnp.float32)).reshape(*x.shape[:-1], 1, n_in // block, block)
    codes = _codes(p)
    if len(codes) == 1:
        part = (codes[0].astype(jnp.float32) * xs).sum(-1)
    else:  # int4: byte m of a group holds inputs 2m (low nibble) and 2m + 1 (high nibble)
        lo, hi = codes
        part = (lo.astype(jnp.float32) * xs[..., 0::2] + hi.astype(jnp.float32) * xs[..., 1::2]).sum(-1)
    return (part * _scales(p)).sum(-1)


def rows(p: Packed, idx: Int[Array, "..."], dtype) -> Float[Array, "... i"]:
    """Rows ``idx`` of the dequantized matrix (an embedding lookup), reading only those rows."""
    flat = idx.reshape(-1)
    codes = _codes(p, flat)
    if len(codes) == 1:
        w = codes[0].astype(jnp.float32)
    else:
        lo, hi = codes
        w = jnp.stack([lo, hi], axis=-1).reshape(*lo.shape[:-1], -1).astype(jnp.float32)
    w = (w * _scales(p, flat)[..., None]).reshape(flat.shape[0], -1)
    return w.reshape(*idx.shape, -1).astype(dtype)


def decodable(packed, like=None):
    """The model that serves ``packed`` (:func:`arch.quant.pack_model`) reading its codes: servable
    matrices (:func:`servable`) stay :class:`Packed`, every other packed tensor is dequantized once to
    bf16, the rest cast like :func:`arch.quant.unpack_model` does (to ``like``'s dtypes, else bf16).
    ``model.cfg.weight_format`` must be None for it (the weights already are the served ones)."""
    is_packed = lambda x: isinstance(x, Packed)

    def one(x, ref=None):
        if is_packed(x):
            return x if servable(x) else unpack(x, jnp.bfloat16 if ref is None else ref.dtype)
        if isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jnp.floating):
            return x.astype(jnp.bfloat16 if ref is None else ref.dtype)
        return x

    if like is None:
        return jax.tree_util.tree_map(one, packed, is_leaf=is_packed)
    return jax.tree_util.tree_map(one, packed, like, is_leaf=is_packed)
