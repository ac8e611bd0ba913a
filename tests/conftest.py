"""Shared fixtures. Nothing here runs at import time beyond defining fixtures (keeps collection fast)."""

import itertools
import random

import jax
import pytest

WORDS = ["def", "return", "self", "value", "for", "in", "range", "if", "else", "print", "data", "42"]


@pytest.fixture
def getkey():
    """A fresh, deterministic PRNG key on every call (Equinox's test idiom)."""
    counter = itertools.count()
    return lambda: jax.random.key(next(counter))


def _write_corpus(folder, n_docs: int = 30, seed: int = 0) -> str:
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n_docs):
        lines = (" ".join(rng.choice(WORDS) for _ in range(rng.randrange(2, 9))) for _ in range(40))
        (folder / f"doc{i:02d}.txt").write_text("\n".join(lines) + "\n")
    return str(folder)


@pytest.fixture(scope="session")
def write_corpus():
    """``write_corpus(folder, n_docs=30, seed=0) -> str``: a tiny deterministic text corpus of
    code-like words, one ``.txt`` file per document, for training tests."""
    return _write_corpus


@pytest.fixture(scope="session")
def tiny_run():
    """``tiny_run(data, **fields) -> RunConfig``: a 2-layer (L, G) tiny Gemma 3 on a tiny corpus, f32,
    batch 4 x 32 tokens, vocab 300; ``fields`` set the budget (steps, eval/checkpoint cadence, ...)."""
    from experiments.runconfig import RunConfig

    def make(data: str, **fields) -> RunConfig:
        base = dict(preset="tiny_gemma3", overrides=(("num_layers", 2), ("pattern", "LG")), data=data,
                    vocab_size=300, matmul_dtype="float32", batch=4, seq_len=32, eval_batches=1)
        return RunConfig(**{**base, **fields})

    return make
