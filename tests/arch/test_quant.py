"""Weight formats: round-trip error bounds, where scales are taken, int4 packing, the SFP8 code table,
the straight-through gradient, packed bytes equal to arch.memory's count and the packed forward equal to
the fake-quantized one; and EmbeddingGemma's schemes (Table 1)."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import arch
from arch import memory, quant, sfp8
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
    forward = eqx.filter_jit(lambda model: model(tokens))  # one compilation for every variant
    for scheme in quant.SCHEMES:
        fq, dep = quant.fake_quantize_model(m, scheme), quant.deploy(m, scheme)
        np.testing.assert_allclose(np.asarray(forward(fq)), np.asarray(forward(dep)), atol=1e-6)
        # 1-D gains are untouched, matrices are changed
        np.testing.assert_array_equal(np.asarray(dep.trunk.final_norm.weight),
                                      np.asarray(m.trunk.final_norm.weight))
        assert float(jnp.abs(dep.trunk.embed - m.trunk.embed).max()) > 0
    q8 = np.asarray(forward(quant.deploy(m, "int8")))
    q4 = np.asarray(forward(quant.deploy(m, "int4")))
    f = np.asarray(forward(m))
    assert np.abs(q8 - f).max() < np.abs(q4 - f).max()
    bpw = quant.bits_per_weight(m, "int8")
    assert 8.0 < bpw < 9.0 + 0.5  # 8-bit codes + a 16-bit scale per 32 weights (+ a few f32 gains)
    assert quant.bits_per_weight(m, None) == 32.0
    with pytest.raises(ValueError, match="int2"):
        quant.spec_for("int2", [])


# Language-model weight formats ----------------------------------------------------------------------

INT_FORMATS = ("int8", "int4", "int4_block32")
sfp8_round_trip = jax.jit(lambda x: sfp8.decode(sfp8.encode(x)))


def normal(seed, shape, scale=1.0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape, np.float32) * scale)


@pytest.fixture(scope="module")
def lm():
    """A tiny LM with recurrent, local and global layers, an untied head and biases (Griffin), its
    float leaves rounded to bf16 values as a checkpoint stores them."""
    cfg = arch.preset("tiny_recurrentgemma", pattern="RLG", num_layers=3, tie_embeddings=False)
    return quant.cast(arch.LM(cfg, key=jax.random.key(0)), jnp.bfloat16)


def test_format_names():
    assert [quant.parse_format(f).name for f in quant.FORMATS] == list(quant.FORMATS)
    assert quant.parse_format("int4_block32") == quant.Format(4, 32)
    assert quant.parse_format("int8_block128") == quant.Format(8, 128)
    assert quant.parse_format("int4") == quant.Format(4, None)
    for bad in ("int3", "int4_block0", "fp8", "int4_block"):
        with pytest.raises(ValueError, match="weight format"):
            quant.parse_format(bad)


@pytest.mark.parametrize("fmt", INT_FORMATS)
def test_int_round_trip_is_within_half_a_step(fmt):
    w = normal(0, (16, 100), 3.0)  # 100: blocks straddle rows
    p = quant.pack(w, fmt)
    f = quant.parse_format(fmt)
    groups = 16 if f.block is None else math.ceil(1600 / 32)
    assert p.scales.dtype == jnp.bfloat16 and p.scales.shape == (groups,)
    back = np.asarray(quant.unpack(p))
    step = np.repeat(np.asarray(p.scales, np.float32), f.block or 100)[:1600].reshape(16, 100)
    assert (np.abs(back - np.asarray(w)) <= step / 2).all()
    codes = back / step
    np.testing.assert_array_equal(codes, np.round(codes))  # integers times the stored scale
    assert np.abs(codes).max() == 2 ** (f.bits - 1) - 1
    # the QAT forward is the stored weight, bit for bit
    np.testing.assert_array_equal(np.asarray(quant.fake_quant(w, fmt)), back)


def test_block_scales_are_per_block():
    w = normal(1, (4, 128))
    spiked = w.at[1, 40].set(1000.0)  # block 5 of 16 (row 1, weights 32..63)
    a, b = quant.pack(w, "int4_block32"), quant.pack(spiked, "int4_block32")
    changed = np.nonzero(np.asarray(a.scales != b.scales))[0]
    np.testing.assert_array_equal(changed, [5])
    ca, cb = (np.asarray(quant.unpack_int4(p.codes, 512)).reshape(16, 32) for p in (a, b))
    np.testing.assert_array_equal(np.delete(ca, 5, axis=0), np.delete(cb, 5, axis=0))


def test_per_channel_takes_one_scale_per_output_channel():
    shapes = {"weight": (6, 40), "conv_weight": (4, 24), "input_gate_weight": (3, 8, 8)}
    outputs = {"weight": 6, "conv_weight": 24, "input_gate_weight": 3 * 8}
    for seed, (name, shape) in enumerate(shapes.items()):
        w = np.asarray(normal(seed, shape))
        axis = quant.input_axis(name)
        p = quant.pack(jnp.asarray(w), "int8", axis=axis)
        assert p.scales.shape == (outputs[name],) == (math.prod(shape) // shape[axis],)
        amax = np.abs(np.moveaxis(w, axis, -1)).reshape(-1, shape[axis]).max(-1)
        scales = np.asarray(p.scales, np.float32)
        assert (scales >= amax / 127).all() and (scales < amax / 127 * (1 + 2.0**-7)).all()  # bf16, up
        assert quant.stored_bytes(shape, "int8", axis=axis) == quant.packed_bytes(p)


def test_int4_packs_two_codes_per_byte():
    codes = jnp.array([1, -1, 7, -7, 0, 3, -8], jnp.int8)  # odd length; -8 fits the nibble too
    packed = quant.pack_int4(codes)
    assert packed.dtype == jnp.uint8 and packed.shape == (4,)
    assert int(packed[0]) == 0xF1  # first code in the low nibble, -1 = 0b1111
    np.testing.assert_array_equal(np.asarray(quant.unpack_int4(packed, 7)), np.asarray(codes))
    w = normal(3, (5, 7))  # 35 weights: an odd count, a partial block
    p = quant.pack(w, "int4_block32")
    assert p.codes.shape == (18,) and quant.packed_bytes(p) == 18 + 2 * 2
    fq = quant.fake_quant(w, "int4_block32")
    np.testing.assert_array_equal(np.asarray(quant.unpack(p)), np.asarray(fq))


def test_sfp8_code_table():
    codes = jnp.arange(256, dtype=jnp.uint8)
    values = np.asarray(sfp8.decode(codes))
    m = np.arange(128)
    table = np.where(m >= 64, (1 + (m & 7) / 8) * 2.0 ** ((m >> 3) - 15),
                     (1 + (m & 3) / 4) * 2.0 ** ((m >> 2) - 23))
    table[0] = 0.0
    np.testing.assert_array_equal(values[:128], table)
    np.testing.assert_array_equal(values[129:], -table[1:])
    assert values[0x7F] == sfp8.MAX == 1.875 and values[1] == 1.25 * 2.0**-23
    assert len(set(values.tolist())) == 255  # 0x80 is -0.0, equal to 0.0
    back = np.asarray(sfp8.encode(jnp.asarray(values)))
    np.testing.assert_array_equal(back[m], m)  # every value encodes to its own code ...
    np.testing.assert_array_equal(back[129:], m[1:] | 0x80)
    assert back[0x80] == 0  # ... except the reserved negative zero


def test_sfp8_round_trip_error_and_range():
    rng = np.random.default_rng(4)
    mag = np.exp2(rng.uniform(-23.0, math.log2(1.875), 20_000)).astype(np.float32)
    x = mag * np.where(np.arange(mag.size) % 2 == 0, 1.0, -1.0).astype(np.float32)
    err = np.abs(np.asarray(sfp8_round_trip(jnp.asarray(x))) - x) / mag
    large, lowest = mag >= 2.0**-7, mag < 2.0**-22
    small = ~large & ~lowest
    # half a step of 3 (or 2) mantissa bits, plus the truncated bits below the top 6; in the lowest
    # binade 1.0 * 2^-23 is not a code (it is zero's), so 1.0x rounds to 1.25 * 2^-23
    assert err[large].max() <= 2.0**-4 + 2.0**-6 < err[small].max()  # 3 bits from 2^-7 up, 2 below
    assert err[small].max() <= 2.0**-3 + 2.0**-6 and err[lowest].max() <= 2.0**-2
    # below the range: zero, exactly 2^-23 rounds up; above: saturates
    edges = sfp8_round_trip(jnp.array([2.0**-24, 2.0**-23, -0.0, 5.0, -5.0] + [0.0] * 19995))
    np.testing.assert_array_equal(np.asarray(edges[:5]), [0.0, 1.25 * 2.0**-23, 0.0, 1.875, -1.875])
    # a tensor beyond the range is scaled into it and back
    w = normal(5, (8, 64), 4.0)
    p = quant.pack(w, "sfp8")
    np.testing.assert_allclose(float(p.tensor_scale), float(jnp.abs(w).max()) / 1.875, rtol=1e-6)
    err = np.abs(np.asarray(quant.unpack(p) - w))
    rel = err / np.maximum(np.abs(np.asarray(w)), 2.0**-7 * float(p.tensor_scale))
    assert rel.max() <= 2.0**-4 + 2.0**-6
    assert float(quant.pack(w / 10, "sfp8").tensor_scale) == 1.0  # in range: no scale
    assert p.codes.dtype == jnp.uint8 and quant.packed_bytes(p) == w.size  # scale: header only


def test_format_gradient_is_straight_through():
    w, g = normal(6, (4, 64)), normal(7, (4, 64))
    grads = jax.jit(lambda w: [jax.grad(lambda x, f=f: jnp.sum(quant.fake_quant(x, f) * g))(w)
                               for f in quant.FORMATS])(w)
    for grad in grads:
        np.testing.assert_array_equal(np.asarray(grad), np.asarray(g))


def test_groups_of_a_language_model(lm):
    groups = {}
    for path, x in jax.tree_util.tree_flatten_with_path(lm)[0]:
        names = quant._names(path)
        if quant.is_matrix(names[-1], x.shape):
            groups.setdefault(quant.group_of(names), set()).add(".".join(n for n in names if not n.isdigit()))
    assert groups["embedding"] == {"embed", "lm_head.weight"}
    assert groups["attention"] == {f"blocks.mixer.{p}_proj.weight" for p in "qkvo"}
    assert groups["mlp"] == {f"blocks.mlp.{p}.weight" for p in ("gate_proj", "up_proj", "down_proj")}
    assert groups["recurrence"] == {"blocks.mixer.linear_x.weight", "blocks.mixer.linear_y.weight",
                                    "blocks.mixer.linear_out.weight", "blocks.mixer.conv_weight",
                                    "blocks.mixer.rg_lru.input_gate_weight",
                                    "blocks.mixer.rg_lru.recurrent_gate_weight"}
    assert set(groups) == set(quant.TARGETS)  # nothing quantizable outside the four groups
    assert quant.group_of(["blocks", "0", "pre_mixer_norm", "weight"]) is None
    assert quant.group_of(["dense", "0", "weight"]) is None


@pytest.fixture(scope="module")
def stored(lm):
    """Per format: the packed model, it served back, and the post-training quantized model."""

    @jax.jit
    def all_ways(lm):
        out = {}
        for fmt in quant.FORMATS:
            packed = quant.pack_model(lm, fmt)
            out[fmt] = (packed, quant.unpack_model(packed, lm), quant.quantize_model(lm, fmt, fake=False))
        return out

    return all_ways(lm)


@pytest.mark.parametrize("fmt", quant.FORMATS)
def test_packed_bytes_are_memory_bytes(lm, stored, fmt):
    """The bytes pack_model stores are arch.memory's count, tied head (counted once) or not."""
    packed = stored[fmt][0]
    assert quant.packed_bytes(packed) == memory.weights_bytes(lm, fmt) == memory.weights_bytes(lm.cfg, fmt)
    tied = lm.cfg.replace(tie_embeddings=True)
    shapes = jax.eval_shape(lambda: quant.pack_model(arch.LM(tied, key=jax.random.key(0)), fmt))
    assert quant.packed_bytes(shapes) == memory.weights_bytes(tied, fmt)
    assert isinstance(packed.embed, quant.Packed) and packed.final_norm.weight.dtype == jnp.bfloat16


