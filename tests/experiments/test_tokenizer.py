"""SentencePiece training, caching and loading, on tiny corpora that train in about a second."""

import os
import random

import pytest

from experiments.data import tokenizer as tokmod
from experiments.data.corpus import Corpus, Document
from experiments.data.tokenizer import TokenizerSettings, get_tokenizer, load_tokenizer

VOCAB = 300
_WORDS = ["def", "return", "self", "value", "index", "for", "in", "range", "if", "else", "print", "data"]


def tiny_corpus(n_docs: int = 24, seed: int = 0) -> Corpus:
    """Code-like documents over a small alphabet (so a 300-piece vocab covers it), with numbers."""
    rng = random.Random(seed)
    docs = []
    for i in range(n_docs):
        lines = []
        for _ in range(40):
            indent = "    " * rng.randrange(3)
            words = " ".join(rng.choice(_WORDS) for _ in range(rng.randrange(2, 7)))
            lines.append(f"{indent}{words} = {rng.choice(['1234', '2024', '99', '1234567'])}")
        docs.append(Document(f"doc{i:02d}.py", "\n".join(lines) + "\n"))
    return Corpus(tuple(docs), "tiny")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    return get_tokenizer(tiny_corpus(), vocab_size=VOCAB, cache_dir=cache), cache


def test_special_ids_and_vocab(trained):
    tok, cache = trained
    assert (tok.pad_id, tok.eos_id, tok.bos_id, tok.unk_id) == (0, 1, 2, 3)
    assert tok.vocab_size == VOCAB
    assert tok.path.parent == cache / "tokenizers" and tok.path.suffix == ".model"
    assert tok.path.with_suffix(".json").exists()
    # Nothing half-written is left behind by the atomic writes.
    assert {p.name for p in (cache / "tokenizers").iterdir()} == {tok.path.name, tok.path.stem + ".json"}


@pytest.mark.parametrize("text", ["héllo wörld 🎉🚀", "日本語のテキスト", "tabs\tand\r\nnewlines\n\n",
                                  "  lead and trail  ", "def value(self):\n        return 1234567\n"])
def test_round_trip_is_exact_and_never_unk(trained, text):
    tok, _ = trained
    ids = tok.encode(text)
    assert tok.unk_id not in ids and tok.eos_id not in ids and tok.bos_id not in ids
    assert tok.decode(ids) == text


def test_unseen_characters_use_byte_fallback(trained):
    tok, _ = trained
    pieces = [tok.id_to_piece(i) for i in tok.encode("🎉")]
    assert pieces == ["<0xF0>", "<0x9F>", "<0x8E>", "<0x89>"]


def test_digits_are_split(trained):
    tok, _ = trained
    # "1234567" is frequent in training; BPE would merge it without split_digits.
    pieces = [tok.id_to_piece(i) for i in tok.encode("x 1234567")]
    digit_pieces = [p for p in pieces if any(ch.isdigit() for ch in p)]
    assert [p.replace("▁", "") for p in digit_pieces] == list("1234567")


def test_common_words_become_single_pieces(trained):
    tok, _ = trained
    # The tokenizer learned merges: frequent words are one piece, not one per character.
    assert len(tok.encode("self")) == 1 and len(tok.encode("def")) == 1
    assert len(tok.encode("self else def")) < len("self else def") / 2


def test_cache_hit_does_not_retrain(trained, monkeypatch):
    tok, cache = trained
    mtime = tok.path.stat().st_mtime_ns

    def boom(*args, **kwargs):
        raise AssertionError("retrained despite a cached model")

    monkeypatch.setattr(tokmod, "train_sentencepiece", boom)
    again = get_tokenizer(tiny_corpus(), vocab_size=VOCAB, cache_dir=cache)
    assert again.path == tok.path and again.fingerprint == tok.fingerprint
    assert tok.path.stat().st_mtime_ns == mtime
    # A different setting or a changed corpus is a cache miss, so it must train.
    with pytest.raises(AssertionError, match="retrained"):
        get_tokenizer(tiny_corpus(), vocab_size=VOCAB + 10, cache_dir=cache)
    with pytest.raises(AssertionError, match="retrained"):
        get_tokenizer(tiny_corpus(seed=1), vocab_size=VOCAB, cache_dir=cache)


def test_env_var_sets_cache_and_training_is_deterministic(trained, monkeypatch, tmp_path):
    tok, _ = trained
    monkeypatch.setenv("GEMMA_ARCH_LAB_CACHE", str(tmp_path))
    other = get_tokenizer(tiny_corpus(), vocab_size=VOCAB)
    assert other.path.parent == tmp_path / "tokenizers"
    assert other.fingerprint == tok.fingerprint  # same corpus + settings -> same model bytes


def test_trains_on_training_split_only(tmp_path, monkeypatch):
    seen = []
    real = tokmod.train_sentencepiece

    def spy(corpus, settings):
        seen.append(corpus)
        return real(corpus, settings)

    monkeypatch.setattr(tokmod, "train_sentencepiece", spy)
    corpus = tiny_corpus()
    get_tokenizer(corpus, vocab_size=VOCAB, cache_dir=tmp_path)
    train, val = corpus.split()
    assert [d.name for d in seen[0]] == [d.name for d in train] and len(val) >= 1


def test_load_tokenizer_and_model_file(trained, monkeypatch, tmp_path):
    tok, _ = trained
    loaded = load_tokenizer(tok.path)
    assert loaded.fingerprint == tok.fingerprint
    assert loaded.encode("print data") == tok.encode("print data")
    monkeypatch.setattr(tokmod, "train_sentencepiece", lambda *a: pytest.fail("trained"))
    via_arg = get_tokenizer(tiny_corpus(seed=5), model_file=str(tok.path), cache_dir=tmp_path)
    assert via_arg.fingerprint == tok.fingerprint


def test_load_tokenizer_errors_name_the_path(tmp_path):
    with pytest.raises(ValueError, match="missing.model"):
        load_tokenizer(tmp_path / "missing.model")
    bad = tmp_path / "bad.model"
    bad.write_bytes(os.urandom(64))
    with pytest.raises(ValueError, match="bad.model"):
        load_tokenizer(bad)


def test_vocab_too_large_for_corpus_is_a_value_error(tmp_path):
    small = Corpus((Document("a.txt", "ab ab ab\n" * 5), Document("b.txt", "ba ba\n")), "small")
    with pytest.raises(ValueError, match="vocab_size=5000"):
        get_tokenizer(small, vocab_size=5000, cache_dir=tmp_path)
    assert not list(tmp_path.rglob("*.model"))  # a failed training caches nothing


def test_sentence_cap_subsamples_deterministically():
    corpus = tiny_corpus()
    settings = TokenizerSettings(vocab_size=VOCAB, max_sentences=100)
    a = list(tokmod.training_sentences(corpus, settings))
    assert a == list(tokmod.training_sentences(corpus, settings))
    assert 50 < len(a) < 150  # ~100 of 960 lines
    assert all(line.strip() for line in a)
    full = list(tokmod.training_sentences(corpus, TokenizerSettings(vocab_size=VOCAB)))
    assert len(full) == 24 * 40
