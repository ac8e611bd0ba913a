"""Retrieval metrics and evaluation of embedding models and BM25 on the held-out tasks.

Metrics with binary relevance, per query then averaged (the MTEB retrieval conventions):
nDCG@k = DCG@k / IDCG@k with DCG@k = sum_{r<=k} rel_r / log2(r + 1); MRR@k = 1 / rank of the first
relevant document (0 beyond k); Recall@k = |relevant in top k| / |relevant|. Models are evaluated at
every Matryoshka dimension (EmbeddingGemma Tables 6-8) from one encoding of the full embedding.
"""

from __future__ import annotations

from collections.abc import Sequence

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from experiments.embed.bm25 import BM25
from experiments.embed.pairs import RetrievalTask


def metrics_from_ranking(ranked: np.ndarray, relevant: Sequence[frozenset[int]], k: int = 10
                         ) -> dict[str, float]:
    """``ranked``: ``[Q, >=k]`` document indices, best first. nDCG@k, MRR@k, Recall@1 and Recall@k."""
    ndcg, mrr, r1, rk = [], [], [], []
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    for row, rel in zip(ranked, relevant):
        hits = np.array([int(d) in rel for d in row[:k]], np.float64)
        ideal = disc[: min(len(rel), k)].sum()
        ndcg.append((hits * disc[: len(hits)]).sum() / ideal if ideal else 0.0)
        first = np.flatnonzero(hits)
        mrr.append(1.0 / (first[0] + 1) if first.size else 0.0)
        r1.append(hits[:1].sum() / max(len(rel), 1))
        rk.append(hits.sum() / max(len(rel), 1))
    return {f"ndcg@{k}": float(np.mean(ndcg)), f"mrr@{k}": float(np.mean(mrr)),
            "recall@1": float(np.mean(r1)), f"recall@{k}": float(np.mean(rk))}


def rank(scores: np.ndarray, k: int = 10) -> np.ndarray:
    """Top-``k`` document indices per row, best first; ties broken by index (deterministic)."""
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def evaluate_scores(scores: np.ndarray, task: RetrievalTask, k: int = 10) -> dict[str, float]:
    return metrics_from_ranking(rank(scores, k), task.relevant, k)


def evaluate_bm25(task: RetrievalTask) -> dict[str, float]:
    """The lexical baseline: BM25 over the task's documents (raw text, no prompts)."""
    index = BM25(task.docs)
    return evaluate_scores(np.stack([index.scores(q) for q in task.queries]), task)


def _prefix(x: np.ndarray, dim: int) -> np.ndarray:
    x = x[:, :dim]
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def evaluate_embeddings(q: np.ndarray, d: np.ndarray, task: RetrievalTask, dims: Sequence[int]
                        ) -> dict[str, dict[str, float]]:
    """``{"d<dim>": metrics}`` for every Matryoshka prefix of the (full) embeddings."""
    return {f"d{dim}": evaluate_scores(_prefix(q, dim) @ _prefix(d, dim).T, task) for dim in dims}


@eqx.filter_jit
def _encode_batch(model, tokens, mask):
    return model(tokens, mask)


def encode(model, tokens: np.ndarray, mask: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Full-dimension embeddings ``[N, e]`` of padded token arrays, batch by batch (the last batch is
    padded to ``batch_size`` so one compiled shape serves every batch)."""
    out = []
    for i in range(0, len(tokens), batch_size):
        t, m = tokens[i:i + batch_size], mask[i:i + batch_size]
        n = len(t)
        if n < batch_size:
            t = np.concatenate([t, np.repeat(t[-1:], batch_size - n, 0)])
            m = np.concatenate([m, np.repeat(m[-1:], batch_size - n, 0)])
        out.append(np.asarray(_encode_batch(model, jnp.asarray(t), jnp.asarray(m)), np.float32)[:n])
    return np.concatenate(out) if out else np.zeros((0, model.dim), np.float32)


def evaluate_model(model, tasks: dict[str, tuple[RetrievalTask, tuple[np.ndarray, np.ndarray],
                                                 tuple[np.ndarray, np.ndarray]]],
                   dims: Sequence[int]) -> dict[str, dict[str, dict[str, float]]]:
    """``{task: {"d<dim>": metrics}}``; ``tasks`` maps a name to (task, query arrays, doc arrays),
    the arrays being ``(tokens, mask)`` as made by :func:`experiments.embed.pairs.tokenize_texts`."""
    out = {}
    for name, (task, (qt, qm), (dt, dm)) in tasks.items():
        out[name] = evaluate_embeddings(encode(model, qt, qm), encode(model, dt, dm), task, dims)
    return out
