"""Long-range probes: hand-made logits functions with known abilities pin down what each probe scores."""

import math
import random

import jax
import numpy as np
import pytest

import arch
from experiments.data.batches import Batch
from experiments.data.corpus import Corpus, Document
from experiments.data.tokenizer import get_tokenizer
from experiments.eval.probes import expected_wins, make_filler, mid_ids
from experiments.eval.suite import (
    default_buckets,
    digit_ids,
    loss_by_position,
    model_logits_fn,
    mqar,
    passkey,
    probe_distances,
    run_probes,
)

V = 256


def copier(window: int | None = None, vocab: int = V):
    """Induction by lookup: at position t, predict the token that followed the latest earlier occurrence
    of tokens[t] (only occurrences fewer than `window` tokens back, if set); uniform when there is none."""

    def fn(tokens):
        tokens = np.asarray(tokens)
        b, t = tokens.shape
        i = np.arange(t)
        seen = (tokens[:, :, None] == tokens[:, None, :]) & (i[None, :] < i[:, None])
        if window is not None:
            seen &= (i[:, None] - i[None, :]) < window
        last = np.where(seen, i, -1).max(axis=-1)  # [b, t]
        logits = np.zeros((b, t, vocab), np.float32)
        bb, tt = np.nonzero(last >= 0)
        logits[bb, tt, tokens[bb, last[bb, tt] + 1]] = 30.0
        return logits

    return fn


def uniform(tokens):
    return np.zeros((*np.shape(tokens), V), np.float32)


def pseudo_random(tokens):
    """Random-looking logits that are a fixed function of the tokens (so runs are comparable)."""
    tokens = np.asarray(tokens, np.float64)
    t = np.arange(tokens.shape[1])[None, :, None]
    return np.sin(tokens[..., None] * 12.9898 + np.arange(V) * 78.233 + t * 3.7).astype(np.float32) * 3


def test_expected_wins_counts_ties_as_a_fair_coin():
    scores = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0], [2.0, 2.0, 2.0]])
    np.testing.assert_allclose(expected_wins(scores), [1.0, 0.0, 0.5, 1 / 3])
    np.testing.assert_allclose(expected_wins(scores, np.array([1, 1, 2, 0])), [0.0, 1.0, 0.0, 1 / 3])


def test_loss_by_position_exact_values():
    n, t = 3, 20
    boost = 0.25 * np.arange(t)  # logit of token 0 at position t; all others 0

    def fn(tokens):
        logits = np.zeros((*np.shape(tokens), V), np.float32)
        logits[:, :, 0] = boost
        return logits

    rng = np.random.default_rng(0)
    inputs = rng.integers(0, V, (n, t))
    targets = np.where(rng.random((n, t)) < 0.5, 0, 7)
    targets[0] = 7  # row 0 (masked out below) has the highest loss everywhere: the mask must matter
    z = np.exp(boost) + V - 1
    nll = np.where(targets == 0, -(boost - np.log(z)), np.log(z))
    res = loss_by_position(fn, inputs, targets, buckets=[(0, 4), (4, 10), (10, 32)], batch_size=2)
    assert res.tokens == {(0, 4): 12, (4, 10): 18, (10, 32): 30}
    for lo, hi in [(0, 4), (4, 10), (10, 32)]:
        assert res.loss[(lo, hi)] == pytest.approx(nll[:, lo:hi].mean(), rel=1e-5)
    mask = np.ones((n, t), bool)
    mask[0] = False
    masked = loss_by_position(fn, inputs, targets, buckets=[(0, 4)], mask=mask)
    assert masked.tokens == {(0, 4): 8}
    assert masked.loss[(0, 4)] == pytest.approx(nll[1:, :4].mean(), rel=1e-5)


def test_default_buckets_and_distances():
    assert default_buckets(1024) == ((0, 64), (64, 128), (128, 256), (256, 512), (512, 1024))
    assert default_buckets(300, window=100) == ((0, 64), (64, 100), (100, 128), (128, 256), (256, 300))
    assert probe_distances(128, 1000) == (64, 256, 512)
    assert probe_distances(128, 300) == (64, 256, 300)
    assert probe_distances(4096, 500) == (500,)


