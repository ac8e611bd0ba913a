"""The whole model through the Pallas kernels (compiled on a GPU, interpreted on CPU) equals the
plain-JAX path."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import arch


@pytest.fixture(autouse=True)
def ieee_f32_matmuls():
    """Compare at 2e-5: on a GPU both paths would otherwise round f32 matmul inputs to TF32."""
    with jax.default_matmul_precision("highest"):
        yield


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["tiny_gemma2", "tiny_gemma3", "tiny_recurrentgemma", "tiny_embeddinggemma"])
def test_model_with_pallas_kernels_matches_xla(name):
    cfg = arch.preset(name, num_layers=3)
    xla = arch.LM(cfg.replace(attn_impl="xla", scan_impl="xla"), key=jax.random.key(0))
    pallas = arch.reconfigure(xla, attn_impl="pallas", scan_impl="pallas")
    tokens = jax.random.randint(jax.random.key(1), (21,), 0, cfg.vocab_size)  # > window, not a block multiple
    want, got = xla(tokens), eqx.filter_jit(lambda m, t: m(t))(pallas, tokens)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)

    def loss(model):
        return jnp.sum(jax.nn.log_softmax(model(tokens))[:, 0])

    g_want = jax.grad(loss)(xla)
    g_got = eqx.filter_jit(jax.grad(loss))(pallas)
    for a, b in zip(jax.tree_util.tree_leaves(g_got), jax.tree_util.tree_leaves(g_want)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
