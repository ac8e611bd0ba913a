"""A dense layer whose weight is stored ``[out, in]`` (the Hugging Face layout) and whose matmul can run
with bf16 inputs and f32 accumulation."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

MATMUL_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def matmul(x: Array, w: Array, matmul_dtype: str) -> Array:
    """``x @ w.T`` with inputs cast to ``matmul_dtype`` and the product accumulated in f32."""
    dt = MATMUL_DTYPES[matmul_dtype]
    out = jnp.matmul(x.astype(dt), w.astype(dt).T, preferred_element_type=jnp.float32)
    return out.astype(jnp.result_type(x.dtype, w.dtype))


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
