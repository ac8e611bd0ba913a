"""Model properties: forward, jit, receptive fields by gradients, GQA, the RG-LRU."""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import arch
import gemma_kernels
from arch.attention import Attention
from arch.rglru import RGLRU, RecurrentMixer
from gemma_kernels.attention.xla import local_attention_blocked

FAMILIES = ["tiny_gemma2", "tiny_gemma3", "tiny_global", "tiny_recurrentgemma", "tiny_embeddinggemma"]


@pytest.mark.parametrize("name", FAMILIES)
def test_forward_finite_and_jit_equals_eager(name):
    cfg = arch.preset(name)
    model = arch.LM(cfg, key=jr.key(0))
    tokens = jr.randint(jr.key(1), (24,), 0, cfg.vocab_size)
    eager = model(tokens)
    jitted = jax.jit(lambda m, t: m(t))(model, tokens)
    assert eager.shape == (24, cfg.vocab_size)
    assert bool(jnp.isfinite(eager).all())
    assert float(eager.std()) > 0.1  # not collapsed to a constant
    np.testing.assert_allclose(eager, jitted, rtol=1e-5, atol=1e-5)


def test_small_preset_forward_and_softcap_bound():
    cfg = arch.preset("small_gemma2")
    model = arch.LM(cfg, key=jr.key(0))
    logits = jax.jit(lambda m, t: m(t))(model, jnp.arange(64) % cfg.vocab_size)
    assert bool(jnp.isfinite(logits).all())
    assert float(jnp.abs(logits).max()) <= cfg.logit_softcap


def _dependence(mixer, t, d, i):
    """Which inputs j the output at row i depends on (by gradient)."""
    x = jr.normal(jr.key(2), (t, d))
    grad = jax.grad(lambda x: mixer(x, jnp.arange(t))[i].sum())(x)
    return np.asarray(jnp.any(grad != 0, axis=-1))


@pytest.mark.parametrize("window", [None, 1, 4, 7])
def test_causal_receptive_field_both_edges(window):
    cfg = arch.preset("tiny_gemma3")
    attn = Attention(cfg, window=window, key=jr.key(0))
    t, i = 20, 12
    dep = _dependence(attn, t, cfg.width, i)
    lo = 0 if window is None else i - window + 1
    expected = (np.arange(t) >= lo) & (np.arange(t) <= i)
    np.testing.assert_array_equal(dep, expected)
    assert not dep[i + 1]  # the future is invisible
    if window is not None:
        assert dep[i - window + 1] and (i - window < 0 or not dep[i - window])


@pytest.mark.parametrize("window", [None, 4, 9])
def test_bidirectional_receptive_field(window):
    cfg = arch.preset("tiny_embeddinggemma")
    attn = Attention(cfg, window=window, key=jr.key(0))
    t, i = 24, 11
    dep = _dependence(attn, t, cfg.width, i)
    if window is None:
        expected = np.ones(t, bool)
    else:  # HF's conversion: radius w // 2 + 1
        radius = window // 2 + 1
        expected = np.abs(np.arange(t) - i) < radius
    np.testing.assert_array_equal(dep, expected)


def test_recurrent_block_is_causal():
    cfg = arch.preset("tiny_recurrentgemma")
    mixer = RecurrentMixer(cfg, key=jr.key(0))
    t, i = 16, 9
    dep = _dependence(mixer, t, cfg.width, i)
    np.testing.assert_array_equal(dep, np.arange(t) <= i)


