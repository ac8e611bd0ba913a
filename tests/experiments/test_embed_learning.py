"""The embedding recipe can learn: evaluation ids line up with the pairs, and a tiny model fitted to a
handful of (query, positive) pairs retrieves each positive first through the evaluation code."""

import equinox as eqx
import jax
import numpy as np

from experiments.data.corpus import Corpus, Document
from experiments.data.tokenizer import get_tokenizer
from experiments.embed.data import EmbedData
from experiments.embed.evaluate import evaluate_embeddings, evaluate_model
from experiments.embed.init import initial_model
from experiments.embed.pairs import Pair, document_text, query_text, retrieval_task, tokenize_texts
from experiments.embed.sweep import BASES
from experiments.embed.train import fine_tune

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
    model = fine_tune(ec, model, data, tmp_path / "run")
    assert isinstance(model, eqx.Module)
    after = evaluate_model(model, data.eval_tasks, ec.dims())["code"]
    assert before < 0.6
    assert after["d32"]["recall@1"] == 1.0 and after["d32"]["ndcg@10"] == 1.0
    assert after["d8"]["recall@1"] >= 0.9  # the smallest Matryoshka prefix learns too


def test_block_gain_zero_makes_every_block_the_identity():
    """``scale_blocks(model, 0)`` zeroes the post-norm gains: the trunk's output is its input
    embedding (token identity survives the trunk); gain 1 leaves the model as it is."""
    import jax.numpy as jnp

    import arch
    from arch.embedding import EmbeddingModel
    from experiments.embed.init import scale_blocks

    cfg = arch.preset("tiny_embeddinggemma", num_layers=2, pattern="LG", window=4)
    m = EmbeddingModel(cfg, key=jax.random.key(0), dense_dims=(16,))
    assert scale_blocks(m, 1.0) is m
    tokens = jnp.array([[3, 7, 11, 5]], jnp.int32)
    z = scale_blocks(m, 0.0)
    np.testing.assert_allclose(np.asarray(z.trunk.hidden(tokens)), np.asarray(z.trunk.embed_tokens(tokens)),
                               atol=1e-6)
    assert float(jnp.abs(m.trunk.hidden(tokens) - m.trunk.embed_tokens(tokens)).max()) > 1e-2
    half = scale_blocks(m, 0.5).trunk.blocks[0].post_mlp_norm.weight
    full = m.trunk.blocks[0].post_mlp_norm.weight
    np.testing.assert_allclose(np.asarray(1.0 + half), 0.5 * (1.0 + np.asarray(full)), atol=1e-6)


def test_token_table_from_teacher_vectors_and_alignment():
    """The teacher's vectors replace the token table at the table's RMS; the teacher basis maps rows
    to the student's width and keeps their cosine geometry when it is wide enough."""
    import pytest

    import arch
    from arch.embedding import EmbeddingModel
    from experiments.embed import teacher
    from experiments.embed.config import EmbedConfig
    from experiments.embed.init import with_token_table

    cfg = arch.preset("tiny_embeddinggemma", num_layers=1, pattern="G")
    m = EmbeddingModel(cfg, key=jax.random.key(0))
    vec = np.random.default_rng(0).standard_normal((cfg.vocab_size, cfg.width)).astype(np.float32) * 7
    t = with_token_table(m, vec).trunk.embed
    np.testing.assert_allclose(np.asarray(t) / np.asarray(t)[0, 0], vec / vec[0, 0], rtol=1e-4)
    np.testing.assert_allclose(float(np.sqrt(np.mean(np.asarray(t) ** 2))),
                               float(np.sqrt(np.mean(np.asarray(m.trunk.embed) ** 2))), rtol=1e-4)
    with pytest.raises(ValueError, match="token table"):
        with_token_table(m, vec[:, :3])
    rows = np.random.default_rng(1).standard_normal((20, 6))
    unit = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    wide = teacher.project(rows, teacher.basis(rows, 8))  # zero-padded: same cosines
    np.testing.assert_allclose(wide @ wide.T, unit @ unit.T, atol=1e-5)
    narrow = teacher.align(rows, 3)
    assert narrow.shape == (20, 3)
    np.testing.assert_allclose(np.linalg.norm(narrow, axis=1), 1.0, atol=1e-5)
    assert teacher.piece_text("\u2581return") == "return"
    with pytest.raises(ValueError, match="block_gain"):
        EmbedConfig(block_gain=-1.0)
    with pytest.raises(ValueError, match="embed_init"):
        EmbedConfig(embed_init="bert")