def test_passkey_copier_is_perfect_and_uniform_is_exactly_chance():
    kw = dict(vocab_size=V, distances=(0, 10, 100, 300), trials=24, num_choices=4, batch_size=32)
    for exact in (False, True):
        res = passkey(copier(), exact=exact, **kw)
        assert res.accuracy == {0: 1.0, 10: 1.0, 100: 1.0, 300: 1.0} and res.chance == 0.25
        assert passkey(uniform, exact=exact, **kw).accuracy == {0: 0.25, 10: 0.25, 100: 0.25, 300: 0.25}


def test_passkey_is_fair_to_a_model_that_repeats_recent_tokens():
    """Untrained tied-embedding models echo their input: distractors must not profit from that."""

    def echo(tokens):
        tokens = np.asarray(tokens)
        logits = np.zeros((*tokens.shape, V), np.float32)
        b, t = np.indices(tokens.shape)
        logits[b, t, tokens] = 5.0  # the current token
        logits[b[:, 1:], t[:, 1:], tokens[:, :-1]] += 2.0  # and the one before
        return logits

    for exact in (False, True):
        res = passkey(echo, vocab_size=V, distances=(3, 30), trials=40, exact=exact, batch_size=40)
        assert res.accuracy == {3: 0.25, 30: 0.25}


def test_passkey_random_logits_score_about_chance():
    res = passkey(pseudo_random, vocab_size=V, distances=(5, 50), trials=600, num_choices=4, batch_size=200)
    for acc in res.accuracy.values():  # binomial sd ~ 0.018
        assert abs(acc - 0.25) < 0.07


def test_passkey_local_copier_sees_only_inside_its_window():
    # key_len=4 + marker: the cue is distance + 5 tokens after the needle's marker.
    res = passkey(copier(window=64), vocab_size=V, distances=(8, 50, 64, 200), trials=24, batch_size=32)
    assert res.accuracy == {8: 1.0, 50: 1.0, 64: 0.25, 200: 0.25}


def test_passkey_layout_filler_and_marker():
    calls = []

    def record(tokens):
        calls.append(np.array(tokens))
        return uniform(tokens)

    mark, cand = [100], list(range(110, 120))
    filler = np.array([100, 110, 5, 6, 7, 8] * 50)  # contains the marker and a key token: both must go
    passkey(record, vocab_size=V, distances=(7,), trials=3, key_len=3, marker=mark, candidates=cand,
            filler=filler, seq_len=40, batch_size=8)
    tokens = calls[0][:3]
    assert tokens.shape == (3, 40)
    for row in tokens:
        cue, needle = row[-4:], row[-4 - 7 - 4 : -7 - 4]
        np.testing.assert_array_equal(cue, needle)
        assert cue[0] == 100 and set(cue[1:]) <= set(cand) and len(set(cue[1:])) == 3
        rest = np.concatenate([row[: -4 - 7 - 4], row[-7 - 4 : -4]])
        assert not np.isin(rest, cand + mark).any()


def test_mqar_copier_perfect_uniform_chance_random_about_chance():
    for gap in (0, 40, 300):
        assert mqar(copier(), vocab_size=V, num_pairs=8, gap=gap, trials=8).accuracy == 1.0
    res = mqar(uniform, vocab_size=V, num_pairs=8, gap=10, trials=8)
    assert res.chance == 1 / 64 and res.accuracy == pytest.approx(1 / 64)
    noisy = mqar(pseudo_random, vocab_size=V, num_pairs=16, gap=10, trials=200, batch_size=100)
    assert abs(noisy.accuracy - 1 / 64) < 0.015  # 3200 answers: sd ~ 0.002


def test_mqar_local_copier_and_layout():
    # 4 pairs (8 tokens) then 8 query tokens: every query is < 8 + gap + 8 tokens from its key, and more
    # than gap tokens; so gap 8 keeps all keys inside a 32-token window and gap 32 hides all of them.
    local = copier(window=32)
    assert mqar(local, vocab_size=V, num_pairs=4, gap=8, trials=8).accuracy == 1.0
    assert mqar(local, vocab_size=V, num_pairs=4, gap=32, trials=8).accuracy == pytest.approx(1 / 64)
    calls = []
    keys, values = np.arange(10, 20), np.arange(30, 40)
    mqar(lambda x: calls.append(np.array(x)) or uniform(x), vocab_size=V, num_pairs=3, gap=5, trials=2,
         keys=keys, values=values, seq_len=30)
    for row in calls[0][:2]:
        pairs, mid, queries = row[-17:-11], row[-11:-6], row[-6:]
        assert set(pairs[::2]) == set(queries[::2]) and len(set(pairs[::2])) == 3
        assert np.isin(pairs[::2], keys).all() and np.isin(pairs[1::2], values).all()
        assert dict(zip(pairs[::2], pairs[1::2])) == dict(zip(queries[::2], queries[1::2]))
        assert not np.isin(np.concatenate([row[:-17], mid]), np.concatenate([keys, values])).any()