def test_packed_forward_is_the_fake_quantized_forward(lm, stored):
    """Serving the stored codes gives the post-training quantized forward bit for bit (``lm``'s vectors
    are bf16 values, which pack_model stores exactly); the QAT forward is the same weights."""
    forward = eqx.filter_jit(lambda m, t: m(t))  # one compilation: every variant has lm's structure
    tokens = jnp.arange(3, 19, dtype=jnp.int32)
    reference = forward(lm, tokens)
    for fmt, (_, served, ptq) in stored.items():
        for a, b in zip(jax.tree.leaves(served), jax.tree.leaves(ptq)):
            assert a.dtype == b.dtype and jnp.array_equal(a, b)
        logits = np.asarray(forward(served, tokens))
        np.testing.assert_array_equal(logits, np.asarray(forward(ptq, tokens)))
        assert np.abs(logits - np.asarray(reference)).max() > 0, fmt
    floats = jax.eval_shape(quant.unpack_model, stored["int8"][0])  # no reference model: float32
    assert {x.dtype for x in jax.tree.leaves(floats)} == {jnp.dtype(jnp.float32)}


def test_quantize_model_targets_and_what_stays_float(lm, stored):
    ptq = stored["int4_block32"][2]
    for a, b in ((ptq.blocks[0].mixer.rg_lru.recurrent_param, lm.blocks[0].mixer.rg_lru.recurrent_param),
                 (ptq.blocks[0].mixer.rg_lru.input_gate_bias, lm.blocks[0].mixer.rg_lru.input_gate_bias),
                 (ptq.blocks[0].mixer.conv_bias, lm.blocks[0].mixer.conv_bias),
                 (ptq.final_norm.weight, lm.final_norm.weight)):
        assert jnp.array_equal(a, b)  # Lambda, biases and norms stay float
    assert not jnp.array_equal(ptq.blocks[0].mixer.conv_weight, lm.blocks[0].mixer.conv_weight)
    only = jax.jit(quant.quantize_model, static_argnums=(1, 2))(lm, "int4", ("attention",))
    assert not jnp.array_equal(only.blocks[1].mixer.q_proj.weight, lm.blocks[1].mixer.q_proj.weight)
    assert jnp.array_equal(only.blocks[1].mlp.up_proj.weight, lm.blocks[1].mlp.up_proj.weight)
    assert jnp.array_equal(only.embed, lm.embed) and jnp.array_equal(only.lm_head.weight, lm.lm_head.weight)
    assert quant.quantize_model(lm, None) is lm and quant.pack_model(lm, None) is lm
    with pytest.raises(ValueError, match="targets"):
        quant.quantize_model(lm, "int8", ("ffn",))


