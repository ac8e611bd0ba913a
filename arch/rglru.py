"""The Griffin recurrent block: two branches, Conv1D + RG-LRU on one, GELU on the other.

Griffin (arXiv 2402.19427) section 2.4, equations 1-4, as in the released RecurrentGemma code:

    r_t = sigmoid(W_a x_t + b_a)           i_t = sigmoid(W_x x_t + b_x)      (block-diagonal W)
    log a_t = -c * r_t * softplus(Lambda)  (c = 8)
    h_t = a_t * h_{t-1} + sqrt(1 - a_t^2) * (i_t * x_t)

At a sequence start the multiplier is 1 and h_{-1} = 0 (reset). Lambda is initialised so that the
base ``a = sigmoid-like exp(-softplus(Lambda))`` lies on the ring a^2 ~ U[0.9^2, 0.999^2] (the code's
``rnn_param_init``; the paper's text puts a^c there instead; the code is what checkpoints use).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

import gemma_kernels
from arch.config import ModelConfig
from arch.linear import Linear, activation
from arch.mixer import AbstractMixer, ImageLayout
from arch.typing import Hidden, Positions, Recurrent

SQRT_MAX_GRAD = 1000.0  # RecurrentGemma clips d sqrt(x)/dx here for bf16 stability


@jax.custom_jvp
def sqrt_bound_derivative(x: Array) -> Array:
    return jnp.sqrt(x)


@sqrt_bound_derivative.defjvp
def _sqrt_bound_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    grad = 0.5 / jnp.sqrt(jnp.maximum(x, 1.0 / SQRT_MAX_GRAD**2))
    return jnp.sqrt(x), grad * dx


def init_lambda(key: PRNGKeyArray, width: int, min_rad: float = 0.9, max_rad: float = 0.999) -> Array:
    """Lambda with softplus(Lambda) = -log a and a^2 uniform in [min_rad^2, max_rad^2]."""
    u = jr.uniform(key, (width,))
    log_a = 0.5 * jnp.log(u * (max_rad**2 - min_rad**2) + min_rad**2 + 1e-8)
    return jnp.log(jnp.expm1(-log_a))  # inverse softplus


class RGLRU(eqx.Module):
    input_gate_weight: Float[Array, "n b b"]
    input_gate_bias: Float[Array, "n b"]
    recurrent_gate_weight: Float[Array, "n b b"]
    recurrent_gate_bias: Float[Array, "n b"]
    recurrent_param: Float[Array, " r"]
    c: float = eqx.field(static=True)
    scan_impl: str = eqx.field(static=True)

    def __init__(self, cfg: ModelConfig, *, key: PRNGKeyArray):
        ik, rk, lk = jr.split(key, 3)
        n = cfg.lru_gate_blocks
        b = cfg.lru_width // n
        self.input_gate_weight = jr.normal(ik, (n, b, b)) / b**0.5  # LeCun normal per block
        self.recurrent_gate_weight = jr.normal(rk, (n, b, b)) / b**0.5
        self.input_gate_bias = jnp.zeros((n, b))
        self.recurrent_gate_bias = jnp.zeros((n, b))
        self.recurrent_param = init_lambda(lk, cfg.lru_width)
        self.c, self.scan_impl = cfg.lru_c, cfg.scan_impl

    def _gate(self, x: Recurrent, w: Array, b: Array) -> Recurrent:
        t, (n, bw) = x.shape[0], b.shape
        y = jnp.einsum("tni,nij->tnj", x.reshape(t, n, bw), w) + b
        return jax.nn.sigmoid(y).reshape(t, n * bw)

    def decay(self, x: Recurrent) -> tuple[Recurrent, Recurrent]:
        """``(a_t, log a_t)`` for inputs x; a_t lies in (0, 1)."""
        r = self._gate(x, self.recurrent_gate_weight, self.recurrent_gate_bias)
        log_a = -self.c * r * jax.nn.softplus(self.recurrent_param)
        return jnp.exp(log_a), log_a

    def __call__(self, x: Recurrent, reset: Bool[Array, " t"], h0: Float[Array, " r"] | None = None
                 ) -> tuple[Recurrent, Float[Array, " r"]]:
        x32 = x.astype(jnp.float32)
        a, log_a = self.decay(x32)
        gated = x32 * self._gate(x32, self.input_gate_weight, self.input_gate_bias)
        multiplier = sqrt_bound_derivative(1.0 - jnp.exp(2.0 * log_a))
        multiplier = jnp.where(reset[:, None], 1.0, multiplier)
        a = jnp.where(reset[:, None], 0.0, a)  # a reset forgets h_{t-1}
        y, h_last = gemma_kernels.linear_scan(a, gated * multiplier, h0, impl=self.scan_impl)
        return y.astype(x.dtype), h_last


class ConvState(eqx.Module):
    """What a recurrent layer keeps while decoding: the Conv1D tail and the RG-LRU state (f32)."""

    conv: Float[Array, "w r"]
    h: Float[Array, " r"]


def causal_conv1d(x: Recurrent, weight: Float[Array, "w r"], bias: Float[Array, " r"],
                  tail: Float[Array, "w1 r"] | None = None, segment_ids: Int[Array, " t"] | None = None
                  ) -> tuple[Recurrent, Float[Array, "w1 r"]]:
    """Depthwise causal conv: ``y_t = b + sum_k weight[k] * x[t - (w - 1) + k]``; ``tail`` holds the
    ``w - 1`` inputs before x (zeros at a sequence start). Returns ``(y, new tail)``.

    With ``segment_ids`` (packed documents) a term is kept only when its input lies in the same
    document as ``t``, as the released RecurrentGemma masks its Conv1D at document starts: each
    document is convolved as if alone. The tail counts as part of the first token's document."""
    w, t = weight.shape[0], x.shape[0]
    tail = jnp.zeros((w - 1, x.shape[1]), x.dtype) if tail is None else tail.astype(x.dtype)
    xp = jnp.concatenate([tail, x])
    terms = []
    for k in range(w):
        term = xp[k : k + t] * weight[k].astype(x.dtype)
        if segment_ids is not None and k < w - 1:  # k = w - 1 is x_t itself
            seg = jnp.concatenate([jnp.full((w - 1,), segment_ids[0]), segment_ids])
            term = jnp.where((seg[k : k + t] == segment_ids)[:, None], term, 0)
        terms.append(term)
    return sum(terms) + bias.astype(x.dtype), xp[xp.shape[0] - (w - 1) :]


