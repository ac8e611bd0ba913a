"""(query, positive) pairs from the default corpus, the held-out split, retrieval tasks, hard negatives.

Two tasks stand in for the report's fine-tuning mixture (EmbeddingGemma section 2.3):

- ``code``: a docstring's summary line -> the function or class source with every docstring removed
  (a code-search task, like MTEB Code / CodeSearchNet); extracted with :mod:`ast` from the stdlib
  modules of the corpus. Removing the docstrings keeps the answer from being a copy of the query.
- ``topic``: a pydoc topic key ("atom-identifiers" -> "atom identifiers") -> the topic text.

The held-out split is by top-level module (code) or topic key, decided by a hash of the name, so no
module contributes to both sides. Hard negatives (report eq. 1, p_i^-) are mined with BM25 or with an
embedding model's own scores.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import hashlib
import json
import re
from collections.abc import Sequence

import numpy as np

from arch.embedding import format_document, format_query
from experiments.data.corpus import Corpus, _name_score, cache_root, default_corpus
from experiments.data.io import atomic_write_bytes
from experiments.embed.bm25 import BM25

HELDOUT_FRACTION = 0.15
MAX_CHARS = 1500  # longer positives are cut; the token budget cuts them again
_VERSION = 1  # bump when extraction changes (it keys the cache)


@dataclasses.dataclass(frozen=True)
class Pair:
    query: str
    positive: str
    task: str  # "code" | "topic"
    group: str  # top-level module or topic key: the unit of the held-out split


def text_id(text: str) -> int:
    """A stable 63-bit id of a text: equal texts get equal ids in every process (the 1_TN mask)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


class _StripDocstrings(ast.NodeTransformer):
    def _strip(self, node):
        self.generic_visit(node)
        body = node.body
        first = body[0] if body else None
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                and isinstance(first.value.value, str):
            node.body = body[1:] or [ast.Pass()]
        return node

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _strip


def summary_line(doc: str) -> str | None:
    """The first line of a docstring if it reads like a description (3+ words, not too long)."""
    lines = doc.strip().splitlines()
    first = lines[0].strip() if lines else ""
    if len(first.split()) < 3 or len(first) > 200 or first.endswith(":"):
        return None
    return first


def code_pairs(corpus: Corpus, max_chars: int = MAX_CHARS) -> list[Pair]:
    """Docstring summary -> docstring-free source, for every documented def/class of the .py files."""
    out = []
    for doc in corpus:
        if not doc.name.endswith(".py"):
            continue
        try:
            tree = ast.parse(doc.text)
        except (SyntaxError, ValueError):
            continue
        rel = doc.name.removeprefix("stdlib/")
        group = rel.split("/")[0].removesuffix(".py")
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                continue
            summary = summary_line(ast.get_docstring(node) or "")
            if summary is None:
                continue
            try:
                source = ast.unparse(_StripDocstrings().visit(copy.deepcopy(node)))
            except (ValueError, RecursionError):  # unparse has limits on exotic trees
                continue
            out.append(Pair(summary, source[:max_chars], "code", group))
    return out


def topic_pairs(corpus: Corpus, max_chars: int = MAX_CHARS) -> list[Pair]:
    return [Pair(d.name.removeprefix("pydoc:").replace("-", " "), d.text.strip()[:max_chars], "topic",
                 d.name) for d in corpus if d.name.startswith("pydoc:")]


def load_pairs(corpus: Corpus | None = None, *, cache_dir=None) -> list[Pair]:
    """All pairs of a corpus (default: the default corpus), cached by corpus fingerprint."""
    corpus = corpus or default_corpus()
    path = cache_root(cache_dir) / "embed" / f"pairs-{corpus.fingerprint}-v{_VERSION}.json"
    if path.exists():
        return [Pair(*p) for p in json.loads(path.read_text())]
    pairs = code_pairs(corpus) + topic_pairs(corpus)
    atomic_write_bytes(path, json.dumps([dataclasses.astuple(p) for p in pairs]).encode())
    return pairs


def is_heldout(pair: Pair, fraction: float = HELDOUT_FRACTION) -> bool:
    return _name_score(f"{pair.task}:{pair.group}") < fraction


def split(pairs: Sequence[Pair], fraction: float = HELDOUT_FRACTION) -> tuple[list[Pair], list[Pair]]:
    """(train, held-out) by group hash: deterministic, and no group on both sides."""
    held = [is_heldout(p, fraction) for p in pairs]
    return [p for p, h in zip(pairs, held) if not h], [p for p, h in zip(pairs, held) if h]


@dataclasses.dataclass(frozen=True)
class RetrievalTask:
    """Queries, a document collection and the relevant documents of each query (qrels)."""

    name: str
    queries: tuple[str, ...]
    docs: tuple[str, ...]
    relevant: tuple[frozenset[int], ...]


