"""SentencePiece tokenizers: trained on a corpus' training split and cached, or loaded from a `.model`.

The trained tokenizer follows Gemma's recipe where it matters for experiments: BPE, byte fallback (no
character is ever `<unk>`), digits split one per token, whitespace kept verbatim (code indentation is
content), and the special ids pad=0, eos=1, bos=2, unk=3.

A trained model is cached under `<cache root>/tokenizers/<train-split fingerprint>-<settings hash>.model`
(cache root: argument, else $GEMMA_ARCH_LAB_CACHE, else ~/.cache/gemma-arch-lab), so it trains once.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import sentencepiece as spm

from experiments.data.corpus import VALIDATION_FRACTION, Corpus, cache_root
from experiments.data.io import atomic_write_bytes

# Bump when the training recipe changes in a way the settings below do not capture.
_RECIPE_VERSION = 1
PAD_ID, EOS_ID, BOS_ID, UNK_ID = 0, 1, 2, 3


@dataclass(frozen=True)
class TokenizerSettings:
    """Everything that decides the trained model besides the corpus; hashed into the cache key."""

    vocab_size: int = 8192
    model_type: str = "bpe"
    character_coverage: float = 0.9995
    # Training sentences are source lines; the cap keeps training within about a minute on 2 cores
    # for corpora far larger than the default (which has ~0.3M lines and trains in seconds).
    max_sentences: int = 2_000_000
    max_sentence_length: int = 4192
    seed: int = 0

    def key(self) -> str:
        blob = json.dumps({**asdict(self), "recipe": _RECIPE_VERSION}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


class Tokenizer:
    """A thin wrapper over `sentencepiece.SentencePieceProcessor` with the ids experiments need."""

    def __init__(self, model_proto: bytes, path: Path | None = None):
        self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
        self.path = path
        # Identifies the exact model: it keys the token-stream cache.
        self.fingerprint = hashlib.sha256(model_proto).hexdigest()[:16]

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    @property
    def pad_id(self) -> int:
        return self._sp.pad_id()

    @property
    def eos_id(self) -> int:
        return self._sp.eos_id()

    @property
    def bos_id(self) -> int:
        return self._sp.bos_id()

    @property
    def unk_id(self) -> int:
        return self._sp.unk_id()

    def encode(self, text: str) -> list[int]:
        """Token ids of text, without BOS / EOS (callers decide where those go)."""
        return self._sp.encode(text)

    def encode_batch(self, texts: Sequence[str], num_threads: int | None = None) -> list[list[int]]:
        """Encode many texts using the C++ thread pool (one thread per core by default)."""
        return self._sp.encode(list(texts), num_threads=num_threads or os.cpu_count() or 1)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        return self._sp.decode([int(i) for i in ids])

    def id_to_piece(self, i: int) -> str:
        return self._sp.id_to_piece(int(i))

    def __repr__(self) -> str:
        path = str(self.path) if self.path else None
        return f"Tokenizer(vocab_size={self.vocab_size}, path={path!r}, fingerprint={self.fingerprint})"


def load_tokenizer(model_file: str | os.PathLike) -> Tokenizer:
    """Load an existing SentencePiece `.model` file (e.g. the real Gemma tokenizer)."""
    path = Path(model_file)
    try:
        proto = path.read_bytes()
        tok = Tokenizer(proto, path)
    except OSError as e:
        raise ValueError(f"tokenizer {path}: cannot read ({e.strerror or e}); expected a "
                         f"SentencePiece .model file") from e
    except RuntimeError as e:  # sentencepiece reports a bad proto as RuntimeError
        raise ValueError(f"tokenizer {path}: not a SentencePiece model ({e})") from e
    if tok.eos_id < 0:
        raise ValueError(f"tokenizer {path}: has no EOS id; documents are joined with EOS")
    return tok


def get_tokenizer(
    corpus: Corpus,
    *,
    vocab_size: int = 8192,
    model_file: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    validation_fraction: float = VALIDATION_FRACTION,
    settings: TokenizerSettings | None = None,
) -> Tokenizer:
    """The tokenizer for a corpus: `model_file` if given, else one trained on the training split.

    Training happens once per (training split, settings); later calls load the cached model.
    `settings` overrides everything but is rarely needed; `vocab_size` is the common knob.
    """
    if model_file is not None:
        return load_tokenizer(model_file)
    settings = settings or TokenizerSettings(vocab_size=vocab_size)
    train, _ = corpus.split(validation_fraction)
    path = cache_root(cache_dir) / "tokenizers" / f"{train.fingerprint}-{settings.key()}.model"
    if path.exists():
        return load_tokenizer(path)
    start = time.perf_counter()
    proto = train_sentencepiece(train, settings)
    seconds = time.perf_counter() - start
    info = {"corpus": train.source, "corpus_fingerprint": train.fingerprint, "documents": len(train),
            "chars": train.num_chars, "settings": asdict(settings), "train_seconds": round(seconds, 2)}
    # The sidecar goes first: the .model appearing is what marks the cache entry complete.
    atomic_write_bytes(path.with_suffix(".json"), json.dumps(info, indent=1).encode())
    atomic_write_bytes(path, proto)
    return Tokenizer(proto, path)


def training_sentences(corpus: Corpus, settings: TokenizerSettings) -> Iterator[str]:
    """Non-blank lines of the corpus, deterministically subsampled to at most `max_sentences`.

    We sample ourselves (seeded Bernoulli per line) rather than relying on SentencePiece's
    `input_sentence_size` sampling, so the trained model is a function of the settings alone.
    """
    total = sum(d.text.count("\n") + 1 for d in corpus)
    keep = min(1.0, settings.max_sentences / max(total, 1))
    rng = np.random.default_rng(settings.seed)
    for doc in corpus:
        lines = doc.text.split("\n")
        mask = rng.random(len(lines)) < keep if keep < 1.0 else None
        for i, line in enumerate(lines):
            if line.strip() and (mask is None or mask[i]):
                yield line


def train_sentencepiece(corpus: Corpus, settings: TokenizerSettings) -> bytes:
    """Train a SentencePiece model in memory and return its serialized proto."""
    if len(corpus) == 0:
        raise ValueError(f"cannot train a tokenizer on an empty corpus ({corpus.source})")
    buf = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=training_sentences(corpus, settings),
            model_writer=buf,
            vocab_size=settings.vocab_size,
            model_type=settings.model_type,
            character_coverage=settings.character_coverage,
            byte_fallback=True,
            split_digits=True,
            # Keep text verbatim: identity normalisation, no collapsing or dummy-prefix insertion, so
            # decode(encode(text)) == text, and runs of spaces (indentation) may become pieces.
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            add_dummy_prefix=False,
            allow_whitespace_only_pieces=True,
            pad_id=PAD_ID, eos_id=EOS_ID, bos_id=BOS_ID, unk_id=UNK_ID,
            input_sentence_size=settings.max_sentences,
            shuffle_input_sentence=True,
            max_sentence_length=settings.max_sentence_length,
            train_extremely_large_corpus=False,
            num_threads=os.cpu_count() or 1,
            minloglevel=2,  # warnings and errors only
        )
    except RuntimeError as e:  # e.g. "Vocabulary size too high" for a small corpus
        size = f"{len(corpus)} documents, {corpus.num_chars} chars"
        raise ValueError(f"SentencePiece training on {corpus.source} ({size}) with "
                         f"vocab_size={settings.vocab_size} failed: {e}") from e
    return buf.getvalue()
