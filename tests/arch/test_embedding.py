"""EmbeddingModel: bidirectional receptive field, pooling under padding, Matryoshka prefixes, prompts,
decoder initialisation (EmbeddingGemma sections 2.1-2.2, Table 3)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import arch
from arch.embedding import POOLINGS, EmbeddingModel, format_document, format_query, from_lm, truncate

CFG = arch.preset("tiny_embeddinggemma", num_layers=3, pattern="LLG", window=4)


def _model(pooling="mean", key=0, dense=(32, 16)):
    return EmbeddingModel(CFG, key=jax.random.key(key), dense_dims=dense, pooling=pooling)


def test_bidirectional_receptive_field():
    """With causal=False the FIRST token's state depends on the LAST token (a causal trunk's would
    not), and the embedding changes when any token changes."""
    m = _model()
    tokens = jnp.arange(1, 13, dtype=jnp.int32)
    changed = tokens.at[-1].set(200)
    h0, h1 = m.token_embeddings(tokens), m.token_embeddings(changed)
    assert float(jnp.abs(h0[0] - h1[0]).max()) > 1e-4
    causal = eqx.tree_at(lambda x: x.trunk, m, arch.reconfigure(m.trunk, causal=True))
    c0, c1 = causal.token_embeddings(tokens), causal.token_embeddings(changed)
    assert float(jnp.abs(c0[0] - c1[0]).max()) == 0.0
    assert float(jnp.abs(m(tokens) - m(changed)).max()) > 1e-4


@pytest.mark.parametrize("pooling", POOLINGS)
def test_padding_changes_nothing(pooling):
    m = _model(pooling)
    tokens = jnp.array([5, 9, 17, 3, 44, 21, 8], jnp.int32)
    padded = jnp.concatenate([tokens, jnp.array([0, 77, 13, 0, 0], jnp.int32)])  # any ids in padding
    mask = jnp.arange(12) < 7
    a, b = m(tokens), m(padded, mask)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
    # and the padding really would matter if it were not masked
    assert float(jnp.abs(m(padded) - a).max()) > 1e-4


def test_first_and_last_pick_the_right_tokens():
    m_first, m_last = _model("first", dense=()), _model("last", dense=())
    tokens = jnp.array([5, 9, 17, 3, 0, 0], jnp.int32)
    mask = jnp.array([True, True, True, True, False, False])
    h = m_first.token_embeddings(tokens, mask)
    np.testing.assert_allclose(np.asarray(m_first(tokens, mask)), np.asarray(truncate(h[0])), atol=1e-6)
    h = m_last.token_embeddings(tokens, mask)
    np.testing.assert_allclose(np.asarray(m_last(tokens, mask)), np.asarray(truncate(h[3])), atol=1e-6)


def test_attention_pool_matches_the_formula():
    m = _model("attention", dense=())
    pool = m.attention_pool
    h = jax.random.normal(jax.random.key(3), (5, CFG.width))
    mask = jnp.array([True, True, True, False, True])
    got = pool(h, mask)
    d, heads = CFG.width, 4
    hh, q = np.asarray(h).reshape(5, heads, d // heads), np.asarray(pool.query).reshape(heads, d // heads)
    want = []
    for k in range(heads):
        logits = hh[:, k] @ q[k] / np.sqrt(d)
        logits[3] = -np.inf
        w = np.exp(logits - logits.max())
        w /= w.sum()
        want.append(w @ hh[:, k])
    np.testing.assert_allclose(np.asarray(got), np.concatenate(want), atol=1e-5)


def test_matryoshka_prefixes_are_unit_norm_and_nested():
    m = _model()
    tokens = jnp.array([4, 8, 15, 16, 23, 42], jnp.int32)
    full = m.embed(tokens)
    assert full.shape == (16,)
    for dim in (16, 8, 4, 2):
        e = m.embed(tokens, dim=dim)
        assert e.shape == (dim,)
        assert abs(float(jnp.linalg.norm(e)) - 1.0) < 1e-5
        # the prefix is the full embedding's prefix, rescaled
        ratio = np.asarray(e) / np.asarray(full[:dim])
        np.testing.assert_allclose(ratio, ratio[0], rtol=1e-4)
    with pytest.raises(ValueError, match="dim=17"):
        m.embed(tokens, dim=17)


def test_task_prompts():
    assert format_query("sort a list") == "task: search result | query: sort a list"
    assert format_query("x", task="code retrieval") == "task: code retrieval | query: x"
    assert format_document("body") == "title: none | text: body"
    assert format_document("body", title="T") == "title: T | text: body"


def test_from_lm_copies_the_decoder_and_makes_it_bidirectional():
    lm = arch.LM(CFG.replace(causal=True), key=jax.random.key(1))
    m = from_lm(lm, key=jax.random.key(2), dense_dims=(16,), pooling="attention")
    assert not m.cfg.causal and m.attention_pool is not None and m.dim == 16
    np.testing.assert_array_equal(np.asarray(m.trunk.embed), np.asarray(lm.embed))
    np.testing.assert_array_equal(np.asarray(m.trunk.blocks[2].mlp.up_proj.weight),
                                  np.asarray(lm.blocks[2].mlp.up_proj.weight))
    assert len(m.trunk.blocks) == CFG.num_layers


def test_unknown_pooling_is_rejected():
    with pytest.raises(ValueError, match="pooling='max'"):
        EmbeddingModel(CFG, key=jax.random.key(0), pooling="max")


@pytest.mark.parametrize("pooling", POOLINGS)
def test_batched_call_equals_vmapped(pooling):
    """A ``[b, t]`` batch in one call gives each sequence's own embedding, and the same parameter
    gradients as ``jax.vmap`` over sequences (the training loop uses the batched call)."""
    m = _model(pooling)
    tokens = jax.random.randint(jax.random.key(1), (3, 10), 1, CFG.vocab_size)
    mask = jnp.arange(10)[None, :] < jnp.array([10, 6, 3])[:, None]
    np.testing.assert_allclose(np.asarray(m(tokens, mask)), np.asarray(jax.vmap(m)(tokens, mask)), atol=1e-5)
    one = jax.vmap(lambda t, k: m.embed(t, k, dim=8))(tokens, mask)
    np.testing.assert_allclose(np.asarray(m.embed(tokens, mask, dim=8)), np.asarray(one), atol=1e-5)
    w = jax.random.normal(jax.random.key(2), (3, m.dim))

    def loss(model, batched):
        out = model(tokens, mask) if batched else jax.vmap(model)(tokens, mask)
        return jnp.sum(out * w)

    grad = eqx.filter_jit(eqx.filter_grad(loss))  # eagerly, each backward primitive compiles alone
    gb, gv = (grad(m, b) for b in (True, False))
    for a, b in zip(jax.tree_util.tree_leaves(gb), jax.tree_util.tree_leaves(gv)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4)
