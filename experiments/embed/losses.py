"""EmbeddingGemma's training losses (report section 2.2, eqs. 1-5) as pure functions, in a registry.

Every function takes L2-normalised embeddings ``[B, e]`` (rows are examples) so that a dot product is
the cosine similarity ``sim`` of the report. :func:`matryoshka` applies a loss to nested prefixes,
re-normalised, and sums them unweighted (MRL, section 2.2). :func:`embedding_loss` is the total
``L = w_C * MRL(L_C) + w_S * MRL(L_S) + w_D * L_D`` the trainer minimises.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from arch.embedding import truncate

Emb = Float[Array, "b e"]


def nce(q: Emb, p: Emb, n: Emb | None = None, q_ids: Int[Array, " b"] | None = None,
        p_ids: Int[Array, " b"] | None = None, *, tau: float = 0.05, alpha: float = 5.0,
        n_valid: Array | None = None) -> Array:
    """Eq. 1-3: NCE with in-batch negatives and one hardness-weighted hard negative per query.

    ``L_C = 1/B sum_i -log(e^{s(q_i,p_i+)/tau} /
    (w_i e^{s(q_i,p_i-)/tau} + sum_j 1_TN(i,j) e^{s(q_i,p_j+)/tau}))``
    with ``w_i = exp(alpha * sg(s(q_i, p_i-)))``. ``1_TN(i,j) = 0`` when ``q_i == q_j`` or
    ``p_i+ == p_j+`` (by id) for ``j != i``: duplicates are not negatives. The positive itself
    (``j = i``) stays in the denominator, as in every InfoNCE (the printed indicator would also drop
    it; we read that as unintended). ``n=None`` drops the hard-negative term; ``n_valid`` ([B] bool)
    drops it for the rows that have no mined negative.
    """
    b = q.shape[0]
    sims = q @ p.T / tau  # [B, B]: s(q_i, p_j+) / tau
    eye = jnp.eye(b, dtype=bool)
    dup = jnp.zeros((b, b), bool)
    if q_ids is not None:
        dup |= q_ids[:, None] == q_ids[None, :]
    if p_ids is not None:
        dup |= p_ids[:, None] == p_ids[None, :]
    keep = eye | ~dup
    terms = jnp.where(keep, sims, -jnp.inf)
    if n is not None:
        s_neg = jnp.sum(q * n, axis=-1)  # s(q_i, p_i-)
        hard = alpha * jax.lax.stop_gradient(s_neg) + s_neg / tau  # log(w_i e^{s/tau})
        if n_valid is not None:
            hard = jnp.where(n_valid, hard, -jnp.inf)
        terms = jnp.concatenate([terms, hard[:, None]], axis=1)
    return jnp.mean(jax.nn.logsumexp(terms, axis=1) - jnp.diagonal(sims))


def spread_out(q: Emb, p: Emb, **_) -> Array:
    """Eq. 4, the global orthogonal regulariser's second-moment term over queries and positives:
    ``1/(B(B-1)) sum_{i != j} (q_i . q_j)^2 + the same over positives``."""

    def term(x):
        b = x.shape[0]
        g = x @ x.T
        off = jnp.sum(g**2) - jnp.sum(jnp.diagonal(g) ** 2)
        return off / (b * (b - 1))

    return term(q) + term(p)


def distill(student: Emb, teacher: Emb, *, kind: str = "l2", valid: Array | None = None) -> Array:
    """One term of eq. 5, geometric embedding distillation (embedding matching, EmbedDistill): the mean
    over rows of ``||s - t||^2`` (``kind="l2"``, the default) or ``1 - cos(s, t)`` (``"cosine"``)."""
    if kind == "l2":
        per = jnp.sum((student - teacher) ** 2, axis=-1)
    elif kind == "cosine":
        per = 1.0 - jnp.sum(truncate(student) * truncate(teacher), axis=-1)
    else:
        raise ValueError(f"distill kind={kind!r}: must be 'l2' or 'cosine'")
    if valid is None:
        return jnp.mean(per)
    w = valid.astype(per.dtype)
    return jnp.sum(per * w) / jnp.maximum(jnp.sum(w), 1.0)


def matryoshka(loss: Callable[..., Array], dims: Sequence[int] | None, *embs: Emb | None, **kw) -> Array:
    """``sum_k loss(prefix_k(x) for x in embs)`` over the nested prefixes ``dims`` (re-normalised);
    ``dims=None`` or empty: the loss at full dimension only. Unweighted, as in the report. Only the
    positional arguments are embeddings; pass anything else (ids, masks) by keyword."""
    if not dims:
        return loss(*embs, **kw)
    return sum(loss(*(None if x is None else truncate(x, d) for x in embs), **kw) for d in dims)


LOSSES: dict[str, Callable[..., Array]] = {"nce": nce, "spread_out": spread_out, "distill": distill}


def get_loss(name: str) -> Callable[..., Array]:
    if name not in LOSSES:
        raise ValueError(f"unknown embedding loss {name!r}; known: {', '.join(LOSSES)}")
    return LOSSES[name]


def embedding_loss(q: Emb, p: Emb, n: Emb | None, q_ids, p_ids, *, n_valid=None,
                   teacher: tuple[Emb, Emb, Emb] | None = None, t_valid=None,
                   dims: Sequence[int] | None = None, tau: float = 0.05, alpha: float = 5.0,
                   w_contrastive: float = 1.0, w_spread: float = 0.0, w_distill: float = 0.0,
                   distill_kind: str = "l2", distill_mrl: bool = False) -> tuple[Array, dict[str, Array]]:
    """The total training loss and its parts. ``teacher``: the teacher's (aligned, normalised)
    embeddings of the queries, positives and hard negatives: ``L_D = L_D^Q + L_D^P+ + L_D^P-``."""
    parts = {"contrastive": matryoshka(nce, dims, q, p, n, q_ids=q_ids, p_ids=p_ids, tau=tau, alpha=alpha,
                                       n_valid=n_valid)}
    total = w_contrastive * parts["contrastive"]
    if w_spread:
        parts["spread_out"] = matryoshka(spread_out, dims, q, p)
        total = total + w_spread * parts["spread_out"]
    if w_distill and teacher is not None:
        tq, tp, tn = teacher
        ddims = dims if distill_mrl else None
        ld = matryoshka(distill, ddims, q, tq, kind=distill_kind) \
            + matryoshka(distill, ddims, p, tp, kind=distill_kind)
        if n is not None:
            ld = ld + matryoshka(distill, ddims, n, tn, kind=distill_kind, valid=n_valid)
        parts["distill"] = ld
        total = total + w_distill * ld
    return total, parts
