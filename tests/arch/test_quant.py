"""Fake quantization (EmbeddingGemma Table 1): round-trip error bounds, the straight-through gradient,
the schemes' choice of bits per matrix, and deployment equal to the QAT forward."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import arch
from arch import quant
from arch.embedding import EmbeddingModel


@pytest.mark.parametrize("bits", [8, 4])
def test_per_block_round_trip_error_is_at_most_half_a_step(bits):
    w = jax.random.normal(jax.random.key(0), (16, 100)) * 3.0  # 100: the last block is partial
    spec = quant.QuantSpec(bits, 32)
    codes, scale = quant.quantize(w, spec)
    assert codes.dtype == jnp.int8 and codes.shape == (16, 4, 32) and scale.shape == (16, 4, 1)
    assert int(jnp.abs(codes).max()) <= 2 ** (bits - 1) - 1
    back = quant.dequantize(codes, scale, 100)
    err = np.abs(np.asarray(back - w)).reshape(16, -1)
    per_elem_scale = np.repeat(np.asarray(scale)[..., 0], 32, axis=-1)[:, :100]
    assert (err <= per_elem_scale / 2 + 1e-6).all()
    # the largest weight of each block is represented exactly (it defines the scale)
    i = np.argmax(np.abs(np.asarray(w[0, :32])))
    assert abs(float(back[0, i] - w[0, i])) < 1e-5


def test_per_channel_uses_one_scale_per_row():
    w = jnp.array([[1.0, -0.5, 0.25], [100.0, 3.0, -7.0]])
    codes, scale = quant.quantize(w, quant.QuantSpec(8, None))
    np.testing.assert_allclose(np.asarray(scale)[:, 0, 0], [1 / 127, 100 / 127], rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(codes)[0, 0], [127, -64, 32])  # round(-63.5) -> -64


def test_straight_through_gradient_is_identity():
    w = jax.random.normal(jax.random.key(1), (4, 64))
    g = jax.random.normal(jax.random.key(2), (4, 64))
    grad = jax.grad(lambda x: jnp.sum(quant.fake_quant(x, quant.QuantSpec(4, 32)) * g))(w)
    np.testing.assert_allclose(np.asarray(grad), np.asarray(g), atol=0)
    fq = quant.fake_quant(w, quant.QuantSpec(4, 32))
    assert float(jnp.abs(fq - w).max()) > 1e-3  # the forward really is quantized


def test_schemes_and_deployment():
    cfg = arch.preset("tiny_embeddinggemma", num_layers=2)
    m = EmbeddingModel(cfg, key=jax.random.key(0), dense_dims=(128, 64))
    attn = ["trunk", "blocks", "0", "mixer", "q_proj", "weight"]
    assert quant.spec_for("mixed", attn) == quant.QuantSpec(8, None)
    assert quant.spec_for("mixed", ["trunk", "embed"]) == quant.QuantSpec(4, None)
    assert quant.spec_for("int4", ["dense", "0", "weight"]) == quant.QuantSpec(4, 32)
    tokens = jnp.arange(1, 9, dtype=jnp.int32)
    for scheme in quant.SCHEMES:
        fq, dep = quant.fake_quantize_model(m, scheme), quant.deploy(m, scheme)
        np.testing.assert_allclose(np.asarray(fq(tokens)), np.asarray(dep(tokens)), atol=1e-6)
        # 1-D gains are untouched, matrices are changed
        np.testing.assert_array_equal(np.asarray(dep.trunk.final_norm.weight),
                                      np.asarray(m.trunk.final_norm.weight))
        assert float(jnp.abs(dep.trunk.embed - m.trunk.embed).max()) > 0
    q8 = np.asarray(quant.deploy(m, "int8")(tokens))
    q4 = np.asarray(quant.deploy(m, "int4")(tokens))
    f = np.asarray(m(tokens))
    assert np.abs(q8 - f).max() < np.abs(q4 - f).max()
    bpw = quant.bits_per_weight(m, "int8")
    assert 8.0 < bpw < 9.0 + 0.5  # 8-bit codes + a 16-bit scale per 32 weights (+ a few f32 gains)
    assert quant.bits_per_weight(m, None) == 32.0
    with pytest.raises(ValueError, match="int2"):
        quant.spec_for("int2", [])
