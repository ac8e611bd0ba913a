"""Shared fixtures. Nothing here runs at import time beyond defining fixtures (keeps collection fast)."""

import itertools
import os
import random
import shutil
import tempfile

import jax
import pytest

CACHE_ENV = "JAX_COMPILATION_CACHE_DIR"
MIN_COMPILE_ENV = "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"
# The suite compiles hundreds of tiny programs and runs each for milliseconds: compiling dominates, and
# XLA's backend optimisation is most of a compile: off on CPU hosts, as quick-scale sweep workers run
# (experiments.sweeps.runner.QUICK_XLA_FLAGS); a GPU host (the device check) compiles as it would run.
QUICK_XLA = "--xla_backend_optimization_level=0"


def pytest_configure(config):
    """XLA's backend optimisation off on a CPU host (:data:`QUICK_XLA`), and one persistent
    compilation cache for the session, empty at its start: the xdist workers, notebook kernels and
    sweep worker processes inherit both through the environment, so a program compiled once (a seed
    replica's train step, a quick sweep two notebooks share) is read back instead of compiled again.
    The first process to get here makes the cache and removes it at the end."""
    cpu_host = shutil.which("nvidia-smi") is None
    if cpu_host and QUICK_XLA not in os.environ.get("XLA_FLAGS", ""):  # before the first computation
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {QUICK_XLA}".strip()
    if not os.environ.get(CACHE_ENV):
        os.environ[CACHE_ENV] = tempfile.mkdtemp(prefix="gemma-lab-jax-cache-")
        config._jax_cache_owner = True
    # every program, not only those that took a second to compile (without backend optimisation few do)
    os.environ.setdefault(MIN_COMPILE_ENV, "0")
    jax.config.update("jax_compilation_cache_dir", os.environ[CACHE_ENV])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(os.environ[MIN_COMPILE_ENV]))


def pytest_unconfigure(config):
    if getattr(config, "_jax_cache_owner", False):
        shutil.rmtree(os.environ.pop(CACHE_ENV), ignore_errors=True)


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
