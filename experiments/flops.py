"""Model FLOPs per token and the measured matmul peak of this machine, for MFU.

Training FLOPs per token = 3 x forward (backward ~ 2 x forward; Kaplan et al. 2020, section 2.1),
forward = 2 x (non-embedding matmul parameters) + 2 x width x vocab (the output projection)
+ attention scores and values, ``4 x heads x head_dim x visible keys`` per layer, where a local
layer's query sees at most ``window`` keys (the work the O(t * window) kernels actually do).
Norm gains and biases are counted as matmul parameters too: they are a rounding error.
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp

import arch
from arch.config import ModelConfig
from arch.masks import kernel_window


def mean_visible_keys(seq_len: int, window: int | None, causal: bool = True) -> float:
    """Average number of keys a query attends to in a sequence of ``seq_len`` tokens; ``window`` is
    what the kernels take (:func:`arch.masks.kernel_window`): the span, or the bidirectional radius."""
    t = seq_len
    if not causal:  # query i sees keys max(0, i - r + 1) .. min(t - 1, i + r - 1)
        if window is None or window >= t:
            return float(t)
        r = window
        return sum(min(t - 1, i + r - 1) - max(0, i - r + 1) + 1 for i in range(t)) / t
    if window is None or window >= t:
        return (t + 1) / 2
    # the first `window` queries see 1..window keys, the rest see exactly `window`
    return (window * (window + 1) / 2 + (t - window) * window) / t


def flops_per_token(cfg: ModelConfig, seq_len: int, *, training: bool = True) -> float:
    """Model FLOPs per token of a forward pass (``training=False``) or a training step."""
    n = arch.count_params(cfg)
    forward = 2.0 * n["non_embedding"] + 2.0 * cfg.width * cfg.vocab_size
    for kind in cfg.layer_kinds:
        if kind == "R":
            continue  # the RG-LRU scan is O(width) per token: negligible against its matmuls
        window = kernel_window(cfg.attention_window(kind), cfg.causal)
        forward += 4.0 * cfg.num_heads * cfg.head_dim * mean_visible_keys(seq_len, window, cfg.causal)
    return 3.0 * forward if training else forward


@functools.cache
def measure_matmul_peak(dtype: str = "float32", n: int = 2048, reps: int = 5) -> float:
    """FLOP/s of a jitted ``n x n`` matmul (best of ``reps``), cached per process.

    ``dtype="bfloat16"`` feeds bf16 inputs and accumulates in f32, as ``arch.linear.matmul`` does.
    """
    dt = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[dtype]
    a = jax.random.normal(jax.random.key(0), (n, n), dt)
    b = jax.random.normal(jax.random.key(1), (n, n), dt)
    f = jax.jit(lambda x, y: jnp.matmul(x, y, preferred_element_type=jnp.float32))
    f(a, b).block_until_ready()
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        f(a, b).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2.0 * n**3 / best


def mfu(tokens_per_s: float, cfg: ModelConfig, seq_len: int, *, dtype: str | None = None,
        devices: int = 1) -> float:
    """Model FLOPs utilisation: achieved training FLOP/s over the matmul peak measured on one device
    (in ``dtype``, default the config's), times the ``devices`` that ran the step. A CPU split into
    one device per core (``sharding.split_cpu``) counts once: its peak was measured on all cores."""
    if jax.devices()[0].platform == "cpu":
        devices = 1
    peak = measure_matmul_peak(dtype or cfg.matmul_dtype)
    return tokens_per_s * flops_per_token(cfg, seq_len) / (peak * devices)
