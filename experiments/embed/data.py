"""Training and evaluation arrays for embedding fine-tuning, built once per data setting.

Training pairs come from the non-held-out modules (:mod:`experiments.embed.pairs`); each pair has its
query (with the task prompt), its positive and a BM25-mined hard negative among the other training
positives. A batch draws each slot's task from the mixture weights (the report's fine-tuning mixture,
section 2.3), then a pair of that task uniformly; batch ``s`` is a pure function of (seed, s).
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from experiments.data.corpus import default_corpus
from experiments.data.tokenizer import get_tokenizer
from experiments.embed import teacher as teacher_mod
from experiments.embed.pairs import (
    Pair,
    RetrievalTask,
    cached_bm25_negatives,
    document_text,
    load_pairs,
    query_text,
    retrieval_task,
    split,
    text_id,
    tokenize_texts,
)


def _id32(text: str) -> int:
    return text_id(text) & 0x7FFFFFFF  # int32 for JAX; equality within a batch is all the mask needs


@dataclasses.dataclass
class EmbedData:
    tokenizer: object
    pairs: list[Pair]
    q_tok: np.ndarray  # [P, q_len] per pair
    q_mask: np.ndarray
    d_tok: np.ndarray  # [D, p_len] per unique positive
    d_mask: np.ndarray
    pair_doc: np.ndarray  # [P] index of the positive in d_*
    pair_neg: np.ndarray  # [P] index of the hard negative in d_*, -1: none
    q_ids: np.ndarray  # [P] int32 ids of the query text (duplicate masking)
    d_ids: np.ndarray  # [D] int32 ids of the document text
    by_task: dict[str, np.ndarray]  # task -> pair indices
    eval_tasks: dict  # name -> (RetrievalTask, (tokens, mask), (tokens, mask))
    teacher_name: str | None = None
    teacher_queries: np.ndarray | None = None  # [P, e] aligned to the student's width
    teacher_docs: np.ndarray | None = None  # [D, e]
    teacher_vocab: np.ndarray | None = None  # [vocab, width]: teacher.vocabulary_vectors
    teacher_basis: np.ndarray | None = None  # [e, width]: teacher.basis of the training texts

    @property
    def num_pairs(self) -> int:
        return len(self.pairs)

    def batch(self, ec, step: int, *, with_teacher: bool = False) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([ec.seed, step])
        tasks = [t for t, w in ec.mixture if w > 0 and len(self.by_task.get(t, ())) > 0]
        if not tasks:
            raise ValueError(f"mixture {ec.mixture}: no task with weight > 0 has training pairs")
        w = np.array([dict(ec.mixture)[t] for t in tasks], np.float64)
        choice = rng.choice(len(tasks), size=ec.batch, p=w / w.sum())
        idx = np.array([rng.choice(self.by_task[tasks[c]]) for c in choice])
        doc, neg = self.pair_doc[idx], self.pair_neg[idx]
        valid = neg >= 0
        neg = np.where(valid, neg, doc)  # a placeholder row, masked out of the loss by n_valid
        out = {"q_tok": self.q_tok[idx], "q_mask": self.q_mask[idx], "p_tok": self.d_tok[doc],
               "p_mask": self.d_mask[doc], "n_tok": self.d_tok[neg], "n_mask": self.d_mask[neg],
               "q_ids": self.q_ids[idx], "p_ids": self.d_ids[doc], "n_valid": valid}
        if with_teacher:
            out |= {"tq": self.teacher_queries[idx], "tp": self.teacher_docs[doc],
                    "tn": self.teacher_docs[neg]}
        return out


def _eval_tasks(held: list[Pair], tokenizer, ec) -> dict:
    out = {}
    for name in ("code", "topic"):
        pairs = [p for p in held if p.task == name]
        if not pairs:
            continue
        task: RetrievalTask = retrieval_task(name, pairs, max_queries=ec.eval_queries, max_docs=ec.eval_docs)
        q = tokenize_texts(tokenizer, [query_text(x, name, ec.text_norm) for x in task.queries], ec.q_len)
        d = tokenize_texts(tokenizer, [document_text(x, ec.text_norm) for x in task.docs], ec.p_len)
        out[name] = (task, q, d)
    return out


def prepare(ec) -> EmbedData:
    """The :class:`EmbedData` of a config (memoised on the fields that decide it)."""
    keys = ("vocab_size", "q_len", "p_len", "max_train_pairs", "eval_queries", "eval_docs", "hard_negatives",
            "text_norm")
    width = ec.model_config(ec.vocab_size).width
    want_teacher = (ec.w_distill > 0 or ec.embed_init == "teacher") and ec.teacher not in (None, "none")
    return _prepare(tuple(getattr(ec, k) for k in keys), ec.teacher if want_teacher else None, width)


@functools.lru_cache(maxsize=4)
def _prepare(key: tuple, teacher_spec: str | None, width: int) -> EmbedData:
    vocab_size, q_len, p_len, max_train, eval_q, eval_d, hard, norm = key
    ec = type("Settings", (), dict(q_len=q_len, p_len=p_len, eval_queries=eval_q, eval_docs=eval_d,
                                   text_norm=norm))
    corpus = default_corpus()
    tokenizer = get_tokenizer(corpus, vocab_size=vocab_size)
    train, held = split(load_pairs(corpus))
    if max_train is not None:  # a deterministic subset, for the quick scale
        train = sorted(train, key=lambda p: text_id(p.query + p.positive))[:max_train]
    docs = sorted({p.positive for p in train}, key=text_id)
    where = {d: i for i, d in enumerate(docs)}
    pair_doc = np.array([where[p.positive] for p in train], np.int64)
    if hard == "bm25":
        pair_neg = cached_bm25_negatives(train, docs, seed=0)
    else:
        pair_neg = np.full(len(train), -1, np.int64)
    q_tok, q_mask = tokenize_texts(tokenizer, [query_text(p, norm=norm) for p in train], q_len)
    d_tok, d_mask = tokenize_texts(tokenizer, [document_text(d, norm) for d in docs], p_len)
    by_task = {t: np.flatnonzero([p.task == t for p in train]) for t in ("code", "topic")}
    data = EmbedData(
        tokenizer=tokenizer, pairs=train, q_tok=q_tok, q_mask=q_mask, d_tok=d_tok, d_mask=d_mask,
        pair_doc=pair_doc, pair_neg=pair_neg, q_ids=np.array([_id32(p.query) for p in train], np.int32),
        d_ids=np.array([_id32(d) for d in docs], np.int32), by_task=by_task,
        eval_tasks=_eval_tasks(held, tokenizer, ec))
    location = teacher_mod.resolve(teacher_spec) if teacher_spec else None
    if location is not None:
        # The teacher sees raw texts (its own conventions, no prompts); aligned to the student width.
        queries = [p.query for p in train]
        raw = teacher_mod.embeddings(queries + docs, location)
        b = teacher_mod.basis(raw, width)
        emb = teacher_mod.project(raw, b)
        data.teacher_name = location
        data.teacher_queries, data.teacher_docs = emb[: len(queries)], emb[len(queries):]
        data.teacher_vocab = teacher_mod.vocabulary_vectors(tokenizer, location, b)
        data.teacher_basis = b
    return data
