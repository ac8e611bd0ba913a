"""Okapi BM25 in numpy: the lexical baseline of the retrieval evals and the hard-negative miner.

score(q, d) = sum_{t in q} idf(t) * tf(t, d) * (k1 + 1) / (tf(t, d) + k1 * (1 - b + b * |d| / avgdl))
with idf(t) = log(1 + (N - df(t) + 0.5) / (df(t) + 0.5)) (the non-negative Lucene variant).

Code-aware tokenisation: identifiers are split at underscores and camelCase humps and lowercased, so
the query "Return the file size" meets ``def getFileSize`` / ``get_file_size`` the way a code-search
baseline should.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

_WORD = re.compile(r"[A-Za-z]+|\d+")
_HUMP = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")
# Words that carry no signal in either docstrings or code; BM25's idf down-weights them anyway, this
# only keeps the postings lists (and so query time) short.
STOPWORDS = frozenset("a an and are as at be by for from if in is it of on or the this to with self".split())


def tokenize(text: str) -> list[str]:
    """Lowercased word pieces: ``"getFileSize(path_name)" -> ["get", "file", "size", "path", "name"]``."""
    out = []
    for word in _WORD.findall(text):
        for piece in _HUMP.findall(word):
            p = piece.lower()
            if p not in STOPWORDS and len(p) > 1:
                out.append(p)
    return out


class BM25:
    """An inverted index over ``docs``; ``scores(query)`` is a dense ``[num_docs]`` vector."""

    def __init__(self, docs: Sequence[str], *, k1: float = 1.2, b: float = 0.75):
        self.k1, self.b = k1, b
        counts = [Counter(tokenize(d)) for d in docs]
        self.num_docs = len(docs)
        lengths = np.array([sum(c.values()) for c in counts], np.float64)
        avgdl = max(lengths.mean(), 1e-9) if len(docs) else 1.0
        norm = k1 * (1 - b + b * lengths / avgdl)  # the length part of the denominator, per doc
        postings: dict[str, tuple[list[int], list[int]]] = {}
        for i, c in enumerate(counts):
            for term, tf in c.items():
                ids, tfs = postings.setdefault(term, ([], []))
                ids.append(i)
                tfs.append(tf)
        self.index: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for term, (ids, tfs) in postings.items():
            ids_a, tf_a = np.asarray(ids, np.int64), np.asarray(tfs, np.float64)
            df = len(ids)
            idf = np.log(1.0 + (self.num_docs - df + 0.5) / (df + 0.5))
            # Precompute each posting's whole contribution: scoring is then a scatter-add.
            self.index[term] = (ids_a, idf * tf_a * (k1 + 1) / (tf_a + norm[ids_a]))

    def scores(self, query: str) -> np.ndarray:
        out = np.zeros(self.num_docs)
        for term, qtf in Counter(tokenize(query)).items():
            if term in self.index:
                ids, contrib = self.index[term]
                out[ids] += qtf * contrib
        return out

    def top_k(self, query: str, k: int) -> np.ndarray:
        """Indices of the ``k`` best documents, best first (ties broken by index, deterministically)."""
        s = self.scores(query)
        k = min(k, self.num_docs)
        part = np.argpartition(-s, k - 1)[:k] if k < self.num_docs else np.arange(self.num_docs)
        return part[np.lexsort((part, -s[part]))]
