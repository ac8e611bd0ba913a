"""Hugging Face config and tensor-name layouts of the Gemma family (transformers 5.x), both directions.

- ``Gemma2ForCausalLM`` (``gemma2``), ``Gemma3ForCausalLM`` / ``Gemma3TextModel`` (``gemma3_text``), the
  text half of ``Gemma3ForConditionalGeneration`` (``gemma3``, ``text_config``) and
  ``RecurrentGemmaForCausalLM`` (``recurrent_gemma``).
- Tensor names: ``{prefix}embed_tokens.weight``, ``{prefix}layers.N.<block>``, ``{prefix}norm.weight``
  (RecurrentGemma ``final_norm``); ``lm_head.weight`` only when the head is untied. Our module fields
  mirror HF's names, so a name maps by renaming the block-level parents only (:func:`hf_name`).
- Window conventions follow transformers: causal local layers see ``0 <= i - j < sliding_window``; a
  bidirectional config stores the window w as written in config.json, and ``arch.masks`` applies
  transformers' ``w // 2 + 1`` radius (``Gemma3TextConfig.__post_init__``).
"""

import dataclasses

from arch.config import DEFAULT_WINDOW, ModelConfig

# HF ``hidden_activation`` -> ours (ACT2FN: gelu_pytorch_tanh and gelu_new are both the tanh approximation)
ACTIVATIONS = {"gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh", "gelu": "gelu", "silu": "silu",
               "swish": "silu", "relu": "relu"}
