"""The decode path (``arch.decode``): each product form equals the matmul it replaces, a model served
from packed codes decodes exactly what its dequantized weights compute, and a batch decodes as its
sequences do one by one."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import arch
import arch.decode as decode
import arch.quant as quant
import gemma_kernels

SERVED_FORMATS = ("int8", "int4", "int4_block32")


def rel_err(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


@pytest.mark.parametrize("shape", [(96, 64), (64, 96)], ids=["short-input", "long-input"])
@pytest.mark.parametrize("rows", [1, 3])
def test_matvec_forms_equal_the_matmul(shape, rows):
    kw, kx = jax.random.split(jax.random.key(0))
    w = jax.random.normal(kw, shape).astype(jnp.bfloat16)
    x = jax.random.normal(kx, (rows, shape[1])).astype(jnp.bfloat16)
    want = np.asarray(x, np.float64) @ np.asarray(w, np.float64).T
    got = jax.jit(decode.matvec)(x, w)
    assert got.dtype == jnp.float32 and got.shape == (rows, shape[0])
    assert rel_err(got, want) < 1e-5


def test_materialize_is_the_identity_with_its_gradient():
    x = jnp.arange(12.0).reshape(3, 4)
    np.testing.assert_array_equal(gemma_kernels.materialize(x), x)
    np.testing.assert_array_equal(jax.grad(lambda v: (gemma_kernels.materialize(v) * v).sum())(x), 2 * x)


@pytest.mark.parametrize("fmt", SERVED_FORMATS)
@pytest.mark.parametrize("shape", [(96, 64), (64, 128)])
def test_packed_matvec_and_rows_read_the_dequantized_matrix(fmt, shape):
    kw, kx = jax.random.split(jax.random.key(1))
    w = jax.random.normal(kw, shape)
    p = quant.pack(w, fmt)
    served = decode.Served.of(p)
    dense = np.asarray(quant.unpack(p), np.float64)
    np.testing.assert_allclose(served.dense(), dense, rtol=1e-6)
    for n in (1, 2):  # one row takes its own reduce (arch.decode._served_matvec)
        x = jax.random.normal(kx, (n, shape[1]))
        assert rel_err(jax.jit(decode.matvec)(x, served), np.asarray(x, np.float64) @ dense.T) < 1e-5
    idx = jnp.array([[0, 5], [shape[0] - 1, 5]])
    np.testing.assert_allclose(decode.rows(served, idx, jnp.float32), dense[np.asarray(idx)], rtol=1e-6)


def test_formats_the_codes_cannot_serve_are_dequantized():
    w = jax.random.normal(jax.random.key(2), (8, 40))
    assert not decode.servable(quant.pack(w, "sfp8"))
    assert not decode.servable(quant.pack(w, "int4_block32"))  # rows of 40 straddle blocks of 32
    assert not decode.servable(quant.pack(jax.random.normal(jax.random.key(2), (2, 4, 4)), "int8", axis=1))
    with pytest.raises(ValueError, match="sfp8 tensor of shape"):
        decode.Served.of(quant.pack(w, "sfp8"))


def _decode(model, tokens, cache, prefill: int):
    """Prefill ``prefill`` tokens in one step, then one token per step; logits of every position."""
    logits, cache = model.step(tokens[:prefill], cache)

    def one(cache, tok):
        out, cache = model.step(tok[None], cache)
        return cache, out[0]

    _, rest = jax.lax.scan(one, cache, tokens[prefill:])
    return jnp.concatenate([logits, rest])


T = 40


@pytest.mark.parametrize(("name", "fmt"), [("tiny_gemma2", "int4"), ("tiny_gemma3", "int8"),
                                           ("tiny_recurrentgemma", "int4")])
def test_served_from_codes_decodes_the_dequantized_forward(name, fmt):
    """A prefill of 18 tokens (>= 16 rows: the matrices are dequantized once) and of 5 (< 16: the
    codes are read) both equal the forward pass of the dequantized model."""
    cfg = arch.preset(name)
    model = arch.LM(cfg, key=jax.random.key(0))
    packed = quant.pack_model(model, fmt)
    reference = quant.unpack_model(packed, model)
    served = decode.decodable(packed, model)
    assert isinstance(served.embed, decode.Served)
    assert isinstance(served.blocks[0].mlp.down_proj.weight, decode.Served)
    tokens = jax.random.randint(jax.random.key(1), (T,), 0, cfg.vocab_size)
    want = eqx.filter_jit(reference.__call__)(tokens)
    run = eqx.filter_jit(_decode)
    for prefill in (18, 5):
        got = run(served, tokens, arch.init_cache(cfg, T), prefill=prefill)
        assert rel_err(got, want) < 1e-5, (prefill, rel_err(got, want))


@pytest.mark.parametrize("name", ["tiny_gemma3", "tiny_recurrentgemma"])
def test_bf16_decode_matches_the_bf16_forward(name):
    """bf16 weights and matmuls: the decode products (arch.decode.matvec) against the full forward's
    bf16 matmuls; they differ by rounding only (the cache holds bf16 K/V)."""
    cfg = arch.preset(name, matmul_dtype="bfloat16")
    model = quant.cast(arch.LM(cfg, key=jax.random.key(0)), jnp.bfloat16)
    tokens = jax.random.randint(jax.random.key(1), (T,), 0, cfg.vocab_size)
    want = eqx.filter_jit(model.__call__)(tokens).astype(jnp.float32)
    cache = arch.init_cache(cfg, T, dtype=jnp.bfloat16)
    got = eqx.filter_jit(_decode)(model, tokens, cache, prefill=4)
    assert rel_err(got.astype(jnp.float32), want) < 3e-2


def test_packed_batch_decodes_as_its_sequences():
    cfg = arch.preset("tiny_gemma3")
    model = arch.LM(cfg, key=jax.random.key(0))
    served = decode.decodable(quant.pack_model(model, "int8"), model)
    tokens = jax.random.randint(jax.random.key(3), (3, 12), 0, cfg.vocab_size)
    run = eqx.filter_jit(_decode)
    batched = eqx.filter_jit(jax.vmap(lambda t, c: _decode(served, t, c, 3)))(
        tokens, arch.init_cache(cfg, 12, batch=3))
    for b in range(3):
        one = run(served, tokens[b], arch.init_cache(cfg, 12), prefill=3)
        assert rel_err(batched[b], one) < 1e-5


@pytest.mark.parametrize(("s", "nkv", "t"), [(300, 1, 1), (293, 1, 1), (300, 1, 3), (300, 2, 1)],
                         ids=["chunked", "prime-length", "three-queries", "two-kv-heads"])
def test_chunked_value_product_equals_the_whole_one(s, nkv, t):
    """``grouped_attention(value_chunk=...)`` (the decode step over a long cache) sums chunk products
    to the single product's values; a length with no divisor near the chunk takes the single one."""
    kq, kk, kv = jax.random.split(jax.random.key(4), 3)
    q = jax.random.normal(kq, (t, 4, 16))
    k = jax.random.normal(kk, (s, nkv, 16)).astype(jnp.bfloat16)
    v = jax.random.normal(kv, (s, nkv, 16)).astype(jnp.bfloat16)
    mask = gemma_kernels.visible(jnp.arange(s - t, s), jnp.arange(s) - 7)  # a few empty slots
    kw = dict(softcap=None, scale=0.25, value_dtype=jnp.bfloat16)
    whole = gemma_kernels.grouped_attention(q.astype(k.dtype), k, v, mask, **kw)
    chunked = gemma_kernels.grouped_attention(q.astype(k.dtype), k, v, mask, value_chunk=32, **kw)
    assert rel_err(chunked, whole) < 1e-5
