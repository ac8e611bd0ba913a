"""Hugging Face checkpoints: parity of logits, export and greedy decode against transformers (float32,
eager attention) on tiny random models of every decoder family, plus the config mapping.

Edge cases: query_pre_attn_scalar != head_dim, 6 heads over 2 KV heads, layer counts that cut the
pattern mid-period (Gemma 3: 8 layers; Gemma 2 and RecurrentGemma: 5), sequences (24-28 tokens)
several windows (6) long, linear RoPE scaling on Gemma 3 global layers, soft-caps (Gemma 2),
lru_width != width, and every parameter, norms included, drawn from N(0, 0.3^2).
"""

import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
tf = pytest.importorskip("transformers")


import arch  # noqa: E402
from arch.hf import config_from_hf, config_to_hf, from_hf, to_hf  # noqa: E402
from arch.hf_layouts import pattern_of  # noqa: E402

pytestmark = pytest.mark.hf
VOCAB, T, NEW = 97, 26, 12
COMMON = dict(vocab_size=VOCAB, hidden_size=48, intermediate_size=80, num_attention_heads=6,
              num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=24, sliding_window=6,
              attn_implementation="eager")


def build(family):
    if family == "gemma2":
        caps = dict(attn_logit_softcapping=20.0, final_logit_softcapping=15.0)
        return tf.Gemma2ForCausalLM(tf.Gemma2Config(**COMMON, num_hidden_layers=5, **caps))
    if family == "gemma3":
        rope = {"full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
                "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}}
        return tf.Gemma3ForCausalLM(tf.Gemma3TextConfig(**COMMON, num_hidden_layers=8, rope_parameters=rope))
    assert family == "recurrent_gemma"
    return tf.RecurrentGemmaForCausalLM(tf.RecurrentGemmaConfig(
        vocab_size=VOCAB, hidden_size=48, intermediate_size=160, num_hidden_layers=5, num_attention_heads=4,
        num_key_value_heads=1, lru_width=64, attention_window_size=6, attn_implementation="eager"))


FAMILIES = ["gemma2", "gemma3", "recurrent_gemma"]


@pytest.fixture(scope="module", params=FAMILIES)
def saved(request, tmp_path_factory, randomize):
    """(family, transformers model, directory it was saved to)."""
    model = randomize(build(request.param))
    path = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(path)
    return request.param, model, path


def tokens(n=T, seed=1):
    return np.random.default_rng(seed).integers(0, VOCAB, n)


def hf_logits(model, toks):
    with torch.no_grad():
        return model(torch.tensor(toks)[None], use_cache=False).logits[0].float().numpy()


def rel_err(got, ref):
    return float(np.abs(np.asarray(got, np.float64) - ref).max() / np.abs(ref).max())


def test_logits_match_transformers(saved):
    family, hf, path = saved
    ours = from_hf(path)
    assert isinstance(ours, arch.LM)
    toks = tokens()
    assert rel_err(ours(jnp.asarray(toks)), hf_logits(hf, toks)) < 1e-4


def test_export_reloads_in_transformers(saved, tmp_path):
    family, hf, path = saved
    ours = from_hf(path)
    to_hf(ours, tmp_path / "out", max_shard_bytes=40_000)  # force shards + index
    assert (tmp_path / "out" / "model.safetensors.index.json").exists()
    back = tf.AutoModelForCausalLM.from_pretrained(tmp_path / "out", attn_implementation="eager").eval()
    toks = tokens(seed=2)
    assert rel_err(hf_logits(back, toks), hf_logits(hf, toks)) < 1e-5
    again = from_hf(tmp_path / "out")
    assert again.cfg == ours.cfg
    assert all(jnp.array_equal(a, b) for a, b in zip(jax.tree.leaves(again), jax.tree.leaves(ours)))


@eqx.filter_jit
def _greedy(model, prompt, cache):
    logits, cache = model.step(prompt, cache)

    def one(carry, _):
        tok, cache = carry
        logits, cache = model.step(tok[None], cache)
        nxt = jnp.argmax(logits[-1]).astype(jnp.int32)
        return (nxt, cache), nxt

    first = jnp.argmax(logits[-1]).astype(jnp.int32)
    _, rest = jax.lax.scan(one, (first, cache), None, length=NEW - 1)
    return jnp.concatenate([first[None], rest])


def test_greedy_decode_matches_generate(saved):
    family, hf, path = saved
    ours = from_hf(path)
    prompt = tokens(10, seed=3)  # longer than the window: the ring buffers wrap while decoding
    hf.generation_config.eos_token_id = None
    with torch.no_grad():
        ref = hf.generate(torch.tensor(prompt)[None], max_new_tokens=NEW, do_sample=False,
                          pad_token_id=0)[0, len(prompt):].numpy()
    cache = arch.init_cache(ours.cfg, len(prompt) + NEW)
    got = np.asarray(_greedy(ours, jnp.asarray(prompt, jnp.int32), cache))
    np.testing.assert_array_equal(got, ref)


def test_dtype_and_sharding(saved):
    _, _, path = saved
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    f32 = from_hf(path)
    bf16 = from_hf(path, dtype=jnp.bfloat16, sharding=lambda name, shape: device)
    assert {x.dtype for x in jax.tree.leaves(bf16)} == {jnp.dtype(jnp.bfloat16)}
    assert all(x.sharding == device for x in jax.tree.leaves(bf16))
    for a, b in zip(jax.tree.leaves(f32), jax.tree.leaves(bf16)):
        np.testing.assert_array_equal(np.asarray(a.astype(jnp.bfloat16)), np.asarray(b))


def test_reconfigure_window_ablation_matches_transformers(saved):
    family, hf, path = saved
    ours = from_hf(path)
    wide = arch.reconfigure(ours, window=64)
    assert wide.cfg.window == 64 and wide.embed is ours.embed
    key = "attention_window_size" if family == "recurrent_gemma" else "sliding_window"
    theirs = tf.AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager", **{key: 64}).eval()
    toks = tokens()
    assert rel_err(wide(jnp.asarray(toks)), hf_logits(theirs, toks)) < 1e-4
    assert rel_err(ours(jnp.asarray(toks)), hf_logits(theirs, toks)) > 1e-3  # the window mattered
    with pytest.raises(ValueError, match="changes parameter shapes"):
        arch.reconfigure(ours, mlp_width=ours.cfg.mlp_width + 2)


# ----------------------------------------------------------------------------------- config mapping


def test_pattern_of_finds_the_shortest_period():
    assert pattern_of(list("LLLLLGLL")) == "LLLLLG"
    assert pattern_of(list("LGLGL")) == "LG"
    assert pattern_of(list("LLLL")) == "L"
    assert pattern_of(list("LGGLLG")) == "LGGL"  # cut mid-period
    assert pattern_of(list("LGLLGG")) == "LGLLGG"  # no shorter period: the whole list


@pytest.mark.parametrize("name", ["gemma2_27b", "gemma3_1b", "gemma3_27b", "recurrentgemma_9b",
                                  "embeddinggemma_300m", "tiny_gemma3", "tiny_recurrentgemma"])
def test_config_round_trip(name):
    cfg = arch.preset(name)
    if cfg.query_pre_attn_scalar is None and "R" not in cfg.pattern:
        cfg = cfg.replace(query_pre_attn_scalar=float(cfg.head_dim))
    back = config_from_hf(json.loads(json.dumps(config_to_hf(cfg))))
    assert back == cfg


def test_transformers_reads_our_config_as_we_do():
    """Our config.json through transformers' own config class and back gives the same ModelConfig
    (the bidirectional window is halved in memory by transformers and restored by its to_dict)."""
    for name in ["gemma2_2b", "gemma3_4b", "embeddinggemma_300m", "recurrentgemma_2b"]:
        cfg = arch.preset(name)
        hf = config_to_hf(cfg)
        cls = tf.AutoConfig.for_model(hf["model_type"]).__class__
        theirs = cls(**{k: v for k, v in hf.items() if k != "model_type"}).to_dict()
        back = config_from_hf(theirs)
        assert back.replace(query_pre_attn_scalar=cfg.query_pre_attn_scalar) == cfg, name


def test_legacy_gemma3_config_fields():
    cfg = config_from_hf(dict(
        architectures=["Gemma3ForCausalLM"], vocab_size=10, hidden_size=8, intermediate_size=16,
        num_hidden_layers=7, num_attention_heads=2, num_key_value_heads=1, head_dim=4, sliding_window=4,
        rope_theta=1e6, rope_local_base_freq=1e4, rope_scaling={"type": "linear", "factor": 8.0},
        sliding_window_pattern=6, query_pre_attn_scalar=4))
    got = (cfg.pattern, cfg.rope_scale_global, cfg.rope_base_local, cfg.num_layers)
    assert got == ("LLLLLG", 8.0, 1e4, 7)


@pytest.mark.parametrize("change, match", [
    (dict(architectures=["LlamaForCausalLM"]), "architecture='LlamaForCausalLM'.*supported"),
    (dict(hidden_activation="gelu_fast"), "hidden_activation='gelu_fast'.*supported"),
    (dict(rope_parameters={"full_attention": {"rope_type": "yarn", "factor": 4.0}}),
     "rope_type='yarn'.*'default', 'linear'"),
    (dict(layer_types=["chunked_attention"] * 2), "layer_types=\\['chunked_attention'\\]"),
])
def test_unsupported_configs_name_the_value(change, match):
    base = dict(architectures=["Gemma3ForCausalLM"], vocab_size=10, hidden_size=8, intermediate_size=16,
                num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=4)
    with pytest.raises(ValueError, match=match):
        config_from_hf(base | change)


def test_config_to_hf_refuses_what_hf_cannot_express():
    with pytest.raises(ValueError, match="rope_scale_global"):
        config_to_hf(arch.preset("gemma2_2b", rope_scale_global=8.0))
    with pytest.raises(ValueError, match="mlp_bias"):
        config_to_hf(arch.preset("gemma3_1b", mlp_bias=True))