def test_quantize_model_gradient_is_the_gradient_at_the_quantized_weights(lm):
    """QAT's gradient w.r.t. the float weights is the plain gradient at the quantized weights (STE);
    the post-training model has no gradient path."""
    one = arch.LM(lm.cfg.replace(pattern="R", num_layers=1), key=jax.random.key(2))  # conv, gates
    params, static = eqx.partition(one, eqx.is_inexact_array)
    tokens = jnp.arange(1, 13, dtype=jnp.int32)
    loss = lambda p: jnp.mean(jax.nn.log_softmax(eqx.combine(p, static)(tokens))[:, 7])
    ste = jax.jit(jax.grad(lambda p: loss(quant.quantize_model(p, "int4"))))(params)
    ptq = jax.jit(quant.quantize_model, static_argnums=1, static_argnames="fake")
    quantized = ptq(params, "int4", fake=False)
    at_quantized = jax.jit(jax.grad(loss))(quantized)
    for a, b in zip(jax.tree.leaves(ste), jax.tree.leaves(at_quantized)):
        # two programs: equal up to float reassociation, far below what quantizing the weights moves
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-7)
    tree = {"blocks": [{"mlp": {"weight": normal(8, (4, 32))}}]}  # a bare parameter tree
    ptq_sum = lambda t: jnp.sum(jax.tree.leaves(quant.quantize_model(t, "int8", fake=False))[0])
    assert not jnp.any(jax.tree.leaves(jax.grad(ptq_sum)(tree))[0])
    (w,), (wq,) = jax.tree.leaves(tree), jax.tree.leaves(quant.quantize_model(tree, "int4"))
    assert not jnp.array_equal(w, wq)
