"""A dense layer whose weight is stored ``[out, in]`` (the Hugging Face layout) and whose matmul can run
with bf16 inputs and f32 accumulation, forward and backward."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

import arch.decode as decode
from gemma_kernels import dot, dot_tn, physical_swap

MATMUL_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
MIN_ROWS = 16  # fewer rows than this (decoding) take XLA's matrix-vector path


@jax.custom_vjp
def _matmul_bf16(x: Float[Array, "n i"], w: Float[Array, "o i"]) -> Float[Array, "n o"]:
    """``x @ w.T`` in bf16 with f32 accumulation; its backward pass is bf16 too, each product
    row-major ``[m, k] @ [k, n]`` (see :mod:`gemma_kernels.layout`)."""
    return dot(x.astype(jnp.bfloat16), physical_swap(w.astype(jnp.bfloat16)))


def _matmul_bf16_fwd(x, w):
    xb, wb = x.astype(jnp.bfloat16), w.astype(jnp.bfloat16)
    # the zero scalars carry the primal dtypes to the backward pass (residuals must be arrays)
    return dot(xb, physical_swap(wb)), (xb, wb, jnp.zeros((), x.dtype), jnp.zeros((), w.dtype))


def _matmul_bf16_bwd(res, g):
    xb, wb, x_dt, w_dt = res
    gb = g.astype(jnp.bfloat16)
    return dot(gb, wb).astype(x_dt.dtype), dot_tn(gb, xb).astype(w_dt.dtype)


_matmul_bf16.defvjp(_matmul_bf16_fwd, _matmul_bf16_bwd)


def matmul(x: Array, w: Array, matmul_dtype: str) -> Array:
    """``x @ w.T`` with inputs cast to ``matmul_dtype`` and the product accumulated in f32.

    In bf16 the backward pass runs in bf16 too (cotangents rounded to bf16, f32 accumulation), as
    mixed-precision training on accelerators does; every product is laid out ``[m, k] @ [k, n]``.
    """
    lead = x.shape[:-1]
    if isinstance(w, decode.Served):  # a packed matrix read from its codes (arch.decode)
        if math.prod(lead) < MIN_ROWS:
            return decode.matvec(x, w).astype(x.dtype)
        w = w.dense(MATMUL_DTYPES[matmul_dtype])
    out_dtype = jnp.result_type(x.dtype, w.dtype)
    if MATMUL_DTYPES[matmul_dtype] == jnp.float32:
        return jnp.matmul(x.astype(jnp.float32), w.astype(jnp.float32).T).astype(out_dtype)
    if math.prod(lead) < MIN_ROWS:  # decode: a matrix-vector product (arch.decode)
        return decode.matvec(x.astype(jnp.bfloat16), w).astype(out_dtype)
    out = _matmul_bf16(x.reshape(-1, x.shape[-1]), w)
    return out.reshape(*lead, w.shape[0]).astype(out_dtype)


class Linear(eqx.Module):
    """``y = x @ W.T (+ b)``; LeCun-normal init (std = 1/sqrt(in))."""

    weight: Float[Array, "o i"]
    bias: Float[Array, " o"] | None
    matmul_dtype: str = eqx.field(static=True)

    def __init__(self, d_in: int, d_out: int, *, bias: bool = False, matmul_dtype: str = "float32",
                 key: PRNGKeyArray, init_scale: float = 1.0):
        self.weight = jr.normal(key, (d_out, d_in)) * (init_scale / d_in**0.5)
        self.bias = jnp.zeros((d_out,)) if bias else None
        self.matmul_dtype = matmul_dtype

    def __call__(self, x: Float[Array, "... i"]) -> Float[Array, "... o"]:
        y = matmul(x, self.weight, self.matmul_dtype)
        return y if self.bias is None else y + self.bias.astype(y.dtype)


def activation(name: str):
    """GeGLU uses the tanh approximation of GELU (Gemma 2 section 2, ``gelu_pytorch_tanh``)."""
    return {
        "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),
        "gelu": lambda x: jax.nn.gelu(x, approximate=False),
        "silu": jax.nn.silu,
        "relu": jax.nn.relu,
    }[name]
