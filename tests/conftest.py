"""Shared fixtures. Nothing here runs at import time beyond defining fixtures (keeps collection fast)."""

import itertools

import jax
import pytest


@pytest.fixture
def getkey():
    """A fresh, deterministic PRNG key on every call (Equinox's test idiom)."""
    counter = itertools.count()
    return lambda: jax.random.key(next(counter))
