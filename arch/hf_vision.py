"""The image half of ``Gemma3ForConditionalGeneration`` (transformers 5.x) as an
:class:`arch.vision.VisionTower`.

HF names: ``<tower>{embeddings.patch_embedding, embeddings.position_embedding, encoder.layers.N.*,
post_layernorm}`` and ``<p>multi_modal_projector.{mm_soft_emb_norm.weight, mm_input_projection_weight}``,
where ``<p>`` is ``model.`` (transformers 5) or empty (the published checkpoints) and ``<tower>`` is
``<p>vision_tower.`` (transformers 5's module tree) or ``<p>vision_tower.vision_model.`` (the published
files). Our field names are HF's, so each name maps by a fixed rewrite of its first parts; only the
projection is stored transposed (HF ``[vision, text]``). SigLIP's attention-pooling ``head`` is not part
of Gemma 3 (``vision_use_head=False``) and is ignored where present.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from arch.params import flat_paths
from arch.vision import VisionConfig, VisionTower

PROJECTION = "projector.mm_input_projection.weight"
_PREFIXES = ("model.", "")
_ACTIVATIONS = {"gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu"}


def vision_config_from_hf(hf: dict) -> tuple[VisionConfig, int]:
    """``(VisionConfig, text width)`` from a ``Gemma3Config`` dict (``config.json``)."""
    v, text = hf["vision_config"], hf["text_config"]
    act = v.get("hidden_act", "gelu_pytorch_tanh")
    if act not in _ACTIVATIONS:
        raise ValueError(f"vision_config.hidden_act={act!r}: supported {sorted(_ACTIVATIONS)}")
    side = v["image_size"] // v["patch_size"]
    tokens = int(hf.get("mm_tokens_per_image", 256))
    per_side = math.isqrt(tokens)
    if per_side**2 != tokens or side % per_side:
        raise ValueError(f"mm_tokens_per_image={tokens}: must be a square whose side divides the "
                         f"{side} patches per side")
    cfg = VisionConfig(image_size=v["image_size"], patch_size=v["patch_size"],
                       channels=v.get("num_channels", 3), width=v["hidden_size"],
                       num_layers=v["num_hidden_layers"], num_heads=v["num_attention_heads"],
                       mlp_width=v["intermediate_size"], norm_eps=v.get("layer_norm_eps", 1e-6),
                       mlp_activation=_ACTIVATIONS[act], pool=side // per_side)
    return cfg, text["hidden_size"]


def vision_config_to_hf(cfg: VisionConfig) -> dict:
    """The ``vision_config`` dict of a ``Gemma3Config`` for ``cfg`` (SigLIP without its pooling head)."""
    act = {ours: theirs for theirs, ours in _ACTIVATIONS.items()}
    return dict(model_type="siglip_vision_model", hidden_size=cfg.width, intermediate_size=cfg.mlp_width,
                num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
                num_channels=cfg.channels,
                image_size=cfg.image_size, patch_size=cfg.patch_size, hidden_act=act[cfg.mlp_activation],
                layer_norm_eps=cfg.norm_eps, vision_use_head=False)


def image_tokens_from_hf(hf: dict) -> dict[str, int]:
    """``{image_token, boi_token, eoi_token}`` of a ``Gemma3Config`` dict (``*_token_index``)."""
    out = {}
    for ours, theirs in (("image_token", "image_token_index"), ("boi_token", "boi_token_index"),
                         ("eoi_token", "eoi_token_index")):
        value = hf.get(theirs, hf.get(theirs.replace("_index", "_id")))
        if value is None:
            raise ValueError(f"Gemma3Config has no {theirs}: the token ids of images are needed to read them")
        out[ours] = int(value)
    return out


def hf_vision_name(path: str, prefix: str, tower: str) -> str:
    """Our dotted leaf path -> the HF tensor name (``tower``: the encoder's prefix)."""
    head, _, rest = path.partition(".")
    if head == "projector":
        if path == PROJECTION:
            return f"{prefix}multi_modal_projector.mm_input_projection_weight"
        return f"{prefix}multi_modal_projector.{rest}"
    if rest == "position_embedding":
        return tower + "embeddings.position_embedding.weight"
    if rest.startswith("patch_embedding."):
        return tower + "embeddings." + rest
    if rest.startswith("layers."):
        return tower + "encoder." + rest
    return tower + rest


def vision_from_hf(tensors: Mapping[str, np.ndarray], hf_config: dict, *, dtype=jnp.float32) -> VisionTower:
    """A :class:`VisionTower` from the tensors of a ``Gemma3ForConditionalGeneration`` (any mapping of
    HF names to arrays, e.g. a state dict as NumPy) and its config dict. Every expected name and shape
    is checked before any array is placed; text tensors are ignored."""
    cfg, text_width = vision_config_from_hf(hf_config)
    abstract = eqx.filter_eval_shape(VisionTower, cfg, text_width, key=jax.random.key(0))
    leaves, treedef = flat_paths(abstract)
    prefix = next((p for p in _PREFIXES if f"{p}multi_modal_projector.mm_input_projection_weight" in tensors),
                  None)
    if prefix is None:
        raise ValueError("no multi_modal_projector.mm_input_projection_weight among the tensors: not the "
                         "checkpoint of a Gemma3ForConditionalGeneration")
    towers = (f"{prefix}vision_tower.vision_model.", f"{prefix}vision_tower.")
    tower = next((t for t in towers if f"{t}embeddings.position_embedding.weight" in tensors), towers[0])
    out, problems = [], []
    for path, leaf in leaves:
        if not isinstance(leaf, jax.ShapeDtypeStruct):
            out.append(leaf)
            continue
        name = hf_vision_name(path, prefix, tower)
        want = leaf.shape[::-1] if path == PROJECTION else leaf.shape
        if name not in tensors:
            problems.append(f"missing {name}")
            out.append(None)
            continue
        x = np.asarray(tensors[name])
        if tuple(x.shape) != tuple(want):
            problems.append(f"{name}: shape {tuple(x.shape)}, expected {tuple(want)}")
        out.append(x.T if path == PROJECTION else x)
    if problems:
        raise ValueError("vision tower tensors do not fit its config: " + "; ".join(problems[:8]))
    arrays = [jnp.asarray(x, dtype) if isinstance(x, np.ndarray) else x for x in out]
    return jax.tree_util.tree_unflatten(treedef, arrays)
