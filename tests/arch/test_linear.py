"""The bf16 matmul (forward and its bf16 backward) against the f32 product, and batch == vmap."""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import arch
from arch.linear import matmul


def _loss(dtype):
    return lambda x, w, c: jnp.sum(jnp.sin(matmul(x, w, dtype)) * c)


@pytest.mark.parametrize("shape", [(64, 24), (3, 32, 24), (4, 24)])  # the 4-row case is the decode path
def test_bf16_matmul_values_and_gradients_match_f32(shape):
    x = jr.normal(jr.key(0), shape)
    w = jr.normal(jr.key(1), (40, 24)) / 5
    c = jr.normal(jr.key(2), (*shape[:-1], 40))
    np.testing.assert_allclose(matmul(x, w, "bfloat16"), x @ w.T, rtol=0.02, atol=0.05)
    want = jax.grad(_loss("float32"), argnums=(0, 1))(x, w, c)
    got = jax.jit(jax.grad(_loss("bfloat16"), argnums=(0, 1)))(x, w, c)
    for g, h in zip(got, want):
        assert g.dtype == jnp.float32
        np.testing.assert_allclose(g, h, rtol=0.03, atol=0.03 * float(jnp.abs(h).max()))


def test_bf16_gradients_under_vmap_equal_the_batched_call():
    x, w = jr.normal(jr.key(0), (3, 32, 24)), jr.normal(jr.key(1), (40, 24)) / 5
    c = jr.normal(jr.key(2), (3, 32, 40))
    loss = _loss("bfloat16")
    batched = jax.grad(loss, argnums=1)(x, w, c)
    per_seq = jax.grad(lambda w: jnp.sum(jax.vmap(lambda x, c: loss(x, w, c))(x, c)))(w)
    np.testing.assert_allclose(per_seq, batched, rtol=1e-4, atol=1e-4)


# bf16 for one model: the batch/vmap equivalence of each mixer is the float32 cases' work; what bf16 adds
# is the custom-VJP matmul on folded rows inside a whole model, the same code in every family (and eager,
# each case costs a minute or more of CPU)
@pytest.mark.parametrize(("dtype", "name"), [("float32", "tiny_gemma3"), ("float32", "tiny_gemma2"),
                                             ("float32", "tiny_recurrentgemma"), ("bfloat16", "tiny_gemma2")])
def test_batched_model_equals_vmapped_model(name, dtype):
    """One ``[b, t]`` call (how training runs) equals the per-sequence model, logits and gradients."""
    model = arch.LM(arch.preset(name, matmul_dtype=dtype), key=jr.key(0))
    tokens = jr.randint(jr.key(1), (3, 20), 0, model.cfg.vocab_size)
    seg = jnp.array([[0] * 9 + [1] * 11, [0] * 20, [0] * 4 + [1] * 16])

    def loss(m, batched):
        one = jax.vmap(lambda t, s: m(t, segment_ids=s))
        out = m(tokens, segment_ids=seg) if batched else one(tokens, seg)
        return jnp.mean(jax.nn.log_softmax(out)[..., 0]), out

    # float32 is jitted: eagerly, each primitive of the backward pass compiles on its own (a minute or
    # more on a CPU). bf16 stays eager: jit fuses the two paths differently, and their bf16 roundings
    # then differ by more than the 1e-4 this asserts.
    step = jax.value_and_grad(loss, has_aux=True)
    step = jax.jit(step, static_argnums=1) if dtype == "float32" else step
    (lb, ob), gb = step(model, True)
    (lv, ov), gv = step(model, False)
    np.testing.assert_allclose(ob, ov, rtol=1e-4, atol=1e-4)
    for a, b in zip(jax.tree.leaves(gb), jax.tree.leaves(gv)):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)
