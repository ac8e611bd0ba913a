"""Token streams, packing into fixed-length sequences, and deterministic, restartable batches.

Layout: each document's tokens followed by one EOS, concatenated in corpus order into one int32
stream. Sequence i is the window `stream[i*T : i*T + T + 1]`: inputs are its first T tokens, targets
its last T, so consecutive sequences overlap by one token and no token is wasted as a boundary.
Packing crosses document boundaries; `segment_ids` and `doc_start` tell callers where they are.

Plain numpy throughout: this runs on the host, feeding whatever device the train loop uses.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from experiments.data.corpus import VALIDATION_FRACTION, Corpus, cache_root
from experiments.data.io import atomic_write_bytes
from experiments.data.tokenizer import Tokenizer

_ENCODE_CHUNK = 256  # documents per encode call: bounds the Python-int lists alive at once


class Batch(NamedTuple):
    """B packed sequences of length T (a NamedTuple, hence also a JAX pytree)."""

    inputs: np.ndarray  # int32 [B, T]
    targets: np.ndarray  # int32 [B, T]; targets[:, t] == inputs[:, t + 1] within the stream
    segment_ids: np.ndarray  # int32 [B, T]; 0 at t=0, +1 at each token that follows an EOS
    doc_start: np.ndarray  # bool [B, T]; the input token is the first token of a document
    loss_mask: np.ndarray | None = None  # bool [B, T]: the targets the loss counts (None: every one)
    distance: np.ndarray | None = None  # int32 [B, T]: a task answer's distance to its source; -1: none


def token_stream(
    corpus: Corpus, tokenizer: Tokenizer, *, split: str = "all", cache_dir: str | os.PathLike | None = None
) -> np.ndarray:
    """All documents tokenized, EOS after each, as one int32 array; cached as .npy.

    The cache key is (corpus fingerprint, tokenizer fingerprint, split label); `split` is only a label
    for humans reading the cache folder, the fingerprint already says which documents are in it.
    """
    path = cache_root(cache_dir) / "tokens" / f"{corpus.fingerprint}-{tokenizer.fingerprint}-{split}.npy"
    if path.exists():
        # mmap: a large stream costs no memory until sequences are read from it.
        return np.load(path, mmap_mode="r")
    parts = []
    eos = np.array([tokenizer.eos_id], dtype=np.int32)
    texts = [d.text for d in corpus]
    for i in range(0, len(texts), _ENCODE_CHUNK):
        for ids in tokenizer.encode_batch(texts[i : i + _ENCODE_CHUNK]):
            parts.append(np.asarray(ids, dtype=np.int32))
            parts.append(eos)
    stream = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)
    buf = io.BytesIO()
    np.save(buf, stream, allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())
    return stream


class PackedSequences:
    """A token stream viewed as `len(self)` sequences of `seq_len + 1` tokens (see module docstring)."""

    def __init__(self, stream: np.ndarray, seq_len: int, eos_id: int):
        if seq_len < 1:
            raise ValueError(f"seq_len={seq_len}; expected a positive integer")
        self.stream = stream
        self.seq_len = seq_len
        self.eos_id = eos_id

    def __len__(self) -> int:
        return max(0, (len(self.stream) - 1) // self.seq_len)

    @property
    def num_tokens(self) -> int:
        return len(self.stream)

    def get(self, indices: np.ndarray | list[int]) -> Batch:
        """The sequences at `indices`, in that order, as a Batch of shape [len(indices), seq_len]."""
        idx = np.asarray(indices, dtype=np.int64)
        n, t = len(self), self.seq_len
        if idx.ndim != 1 or (idx.size and (idx.min() < 0 or idx.max() >= n)):
            raise IndexError(f"sequence indices must be a 1-d array in [0, {n}); got {indices!r}")
        offsets = idx[:, None] * t + np.arange(t + 1)
        rows = np.asarray(self.stream[offsets], dtype=np.int32)
        inputs, targets = rows[:, :-1], rows[:, 1:]
        # The token before each row decides whether the row itself starts a document; the very
        # first token of the stream counts as following an (implicit) EOS.
        before = np.where(idx > 0, np.asarray(self.stream[np.maximum(idx * t - 1, 0)]), self.eos_id)
        prev = np.concatenate([before[:, None].astype(np.int32), inputs[:, :-1]], axis=1)
        doc_start = prev == self.eos_id
        ends = (inputs == self.eos_id).astype(np.int32)
        segment_ids = np.cumsum(ends, axis=1) - ends  # exclusive: the EOS belongs to its document
        return Batch(inputs, targets, segment_ids.astype(np.int32), doc_start)


class Batches:
    """Deterministic, restartable batches: `batches(step)` is a pure function of (data, B, seed, step).

    Each epoch draws a fresh permutation of sequence indices from `default_rng([seed, epoch])`; a batch
    is a contiguous slice of it, and the last partial batch of an epoch is dropped. Resuming at step k
    therefore costs one permutation, not k batches of replay.
    """

    def __init__(self, data: PackedSequences, batch_size: int, seed: int = 0):
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}; expected a positive integer")
        if len(data) < batch_size:
            raise ValueError(f"only {len(data)} sequences of {data.seq_len + 1} tokens ({data.num_tokens} "
                             f"tokens) for batch_size={batch_size}; use more data or smaller seq_len/batch")
        self.data = data
        self.batch_size = batch_size
        self.seed = seed
        self.steps_per_epoch = len(data) // batch_size
        self._cached: tuple[int, np.ndarray] | None = None

    def permutation(self, epoch: int) -> np.ndarray:
        if self._cached is None or self._cached[0] != epoch:
            self._cached = (epoch, np.random.default_rng([self.seed, epoch]).permutation(len(self.data)))
        return self._cached[1]

    def batch(self, step: int, rows: slice | None = None) -> Batch:
        """Batch ``step``, or only its ``rows`` (a process's slice of the global batch: the same
        sequences, in the same order, as those rows of the whole batch; the others are never read)."""
        if step < 0:
            raise ValueError(f"step={step}; expected >= 0")
        epoch, k = divmod(step, self.steps_per_epoch)
        b = self.batch_size
        indices = self.permutation(epoch)[k * b : (k + 1) * b]
        return self.data.get(indices if rows is None else indices[rows])

    __call__ = batch

    def iterate(self, start: int = 0) -> Iterator[Batch]:
        """Batches from step `start` on, forever (epochs follow one another)."""
        step = start
        while True:
            yield self.batch(step)
            step += 1

    def __iter__(self) -> Iterator[Batch]:
        return self.iterate(0)


def validation_set(data: PackedSequences, num_sequences: int) -> Batch:
    """The first `num_sequences` sequences (fewer if the split is smaller): a fixed evaluation set."""
    n = min(num_sequences, len(data))
    if n < 1:
        raise ValueError(f"validation split has {data.num_tokens} tokens, fewer than one sequence of "
                         f"{data.seq_len + 1}; more data, a larger validation_fraction or a smaller seq_len")
    return data.get(np.arange(n))


@dataclass(frozen=True)
class Data:
    """A corpus tokenized and packed, split by document into train and validation."""

    corpus: Corpus
    tokenizer: Tokenizer
    train: PackedSequences
    validation: PackedSequences

    def batches(self, batch_size: int, seed: int = 0) -> Batches:
        return Batches(self.train, batch_size, seed)

    def validation_set(self, num_sequences: int) -> Batch:
        return validation_set(self.validation, num_sequences)


def prepare_data(
    corpus: Corpus,
    tokenizer: Tokenizer,
    seq_len: int,
    *,
    cache_dir: str | os.PathLike | None = None,
    validation_fraction: float = VALIDATION_FRACTION,
) -> Data:
    """Split the corpus by document, tokenize both halves (cached) and pack them into sequences."""
    train, val = corpus.split(validation_fraction)
    streams = {
        name: token_stream(part, tokenizer, split=name, cache_dir=cache_dir)
        for name, part in (("train", train), ("validation", val))
    }
    return Data(
        corpus=corpus,
        tokenizer=tokenizer,
        train=PackedSequences(streams["train"], seq_len, tokenizer.eos_id),
        validation=PackedSequences(streams["validation"], seq_len, tokenizer.eos_id),
    )