class RecurrentMixer(AbstractMixer):
    """Griffin's temporal block (section 2.3): ``out(RG-LRU(conv(x_branch)) * gelu(y_branch))``."""

    linear_x: Linear
    linear_y: Linear
    linear_out: Linear
    conv_weight: Float[Array, "w r"]
    conv_bias: Float[Array, " r"]
    rg_lru: RGLRU
    activation: str = eqx.field(static=True)

    def __init__(self, cfg: ModelConfig, *, key: PRNGKeyArray):
        xk, yk, ok, ck, lk = jr.split(key, 5)
        d, r, mm = cfg.width, cfg.lru_width, cfg.matmul_dtype
        self.linear_x = Linear(d, r, bias=True, matmul_dtype=mm, key=xk)
        self.linear_y = Linear(d, r, bias=True, matmul_dtype=mm, key=yk)
        self.linear_out = Linear(r, d, bias=True, matmul_dtype=mm, key=ok)
        self.conv_weight = jr.normal(ck, (cfg.conv_width, r)) / cfg.conv_width**0.5
        self.conv_bias = jnp.zeros((r,))
        self.rg_lru = RGLRU(cfg, key=lk)
        self.activation = cfg.mlp_activation

    def _recur(self, xb: Recurrent, positions: Positions, state: ConvState | None, segment_ids=None):
        """Conv1D + RG-LRU over one sequence, from ``state`` (or a fresh start)."""
        xb, tail = causal_conv1d(xb, self.conv_weight, self.conv_bias, None if state is None else state.conv,
                                 segment_ids)
        reset = positions == 0
        if segment_ids is not None:  # packed documents: each starts afresh
            reset |= jnp.concatenate([jnp.ones((1,), bool), segment_ids[1:] != segment_ids[:-1]])
        h, h_last = self.rg_lru(xb, reset, None if state is None else state.h)
        return h, ConvState(conv=tail, h=h_last)

    def __call__(self, x: Hidden, positions: Positions, *, segment_ids: Int[Array, " t"] | None = None,
                 images: ImageLayout | None = None) -> Hidden:
        """One sequence ``[t, d]`` or a batch ``[b, t, d]`` (projections over the whole batch). Image
        tokens are read in order like any other (``images`` changes nothing here)."""
        y_branch = activation(self.activation)(self.linear_y(x))
        recur = lambda xb, seg: self._recur(xb, positions, None, seg)[0]
        if x.ndim == 3:
            recur = jax.vmap(recur, in_axes=(0, None if segment_ids is None else 0))
        return self.linear_out(recur(self.linear_x(x), segment_ids) * y_branch)

    def init_cache(self, max_len: int, dtype) -> ConvState:
        w, r = self.conv_weight.shape
        return ConvState(conv=jnp.zeros((w - 1, r), dtype), h=jnp.zeros((r,), jnp.float32))

    def step(self, x: Hidden, positions: Positions, cache: ConvState, *, images: ImageLayout | None = None
             ) -> tuple[Hidden, ConvState]:
        y_branch = activation(self.activation)(self.linear_y(x))
        h, state = self._recur(self.linear_x(x), positions, cache)
        return self.linear_out(h * y_branch), ConvState(conv=state.conv.astype(cache.conv.dtype), h=state.h)
