"""The linear recurrence ``h_t = a_t * h_{t-1} + x_t`` as a Pallas kernel (the RG-LRU's core,
Griffin, De et al. 2024, section 2.4), differentiable through ``jax.custom_vjp``.

One program per block of ``block_r`` channels; time is walked INSIDE the kernel in blocks of
``block_t`` unrolled steps, with the f32 state in the loop carry. No scratch buffers and no
cross-step accumulation: the same body lowers through Triton, Mosaic and the interpreter.

The backward pass is the same kernel run backwards in time (as in recurrentgemma's Pallas scan):
``g_t = dy_t + a_{t+1} g_{t+1}`` starting from ``dh_last``; then ``dx = g``,
``da_t = g_t h_{t-1}`` and ``dh0 = a_0 g_0``. Padding uses ``a = 1, x = 0`` so padded steps and
channels leave the state unchanged.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jaxtyping import Array, Float

from gemma_kernels.blocks import ScanBlocks, compiler_params, fit


def _scan_kernel(a_ref, x_ref, h0_ref, y_ref, h_ref, *, block_t: int, reverse: bool):
    tp = x_ref.shape[0]
    nt = tp // block_t

    def time_block(b, h):
        start = (nt - 1 - b if reverse else b) * block_t
        for r in range(block_t):  # unrolled: independent loads can be issued ahead of the chain
            i = start + (block_t - 1 - r if reverse else r)
            h = a_ref[pl.ds(i, 1), :].astype(jnp.float32) * h + x_ref[pl.ds(i, 1), :].astype(jnp.float32)
            y_ref[pl.ds(i, 1), :] = h.astype(y_ref.dtype)
        return h

    h_ref[...] = lax.fori_loop(0, nt, time_block, h0_ref[...].astype(jnp.float32))


@dataclasses.dataclass(frozen=True)
class _Static:
    block_t: int
    block_r: int
    interpret: bool
    params: object


def _run(a, x, h0, st: _Static, *, reverse: bool, out_dtype):
    """a, x ``[T, R]`` (block multiples), h0 ``[1, R]`` f32 -> (every state ``[T, R]``, last ``[1, R]``)."""
    tp, rp = x.shape
    col = pl.BlockSpec((tp, st.block_r), lambda j: (0, j))
    row = pl.BlockSpec((1, st.block_r), lambda j: (0, j))
    return pl.pallas_call(
        functools.partial(_scan_kernel, block_t=st.block_t, reverse=reverse),
        grid=(rp // st.block_r,),
        in_specs=[col, col, row],
        out_specs=[col, row],
        out_shape=[jax.ShapeDtypeStruct((tp, rp), out_dtype), jax.ShapeDtypeStruct((1, rp), jnp.float32)],
        compiler_params=st.params,
        interpret=st.interpret,
        name="linear_scan_rev" if reverse else "linear_scan",
    )(a, x, h0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _scan(a, x, h0, st: _Static):
    return _run(a, x, h0, st, reverse=False, out_dtype=x.dtype)


def _scan_fwd(a, x, h0, st: _Static):
    y, h_last = _run(a, x, h0, st, reverse=False, out_dtype=x.dtype)
    return (y, h_last), (a, h0, y)


def _scan_bwd(st: _Static, res, cts):
    a, h0, y = res
    dy, dh_last = cts
    a_next = jnp.concatenate([a[1:], jnp.ones_like(a[:1])])  # a_{t+1}, and 1 past the end
    g, g0 = _run(a_next, dy, dh_last, st, reverse=True, out_dtype=jnp.float32)
    h_prev = jnp.concatenate([h0, y[:-1].astype(jnp.float32)])
    da = (g * h_prev).astype(a.dtype)
    return da, g.astype(y.dtype), a[:1].astype(jnp.float32) * g0


_scan.defvjp(_scan_fwd, _scan_bwd)


def linear_scan_pallas(
    a: Float[Array, "t r"],
    x: Float[Array, "t r"],
    h0: Float[Array, " r"] | None = None,
    *,
    interpret: bool = False,
    blocks: ScanBlocks | None = None,
) -> tuple[Float[Array, "t r"], Float[Array, " r"]]:
    """Returns ``(y, h_last)``: ``y[t] = h_t`` in ``x.dtype``, ``h_last`` in f32; ``h0`` defaults to 0.

    The backward pass reads ``h_{t-1}`` from ``y``, so for bf16 ``x`` the gradient of ``a`` carries
    bf16 rounding of the states (the forward state itself is f32 throughout).
    """
    t, r = x.shape
    blocks = blocks or ScanBlocks.for_backend("cpu" if interpret else None)
    bt, br = fit(blocks.block_t, t, 1), fit(blocks.block_r, r, 8)
    tp, rp = -(-t // bt) * bt, -(-r // br) * br
    st = _Static(
        block_t=bt, block_r=br, interpret=bool(interpret),
        params=compiler_params(interpret, num_warps=blocks.num_warps, num_stages=blocks.num_stages),
    )
    pad = ((0, tp - t), (0, rp - r))
    a_p = jnp.pad(a, pad, constant_values=1)  # a = 1, x = 0: padded steps keep the state
    x_p = jnp.pad(x, pad)
    h0_p = jnp.zeros((1, rp), jnp.float32)
    if h0 is not None:
        h0_p = h0_p.at[0, :r].set(h0.astype(jnp.float32))
    y, h_last = _scan(a_p, x_p, h0_p, st)
    return y[:t, :r], h_last[0, :r]
