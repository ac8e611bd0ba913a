"""The embedding recipe can learn: evaluation ids line up with the pairs, and a tiny model fitted to a
handful of (query, positive) pairs retrieves each positive first through the evaluation code."""

import equinox as eqx
import jax
import numpy as np

from experiments.corpus import Corpus, Document
from experiments.embed.data import EmbedData
from experiments.embed.evaluate import evaluate_embeddings, evaluate_model
from experiments.embed.init import initial_model
from experiments.embed.pairs import Pair, document_text, query_text, retrieval_task, tokenize_texts
from experiments.embed.sweep import BASES
from experiments.embed.train import fine_tune
from experiments.tokenizer import get_tokenizer

WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa "
         "quebec romeo sierra tango uniform victor whiskey xray").split()


def _pairs(n: int) -> list[Pair]:
    rng = np.random.default_rng(0)
    out = []
    for i, j in enumerate(rng.permutation(len(WORDS) * (len(WORDS) - 1))[:n]):  # distinct (a, b)
        a, b = WORDS[j // (len(WORDS) - 1)], [w for w in WORDS if w != WORDS[j // (len(WORDS) - 1)]][
            j % (len(WORDS) - 1)]
        c = WORDS[(i * 5) % len(WORDS)]
        out.append(Pair(f"Return the {a} {b} value", f"def get{a.title()}{b.title()}{c.title()}(self):\n"
                        f"    return self.{a}_{b} + {i}", "code", "m"))
    return out


def test_relevant_ids_point_at_each_querys_own_positive():
    pairs = _pairs(40)
    task = retrieval_task("code", pairs, max_queries=25, max_docs=30)
    positive = {p.query: p.positive for p in pairs}
    assert len(task.docs) == 30
    for q, rel in zip(task.queries, task.relevant):
        assert [task.docs[i] for i in rel] == [positive[q]]
    # an oracle embedding (a query is its positive's one-hot) scores perfectly through the eval code
    q = np.eye(len(task.docs))[[next(iter(r)) for r in task.relevant]]
    m = evaluate_embeddings(q, np.eye(len(task.docs)), task, [len(task.docs)])
    assert m[f"d{len(task.docs)}"] == {"ndcg@10": 1.0, "mrr@10": 1.0, "recall@1": 1.0, "recall@10": 1.0}


def test_tiny_model_fits_pairs_to_perfect_retrieval(tmp_path):
    pairs = _pairs(16)
    texts = (Document(f"d{i}.py", p.query + "\n" + p.positive) for i, p in enumerate(pairs))
    corpus = Corpus(tuple(texts), "pairs")
    tok = get_tokenizer(corpus, vocab_size=400, cache_dir=tmp_path)
    ec = BASES["quick"].replace(init="random", vocab_size=400, steps=60, batch=16, lr=3e-3, warmup=3,
                                hard_negatives="none", w_spread=0.0, q_len=48, p_len=48,
                                mixture=(("code", 1.0),))
    docs = [p.positive for p in pairs]
    q_tok, q_mask = tokenize_texts(tok, [query_text(p, norm=ec.text_norm) for p in pairs], ec.q_len)
    d_tok, d_mask = tokenize_texts(tok, [document_text(d, ec.text_norm) for d in docs], ec.p_len)
    task = retrieval_task("code", pairs)
    tq = tokenize_texts(tok, [query_text(q, "code", ec.text_norm) for q in task.queries], ec.q_len)
    td = tokenize_texts(tok, [document_text(d, ec.text_norm) for d in task.docs], ec.p_len)
    ids = np.arange(len(pairs), dtype=np.int32)
    data = EmbedData(tokenizer=tok, pairs=pairs, q_tok=q_tok, q_mask=q_mask, d_tok=d_tok, d_mask=d_mask,
                     pair_doc=np.arange(len(pairs)), pair_neg=np.full(len(pairs), -1), q_ids=ids, d_ids=ids,
                     by_task={"code": np.arange(len(pairs))}, eval_tasks={"code": (task, tq, td)})
    model, _ = initial_model(ec, tok, lm_root=tmp_path, key=jax.random.key(0))
    before = evaluate_model(model, data.eval_tasks, ec.dims())["code"]["d32"]["recall@1"]
    model = fine_tune(ec, model, data)
    assert isinstance(model, eqx.Module)
    after = evaluate_model(model, data.eval_tasks, ec.dims())["code"]
    assert before < 0.6
    assert after["d32"]["recall@1"] == 1.0 and after["d32"]["ndcg@10"] == 1.0
    assert after["d8"]["recall@1"] >= 0.9  # the smallest Matryoshka prefix learns too
