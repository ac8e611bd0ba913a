"""Long-range probes as pure functions of a batched ``logits_fn``: position-bucketed loss, passkey, MQAR.

Each probe builds its sequences with numpy from a seed (deterministic), runs them through
``logits_fn(tokens int32[B, T]) -> float[B, T, V]`` in fixed-size chunks, and reduces each chunk on
device to the few numbers it needs, so a [B, T, V] logits array is never kept and, because every chunk
has the same shape, a jitted model compiles once per probe. Hand-made logits functions (a copier, a
uniform model) plug in directly, which is how tests pin down what each probe can and cannot see.

Sequences are left-padded with filler to a common length ``seq_len``: the cue always sits at the end,
so only the distance to the information varies, never the absolute position of the question.

Ties are scored as a random tie-break in expectation (a trial whose true answer ties with ``k`` others
at the top counts ``1 / (k + 1)``), so a uniform model scores exactly chance, not zero.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

LogitsFn = Callable[[Int[np.ndarray, "b t"]], Float[Array, "b t v"]]

RESERVED_IDS = 4  # pad, eos, bos, unk (experiments.data.tokenizer): never drawn as random filler or keys
_PASSKEY, _MQAR = 1, 2  # seed-stream tags: each probe draws from its own stream


class BucketedLoss(NamedTuple):
    loss: dict[tuple[int, int], float]  # [lo, hi) position bucket -> mean next-token cross-entropy
    tokens: dict[tuple[int, int], int]  # [lo, hi) -> tokens averaged over


class ByDistance(NamedTuple):
    accuracy: dict[int, float]  # distance -> accuracy
    chance: float


class Accuracy(NamedTuple):
    accuracy: float
    chance: float


class ByBucket(NamedTuple):
    accuracy: dict[tuple[int, int], float]  # [lo, hi) distance bucket -> accuracy (NaN: no answer there)
    answers: dict[tuple[int, int], int]  # [lo, hi) -> answers scored
    chance: float


# ----------------------------------------------------------------------------- running logits_fn


@jax.jit
def _token_nll(logits: Float[Array, "b t v"], targets: Int[Array, "b t"]) -> Float[Array, "b t"]:
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]


@jax.jit
def _gather_logprobs(
    logits: Float[Array, "b t v"], positions: Int[Array, "b k"], ids: Int[Array, "b k c"]
) -> Float[Array, "b k c"]:
    """log p(ids[b, k, c] | tokens[b, :positions[b, k] + 1]): log-softmax only at the scored positions."""
    rows = jnp.take_along_axis(logits, positions[..., None], axis=1).astype(jnp.float32)  # [b, k, v]
    return jnp.take_along_axis(jax.nn.log_softmax(rows, axis=-1), ids, axis=-1)


def _chunked(logits_fn: LogitsFn, reduce, batch_size: int, tokens: np.ndarray, *extra: np.ndarray):
    """``reduce(logits_fn(tokens[chunk]), *extra[chunk])`` over fixed-size chunks, concatenated.

    The last chunk is padded by repeating its first row so every call has the same shape (one compile);
    the padded rows are dropped from the result.
    """
    n = len(tokens)
    outs = []
    for i in range(0, n, batch_size):
        idx = np.arange(i, i + batch_size)
        idx = np.where(idx < n, idx, i)
        logits = logits_fn(tokens[idx])
        outs.append(np.asarray(reduce(logits, *(jnp.asarray(x[idx]) for x in extra)))[: n - i])
    return np.concatenate(outs)


def expected_wins(
    scores: Float[np.ndarray, "n c"], truth: Int[np.ndarray, " n"] | None = None
) -> Float[np.ndarray, " n"]:
    """Per trial, the probability that the true choice (column `truth[i]`, default 0) ranks first
    under a random tie-break among the choices that share the top score."""
    truth = np.zeros(len(scores), np.int64) if truth is None else np.asarray(truth)
    at_top = scores == scores.max(axis=1, keepdims=True)
    return np.where(at_top[np.arange(len(scores)), truth], 1.0 / at_top.sum(axis=1), 0.0)


# ----------------------------------------------------------------------------- loss by position


def default_buckets(seq_len: int, window: int | None = None) -> tuple[tuple[int, int], ...]:
    """[0, 64), [64, 128), [128, 256), ... up to seq_len, with `window` as an extra edge if inside."""
    edges = {0, seq_len}
    edge = 64
    while edge < seq_len:
        edges.add(edge)
        edge *= 2
    if window is not None and 0 < window < seq_len:
        edges.add(window)  # splits "inside the local window" from "beyond it" exactly
    e = sorted(edges)
    return tuple(zip(e[:-1], e[1:]))


def loss_by_position(
    logits_fn: LogitsFn,
    inputs: Int[np.ndarray, "n t"],
    targets: Int[np.ndarray, "n t"],
    *,
    buckets: Sequence[tuple[int, int]] | None = None,
    mask: np.ndarray | None = None,
    batch_size: int = 8,
) -> BucketedLoss:
    """Mean next-token cross-entropy grouped by the position of the predicting token.

    Loss that keeps falling past the local window shows a model using long context (the per-position
    loss curves of Gemma 3 section 5 and Griffin section 6); a loss that flattens at `window` shows
    layers that stop there. Buckets are half-open ``[lo, hi)`` position ranges; ``mask`` (bool [N, T])
    drops tokens, e.g. padding.
    """
    inputs, targets = np.asarray(inputs, np.int32), np.asarray(targets, np.int32)
    if inputs.shape != targets.shape or inputs.ndim != 2:
        raise ValueError(f"inputs {inputs.shape} and targets {targets.shape} must both be [N, T]")
    t = inputs.shape[1]
    buckets = default_buckets(t) if buckets is None else tuple((int(lo), int(hi)) for lo, hi in buckets)
    nll = _chunked(logits_fn, _token_nll, batch_size, inputs, targets).astype(np.float64)
    keep = np.ones_like(nll, bool) if mask is None else np.asarray(mask, bool)
    loss, tokens = {}, {}
    for lo, hi in buckets:
        if not 0 <= lo < hi:
            raise ValueError(f"bucket [{lo}, {hi}) must satisfy 0 <= lo < hi")
        sel = keep[:, lo : min(hi, t)]
        count = int(sel.sum())
        tokens[(lo, hi)] = count
        loss[(lo, hi)] = float(nll[:, lo : min(hi, t)][sel].mean()) if count else float("nan")
    return BucketedLoss(loss, tokens)


# ----------------------------------------------------------------------------- synthetic sequences


def mid_ids(vocab_size: int, count: int, *, skip: int = 0) -> np.ndarray:
    """`count` consecutive ids starting a quarter into the vocabulary (past `skip` ids).

    In a BPE vocabulary ids grow as merges get rarer: a quarter in are ordinary, mid-frequency pieces,
    away from the special and byte-fallback ids at the bottom.
    """
    lo = max(RESERVED_IDS, vocab_size // 4) + skip
    if lo + count > vocab_size:
        raise ValueError(f"need {count} ids from {lo} but vocab_size={vocab_size}")
    return np.arange(lo, lo + count, dtype=np.int32)


def make_filler(
    rng: np.random.Generator, length: int, banned: np.ndarray, vocab_size: int, stream: np.ndarray | None
) -> np.ndarray:
    """`length` distractor tokens: a random slice of `stream` (wrapping), else uniform vocabulary ids.

    Banned tokens (the probe's markers, keys and values) are replaced by random allowed ids, so the only
    earlier occurrence of a cue is the planted one and the task has a single correct answer.
    """
    allowed = np.setdiff1d(np.arange(RESERVED_IDS, vocab_size, dtype=np.int32), banned)
    if stream is None or len(stream) == 0:
        return rng.choice(allowed, length).astype(np.int32)
    out = np.take(np.asarray(stream, np.int32), rng.integers(len(stream)) + np.arange(length), mode="wrap")
    bad = np.isin(out, banned)
    out[bad] = rng.choice(allowed, int(bad.sum()))
    return out


def _choices(rng, candidates: np.ndarray, key_len: int, count: int) -> np.ndarray:
    """The true key (row 0) and `count - 1` different distractors, each of `key_len` different tokens.

    Distinct tokens within a key: a copier keyed on the current token is ambiguous inside a key with a
    repeat. A distractor never has, at position i, a token the true key had before i: those are in the
    teacher-forced context, so a model biased to repeat recent tokens (an untrained model with tied
    embeddings repeats its input) would favour the distractor and score below chance.
    """
    truth = tuple(int(x) for x in rng.choice(candidates, key_len, replace=False))
    keys = [truth]
    while len(keys) < count:
        key = tuple(int(x) for x in rng.choice(candidates, key_len, replace=False))
        if key not in keys and all(key[i] not in truth[:i] for i in range(key_len)):
            keys.append(key)
    return np.array(keys, np.int32)


def passkey(
    logits_fn: LogitsFn,
    *,
    vocab_size: int,
    distances: Sequence[int] = (16, 64, 256),
    trials: int = 32,
    num_choices: int = 4,
    seed: int = 0,
    filler: np.ndarray | None = None,
    key_len: int = 4,
    candidates: Sequence[int] | None = None,
    marker: Sequence[int] | None = None,
    seq_len: int | None = None,
    exact: bool = False,
    batch_size: int = 8,
) -> ByDistance:
    """Passkey retrieval (Mohtashami & Jaggi 2023, "Landmark Attention"), scored as multiple choice.

    Sequence: ``[filler] M k1..kn [filler: distance tokens] M k1..kn`` with M the marker tokens and the
    key drawn from `candidates` (default: 10 mid-vocabulary ids, like the 10 digits). A model that can
    copy across `distance` tokens (an induction head, Olsson et al. 2022) predicts the key after the
    second M; one that cannot see that far is at chance.

    Accuracy: fraction of trials in which the true key's summed log-probability beats that of each of
    ``num_choices - 1`` distractor keys; chance is ``1 / num_choices`` and small models give graded
    numbers instead of the all-or-nothing of greedy decoding. The true key is teacher-forced after the
    cue and every choice is scored token by token under that prefix (one forward per trial); with
    ``exact=True`` each choice is instead teacher-forced on its own tokens (`num_choices` forwards).
    """
    cand = mid_ids(vocab_size, 10, skip=1) if candidates is None else np.asarray(candidates, np.int32)
    mark = mid_ids(vocab_size, 1) if marker is None else np.asarray(marker, np.int32)
    if len(np.unique(cand)) < key_len + 1 or np.isin(mark, cand).any():
        raise ValueError(f"need > key_len={key_len} distinct candidates, disjoint from the marker")
    m, n = len(mark), key_len
    longest = max(distances) + 2 * (m + n)
    seq_len = longest if seq_len is None else seq_len
    if seq_len < longest:
        raise ValueError(f"seq_len={seq_len} < {longest} needed for distance {max(distances)}")
    banned = np.union1d(cand, mark[-1:])  # the last marker token is the cue the copy keys on
    acc = {}
    for d in distances:
        rng = np.random.default_rng([seed, _PASSKEY, d])
        rows, ids = [], []
        for _ in range(trials):
            choices = _choices(rng, cand, n, num_choices)  # row 0 is the truth
            needle = np.concatenate([mark, choices[0]])
            head = make_filler(rng, seq_len - 2 * (m + n) - d, banned, vocab_size, filler)
            gap = make_filler(rng, d, banned, vocab_size, filler)
            body = np.concatenate([head, needle, gap, mark])
            if exact:
                rows += [np.concatenate([body, c]) for c in choices]
                ids += [c[:, None] for c in choices]
            else:
                rows.append(np.concatenate([body, choices[0]]))
                ids.append(choices.T)  # [n, c]: every choice at each key position
        tokens, ids = np.stack(rows), np.stack(ids)
        positions = np.broadcast_to(seq_len - n - 1 + np.arange(n), ids.shape[:2])
        logp = _chunked(logits_fn, _gather_logprobs, batch_size, tokens, positions, ids)
        scores = logp.sum(axis=1).reshape(trials, num_choices)  # summed over key tokens
        acc[int(d)] = float(expected_wins(scores).mean())
    return ByDistance(acc, 1.0 / num_choices)


def mqar(
    logits_fn: LogitsFn,
    *,
    vocab_size: int,
    num_pairs: int = 8,
    gap: int = 0,
    trials: int = 16,
    seed: int = 0,
    keys: Sequence[int] | None = None,
    values: Sequence[int] | None = None,
    filler: np.ndarray | None = None,
    seq_len: int | None = None,
    batch_size: int = 8,
) -> Accuracy:
    """Multi-query associative recall (Arora et al. 2023, "Zoology", section 3).

    Sequence: ``[filler] k1 v1 ... kP vP [filler: gap tokens] q1 v(q1) ... qP v(qP)`` where the queries
    are the P keys in random order, keys and values come from disjoint id ranges, and keys within a
    sequence are distinct. Zoology shows recall, not perplexity, separates attention from fixed-state
    recurrences; the gap moves every key-value pair out of a local window. Accuracy: at each query key
    (values teacher-forced), does the argmax over the value range equal the bound value; chance is
    ``1 / len(values)``.
    """
    avail = vocab_size - max(RESERVED_IDS, vocab_size // 4)
    nv = min(64, avail // 2) if values is None else 0
    kr = mid_ids(vocab_size, min(256, avail - nv)) if keys is None else np.asarray(keys, np.int32)
    # Sorted, so a value's index in `vr` is its column in the gathered scores.
    vr = np.sort(mid_ids(vocab_size, nv, skip=len(kr)) if values is None else np.asarray(values, np.int32))
    if np.isin(kr, vr).any() or len(np.unique(kr)) < num_pairs:
        raise ValueError(f"keys must be disjoint from values and number >= num_pairs={num_pairs}")
    longest = 4 * num_pairs + gap
    seq_len = longest if seq_len is None else seq_len
    if seq_len < longest:
        raise ValueError(f"seq_len={seq_len} < {longest} needed for num_pairs={num_pairs}, gap={gap}")
    banned = np.union1d(kr, vr)
    rng = np.random.default_rng([seed, _MQAR, num_pairs, gap])
    rows, answers = [], []
    for _ in range(trials):
        k = rng.choice(kr, num_pairs, replace=False)
        v = rng.choice(vr, num_pairs)
        order = rng.permutation(num_pairs)
        pairs = np.stack([k, v], 1).ravel()
        queries = np.stack([k[order], v[order]], 1).ravel()
        head = make_filler(rng, seq_len - longest, banned, vocab_size, filler)
        mid = make_filler(rng, gap, banned, vocab_size, filler)
        rows.append(np.concatenate([head, pairs, mid, queries]).astype(np.int32))
        answers.append(np.searchsorted(vr, v[order]))
    tokens = np.stack(rows)
    positions = np.broadcast_to(seq_len - 2 * num_pairs + 2 * np.arange(num_pairs), (trials, num_pairs))
    ids = np.broadcast_to(vr, (trials, num_pairs, len(vr)))
    logp = _chunked(logits_fn, _gather_logprobs, batch_size, tokens, positions, ids)
    wins = expected_wins(logp.reshape(-1, len(vr)), np.stack(answers).reshape(-1))
    return Accuracy(float(wins.mean()), 1.0 / len(vr))


# ----------------------------------------------------------------------------- trained tasks


@jax.jit
def _wins_among(logits: Float[Array, "b t v"], ids: Int[Array, " c"], targets: Int[Array, "b t"]
                ) -> Float[Array, "b t"]:
    """Per position, the chance that the target ranks first among ``ids`` (contiguous) under a random
    tie-break (a tie of the target with k others at the top counts 1 / (k + 1))."""
    scores = logits[..., ids].astype(jnp.float32)
    at_top = scores == jnp.max(scores, axis=-1, keepdims=True)
    col = jnp.clip(targets - ids[0], 0, ids.shape[0] - 1)
    hit = jnp.take_along_axis(at_top, col[..., None], axis=-1)[..., 0]
    return jnp.where(hit, 1.0 / jnp.sum(at_top, axis=-1), 0.0)


def distance_edges(window: int | None, layers: int) -> tuple[int, ...]:
    """Distance bucket edges for a task: inside the local window (``< window``), inside the receptive
    field of ``layers`` local layers (``<= layers * (window - 1)``), beyond it. No window: one bucket."""
    if window is None:
        return ()
    return (window, layers * (window - 1) + 1)


def task_accuracy(logits_fn: LogitsFn, inputs: Int[np.ndarray, "n t"], targets: Int[np.ndarray, "n t"],
                  answer: np.ndarray, distance: np.ndarray, answer_ids: np.ndarray, *,
                  edges: Sequence[int] = (), batch_size: int = 8) -> ByBucket:
    """Accuracy at a task's answer positions (the target ranks first among the contiguous
    ``answer_ids``, ties broken at random in expectation, so a uniform model scores exactly chance),
    grouped by the answer's distance into the buckets ``[0, e1), [e1, e2), ..., [ek, inf)``; chance is
    ``1 / len(answer_ids)``. ``answer``/``distance``: the task rows' (``experiments.data.tasks``)."""
    ids = jnp.asarray(answer_ids, jnp.int32)
    wins = _chunked(logits_fn, lambda logits, t: _wins_among(logits, ids, t), batch_size, inputs, targets)
    right, d = wins[answer], distance[answer]
    bounds = (0, *edges, np.iinfo(np.int32).max)
    acc, count = {}, {}
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        sel = (d >= lo) & (d < hi)
        acc[(lo, hi)] = float(right[sel].mean()) if sel.any() else float("nan")
        count[(lo, hi)] = int(sel.sum())
    return ByBucket(acc, count, 1.0 / len(answer_ids))
