"""Token streams, packing boundaries, deterministic and restartable batches, the validation set."""

import itertools
import random

import numpy as np
import pytest

from experiments.data.batches import Batches, PackedSequences, prepare_data, token_stream, validation_set
from experiments.data.corpus import Corpus, Document
from experiments.data.tokenizer import get_tokenizer

EOS = 1
VOCAB = 300


def tiny_corpus(n_docs: int = 24, seed: int = 0) -> Corpus:
    """Documents over a small alphabet, so a 300-piece vocabulary trains in well under a second."""
    rng = random.Random(seed)
    words = ["def", "return", "self", "value", "for", "in", "range", "if", "else", "print", "data", "42"]
    docs = []
    for i in range(n_docs):
        n_lines = rng.randrange(1, 30)  # varied lengths, so documents straddle sequence boundaries
        lines = (" ".join(rng.choice(words) for _ in range(rng.randrange(1, 8))) for _ in range(n_lines))
        text = "\n".join(lines)
        docs.append(Document(f"doc{i:02d}.txt", text + "\n"))
    return Corpus(tuple(docs), "tiny")


@pytest.fixture(scope="module")
def tok_and_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    return get_tokenizer(tiny_corpus(), vocab_size=VOCAB, cache_dir=cache), cache


def _random_stream(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    s = rng.integers(4, 50, size=n).astype(np.int32)
    s[rng.random(n) < 0.1] = EOS
    return s


def test_packing_exact_values():
    stream = np.array([5, 6, EOS, 7, EOS, 8, 9, 10, EOS, 11, 12, EOS], dtype=np.int32)
    seqs = PackedSequences(stream, seq_len=4, eos_id=EOS)
    assert len(seqs) == 2  # windows [0:5] and [4:9]; [8:13] would run past the end
    b = seqs.get([0, 1])
    np.testing.assert_array_equal(b.inputs, [[5, 6, EOS, 7], [EOS, 8, 9, 10]])
    np.testing.assert_array_equal(b.targets, [[6, EOS, 7, EOS], [8, 9, 10, EOS]])
    np.testing.assert_array_equal(b.segment_ids, [[0, 0, 0, 1], [0, 1, 1, 1]])
    np.testing.assert_array_equal(b.doc_start, [[True, False, False, True], [False, True, False, False]])
    assert b.inputs.dtype == b.targets.dtype == b.segment_ids.dtype == np.int32
    # Row order follows the requested indices.
    np.testing.assert_array_equal(seqs.get([1, 0]).inputs, b.inputs[::-1])


def test_packing_invariants_on_random_stream():
    stream = _random_stream(5000)
    seqs = PackedSequences(stream, seq_len=64, eos_id=EOS)
    assert len(seqs) == (5000 - 1) // 64
    b = seqs.get(np.arange(len(seqs)))
    np.testing.assert_array_equal(b.targets[:, :-1], b.inputs[:, 1:])  # shifted by one
    np.testing.assert_array_equal(b.inputs.ravel(), stream[: len(seqs) * 64])  # nothing skipped
    np.testing.assert_array_equal(b.targets.ravel(), stream[1 : len(seqs) * 64 + 1])
    after_eos = b.inputs[:, :-1] == EOS
    # The segment id increases by exactly one after an EOS and nowhere else.
    np.testing.assert_array_equal(np.diff(b.segment_ids, axis=1), after_eos.astype(np.int32))
    np.testing.assert_array_equal(b.doc_start[:, 1:], after_eos)
    assert (b.segment_ids[:, 0] == 0).all()
    prev = np.concatenate([[EOS], stream[:-1]])[np.arange(len(seqs)) * 64]
    np.testing.assert_array_equal(b.doc_start[:, 0], prev == EOS)


def test_token_stream_joins_documents_with_eos_and_is_cached(tok_and_cache, monkeypatch):
    tok, cache = tok_and_cache
    corpus = tiny_corpus(6, seed=3)
    stream = token_stream(corpus, tok, split="train", cache_dir=cache)
    assert stream.dtype == np.int32 and stream[-1] == tok.eos_id
    assert (stream == tok.eos_id).sum() == len(corpus)
    pieces = np.split(stream, np.flatnonzero(stream == tok.eos_id) + 1)[:-1]
    assert [tok.decode(p[:-1]) for p in pieces] == [d.text for d in corpus]
    files = list((cache / "tokens").iterdir())
    assert [f.name for f in files] == [f"{corpus.fingerprint}-{tok.fingerprint}-train.npy"]

    monkeypatch.setattr(tok, "encode_batch", lambda *a, **k: pytest.fail("re-tokenized a cached stream"))
    np.testing.assert_array_equal(token_stream(corpus, tok, split="train", cache_dir=cache), stream)


def _batches(seed: int, n: int = 4000, batch: int = 8, seq: int = 16) -> Batches:
    return Batches(PackedSequences(_random_stream(n), seq, EOS), batch, seed)


def _first_inputs(b: Batches, steps: int) -> np.ndarray:
    return np.stack([x.inputs for x in itertools.islice(iter(b), steps)])


def test_batches_shape_and_determinism_per_seed():
    b = _batches(0)
    first = next(iter(b))
    assert first.inputs.shape == first.targets.shape == (8, 16) and first.inputs.dtype == np.int32
    np.testing.assert_array_equal(_first_inputs(_batches(0), 30), _first_inputs(b, 30))
    assert not np.array_equal(_first_inputs(_batches(1), 30), _first_inputs(b, 30))


def test_restart_at_step_equals_continuing():
    b = _batches(7)
    assert b.steps_per_epoch == (3999 // 16) // 8 == 31
    run = list(itertools.islice(iter(b), 80))  # crosses two epoch boundaries
    for k in (0, 1, 30, 31, 32, 62, 79):
        fresh = _batches(7)  # a new process resuming at step k
        resumed = list(itertools.islice(fresh.iterate(k), 80 - k))
        for a, c in zip(run[k:], resumed, strict=True):
            for field_a, field_c in zip(a, c):
                np.testing.assert_array_equal(field_a, field_c)
        np.testing.assert_array_equal(_batches(7)(k).targets, run[k].targets)


def test_each_epoch_is_a_fresh_permutation_without_repeats():
    b = _batches(3)
    e0 = b.permutation(0)[: b.steps_per_epoch * 8]
    assert len(set(e0.tolist())) == len(e0)
    assert not np.array_equal(b.permutation(0), b.permutation(1))
    np.testing.assert_array_equal(np.sort(b.permutation(1)), np.arange(len(b.data)))


def test_batches_reject_too_little_data():
    with pytest.raises(ValueError, match="batch_size=8"):
        Batches(PackedSequences(_random_stream(50), 16, EOS), 8)


def test_validation_set_is_the_first_sequences():
    seqs = PackedSequences(_random_stream(1000), 16, EOS)
    v = validation_set(seqs, 5)
    np.testing.assert_array_equal(v.inputs, seqs.get(np.arange(5)).inputs)
    assert validation_set(seqs, 10_000).inputs.shape == (len(seqs), 16)  # capped at what exists
    with pytest.raises(ValueError, match="fewer than one sequence"):
        validation_set(PackedSequences(_random_stream(10), 16, EOS), 5)


def test_prepare_data_splits_by_document(tok_and_cache):
    tok, cache = tok_and_cache
    corpus = tiny_corpus(30, seed=9)
    data = prepare_data(corpus, tok, seq_len=16, cache_dir=cache, validation_fraction=0.3)
    train, val = corpus.split(0.3)
    assert (np.asarray(data.train.stream) == tok.eos_id).sum() == len(train)
    assert (np.asarray(data.validation.stream) == tok.eos_id).sum() == len(val) >= 1
    assert len(data.validation) >= 4
    v = data.validation_set(4)
    np.testing.assert_array_equal(v.inputs, data.validation_set(4).inputs)
    first_val_doc = tok.encode(val.documents[0].text) + [tok.eos_id]
    n = min(16, len(first_val_doc))
    np.testing.assert_array_equal(v.inputs[0][:n], first_val_doc[:n])
    batch = data.batches(4, seed=0)(0)
    assert batch.inputs.shape == (4, 16)
    # A second prepare_data reads the cached streams (memory-mapped) and gives identical sequences.
    again = prepare_data(corpus, tok, seq_len=16, cache_dir=cache, validation_fraction=0.3)
    assert isinstance(again.train.stream, np.memmap)
    np.testing.assert_array_equal(again.batches(4, seed=0)(0).inputs, batch.inputs)


def test_empty_stream_has_no_sequences():
    seqs = PackedSequences(np.zeros(0, np.int32), 8, EOS)
    assert len(seqs) == 0
    with pytest.raises(ValueError, match="seq_len"):
        PackedSequences(np.zeros(10, np.int32), 0, EOS)
