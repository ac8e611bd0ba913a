"""Packed documents: a batch row holding several documents (``segment_ids``) gives each document the
logits and the gradients it gets alone, through a stack with one layer of each kind (R, L, G) on both
attention/scan paths.

Attention restarts through the segment mask, the RG-LRU through its reset, and the Conv1D through its
document mask (a document's first ``conv_width - 1`` outputs must not read the previous document)."""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import arch
from arch.rglru import causal_conv1d

DOCS = (5, 9)  # lengths: longer than the conv width (4), and than the window (4) by one and by five
IMPLS = {"xla": dict(attn_impl="xla", scan_impl="xla"),
         "pallas": dict(attn_impl="pallas", scan_impl="pallas")}


def _model(impl: str) -> arch.LM:
    """One layer of each kind: recurrent, local, global."""
    cfg = arch.preset("tiny_recurrentgemma", pattern="RLG", num_layers=3, window=4, **IMPLS[impl])
    return arch.LM(cfg, key=jr.key(0))


def _packed(vocab: int):
    tokens = jr.randint(jr.key(1), (sum(DOCS),), 0, vocab)
    segment_ids = jnp.repeat(jnp.arange(len(DOCS)), jnp.array(DOCS), total_repeat_length=sum(DOCS))
    starts = np.cumsum((0,) + DOCS)
    return tokens, segment_ids, [slice(int(a), int(b)) for a, b in zip(starts[:-1], starts[1:])]


def _loss(logits, tokens):
    """Next-token cross-entropy inside each document, from per-position logits (targets shifted)."""
    logp = jax.nn.log_softmax(logits[:-1].astype(jnp.float32))
    return -jnp.take_along_axis(logp, tokens[1:, None], axis=-1).sum()


@pytest.mark.parametrize("impl", sorted(IMPLS))
def test_packed_equals_each_document_alone(impl):
    model = _model(impl)
    tokens, segment_ids, docs = _packed(model.cfg.vocab_size)

    packed = jax.jit(lambda m: m(tokens, segment_ids=segment_ids))(model)
    for doc in docs:
        np.testing.assert_allclose(packed[doc], jax.jit(lambda m, d=doc: m(tokens[d]))(model),
                                   rtol=2e-4, atol=2e-4)

    def packed_loss(m):
        logits = m(tokens, segment_ids=segment_ids)
        return sum(_loss(logits[d], tokens[d]) for d in docs)

    def separate_loss(m):
        return sum(_loss(m(tokens[d]), tokens[d]) for d in docs)

    g_packed = jax.jit(jax.grad(packed_loss))(model)
    g_alone = jax.jit(jax.grad(separate_loss))(model)
    for a, b in zip(jax.tree.leaves(g_packed), jax.tree.leaves(g_alone)):
        np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-4)


def test_conv_reads_no_input_of_the_previous_document():
    """By gradients: output t depends on inputs t-3..t of its own document only."""
    conv = lambda x, i, seg: causal_conv1d(x, weight, bias, segment_ids=seg)[0][i].sum()
    w, r, t = 4, 3, 12
    weight, bias = jr.normal(jr.key(0), (w, r)), jnp.zeros((r,))
    seg = jnp.array([0] * 5 + [1] * 7)
    x = jr.normal(jr.key(1), (t, r))
    for i in range(t):
        grad = jax.grad(conv)(x, i, seg)
        dep = np.asarray(jnp.any(grad != 0, axis=-1))
        j = np.arange(t)
        np.testing.assert_array_equal(dep, (j <= i) & (j > i - w) & (np.asarray(seg) == int(seg[i])))
    # without segment ids the same conv reads across the boundary (what the mask removes)
    grad = jax.grad(conv)(x, 5, None)
    assert bool(jnp.any(grad[4] != 0))
