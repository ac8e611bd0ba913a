"""Pairs from source code, the held-out split, BM25, retrieval metrics and souping."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import arch
from experiments.data.corpus import Corpus, Document
from experiments.embed.bm25 import BM25, tokenize
from experiments.embed.evaluate import metrics_from_ranking
from experiments.embed.pairs import Pair, choose_negatives, code_pairs, retrieval_task, split, topic_pairs
from experiments.embed.soup import soup

SOURCE = '''
def add(a, b):
    """Return the sum of two numbers.

    More text here."""
    return a + b


class Foo:
    """A small foo container class."""

    def bar(self):
        """Compute the bar value now."""
        return 1


def nodoc():
    pass


def short():
    """Too short."""
'''


def test_code_pairs_strip_docstrings():
    corpus = Corpus((Document("stdlib/pkg/mod.py", SOURCE), Document("pydoc:atom-identifiers", "Names\n...")),
                    "test")
    pairs = {p.query: p for p in code_pairs(corpus)}
    assert set(pairs) == {"Return the sum of two numbers.", "A small foo container class.",
                          "Compute the bar value now."}
    assert pairs["Return the sum of two numbers."].positive == "def add(a, b):\n    return a + b"
    foo = pairs["A small foo container class."].positive
    assert "def bar(self)" in foo and "small foo" not in foo and "Compute the bar" not in foo
    assert all(p.group == "pkg" and p.task == "code" for p in pairs.values())
    (topic,) = topic_pairs(corpus)
    assert topic.query == "atom identifiers" and topic.positive.startswith("Names")


def test_split_is_deterministic_and_by_group():
    pairs = [Pair(f"q{i}", f"p{i}", "code", f"mod{i % 40}") for i in range(400)]
    train, held = split(pairs)
    assert split(pairs) == (train, held)
    assert {p.group for p in train}.isdisjoint({p.group for p in held})
    assert 0 < len(held) < len(train)


def test_retrieval_task_qrels_and_negatives():
    pairs = [Pair("q", "d1", "code", "m"), Pair("q", "d2", "code", "m"), Pair("r", "d3", "code", "m")]
    task = retrieval_task("code", pairs)
    rel = dict(zip(task.queries, task.relevant))
    assert {task.docs[i] for i in rel["q"]} == {"d1", "d2"} and {task.docs[i] for i in rel["r"]} == {"d3"}
    docs = ["d1", "d2", "d3"]
    # pair 0's top-ranked docs are both positives of its query: only d3 qualifies
    neg = choose_negatives([[1, 0, 2], [0, 1, 2], [2, 0, 1]], pairs, docs)
    assert neg[0] == 2 and neg[1] == 2 and neg[2] in (0, 1)


def test_bm25_tokenizer_and_ranking():
    assert tokenize("getFileSize(path_name) HTTPServer") == ["get", "file", "size", "path", "name", "http",
                                                            "server"]
    docs = ["the cat sat on the mat", "dogs chase cats in the park",
            "def read_file(path): return open(path).read_text()", "parse json from a string"]
    index = BM25(docs)
    assert index.top_k("read the file text", 2)[0] == 2
    assert index.top_k("json string", 1)[0] == 3


def test_bm25_score_by_hand():
    index = BM25(["apple banana", "banana cherry cherry"], k1=1.2, b=0.75)
    idf = math.log(1 + (2 - 1 + 0.5) / (1 + 0.5))
    denom = 2 + 1.2 * (1 - 0.75 + 0.75 * 3 / 2.5)
    np.testing.assert_allclose(index.scores("cherry"), [0.0, idf * 2 * 2.2 / denom], rtol=1e-12)


def test_metrics_on_hand_made_rankings():
    ranked = np.array([[3, 1, 2, 4, 6, 8, 10, 11, 12, 13],
                       [5, 0, 7, 1, 2, 3, 4, 6, 8, 10],
                       [0, 1, 2, 3, 4, 5, 6, 7, 8, 10]])
    relevant = [frozenset({1}), frozenset({5, 7}), frozenset({9})]
    m = metrics_from_ranking(ranked, relevant, k=10)
    ndcg = [1 / math.log2(3), (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3)), 0.0]
    assert m["ndcg@10"] == pytest.approx(np.mean(ndcg))
    assert m["mrr@10"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert m["recall@1"] == pytest.approx((0 + 0.5 + 0) / 3)
    assert m["recall@10"] == pytest.approx((1 + 1 + 0) / 3)


def test_soup_of_identical_models_is_the_identity_and_averages_otherwise():
    cfg = arch.preset("tiny_embeddinggemma", num_layers=1)
    a = arch.EmbeddingModel(cfg, key=jax.random.key(0), dense_dims=(16,))
    b = arch.EmbeddingModel(cfg, key=jax.random.key(1), dense_dims=(16,))
    s = soup([a, a, a])
    for x, y in zip(jax.tree_util.tree_leaves(eqx.filter(s, eqx.is_array)),
                    jax.tree_util.tree_leaves(eqx.filter(a, eqx.is_array))):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6)
    mid = soup([a, b])
    np.testing.assert_allclose(np.asarray(mid.dense[0].weight),
                               np.asarray((a.dense[0].weight + b.dense[0].weight) / 2), rtol=1e-6)
    tokens = jnp.arange(1, 6, dtype=jnp.int32)
    np.testing.assert_allclose(np.asarray(s(tokens)), np.asarray(a(tokens)), atol=1e-6)
    with pytest.raises(ValueError, match="another parameter structure"):
        soup([a, arch.EmbeddingModel(cfg, key=jax.random.key(0), dense_dims=(8,))])


def test_code_normalisation_gives_query_and_code_shared_words():
    from experiments.embed.pairs import document_text, normalise_code, query_text

    assert normalise_code("def getFileSize(path_name): return HTTPServer") == \
        "def get file size(path name): return http server"
    q, d = query_text("Return the file size", "code", "code"), document_text("def getFileSize(self):", "code")
    assert q == "task: code retrieval | query: return the file size"
    assert d == "title: none | text: def get file size(self):"
    assert {"file", "size"} <= set(q.split()) & set(d.replace("(", " ").split())
    assert document_text("getFileSize") == "title: none | text: getFileSize"  # "raw" keeps the text
    with pytest.raises(ValueError, match="normalisation"):
        document_text("x", "lower")
