"""experiments.eval.sampling: greedy equals the argmax of the full forward recomputed at every step;
top-k=1 and a tiny top-p reduce to greedy; stop tokens stop; sampling is deterministic per key."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import arch
from experiments.eval.sampling import filter_logits, sample

PROMPT_LEN, NEW = 5, 12  # 17 tokens: the window-8 local layers wrap during decode


@pytest.fixture(scope="module", params=["tiny_gemma3", "tiny_recurrentgemma"])
def setup(request):
    cfg = arch.preset(request.param)
    model = arch.LM(cfg, key=jax.random.key(0))
    prompt = np.asarray(jax.random.randint(jax.random.key(1), (PROMPT_LEN,), 0, cfg.vocab_size))
    return model, prompt, sample(model, prompt, max_new_tokens=NEW)


def reference_greedy(model, prompt, n):
    """Argmax of the full forward over prompt + generated so far, recomputed for every new token.

    One fixed-length buffer (causal: logits at position p ignore what follows p) keeps it to one
    compile."""
    forward = eqx.filter_jit(model.__call__)
    ids = list(prompt)
    for _ in range(n):
        buf = jnp.asarray(ids + [0] * (len(prompt) + n - len(ids)), jnp.int32)
        ids.append(int(jnp.argmax(forward(buf)[len(ids) - 1])))
    return np.asarray(ids[len(prompt):])


def test_greedy_matches_iterated_full_forward(setup):
    model, prompt, greedy = setup
    assert greedy.shape == (NEW,) and greedy.dtype == np.int32
    np.testing.assert_array_equal(greedy, reference_greedy(model, prompt, NEW))


def test_top_k_1_and_tiny_top_p_are_greedy(setup):
    model, prompt, greedy = setup
    key = jax.random.key(7)
    np.testing.assert_array_equal(sample(model, prompt, max_new_tokens=NEW, temperature=1.0, top_k=1,
                                         key=key), greedy)
    np.testing.assert_array_equal(sample(model, prompt, max_new_tokens=NEW, temperature=1.0, top_p=1e-6,
                                         key=key), greedy)


def test_stop_token_stops(setup):
    model, prompt, greedy = setup
    stop = int(greedy[3])
    first = int(np.flatnonzero(greedy == stop)[0])  # it may already occur earlier
    out = sample(model, prompt, max_new_tokens=NEW, stop_token=stop)
    np.testing.assert_array_equal(out, greedy[: first + 1])


def test_temperature_sampling_is_deterministic_per_key(setup):
    model, prompt, greedy = setup
    draw = lambda seed: sample(model, prompt, max_new_tokens=NEW, temperature=1.5,
                               key=jax.random.key(seed))
    a, b, c = draw(1), draw(1), draw(2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) and not np.array_equal(a, greedy)
    assert ((0 <= a) & (a < model.cfg.vocab_size)).all()


def test_filter_logits():
    logits = jnp.log(jnp.array([0.5, 0.3, 0.15, 0.05]))
    kept = lambda k, p: np.isfinite(np.asarray(filter_logits(logits, jnp.int32(k), jnp.float32(p))))
    assert kept(2, 1.0).tolist() == [True, True, False, False]
    assert kept(4, 0.5).tolist() == [True, False, False, False]  # 0.5 alone reaches the mass
    assert kept(4, 0.7).tolist() == [True, True, False, False]
    assert kept(4, 0.9).tolist() == [True, True, True, False]
    assert kept(1, 0.9).tolist() == [True, False, False, False]


def test_bad_arguments():
    model = arch.LM(arch.preset("tiny_gemma2"), key=jax.random.key(0))
    with pytest.raises(ValueError, match="top_p"):
        sample(model, [1, 2], max_new_tokens=2, top_p=0.0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        sample(model, [1, 2], max_new_tokens=0)