def test_probes_are_deterministic_per_seed():
    calls = []

    def record(tokens):
        calls.append(np.array(tokens))
        return pseudo_random(tokens)

    a = passkey(record, vocab_size=V, distances=(20,), trials=16, seed=3)
    b = passkey(record, vocab_size=V, distances=(20,), trials=16, seed=3)
    passkey(record, vocab_size=V, distances=(20,), trials=16, seed=4)
    assert a == b
    np.testing.assert_array_equal(calls[0], calls[2])
    assert not np.array_equal(calls[0], calls[4])
    calls.clear()
    assert mqar(record, vocab_size=V, gap=9, seed=1) == mqar(record, vocab_size=V, gap=9, seed=1)
    np.testing.assert_array_equal(calls[0], calls[2])
    rng1, rng2 = np.random.default_rng(0), np.random.default_rng(0)
    np.testing.assert_array_equal(make_filler(rng1, 50, mid_ids(V, 5), V, None),
                                  make_filler(rng2, 50, mid_ids(V, 5), V, None))


def test_model_logits_fn_matches_the_model_one_sequence_at_a_time():
    cfg = arch.preset("tiny_gemma3")
    model = arch.LM(cfg, key=jax.random.key(0))
    tokens = np.random.default_rng(0).integers(0, cfg.vocab_size, (3, 12)).astype(np.int32)
    batched = np.asarray(model_logits_fn(model)(tokens))
    looped = np.asarray(model_logits_fn(model, batch_jit=False)(tokens))
    assert batched.shape == (3, 12, cfg.vocab_size)
    # The loop calls the model on one sequence at a time: the batched rows must be those sequences.
    np.testing.assert_allclose(batched, looped, rtol=1e-5, atol=1e-5)
    assert not np.allclose(batched[0], batched[1])


def _digit_corpus() -> Corpus:
    rng = random.Random(0)
    words = ["def", "return", "x", "=", "42", "0.5", "1987", "36", "if", "print"]
    docs = [Document(f"d{i}.py", "\n".join(" ".join(rng.choice(words) for _ in range(6)) for _ in range(20)))
            for i in range(20)]
    return Corpus(tuple(docs), "digits")


def test_run_probes_on_a_tiny_model(tmp_path):
    tok = get_tokenizer(_digit_corpus(), vocab_size=300, cache_dir=tmp_path)
    digits = digit_ids(tok)
    assert digits is not None and len(set(digits.tolist())) == 10
    assert [tok.decode([i]) for i in digits] == list("0123456789")
    cfg = arch.preset("tiny_gemma3", vocab_size=tok.vocab_size)
    model = arch.LM(cfg, key=jax.random.key(0))
    stream = np.array(tok.encode(_digit_corpus().documents[0].text * 3), np.int32)
    t = 64
    val = Batch(stream[None, :t].repeat(2, 0), stream[None, 1 : t + 1].repeat(2, 0), None, None)
    out = run_probes(model, tok, val, window=cfg.window, seq_len=t, quick=True)
    assert set(out) == {"loss_pos_0_8", "loss_pos_8_64", "passkey_4", "passkey_16", "passkey_32",
                        "passkey_mean", "passkey_chance", "mqar_gap_4", "mqar_gap_16", "mqar_gap_32",
                        "mqar_mean", "mqar_chance"}
    assert all(math.isfinite(v) for v in out.values())
    assert 0 <= out["passkey_mean"] <= 1 and out["passkey_chance"] == 0.25
    assert out["loss_pos_0_8"] == pytest.approx(math.log(tok.vocab_size), rel=0.2)  # untrained: ~uniform
    # Without a tokenizer or validation text the probes fall back to vocabulary ids and random filler.
    bare = run_probes(model, None, None, window=cfg.window, seq_len=t, quick=True)
    assert not any(k.startswith("loss_pos") for k in bare) and math.isfinite(bare["mqar_mean"])