def test_gqa_equals_mha_with_repeated_kv_heads():
    t, h, kv, e = 19, 6, 2, 8
    q = jr.normal(jr.key(0), (t, h, e))
    k = jr.normal(jr.key(1), (t, kv, e))
    v = jr.normal(jr.key(2), (t, kv, e))
    for window in (None, 5):
        attend = jax.jit(lambda q, k, v, w=window: gemma_kernels.attention(q, k, v, window=w, softcap=20.0))
        gqa = attend(q, k, v)
        mha = attend(q, jnp.repeat(k, h // kv, axis=1), jnp.repeat(v, h // kv, axis=1))
        np.testing.assert_allclose(gqa, mha, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("window,t", [(1, 37), (3, 37), (5, 37), (37, 37), (50, 37)])
def test_blocked_local_attention_equals_dense(window, t, causal):
    """Blocks of 4 force several key blocks per query block, windows 5 and 37 are non-multiples."""
    q = jr.normal(jr.key(0), (t, 4, 8))
    k = jr.normal(jr.key(1), (t, 2, 8))
    v = jr.normal(jr.key(2), (t, 2, 8))
    blocked = jax.jit(lambda q, k, v: local_attention_blocked(
        q, k, v, window=window, causal=causal, block=4, softcap=10.0))(q, k, v)
    dense = gemma_kernels.attention_reference(q, k, v, window=window, causal=causal, softcap=10.0)
    np.testing.assert_allclose(blocked, dense, rtol=1e-5, atol=1e-6)


def test_rglru_decay_in_unit_interval():
    cfg = arch.preset("tiny_recurrentgemma")
    lru = RGLRU(cfg, key=jr.key(0))
    a, log_a = lru.decay(3.0 * jr.normal(jr.key(1), (64, cfg.lru_width)))
    assert float(a.min()) > 0.0 and float(a.max()) < 1.0
    assert float(log_a.max()) < 0.0  # strictly, even where float32 would round a to 1
    base = jnp.exp(-jax.nn.softplus(lru.recurrent_param))  # the code's ring: a in [0.9, 0.999]
    assert float(base.min()) >= 0.9 - 1e-6 and float(base.max()) <= 0.999 + 1e-6


def test_rglru_parallel_equals_step_by_step_equations():
    cfg = arch.preset("tiny_recurrentgemma")
    lru = RGLRU(cfg, key=jr.key(0))
    t = 12
    x = jr.normal(jr.key(1), (t, cfg.lru_width))
    reset = jnp.arange(t) == 0
    y, h_last = lru(x, reset)
    nb = cfg.lru_gate_blocks
    bw = cfg.lru_width // nb
    h = np.zeros(cfg.lru_width)
    for step in range(t):  # Griffin eqs. 1-4 written out one token at a time
        xb = np.asarray(x[step]).reshape(nb, bw)
        r = jax.nn.sigmoid(np.einsum("ni,nij->nj", xb, lru.recurrent_gate_weight) + lru.recurrent_gate_bias)
        i = jax.nn.sigmoid(np.einsum("ni,nij->nj", xb, lru.input_gate_weight) + lru.input_gate_bias)
        a = np.exp(-8.0 * np.asarray(r).reshape(-1) * np.asarray(jax.nn.softplus(lru.recurrent_param)))
        mult = 1.0 if step == 0 else np.sqrt(1 - a**2)
        h = (0.0 if step == 0 else a) * h + mult * np.asarray(i).reshape(-1) * np.asarray(x[step])
        np.testing.assert_allclose(y[step], h, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h_last, h, rtol=1e-5, atol=1e-6)


def test_recurrent_mixer_chunks_equal_full_sequence():
    cfg = arch.preset("tiny_recurrentgemma")
    mixer = RecurrentMixer(cfg, key=jr.key(0))
    x = jr.normal(jr.key(1), (15, cfg.width))
    full = mixer(x, jnp.arange(15))
    state = mixer.init_cache(15, jnp.float32)
    outs = []
    for lo, hi in [(0, 1), (1, 6), (6, 7), (7, 15)]:
        y, state = mixer.step(x[lo:hi], jnp.arange(lo, hi), state)
        outs.append(y)
    np.testing.assert_allclose(jnp.concatenate(outs), full, rtol=1e-5, atol=1e-5)


def test_sqrt_bound_derivative_is_clipped():
    from arch.rglru import SQRT_MAX_GRAD, sqrt_bound_derivative

    g = jax.grad(sqrt_bound_derivative)(1e-12)
    assert float(g) == pytest.approx(0.5 * SQRT_MAX_GRAD)
    assert float(jax.grad(sqrt_bound_derivative)(0.25)) == pytest.approx(1.0)


def test_embedding_scale_rounding_for_recurrentgemma():
    cfg = arch.preset("tiny_recurrentgemma", width=2560 // 40)
    model = arch.LM(cfg.replace(embed_scale_bf16=True), key=jr.key(0))
    x = model.embed_tokens(jnp.array([3]))
    expected = model.embed[3] * float(jnp.asarray(cfg.width**0.5, jnp.bfloat16))
    np.testing.assert_allclose(x[0], expected, rtol=1e-6)


def test_blocked_local_attention_gradient_equals_dense():
    t = 29
    q, k, v = (jr.normal(jr.key(i), (t, 2, 8)) for i in range(3))

    def loss(fn):
        return lambda q, k, v: jnp.sum(jnp.sin(fn(q, k, v)))

    blocked = loss(lambda q, k, v: local_attention_blocked(q, k, v, window=5, block=4, softcap=8.0))
    dense = loss(lambda q, k, v: gemma_kernels.attention_reference(q, k, v, window=5, softcap=8.0))
    for g, g_ref in zip(jax.grad(blocked, (0, 1, 2))(q, k, v), jax.grad(dense, (0, 1, 2))(q, k, v)):
        np.testing.assert_allclose(g, g_ref, rtol=1e-5, atol=1e-6)
