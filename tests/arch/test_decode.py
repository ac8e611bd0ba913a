"""Prefill + step-by-step decode reproduces the full forward pass, for every family.

The tiny presets have 7 layers (every pattern cut mid-period) and window 8; sequences of 40 tokens
wrap each local ring buffer five times, and the chunk schedules have odd lengths and one chunk longer
than the window (a prefill that wraps the ring inside one step).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import arch

FAMILIES = ["tiny_gemma2", "tiny_gemma3", "tiny_global", "tiny_recurrentgemma"]
T = 40  # 5 x window: every ring buffer wraps several times


@eqx.filter_jit
def _decode(model, tokens, cache, chunks):
    """Prefill ``chunks`` (static lengths) one ``step`` each, then decode the rest token by token."""
    outs, i = [], 0
    for c in chunks:
        logits, cache = model.step(tokens[i : i + c], cache)
        outs.append(logits)
        i += c

    def one(cache, tok):
        logits, cache = model.step(tok[None], cache)
        return cache, logits[0]

    cache, rest = jax.lax.scan(one, cache, tokens[i:])
    return jnp.concatenate([*outs, rest]), cache


def decode(model, tokens, *, max_len, chunks=()):
    cache = arch.init_cache(model.cfg, max_len, dtype=jnp.float32)
    return _decode(model, tokens, cache, tuple(chunks))


def assert_close(got, want, rel=1e-5):
    """float32 agreement relative to the logits' scale."""
    got, want = np.asarray(got), np.asarray(want)
    scale = np.max(np.abs(want))
    err = np.max(np.abs(got - want), axis=-1) / scale
    assert err.max() < rel, f"max relative error {err.max():.2e} at position {int(err.argmax())}"


CHUNKS = (1, 5, 11, 3)  # odd lengths, one longer than the window; then 20 single-token steps


@pytest.fixture(scope="module", params=FAMILIES)
def setup(request):
    cfg = arch.preset(request.param)
    model = arch.LM(cfg, key=jax.random.key(0))
    tokens = jax.random.randint(jax.random.key(1), (T,), 0, cfg.vocab_size)
    return model, tokens, eqx.filter_jit(model.__call__)(tokens)


def test_chunked_prefill_then_decode_matches_forward(setup):
    """Chunks (1, 5, 11, 3) then token-by-token decode to 5 x window: every position's logits agree.

    The cache is longer than the sequence, so unused global slots must stay invisible.
    """
    model, tokens, full = setup
    logits, cache = decode(model, tokens, max_len=T + 9, chunks=CHUNKS)
    assert logits.shape == full.shape
    assert int(cache.pos) == T
    assert_close(logits, full)
    for kind, layer in zip(model.cfg.layer_kinds, cache.layers):
        if kind == "L":  # a ring of `window` slots holding the newest positions
            assert layer.k.shape[0] == model.cfg.window
            assert sorted(np.asarray(layer.pos).tolist()) == list(range(T - model.cfg.window, T))
        elif kind == "G":
            assert layer.k.shape[0] == T + 9
            assert np.asarray(layer.pos).tolist() == list(range(T)) + [-1] * 9
        else:  # recurrent: conv tail + f32 state, whatever the length
            assert layer.conv.shape == (model.cfg.conv_width - 1, model.cfg.lru_width)
            assert layer.h.dtype == jnp.float32


def test_decode_depends_on_the_cached_prompt(setup):
    """The check above can fail: changing one early prompt token changes late decoded logits."""
    model, tokens, full = setup
    other = tokens.at[3].set((tokens[3] + 1) % model.cfg.vocab_size)
    logits, _ = decode(model, other, max_len=T + 9, chunks=CHUNKS)  # same shapes: no recompile
    assert_close(logits, model(other))
    assert np.max(np.abs(np.asarray(logits[6]) - np.asarray(full[6]))) > 1e-4


def test_batched_decode_with_vmap():
    cfg = arch.preset("tiny_recurrentgemma", pattern="RLG")  # all three cache kinds in one model
    model = arch.LM(cfg, key=jax.random.key(0))
    batch, t = 3, 20
    tokens = jax.random.randint(jax.random.key(2), (batch, t), 0, cfg.vocab_size)
    full = jax.vmap(model)(tokens)
    cache = arch.init_cache(cfg, t, dtype=jnp.float32, batch=batch)
    assert cache.pos.shape == (batch,)
    step = jax.vmap(model.step)

    @jax.jit
    def run(tokens, cache):
        logits, cache = step(tokens[:, :6], cache)  # batched prefill chunk

        def one(cache, tok):
            out, cache = step(tok[:, None], cache)
            return cache, out[:, 0]

        cache, rest = jax.lax.scan(one, cache, tokens[:, 6:].T)
        return jnp.concatenate([logits, rest.transpose(1, 0, 2)], axis=1)

    got = run(tokens, cache)
    for i in range(batch):
        assert_close(got[i], full[i])


def test_cache_shorter_than_window():
    """max_len < window: a local layer's ring has max_len slots and decoding up to max_len is exact."""
    cfg = arch.preset("tiny_gemma2")
    model = arch.LM(cfg, key=jax.random.key(0))
    tokens = jax.random.randint(jax.random.key(3), (5,), 0, cfg.vocab_size)
    logits, cache = decode(model, tokens, max_len=5, chunks=(2,))
    assert cache.layers[0].k.shape[0] == 5
    assert_close(logits, model(tokens))


def test_bidirectional_config_refuses_to_decode():
    cfg = arch.preset("tiny_embeddinggemma")
    with pytest.raises(ValueError, match="bidirectional"):
        arch.init_cache(cfg, 16)
    model = arch.LM(cfg, key=jax.random.key(0))
    cache = arch.init_cache(cfg.replace(causal=True), 16)
    with pytest.raises(ValueError, match="bidirectional"):
        model.step(jnp.zeros((1,), jnp.int32), cache)


@pytest.mark.parametrize("name", ["tiny_gemma3", "tiny_global", "tiny_recurrentgemma"])
@pytest.mark.parametrize("ctx", [5, 8, 19])  # inside the window, exactly one window, past two wraps
def test_filled_cache_is_the_state_a_prefill_leaves(name, ctx):
    """``filled_cache`` (random values, for timing decode at long context) has the shapes, dtypes and
    slot positions of a real prefill of ``ctx`` tokens, and a decode step runs on it."""
    cfg = arch.preset(name)
    model = arch.LM(cfg, key=jax.random.key(0))
    max_len = ctx + 4
    tokens = jax.random.randint(jax.random.key(1), (ctx,), 0, cfg.vocab_size)
    _, real = model.step(tokens, arch.init_cache(cfg, max_len, dtype=jnp.bfloat16))
    fake = arch.cache.filled_cache(cfg, ctx, max_len, dtype=jnp.bfloat16)
    assert jax.tree_util.tree_structure(fake) == jax.tree_util.tree_structure(real)
    for a, b in zip(jax.tree_util.tree_leaves(fake), jax.tree_util.tree_leaves(real)):
        assert (a.shape, a.dtype) == (b.shape, b.dtype)
    assert int(fake.pos) == int(real.pos) == ctx
    for kind, f, r in zip(cfg.layer_kinds, fake.layers, real.layers):
        if kind in "GL":
            np.testing.assert_array_equal(np.asarray(f.pos), np.asarray(r.pos))
    logits, after = model.step(tokens[:1], fake)
    assert logits.shape == (1, cfg.vocab_size) and bool(jnp.all(jnp.isfinite(logits)))
    assert int(after.pos) == ctx + 1
