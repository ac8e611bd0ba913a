"""EmbeddingGemma losses (report eqs. 1-5) on hand-made unit vectors with values worked out by hand."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.embed.losses import LOSSES, distill, embedding_loss, get_loss, matryoshka, nce, spread_out

Q = jnp.array([[1.0, 0.0], [0.0, 1.0]])
P = jnp.array([[1.0, 0.0], [0.0, 1.0]])
N = jnp.array([[0.6, 0.8], [0.6, 0.8]])


def test_nce_in_batch_only():
    # s(q_i, p_i) = 1, s(q_i, p_j) = 0: -log(e / (e + 1)) = log(1 + e^-1) for both rows
    assert float(nce(Q, P, tau=1.0)) == pytest.approx(math.log(1 + math.exp(-1)), rel=1e-6)
    assert float(nce(Q, P, tau=0.5)) == pytest.approx(math.log(1 + math.exp(-2)), rel=1e-6)


def test_nce_with_hardness_weighted_negative():
    # row 1: s(q1, n1) = 0.6, w = e^{5 * 0.6}: -log(e / (e^{3.0} e^{0.6} + e + 1))
    # row 2: s(q2, n2) = 0.8, w = e^{4.0}:      -log(e / (e^{4.0} e^{0.8} + e + 1))
    r1 = math.log(1 + math.exp(-1) + math.exp(3.6 - 1))
    r2 = math.log(1 + math.exp(-1) + math.exp(4.8 - 1))
    assert float(nce(Q, P, N, tau=1.0, alpha=5.0)) == pytest.approx((r1 + r2) / 2, rel=1e-6)
    # alpha = 0: plain extra negative
    r1, r2 = math.log(1 + math.exp(-1) + math.exp(-0.4)), math.log(1 + math.exp(-1) + math.exp(-0.2))
    assert float(nce(Q, P, N, tau=1.0, alpha=0.0)) == pytest.approx((r1 + r2) / 2, rel=1e-6)
    # a row without a mined negative drops the term
    valid = jnp.array([True, False])
    r2 = math.log(1 + math.exp(-1))
    r1 = math.log(1 + math.exp(-1) + math.exp(3.6 - 1))
    assert float(nce(Q, P, N, tau=1.0, n_valid=valid)) == pytest.approx((r1 + r2) / 2, rel=1e-6)


def test_duplicates_are_not_negatives():
    same = jnp.array([7, 7])
    # both queries are the same text (or both positives are): no in-batch negative is left
    assert float(nce(Q, P, q_ids=same, tau=1.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(nce(Q, P, p_ids=same, tau=1.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(nce(Q, P, q_ids=jnp.array([1, 2]), p_ids=jnp.array([3, 4]), tau=1.0)) > 0.3


def test_hardness_weight_is_stop_gradient():
    """d/dn of the loss equals the gradient with w_i held constant at its value."""
    n = N / jnp.linalg.norm(N, axis=1, keepdims=True)
    w = jnp.exp(5.0 * jnp.sum(Q * n, axis=1))

    def by_hand(n):
        s_pos, s_neg = jnp.sum(Q * P, 1), jnp.sum(Q * n, 1)
        denom = w * jnp.exp(s_neg) + jnp.exp(Q @ P.T).sum(1)
        return jnp.mean(-s_pos + jnp.log(denom))

    g_ours = jax.grad(lambda n: nce(Q, P, n, tau=1.0, alpha=5.0))(n)
    np.testing.assert_allclose(np.asarray(g_ours), np.asarray(jax.grad(by_hand)(n)), rtol=1e-5)
    assert float(nce(Q, P, n, tau=1.0)) == pytest.approx(float(by_hand(n)), rel=1e-6)


def test_spread_out_second_moment():
    q = jnp.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    # off-diagonal products 0, 0.6, 0.8 -> squares 0 + 0.36 + 0.64 = 1, twice, over B(B-1) = 6
    assert float(spread_out(q, q)) == pytest.approx(2 * (2.0 / 6.0), rel=1e-6)
    assert float(spread_out(Q, P)) == pytest.approx(0.0, abs=1e-7)


def test_distill_l2_and_cosine():
    s = jnp.array([[1.0, 0.0], [1.0, 0.0]])
    t = jnp.array([[0.0, 1.0], [1.0, 0.0]])
    assert float(distill(s, t)) == pytest.approx(1.0)  # (2 + 0) / 2
    assert float(distill(s, t, kind="cosine")) == pytest.approx(0.5)
    assert float(distill(s, t, valid=jnp.array([False, True]))) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="kind"):
        distill(s, t, kind="kl")


def test_matryoshka_sums_renormalised_prefixes():
    r = 2**-0.5
    q = jnp.array([[r, r], [r, -r]])
    # full: orthogonal -> 0; prefix 1: both (1,) -> (1 + 1) / 2 = 1 per side, two sides
    assert float(matryoshka(spread_out, (2, 1), q, q)) == pytest.approx(2.0, rel=1e-6)
    assert float(matryoshka(spread_out, None, q, q)) == pytest.approx(0.0, abs=1e-7)


def test_total_loss_weights_and_registry():
    t = (Q, P, N / jnp.linalg.norm(N, axis=1, keepdims=True))
    n = t[2]
    total, parts = embedding_loss(Q, P, n, None, None, teacher=t, tau=1.0, w_contrastive=1.0,
                                  w_spread=0.5, w_distill=2.0)
    assert float(parts["distill"]) == pytest.approx(0.0, abs=1e-7)  # the student IS the teacher
    want = float(nce(Q, P, n, tau=1.0)) + 0.5 * float(spread_out(Q, P))
    assert float(total) == pytest.approx(want, rel=1e-6)
    _, parts = embedding_loss(Q, P, None, None, None, w_spread=0.0)
    assert set(parts) == {"contrastive"}
    assert set(LOSSES) == {"nce", "spread_out", "distill"} and get_loss("nce") is nce
    with pytest.raises(ValueError, match="unknown embedding loss"):
        get_loss("triplet")