def retrieval_task(name: str, pairs: Sequence[Pair], *, max_queries: int | None = None,
                   max_docs: int | None = None) -> RetrievalTask:
    """Unique queries and documents; a query's relevant set is every positive it was paired with.

    Subsets are chosen by text hash (deterministic); relevant documents of kept queries are always
    in the collection, the rest is filled up to ``max_docs`` as distractors."""
    by_query: dict[str, set[str]] = {}
    for p in pairs:
        by_query.setdefault(p.query, set()).add(p.positive)
    queries = sorted(by_query, key=text_id)[:max_queries]
    needed = sorted({d for q in queries for d in by_query[q]}, key=text_id)
    others = sorted({p.positive for p in pairs} - set(needed), key=text_id)
    room = len(others) if max_docs is None else max(max_docs - len(needed), 0)
    docs = sorted(needed + others[:room], key=text_id)
    where = {d: i for i, d in enumerate(docs)}
    relevant = tuple(frozenset(where[d] for d in by_query[q]) for q in queries)
    return RetrievalTask(name, tuple(queries), tuple(docs), relevant)


def choose_negatives(ranked: Sequence[Sequence[int]], pairs: Sequence[Pair], docs: Sequence[str], *,
                     seed: int = 0, top: int = 3) -> np.ndarray:
    """For pair i, one of the ``top`` best-ranked documents that is neither its positive nor the
    positive of a pair with the same query (a false negative); picked at random (seeded) among
    them so the miner's top-1 quirks do not dominate. -1 when none qualifies."""
    positives_of: dict[str, set[str]] = {}
    for p in pairs:
        positives_of.setdefault(p.query, set()).add(p.positive)
    rng = np.random.default_rng(seed)
    out = np.full(len(pairs), -1, np.int64)
    for i, (p, order) in enumerate(zip(pairs, ranked)):
        ok = [int(j) for j in order if docs[int(j)] not in positives_of[p.query]][:top]
        if ok:
            out[i] = ok[int(rng.integers(len(ok)))]
    return out


def bm25_negatives(pairs: Sequence[Pair], docs: Sequence[str], *, seed: int = 0, depth: int = 8
                   ) -> np.ndarray:
    """Hard negatives mined with BM25 over ``docs`` (indices into ``docs``, -1 if none)."""
    index = BM25(docs)
    ranked = [index.top_k(p.query, depth) for p in pairs]
    return choose_negatives(ranked, pairs, docs, seed=seed)



def cached_bm25_negatives(pairs: Sequence[Pair], docs: Sequence[str], *, seed: int = 0, cache_dir=None
                          ) -> np.ndarray:
    """:func:`bm25_negatives`, cached by a hash of the pairs, documents and seed (mining is the slow
    part of data preparation at default scale)."""
    h = hashlib.sha256()
    for text in (*(p.query + "\0" + p.positive for p in pairs), "\1", *docs, str(seed)):
        h.update(text.encode())
        h.update(b"\0")
    path = cache_root(cache_dir) / "embed" / f"bm25neg-{h.hexdigest()[:16]}.npy"
    if path.exists():
        return np.load(path)
    neg = bm25_negatives(pairs, docs, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npy")
    np.save(tmp, neg)
    tmp.replace(path)
    return neg


# --------------------------------------------------------------------------------------- model inputs
TASK_PROMPTS = {"code": "code retrieval", "topic": "search result"}  # report section 2.2 task names
TEXT_NORMS = ("raw", "code")
# Identifier boundaries: a lower-case letter or digit before an upper-case one, or an acronym before a
# capitalised word ("HTTPServer" -> "HTTP Server").
_HUMP = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def normalise_code(text: str) -> str:
    """Code-aware text normalisation, the same word splitting as the BM25 baseline: identifiers split at
    camelCase humps and underscores, then lower-cased (``"getFileSize(path_name)" ->
    "get file size(path name)"``). Without it the subword tokens of ``getFileSize`` share almost
    nothing with those of "Return the file size", and a small model has no lexical signal to start
    from."""
    return _HUMP.sub(" ", text).replace("_", " ").lower()


def _normalised(text: str, norm: str) -> str:
    if norm not in TEXT_NORMS:
        raise ValueError(f"text normalisation {norm!r}: must be one of {TEXT_NORMS}")
    return normalise_code(text) if norm == "code" else text


def query_text(pair_or_query, task: str = "code", norm: str = "raw") -> str:
    """The query as the model sees it: normalised (``norm``), with the task prompt (section 2.2)."""

    q, task = (pair_or_query.query, pair_or_query.task) if isinstance(pair_or_query, Pair) \
        else (pair_or_query, task)
    return format_query(_normalised(q, norm), task=TASK_PROMPTS.get(task, "search result"))


def document_text(text: str, norm: str = "raw") -> str:
    """The document as the model sees it: normalised (``norm``), with the title prompt (section 2.2)."""

    return format_document(_normalised(text, norm))


def tokenize_texts(tokenizer, texts: Sequence[str], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """``(tokens int32 [N, max_len], mask bool [N, max_len])``: each text's ids cut to ``max_len - 1``
    then EOS (how the LM saw document ends), right-padded with the pad id."""
    ids = tokenizer.encode_batch(list(texts)) if texts else []
    tokens = np.full((len(ids), max_len), tokenizer.pad_id, np.int32)
    mask = np.zeros((len(ids), max_len), bool)
    for i, seq in enumerate(ids):
        seq = [*seq[: max_len - 1], tokenizer.eos_id]
        tokens[i, : len(seq)] = seq
        mask[i, : len(seq)] = True
    return tokens, mask