ACTIVATIONS_OUT = {"gelu_tanh": "gelu_pytorch_tanh", "gelu": "gelu", "silu": "silu", "relu": "relu"}
LAYER_TYPES = {"sliding_attention": "L", "full_attention": "G"}
BLOCK_TYPES = {"recurrent": "R", "attention": "L"}
MODEL_TYPES = {"gemma2": "Gemma2ForCausalLM", "gemma3_text": "Gemma3ForCausalLM",
               "gemma3": "Gemma3ForConditionalGeneration", "recurrent_gemma": "RecurrentGemmaForCausalLM"}


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where an architecture keeps the text trunk: candidate (trunk prefix, head name) pairs, the first
    whose embedding exists wins; tensors under ``ignore`` (a vision tower) are skipped, never read."""

    arch: str
    family: str  # "gemma2" | "gemma3" | "recurrent_gemma"
    candidates: tuple[tuple[str, str], ...]
    ignore: tuple[str, ...] = ()


LAYOUTS = {
    "Gemma2ForCausalLM": Layout("Gemma2ForCausalLM", "gemma2", (("model.", "lm_head.weight"),)),
    "Gemma3ForCausalLM": Layout("Gemma3ForCausalLM", "gemma3", (("model.", "lm_head.weight"),)),
    "Gemma3TextModel": Layout("Gemma3TextModel", "gemma3", (("", "lm_head.weight"),)),
    # transformers 5 saves model.language_model.*; checkpoints on the Hub use language_model.model.*
    "Gemma3ForConditionalGeneration": Layout(
        "Gemma3ForConditionalGeneration", "gemma3",
        (("model.language_model.", "lm_head.weight"),
         ("language_model.model.", "language_model.lm_head.weight")),
        ignore=("model.vision_tower.", "model.multi_modal_projector.", "vision_tower.",
                "multi_modal_projector."),
    ),
    "RecurrentGemmaForCausalLM": Layout("RecurrentGemmaForCausalLM", "recurrent_gemma",
                                        (("model.", "lm_head.weight"),)),
}


def _fail(what: str, value, allowed) -> None:
    raise ValueError(f"Hugging Face {what}={value!r} is not supported; supported: {allowed}")


def architecture(hf: dict) -> str:
    """The architecture name of a config.json (``architectures[0]``, else from ``model_type``)."""
    archs = hf.get("architectures") or []
    arch = archs[0] if archs else MODEL_TYPES.get(hf.get("model_type"))
    if arch not in LAYOUTS:
        _fail("architecture", arch or hf.get("model_type"), sorted(LAYOUTS))
    return arch


def pattern_of(letters: list[str]) -> str:
    """The shortest period that tiles ``letters`` (cut at the end): ``LLLLLGLL`` -> ``LLLLLG``."""
    n = len(letters)
    for p in range(1, n + 1):
        if all(letters[i] == letters[i % p] for i in range(n)):
            return "".join(letters[:p])
    raise ValueError("empty layer list")


def _activation(hf: dict) -> str:
    name = hf.get("hidden_activation") or hf.get("hidden_act") or "gelu_pytorch_tanh"
    if name not in ACTIVATIONS:
        _fail("hidden_activation", name, sorted(ACTIVATIONS))
    return ACTIVATIONS[name]


def _rope_type(params: dict) -> str:
    return params.get("rope_type", params.get("type", "default"))


def _gemma3_rope(hf: dict) -> dict:
    """Per-layer-type RoPE as ``Gemma3TextConfig.convert_rope_params_to_dict`` reads it: ``rope_parameters``
    keyed by layer type, or the legacy ``rope_theta`` / ``rope_local_base_freq`` / ``rope_scaling``."""
    rp = {k: dict(v or {}) for k, v in (hf.get("rope_parameters") or {}).items()}
    full, local = rp.setdefault("full_attention", {}), rp.setdefault("sliding_attention", {})
    if hf.get("rope_scaling"):
        full.update(hf["rope_scaling"])
    full.setdefault("rope_theta", hf.get("rope_theta", 1_000_000.0))
    local.setdefault("rope_theta", hf.get("rope_local_base_freq", 10_000.0))
    out = dict(rope_base_global=float(full["rope_theta"]), rope_base_local=float(local["rope_theta"]))
    if _rope_type(local) != "default":
        _fail("rope_parameters.sliding_attention.rope_type", _rope_type(local), ["default"])
    if _rope_type(full) == "linear":
        out["rope_scale_global"] = float(full["factor"])
    elif _rope_type(full) != "default":
        _fail("rope_parameters.full_attention.rope_type", _rope_type(full), ["default", "linear"])
    for params in (full, local):
        if params.get("partial_rotary_factor", 1.0) != 1.0:
            _fail("gemma3 partial_rotary_factor", params["partial_rotary_factor"], [1.0])
    return out


def _single_rope(hf: dict, default_partial: float = 1.0) -> tuple[float, float]:
    """``(theta, partial_rotary_factor)`` of a one-dict RoPE config (Gemma 2, RecurrentGemma)."""
    rp = dict(hf.get("rope_parameters") or {})
    if hf.get("rope_scaling"):
        rp.update(hf["rope_scaling"])
    if _rope_type(rp) != "default":
        _fail("rope_parameters.rope_type", _rope_type(rp), ["default"])
    theta = rp.get("rope_theta", hf.get("rope_theta", 10_000.0))
    partial = rp.get("partial_rotary_factor", hf.get("partial_rotary_factor", default_partial))
    return float(theta), float(partial)


def config_from_hf(hf: dict) -> ModelConfig:
    """The ``ModelConfig`` of a transformers config.json dict (every field mapped; see module docstring)."""
    arch = architecture(hf)
    family = LAYOUTS[arch].family
    tie = hf.get("tie_word_embeddings", True)
    if arch == "Gemma3ForConditionalGeneration":
        hf = dict(hf.get("text_config") or {})
        tie = hf.get("tie_word_embeddings", tie)
    if hf.get("attention_bias"):
        _fail("attention_bias", True, [False])
    common = dict(
        vocab_size=hf["vocab_size"], width=hf["hidden_size"], num_layers=hf["num_hidden_layers"],
        num_heads=hf["num_attention_heads"], norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        mlp_activation=_activation(hf), tie_embeddings=bool(tie),
    )
    if family == "recurrent_gemma":
        return _recurrent_from_hf(hf, common)
    n = hf["num_hidden_layers"]
    types = hf.get("layer_types")
    if types is None:  # the Hub's older configs: transformers' default rule for the class
        period = 2 if family == "gemma2" else hf.get("sliding_window_pattern", 6)
        types = ["sliding_attention" if (i + 1) % period else "full_attention" for i in range(n)]
    bad = sorted({t for t in types if t not in LAYER_TYPES})
    if bad:
        _fail("layer_types", bad, sorted(LAYER_TYPES))
    if len(types) != n:
        raise ValueError(f"Hugging Face layer_types has {len(types)} entries for num_hidden_layers={n}")
    bidirectional = bool(hf.get("use_bidirectional_attention"))
    if family == "gemma2":
        if bidirectional:
            _fail("gemma2 use_bidirectional_attention", True, [False])
        theta, partial = _single_rope(hf)
        if partial != 1.0:
            _fail("gemma2 partial_rotary_factor", partial, [1.0])
        rope = dict(rope_base_global=theta, rope_base_local=theta)
    else:
        rope = _gemma3_rope(hf)
    window = hf.get("sliding_window", DEFAULT_WINDOW)  # the class default when the key is absent
    if window is None and "sliding_attention" in types:
        raise ValueError("Hugging Face config has sliding_attention layers but sliding_window=None")
    return ModelConfig(
        **common, **rope, num_kv_heads=hf["num_key_value_heads"], head_dim=hf["head_dim"],
        mlp_width=hf["intermediate_size"], pattern=pattern_of([LAYER_TYPES[t] for t in types]),
        window=window or DEFAULT_WINDOW, query_pre_attn_scalar=float(hf.get("query_pre_attn_scalar", 256)),
        attn_softcap=hf.get("attn_logit_softcapping"), logit_softcap=hf.get("final_logit_softcapping"),
        qk_norm=family == "gemma3", causal=not bidirectional, post_norms=True,
    )


def _recurrent_from_hf(hf: dict, common: dict) -> ModelConfig:
    blocks = list(hf.get("block_types") or ("recurrent", "recurrent", "attention"))
    bad = sorted({b for b in blocks if b not in BLOCK_TYPES})
    if bad:
        _fail("block_types", bad, sorted(BLOCK_TYPES))
    heads, width = hf["num_attention_heads"], hf["hidden_size"]
    if hf["intermediate_size"] % 2:
        raise ValueError(f"RecurrentGemma intermediate_size={hf['intermediate_size']} must be even "
                         "(the MLP width is intermediate_size // 2)")
    theta, partial = _single_rope(hf, default_partial=0.5)
    kinds = [BLOCK_TYPES[blocks[i % len(blocks)]] for i in range(hf["num_hidden_layers"])]
    return ModelConfig(
        **common, num_kv_heads=hf.get("num_key_value_heads") or heads, head_dim=width // heads,
        mlp_width=hf["intermediate_size"] // 2, pattern=pattern_of(kinds),
        window=hf.get("attention_window_size", 2048), logit_softcap=float(hf.get("logits_soft_cap", 30.0)),
        rope_base_local=theta, rope_base_global=theta, partial_rotary=partial, post_norms=False,
        mlp_bias=True, attn_out_bias=True, embed_scale_bf16=True, lru_width=hf.get("lru_width") or width,
        lru_gate_blocks=heads, conv_width=hf.get("conv1d_width", 4),
    )


def _number(x: float) -> int | float:
    return int(x) if float(x).is_integer() else x


def family_of(cfg: ModelConfig) -> str:
    return "recurrent_gemma" if "R" in cfg.pattern else "gemma3" if cfg.qk_norm else "gemma2"


def config_to_hf(cfg: ModelConfig) -> dict:
    """The transformers config.json dict for ``cfg``; a field HF cannot express is a ValueError."""
    family = family_of(cfg)
    problems = []

    def need(field, ok, allowed):
        if not ok:
            problems.append(f"{field}={getattr(cfg, field)!r} (needs {allowed})")

    need("embed_scale", cfg.embed_scale, True)
    need("lru_c", cfg.lru_c == 8.0, 8.0)
    need("mlp_activation", cfg.mlp_activation in ACTIVATIONS_OUT, sorted(ACTIVATIONS_OUT))
    common = dict(vocab_size=cfg.vocab_size, hidden_size=cfg.width, num_hidden_layers=cfg.num_layers,
                  num_attention_heads=cfg.num_heads,
                  num_key_value_heads=cfg.num_kv_heads, rms_norm_eps=cfg.norm_eps,
                  hidden_activation=ACTIVATIONS_OUT.get(cfg.mlp_activation),
                  tie_word_embeddings=cfg.tie_embeddings, attention_bias=False)
    if family == "recurrent_gemma":
        need("pattern", "G" not in cfg.pattern, "only R and L letters for RecurrentGemma")
        need("post_norms", not cfg.post_norms, False)
        need("mlp_bias", cfg.mlp_bias, True)
        need("attn_out_bias", cfg.attn_out_bias, True)
        need("embed_scale_bf16", cfg.embed_scale_bf16, True)
        need("lru_gate_blocks", cfg.lru_gate_blocks == cfg.num_heads, f"num_heads={cfg.num_heads}")
        need("head_dim", cfg.head_dim * cfg.num_heads == cfg.width, "width // num_heads")
        need("query_pre_attn_scalar", cfg.query_pre_attn_scalar in (None, cfg.head_dim), "None")
        need("attn_softcap", cfg.attn_softcap is None, None)
        need("logit_softcap", cfg.logit_softcap is not None, "a value (RecurrentGemma always caps)")
        out = dict(architectures=["RecurrentGemmaForCausalLM"], model_type="recurrent_gemma", **common,
                   intermediate_size=2 * cfg.mlp_width, lru_width=cfg.lru_width,
                   attention_window_size=cfg.window, conv1d_width=cfg.conv_width,
                   logits_soft_cap=cfg.logit_softcap, block_types=[
                       {"R": "recurrent", "L": "attention"}[k] for k in cfg.pattern],
                   rope_parameters=dict(rope_type="default", rope_theta=cfg.rope_base_local,
                                        partial_rotary_factor=cfg.partial_rotary))
    else:
        need("post_norms", cfg.post_norms, True)
        need("mlp_bias", not cfg.mlp_bias, False)
        need("attn_out_bias", not cfg.attn_out_bias, False)
        need("embed_scale_bf16", not cfg.embed_scale_bf16, False)
        need("partial_rotary", cfg.partial_rotary == 1.0, 1.0)
        out = dict(**common, head_dim=cfg.head_dim, intermediate_size=cfg.mlp_width,
                   layer_types=[{"L": "sliding_attention", "G": "full_attention"}[k]
                                for k in cfg.layer_kinds],
                   sliding_window=cfg.window,
                   query_pre_attn_scalar=_number(cfg.query_pre_attn_scalar or cfg.head_dim),
                   attn_logit_softcapping=cfg.attn_softcap, final_logit_softcapping=cfg.logit_softcap)
        if family == "gemma2":
            need("causal", cfg.causal, True)
            need("rope_scale_global", cfg.rope_scale_global == 1.0, 1.0)
            need("rope_base_local", cfg.rope_base_local == cfg.rope_base_global, "rope_base_global")
            out.update(architectures=["Gemma2ForCausalLM"], model_type="gemma2",
                       rope_parameters=dict(rope_type="default", rope_theta=cfg.rope_base_global))
        else:
            full = dict(rope_type="default", rope_theta=cfg.rope_base_global)
            if cfg.rope_scale_global != 1.0:
                full.update(rope_type="linear", factor=cfg.rope_scale_global)
            out.update(architectures=["Gemma3ForCausalLM" if cfg.causal else "Gemma3TextModel"],
                       model_type="gemma3_text", use_bidirectional_attention=not cfg.causal,
                       rope_parameters=dict(full_attention=full, sliding_attention=dict(
                           rope_type="default", rope_theta=cfg.rope_base_local)))
    if problems:
        raise ValueError(f"config_to_hf ({family}): no Hugging Face field for " + "; ".join(problems))
    return out


# Our block-level field -> HF name, per family (everything below a mixer or MLP keeps its name).
_BLOCK = {
    "gemma": {"pre_mixer_norm": "input_layernorm", "post_mixer_norm": "post_attention_layernorm",
              "pre_mlp_norm": "pre_feedforward_layernorm", "post_mlp_norm": "post_feedforward_layernorm",
              "mixer": "self_attn", "mlp": "mlp"},
    "recurrent_gemma": {"pre_mixer_norm": "temporal_pre_norm", "pre_mlp_norm": "channel_pre_norm",
                        "mixer": "temporal_block", "mlp": "mlp_block"},
}


def hf_name(path: str, family: str, prefix: str, head: str) -> str:
    """HF tensor name of our leaf ``path`` (``blocks.3.mixer.q_proj.weight``)."""
    table = _BLOCK["recurrent_gemma" if family == "recurrent_gemma" else "gemma"]
    if path == "embed":
        return f"{prefix}embed_tokens.weight"
    if path == "final_norm.weight":
        return f"{prefix}{'final_norm' if family == 'recurrent_gemma' else 'norm'}.weight"
    if path == "lm_head.weight":
        return head
    parts = path.split(".")
    if parts[0] != "blocks" or parts[2] not in table:
        raise ValueError(f"no Hugging Face name for model leaf {path!r}")
    rest = ".".join(parts[3:])
    rest = {"conv_weight": "conv_1d.weight", "conv_bias": "conv_1d.bias"}.get(rest, rest)
    return f"{prefix}layers.{parts[1]}.{table[parts[2]]}.{rest}"
