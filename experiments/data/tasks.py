"""Synthetic recall tasks as training and evaluation data: multi-query associative recall (Zoology,
Arora et al. 2023, section 3), passkey retrieval (Mohtashami & Jaggi 2023), selective copying (Griffin
section 6, after Gu & Dao 2023) and induction heads (Olsson et al. 2022).

A task row is ``seq_len + 1`` tokens (inputs are the first ``seq_len``, targets the last), a boolean
``answer`` mask over the targets (the positions that carry the task; a pure-task run's loss counts
only those) and, at each answer, its ``distance``: how many tokens back the information sits (the
position of the token holding the answer, counted from the position that predicts it). A stack of
local layers with window ``w`` sees at most ``layers * (w - 1)`` tokens back, so a distance beyond
that is out of its reach by construction.

Row ``i`` of a stream is a pure function of ``(task, seed, i)``: training and held-out streams differ
only in their seed, and a resumed run sees the same rows.

Token ids: 0-3 are reserved (pad, eos, bos, unk); each task draws its keys, values, markers and filler
from disjoint ranges above them (:meth:`Task.ranges`), so a cue occurs only where it is planted.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from experiments.data.batches import Batch, Data

RESERVED_IDS = 4
TASKS = ("mqar", "passkey", "copy", "induction")
_STREAM_TAG = 7  # keeps task rows' randomness apart from every other seeded stream


class TaskRow(NamedTuple):
    tokens: np.ndarray  # int32 [seq_len + 1]
    answer: np.ndarray  # bool [seq_len]: targets[t] (= tokens[t + 1]) is an answer
    distance: np.ndarray  # int32 [seq_len]: tokens from the answer's source to t; -1 where no answer


@dataclasses.dataclass(frozen=True, kw_only=True)
class Task:
    """One synthetic task and its sizes. ``gap``: at least this many tokens between the information and
    the first question (0: questions placed uniformly after it); ``max_gap`` bounds it from above
    (None: up to the sequence's end)."""

    name: str
    seq_len: int
    vocab_size: int
    pairs: int = 4  # mqar: key-value pairs per row; copy: tokens to copy
    queries: int | None = None  # mqar: questions per row (None: as many as pairs), keys with replacement
    repeat: float = 0.0  # mqar: chance that a question asks the previous question's key again
    keys: int = 64  # mqar: key ids to draw from
    values: int = 64  # mqar, passkey, copy, induction: answer ids to draw from
    key_len: int = 1  # passkey: tokens in the key
    gap: int = 0
    max_gap: int | None = None

    def __post_init__(self):
        if self.name not in TASKS:
            raise ValueError(f"task={self.name!r}: must be one of {TASKS}")
        if self.queries is not None and (not isinstance(self.queries, int) or self.queries < 1):
            raise ValueError(f"task {self.name}: queries={self.queries!r} must be a positive int or None")
        for field in ("seq_len", "pairs", "keys", "values", "key_len"):
            if not isinstance(getattr(self, field), int) or getattr(self, field) < 1:
                raise ValueError(f"task {self.name}: {field}={getattr(self, field)!r} must be a positive int")
        if not 0.0 <= self.repeat < 1.0:
            raise ValueError(f"task {self.name}: repeat={self.repeat!r} must be in [0, 1)")
        if self.gap < 0 or (self.max_gap is not None and self.max_gap < self.gap):
            raise ValueError(f"task {self.name}: gap={self.gap}, max_gap={self.max_gap}: need "
                             f"0 <= gap <= max_gap")
        if self.name == "mqar" and self.keys < self.pairs:
            raise ValueError(f"task mqar: keys={self.keys} < pairs={self.pairs}: keys are not reused")
        need = self.minimum_len()
        if self.seq_len < need:
            raise ValueError(f"task {self.name}: seq_len={self.seq_len} < {need}, the shortest row with "
                             f"pairs={self.pairs}, key_len={self.key_len}, gap={self.gap}")
        top = self.ranges()["filler"][1]
        if top > self.vocab_size or self.ranges()["filler"][0] + 8 > top:
            raise ValueError(f"task {self.name}: vocab_size={self.vocab_size} is too small for keys="
                             f"{self.keys}, values={self.values} and filler (need > "
                             f"{self.ranges()['filler'][0] + 8})")

    def ranges(self) -> dict[str, tuple[int, int]]:
        """Half-open id ranges: keys, values (the answers), markers, then filler up to the vocabulary
        (computed once per task: every generated row asks for them)."""
        return _ranges(self)

    def minimum_len(self) -> int:
        if self.name == "mqar":
            return 2 * self.pairs + 2 * self.num_queries + self.gap
        if self.name == "passkey":
            return 2 * (1 + self.key_len) + self.gap
        if self.name == "copy":
            return 2 * self.pairs + 1 + self.gap
        return 4 + self.gap  # induction: trigger, answer, gap, trigger

    @property
    def num_queries(self) -> int:
        return self.pairs if self.queries is None else self.queries

    @property
    def chance(self) -> float:
        """Accuracy of a guess among the answer ids (the score is an argmax over them)."""
        return 1.0 / self.values

    def answer_ids(self) -> np.ndarray:
        return np.arange(*self.ranges()["values"], dtype=np.int32)

    def spec(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def row(self, rng: np.random.Generator) -> TaskRow:
        return _GENERATORS[self.name](self, rng)

    def rows(self, seed: int, indices: Sequence[int]) -> TaskRow:
        """Rows ``indices`` of the stream ``seed``, stacked."""
        out = [self.row(np.random.default_rng([_STREAM_TAG, seed, int(i)])) for i in indices]
        return TaskRow(*(np.stack(x) for x in zip(*out)))


@functools.cache
def _ranges(task: Task) -> dict[str, tuple[int, int]]:
    k0 = RESERVED_IDS
    v0 = k0 + (task.keys if task.name == "mqar" else 0)
    m0 = v0 + task.values
    f0 = m0 + 2
    return {"keys": (k0, v0), "values": (v0, m0), "markers": (m0, f0), "filler": (f0, task.vocab_size)}


def parse_task(name: str, seq_len: int, vocab_size: int, kwargs: Sequence[tuple[str, Any]] = ()) -> Task:
    """``Task`` from a run config's ``task`` and ``task_kwargs``, naming a field it does not know."""
    known = {f.name for f in dataclasses.fields(Task)} - {"name", "seq_len", "vocab_size"}
    kw = dict(kwargs)
    if unknown := sorted(set(kw) - known):
        raise ValueError(f"task_kwargs {unknown}: unknown; known: {sorted(known)}")
    return Task(name=name, seq_len=seq_len, vocab_size=vocab_size, **kw)


# ----------------------------------------------------------------------------------------- generators
def _filler(task: Task, rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(*task.ranges()["filler"], size=n).astype(np.int32)


def _gap(task: Task, rng: np.random.Generator, room: int) -> int:
    """A gap in ``[task.gap, min(max_gap, room)]``, uniform."""
    hi = room if task.max_gap is None else min(task.max_gap, room)
    return int(rng.integers(task.gap, hi + 1))


def _row(tokens: np.ndarray, answers: dict[int, int]) -> TaskRow:
    """``answers``: target position -> distance."""
    t = len(tokens) - 1
    answer = np.zeros(t, bool)
    distance = np.full(t, -1, np.int32)
    for pos, d in answers.items():
        answer[pos], distance[pos] = True, d
    return TaskRow(tokens.astype(np.int32), answer, distance)


def _mqar(task: Task, rng: np.random.Generator) -> TaskRow:
    """``k1 v1 ... kP vP`` at the start (keys distinct), then filler holding ``queries`` questions
    ``k v``, each at least ``gap`` tokens after the last pair. Query keys are drawn with replacement:
    were every key asked once, the last answers would follow by elimination (the values not yet
    asked), a shortcut that scores well above chance with no association at all. The target after a
    query key is its value; its distance is from the key's latest earlier value token (the pair's, or
    a previous query's)."""
    p, n, t = task.pairs, task.num_queries, task.seq_len
    tokens = _filler(task, rng, t + 1)
    keys = rng.choice(np.arange(*task.ranges()["keys"]), p, replace=False)
    values = rng.integers(*task.ranges()["values"], size=p)
    tokens[0 : 2 * p : 2], tokens[1 : 2 * p : 2] = keys, values
    first = 2 * p + task.gap  # the earliest query key position
    last = t - 1 if task.max_gap is None else min(t - 1, 2 * p + task.max_gap + 2 * n)
    slots = np.arange(first, last, 2)  # a query takes two tokens: key, then its value (teacher-forced)
    if len(slots) < n:
        raise ValueError(f"task mqar: no room for {n} queries between {first} and {last}")
    where = np.sort(rng.choice(slots, n, replace=False))
    asked = rng.integers(0, p, size=n)
    if task.repeat:  # drawn only when asked for, so rows without repeats stay as they were
        for i in np.flatnonzero(rng.random(n - 1) < task.repeat) + 1:  # in order: a run keeps one key
            asked[i] = asked[i - 1]
    tokens[where], tokens[where + 1] = keys[asked], values[asked]
    source = 2 * np.arange(p) + 1  # where each key's value was last seen
    answers = {}
    for q, i in zip(where, asked):
        answers[int(q)] = int(q - source[i])
        source[i] = q + 1
    return _row(tokens, answers)


def _key_recall(task: Task, rng: np.random.Generator, cue: np.ndarray, key: np.ndarray) -> TaskRow:
    """``[filler] cue key [gap filler] cue key`` ending the row; the answers are the second key's
    tokens, each ``gap + len(cue) + len(key) - 1`` after the position that predicts it."""
    t, c, n = task.seq_len, len(cue), len(key)
    needle = np.concatenate([cue, key])
    gap = _gap(task, rng, t + 1 - 2 * (c + n))
    tokens = _filler(task, rng, t + 1)
    second = t + 1 - (c + n)  # the second cue's first token
    first = second - gap - (c + n)
    tokens[first : first + c + n], tokens[second:] = needle, needle
    # filler never repeats the cue's last token: the only earlier occurrence is the planted one
    clash = np.flatnonzero(tokens[: second] == cue[-1])
    clash = clash[(clash != first + c - 1)]
    tokens[clash] = task.ranges()["filler"][0] + (tokens[clash] - task.ranges()["filler"][0] + 1) % (
        task.ranges()["filler"][1] - task.ranges()["filler"][0])
    return _row(tokens, {second + c - 1 + j: second - first - 1 for j in range(n)})


def _passkey(task: Task, rng: np.random.Generator) -> TaskRow:
    marker = np.array([task.ranges()["markers"][0]], np.int32)
    key = rng.integers(*task.ranges()["values"], size=task.key_len).astype(np.int32)
    return _key_recall(task, rng, marker, key)


def _induction(task: Task, rng: np.random.Generator) -> TaskRow:
    """A random filler token as the trigger, a random answer after it; the trigger again at the end."""
    trigger = _filler(task, rng, 1)
    return _key_recall(task, rng, trigger, rng.integers(*task.ranges()["values"], size=1).astype(np.int32))


def _copy(task: Task, rng: np.random.Generator) -> TaskRow:
    """``pairs`` answer tokens at random places among blank tokens, a separator, then the same tokens in
    order (teacher-forced); answer j's distance is from its place in the first part."""
    n, t = task.pairs, task.seq_len
    blank, sep = task.ranges()["markers"]
    region = t + 1 - n - 1  # the scattered part, then sep, then the n answers ending the row
    span = region if task.max_gap is None else min(region, n + task.max_gap)
    lo = max(0, region - span)
    data = rng.integers(*task.ranges()["values"], size=n).astype(np.int32)
    where = np.sort(rng.choice(np.arange(lo, region - task.gap), n, replace=False))
    tokens = np.full(t + 1, blank, np.int32)
    tokens[where] = data
    tokens[region] = sep
    tokens[region + 1 :] = data
    return _row(tokens, {region + j: int(region + j - where[j]) for j in range(n)})


_GENERATORS = {"mqar": _mqar, "passkey": _passkey, "copy": _copy, "induction": _induction}


ROWS_PER_EPOCH = 1 << 20  # a stream is endless; Batches permutes this many rows per epoch


class TaskSequences:
    """A task's rows as the packed sequences of a corpus are (``experiments.data.batches``): ``get``
    returns a ``Batch`` whose ``loss_mask`` is the answers and ``distance`` their distances."""

    def __init__(self, task: Task, seed: int, rows: int = ROWS_PER_EPOCH):
        self.task, self.seed, self.rows = task, seed, rows
        self.seq_len = task.seq_len

    def __len__(self) -> int:
        return self.rows

    @property
    def num_tokens(self) -> int:
        return self.rows * (self.seq_len + 1)

    @property
    def stream(self) -> np.ndarray:
        """The tokens of the first 64 rows: a sample for statistics such as the unigram entropy."""
        return self.task.rows(self.seed, range(64)).tokens.ravel()

    def get(self, indices) -> Batch:
        rows = self.task.rows(self.seed, indices)
        b, t = rows.answer.shape
        doc_start = np.zeros((b, t), bool)
        doc_start[:, 0] = True
        return Batch(rows.tokens[:, :-1], rows.tokens[:, 1:], np.zeros((b, t), np.int32), doc_start,
                     rows.answer, rows.distance)


class MixedSequences:
    """Corpus sequences with a ``fraction`` of rows replaced by task rows: row ``i`` is a task row when
    a draw seeded by ``i`` falls below ``fraction`` (so the choice is fixed per row, whatever the
    batch). Corpus rows count every target, task rows their answers."""

    def __init__(self, corpus, task: TaskSequences, fraction: float):
        self.corpus, self.task, self.fraction = corpus, task, fraction
        self.seq_len, self.stream, self.num_tokens = corpus.seq_len, corpus.stream, corpus.num_tokens

    def __len__(self) -> int:
        return len(self.corpus)

    def get(self, indices) -> Batch:
        idx = np.asarray(indices, np.int64)
        from_task = np.array([np.random.default_rng([_STREAM_TAG, 1, int(i)]).random() < self.fraction
                              for i in idx], bool)
        out = self.corpus.get(idx)
        full = np.ones(out.inputs.shape, bool)
        out = out._replace(loss_mask=full, distance=np.full(out.inputs.shape, -1, np.int32))
        if from_task.any():
            t = self.task.get(idx[from_task])
            out = Batch(*(np.where(from_task.reshape(-1, *([1] * (a.ndim - 1))), _scatter(b, from_task), a)
                          for a, b in zip(out, t)))
        return out


def _scatter(rows: np.ndarray, where: np.ndarray) -> np.ndarray:
    """``rows`` (one per True of ``where``) spread to ``len(where)`` rows (others zero)."""
    out = np.zeros((len(where), *rows.shape[1:]), rows.dtype)
    out[where] = rows
    return out


@dataclasses.dataclass(frozen=True)
class TaskVocab:
    """Where a pure-task run has a tokenizer: ids only, no text."""

    vocab_size: int
    path = None
    eos_id = 1

    @property
    def fingerprint(self) -> str:
        return f"task-vocab-{self.vocab_size}"


@dataclasses.dataclass(frozen=True)
class TaskSource:
    """Where a pure-task run has a corpus: its name and a fingerprint of the task's sizes."""

    task: Task

    @property
    def source(self) -> str:
        return f"task:{self.task.name}"

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.task.spec(), sort_keys=True).encode()).hexdigest()[:16]


def task_data(task: Task, corpus: Data | None = None, fraction: float = 1.0) -> Data:
    """Training rows from stream 0 and held-out rows from stream 1 of ``task``; with ``corpus`` (packed
    with the tokenizer whose ids the task shares), a ``fraction`` of each split's rows are task rows."""
    train, held_out = TaskSequences(task, 0), TaskSequences(task, 1)
    if corpus is None:
        return Data(TaskSource(task), TaskVocab(task.vocab_size), train, held_out)
    return dataclasses.replace(corpus, train=MixedSequences(corpus.train, train, fraction),
                               validation=MixedSequences(corpus.validation, held_out, fraction))
