"""The loss registry and cross-entropy values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.losses import LOSSES, get_loss, xent


def test_unknown_loss_lists_known_names():
    with pytest.raises(ValueError, match="unknown loss 'kl'.*xent"):
        get_loss("kl")
    assert get_loss("xent") is xent is LOSSES["xent"]


def test_xent_matches_numpy(getkey):
    logits = jax.random.normal(getkey(), (6, 11)) * 3
    targets = jnp.array([0, 3, 10, 2, 2, 7])
    mask = jnp.array([1, 1, 1, 0, 1, 1], jnp.float32)
    z = np.asarray(logits, np.float64)
    nll = np.log(np.exp(z).sum(-1)) - z[np.arange(6), np.asarray(targets)]
    expected = (nll * np.asarray(mask)).sum() / 5
    assert float(xent(logits, targets, mask)) == pytest.approx(expected, rel=1e-5)


def test_xent_of_uniform_logits_is_log_vocab():
    loss = xent(jnp.zeros((4, 50)), jnp.arange(4), jnp.ones(4))
    assert float(loss) == pytest.approx(np.log(50), rel=1e-6)


def test_all_masked_sequence_gives_zero_not_nan():
    assert float(xent(jnp.zeros((3, 5)), jnp.zeros(3, jnp.int32), jnp.zeros(3))) == 0.0
