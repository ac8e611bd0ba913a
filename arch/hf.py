"""Hugging Face checkpoint directories in and out: ``from_hf``, ``to_hf`` (configs: ``config_from_hf``,
``config_to_hf``).

Layouts (transformers 5.x; names in :mod:`arch.hf_layouts`): a directory with ``config.json`` and
``model.safetensors`` (or shards listed by ``model.safetensors.index.json``) for ``Gemma2ForCausalLM``,
``Gemma3ForCausalLM``, ``Gemma3TextModel``, ``Gemma3ForConditionalGeneration`` (a whole
:class:`arch.multimodal.MultimodalLM`: text model, vision tower and projector; :mod:`arch.hf_vision`) and
``RecurrentGemmaForCausalLM``; a sentence-transformers folder (``modules.json``: Transformer at the root,
``1_Pooling``, ``N_Dense`` with ``linear.weight``, ``Normalize``) for EmbeddingGemma.

Every Linear is stored ``[out, in]`` as in HF, so tensors load as they are, except the RecurrentGemma
Conv1D (HF ``conv_1d.weight [r, 1, w]``, ours ``conv_weight [w, r]``) and the image projection (HF
``mm_input_projection_weight [vision, text]``, ours ``[text, vision]`` like every Linear). Loading reads
safetensors only (never pickle), checks every name and shape from the file headers before reading any
data, reads shard by shard, converts each tensor to ``dtype`` as it is read and places it into the
abstract model.
"""

import json
import math
from collections.abc import Callable
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import ml_dtypes  # noqa: F401  (registers bfloat16 with numpy, which safetensors' numpy reader needs)
import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from arch.config import ModelConfig
from arch.embedding import EmbeddingModel
from arch.hf_layouts import LAYOUTS, architecture, config_from_hf, config_to_hf, family_of, hf_name
from arch.hf_vision import (
    PROJECTION,
    hf_vision_name,
    image_tokens_from_hf,
    vision_config_from_hf,
    vision_config_to_hf,
)
from arch.model import LM
from arch.multimodal import MultimodalLM
from arch.params import abstract_model, flat_paths

__all__ = ["config_from_hf", "config_to_hf", "from_hf", "to_hf"]

Sharding = jax.sharding.Sharding | Callable[[str, tuple[int, ...]], jax.sharding.Sharding | None] | None
INDEX = "model.safetensors.index.json"


def _is_conv(path: str) -> bool:
    return path.endswith("conv_weight")


def _is_projection(path: str) -> bool:
    return path.endswith(PROJECTION)


def _hf_shape(path: str, shape: tuple) -> tuple:
    if _is_conv(path):
        return (shape[1], 1, shape[0])
    return tuple(shape[::-1]) if _is_projection(path) else tuple(shape)


def _to_ours(path: str, x: np.ndarray) -> np.ndarray:
    if _is_conv(path):
        return np.ascontiguousarray(x[:, 0, :].T)
    return np.ascontiguousarray(x.T) if _is_projection(path) else x


def _to_hf(path: str, x: np.ndarray) -> np.ndarray:
    if _is_conv(path):
        return np.ascontiguousarray(x.T[:, None, :])
    return np.ascontiguousarray(x.T) if _is_projection(path) else x


# ---------------------------------------------------------------------------------------------- reading


def _index(folder: Path, namespace: str = "") -> dict[str, tuple[Path, str, tuple]]:
    """``{namespace + name: (file, name, shape)}`` of a folder's safetensors, from headers only."""
    if (folder / INDEX).exists():
        weight_map = json.loads((folder / INDEX).read_text())["weight_map"]
        files = sorted({folder / f for f in weight_map.values()})
    elif (folder / "model.safetensors").exists():
        files = [folder / "model.safetensors"]
    else:
        pickles = sorted(p.name for p in folder.glob("*.bin")) + sorted(p.name for p in folder.glob("*.pt"))
        hint = f" (found {pickles}: pickle checkpoints are never loaded; convert them to safetensors)"
        raise FileNotFoundError(f"{folder}: no model.safetensors or {INDEX}{hint if pickles else ''}")
    out = {}
    for file in files:
        with safe_open(file, framework="numpy") as f:
            for name in f.keys():
                out[namespace + name] = (file, name, tuple(f.get_slice(name).get_shape()))
    return out


def _check(want: dict[str, tuple], have: dict[str, tuple], ignore: tuple[str, ...], where: Path) -> None:
    """All missing, unexpected and mis-shaped tensors in one error (``want``: name -> expected shape)."""
    missing = sorted(set(want) - set(have))
    unexpected = sorted(n for n in set(have) - set(want) if not n.startswith(ignore))
    shapes = sorted(f"{n}: file {have[n][2]} vs model {want[n]}"
                    for n in set(want) & set(have) if tuple(have[n][2]) != tuple(want[n]))
    found = (("missing tensors", missing), ("unexpected tensors", unexpected), ("shape mismatches", shapes))
    problems = [f"{label} ({len(items)}): {', '.join(items)}" for label, items in found if items]
    if problems:
        raise ValueError(f"{where}: checkpoint does not match the model:\n  " + "\n  ".join(problems))


def _place(x: np.ndarray, name: str, sharding: Sharding):
    s = sharding(name, x.shape) if callable(sharding) and not isinstance(sharding, jax.sharding.Sharding) \
        else sharding
    return jnp.asarray(x) if s is None else jax.device_put(x, s)


def _load(abstract, names: dict[str, str], have: dict, *, ignore=(), where: Path, dtype, sharding):
    """Fill ``abstract`` (ShapeDtypeStruct leaves) from the tensors ``names[leaf path]``, shard by shard."""
    flat, treedef = flat_paths(abstract)
    _check({names[p]: _hf_shape(p, leaf.shape) for p, leaf in flat}, have, ignore, where)
    slot = {names[p]: (i, p) for i, (p, _) in enumerate(flat)}
    by_file: dict[Path, list[str]] = {}
    for name in slot:
        by_file.setdefault(have[name][0], []).append(name)
    leaves = [None] * len(flat)
    for file, group in by_file.items():
        with safe_open(file, framework="numpy") as f:
            for name in group:
                i, path = slot[name]
                x = _to_ours(path, f.get_tensor(have[name][1]))
                x = x.astype(np.dtype(dtype) if dtype is not None else x.dtype, copy=False)
                leaves[i] = _place(x, name, sharding)
                del x  # one host copy at a time
    return jax.tree_util.tree_unflatten(treedef, leaves)


def _pick_layout(arch: str, have: dict) -> tuple[str, str]:
    for prefix, head in LAYOUTS[arch].candidates:
        if f"{prefix}embed_tokens.weight" in have:
            return prefix, head
    return LAYOUTS[arch].candidates[0]  # the check then reports the embedding as missing


def _lm_names(cfg: ModelConfig, abstract, prefix: str, head: str) -> dict[str, str]:
    family = family_of(cfg)
    return {p: hf_name(p, family, prefix, head) for p, _ in flat_paths(abstract)[0]}


def from_hf(path, *, dtype=None, sharding: Sharding = None, text_only: bool = False
            ) -> LM | EmbeddingModel | MultimodalLM:
    """Load a Hugging Face checkpoint directory (see the module docstring) as an ``LM``, a
    ``MultimodalLM`` (``Gemma3ForConditionalGeneration``; ``text_only=True``: its ``LM`` alone, the
    vision tensors never read) or, for a sentence-transformers folder, an ``EmbeddingModel``.

    ``dtype``: convert every tensor to it as it is read (None keeps the stored dtype). ``sharding``: a
    ``jax.sharding.Sharding`` for every tensor, or ``fn(hf_name, shape) -> Sharding | None``.
    """
    folder = Path(path)
    if (folder / "modules.json").exists():
        return _from_sentence_transformers(folder, dtype=dtype, sharding=sharding)
    hf = json.loads((folder / "config.json").read_text())
    cfg, arch = config_from_hf(hf), architecture(hf)
    have = _index(folder)
    prefix, head = _pick_layout(arch, have)
    if arch == "Gemma3ForConditionalGeneration" and not text_only:
        return _from_multimodal(folder, hf, cfg, have, prefix, head, dtype=dtype, sharding=sharding)
    abstract = abstract_model(cfg)
    return _load(abstract, _lm_names(cfg, abstract, prefix, head), have, ignore=LAYOUTS[arch].ignore,
                 where=folder, dtype=dtype, sharding=sharding)


def _multimodal_names(model: MultimodalLM, prefix: str, head: str, root: str, tower: str) -> dict[str, str]:
    """Leaf path -> HF name: ``lm.*`` as the text model's (``prefix``, ``head``), ``vision.*`` as the
    tower's (``tower``: the encoder's prefix) and the projector's (under ``root``)."""
    family = family_of(model.cfg)
    names = {}
    for p, _ in flat_paths(model)[0]:
        part, _, rest = p.partition(".")
        names[p] = hf_name(rest, family, prefix, head) if part == "lm" else hf_vision_name(rest, root, tower)
    return names


def _from_multimodal(folder: Path, hf: dict, cfg: ModelConfig, have: dict, prefix: str, head: str, *,
                     dtype, sharding) -> MultimodalLM:
    vision, _ = vision_config_from_hf(hf)
    abstract = eqx.filter_eval_shape(MultimodalLM, cfg, vision, **image_tokens_from_hf(hf),
                                     key=jax.random.key(0))
    root = "model." if prefix.startswith("model.") else ""
    tower = next((t for t in (f"{root}vision_tower.vision_model.", f"{root}vision_tower.")
                  if f"{t}embeddings.position_embedding.weight" in have), f"{root}vision_tower.")
    # SigLIP's attention-pooling head is not part of Gemma 3 (vision_use_head=False); never read
    names = _multimodal_names(abstract, prefix, head, root, tower)
    return _load(abstract, names, have, ignore=(tower + "head.",), where=folder, dtype=dtype,
                 sharding=sharding)


def _st_modules(folder: Path) -> dict:
    """Parse modules.json + module configs into ``{trunk, dense: [(path, in, out)], normalize}``."""
    kinds = ("Transformer", "Pooling", "Dense", "Normalize")
    trunk, pooled, dense, normalize = None, False, [], False
    for module in json.loads((folder / "modules.json").read_text()):
        kind = module["type"].rsplit(".", 1)[-1]
        sub = folder / module.get("path", "")
        conf = json.loads((sub / "config.json").read_text()) if (sub / "config.json").exists() else {}
        if kind not in kinds:
            raise ValueError(f"{folder}: sentence-transformers module {module['type']!r} is not supported; "
                             f"supported: {kinds}")
        if kind == "Transformer":
            trunk = sub
        elif kind == "Pooling":
            mode = conf.get("pooling_mode") or [k[len("pooling_mode_"):] for k, v in conf.items()
                                                 if k.startswith("pooling_mode_") and v]
            if mode not in ("mean", ["mean"], ["mean_tokens"]) or not conf.get("include_prompt", True):
                raise ValueError(f"{sub}: pooling {mode!r} (include_prompt={conf.get('include_prompt')}) "
                                 "is not supported; supported: mean with include_prompt=true")
            pooled = True
        elif kind == "Dense":
            act = conf.get("activation_function", "torch.nn.modules.activation.Tanh")
            if conf.get("bias", True) or not act.endswith("Identity") or conf.get("use_residual"):
                raise ValueError(f"{sub}: Dense(bias={conf.get('bias', True)}, activation={act!r}, "
                                 f"use_residual={conf.get('use_residual')}) is not supported; supported: "
                                 "bias=false, Identity activation, no residual")
            dense.append((module.get("path", ""), conf["in_features"], conf["out_features"]))
        else:
            normalize = True
    if trunk is None or not pooled:
        raise ValueError(f"{folder}: modules.json needs a Transformer and a Pooling module")
    return dict(trunk=trunk, dense=dense, normalize=normalize)


def _from_sentence_transformers(folder: Path, *, dtype, sharding) -> EmbeddingModel:
    mods = _st_modules(folder)
    hf = json.loads((mods["trunk"] / "config.json").read_text())
    cfg, arch = config_from_hf(hf), architecture(hf)
    have = _index(mods["trunk"])
    prefix, head = _pick_layout(arch, have)
    dims = tuple(out for _, _, out in mods["dense"])
    for sub, _, _ in mods["dense"]:
        have |= _index(folder / sub, namespace=f"{sub}/")
    abstract = eqx.filter_eval_shape(EmbeddingModel, cfg, key=jax.random.key(0), dense_dims=dims,
                                     normalize=mods["normalize"])
    names = _lm_names(cfg, abstract.trunk, prefix, head)
    names = {f"trunk.{p}": n for p, n in names.items()}
    names |= {f"dense.{i}.weight": f"{sub}/linear.weight" for i, (sub, _, _) in enumerate(mods["dense"])}
    return _load(abstract, names, have, where=folder, dtype=dtype, sharding=sharding)


# ---------------------------------------------------------------------------------------------- writing


def _write(folder: Path, tensors: list[tuple[str, str, object]], dtype, max_shard_bytes: int) -> None:
    """``tensors``: ``(hf name, leaf path, array)``; one file, or shards plus the index HF reads."""
    folder.mkdir(parents=True, exist_ok=True)
    out_dtype = lambda x: np.dtype(dtype) if dtype is not None else np.dtype(x.dtype)
    nbytes = [math.prod(x.shape) * out_dtype(x).itemsize for _, _, x in tensors]
    shards, size = [[]], 0
    for item, n in zip(tensors, nbytes):
        if shards[-1] and size + n > max_shard_bytes:
            shards, size = [*shards, []], 0
        shards[-1].append(item)
        size += n
    files = ["model.safetensors"] if len(shards) == 1 else [
        f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    for file, shard in zip(files, shards):  # one shard's host copy at a time
        arrays = {name: _to_hf(path, np.asarray(jax.device_get(x)).astype(out_dtype(x), copy=False))
                  for name, path, x in shard}
        save_file(arrays, str(folder / file), metadata={"format": "pt"})
        del arrays
    if len(shards) > 1:
        index = dict(metadata=dict(total_size=sum(nbytes)),
                     weight_map={name: file for file, shard in zip(files, shards) for name, _, _ in shard})
        (folder / INDEX).write_text(json.dumps(index, indent=2))


def _write_json(file: Path, obj) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(json.dumps(obj, indent=2) + "\n")


def _write_lm(lm: LM, folder: Path, *, arch_prefix: str, dtype, max_shard_bytes: int) -> None:
    hf = config_to_hf(lm.cfg)
    leaf_dtype = dtype if dtype is not None else lm.embed.dtype
    hf["dtype"] = str(np.dtype(leaf_dtype))
    names = _lm_names(lm.cfg, lm, arch_prefix, "lm_head.weight")
    _write(folder, [(names[p], p, x) for p, x in flat_paths(lm)[0]], dtype, max_shard_bytes)
    _write_json(folder / "config.json", hf)


def to_hf(model: LM | EmbeddingModel | MultimodalLM, path, *, dtype=None,
          max_shard_bytes: int = 5 * 2**30) -> None:
    """Write ``model`` in the layout ``from_hf`` reads: an ``LM`` as ``Gemma2ForCausalLM``,
    ``Gemma3ForCausalLM`` (``Gemma3TextModel`` when bidirectional) or ``RecurrentGemmaForCausalLM``; a
    ``MultimodalLM`` as ``Gemma3ForConditionalGeneration`` (transformers 5 names); an ``EmbeddingModel``
    as a sentence-transformers folder (add the tokenizer files yourself)."""
    folder = Path(path)
    if isinstance(model, MultimodalLM):
        return _write_multimodal(model, folder, dtype=dtype, max_shard_bytes=max_shard_bytes)
    if isinstance(model, EmbeddingModel):
        return _write_sentence_transformers(model, folder, dtype=dtype, max_shard_bytes=max_shard_bytes)
    prefix = "" if not model.cfg.causal else "model."
    _write_lm(model, folder, arch_prefix=prefix, dtype=dtype, max_shard_bytes=max_shard_bytes)


def _write_multimodal(model: MultimodalLM, folder: Path, *, dtype, max_shard_bytes: int) -> None:
    if family_of(model.cfg) != "gemma3":
        raise ValueError("to_hf(MultimodalLM): the text model must be a Gemma 3 (qk_norm=True, no R layers), "
                         "the only one Gemma3ForConditionalGeneration holds")
    text = {**config_to_hf(model.cfg), "model_type": "gemma3_text"}
    text.pop("architectures")
    vision = model.vision_cfg
    hf = dict(architectures=["Gemma3ForConditionalGeneration"], model_type="gemma3", text_config=text,
              vision_config=vision_config_to_hf(vision), mm_tokens_per_image=vision.soft_tokens,
              image_token_index=model.image_token, boi_token_index=model.boi_token,
              eoi_token_index=model.eoi_token, tie_word_embeddings=model.cfg.tie_embeddings,
              dtype=str(np.dtype(dtype if dtype is not None else model.lm.embed.dtype)))
    names = _multimodal_names(model, "model.language_model.", "lm_head.weight", root="model.",
                              tower="model.vision_tower.")
    _write(folder, [(names[p], p, x) for p, x in flat_paths(model)[0]], dtype, max_shard_bytes)
    _write_json(folder / "config.json", hf)


def _write_sentence_transformers(model: EmbeddingModel, folder: Path, *, dtype, max_shard_bytes) -> None:
    if model.cfg.causal or family_of(model.cfg) != "gemma3":
        raise ValueError("to_hf(EmbeddingModel): the trunk must be a bidirectional Gemma 3 (causal=False, "
                         "qk_norm=True), the only trunk sentence-transformers' EmbeddingGemma layout holds")
    _write_lm(model.trunk, folder, arch_prefix="", dtype=dtype, max_shard_bytes=max_shard_bytes)
    st = "sentence_transformers.models."
    modules = [dict(idx=0, name="0", path="", type=st + "Transformer"),
               dict(idx=1, name="1", path="1_Pooling", type=st + "Pooling")]
    _write_json(folder / "1_Pooling" / "config.json", dict(
        embedding_dimension=model.cfg.width, pooling_mode=model.pooling, include_prompt=True))
    for layer in model.dense:
        i = len(modules)
        sub = f"{i}_Dense"
        modules.append(dict(idx=i, name=str(i), path=sub, type=st + "Dense"))
        out_f, in_f = layer.weight.shape
        _write_json(folder / sub / "config.json", dict(
            in_features=in_f, out_features=out_f, bias=False,
            activation_function="torch.nn.modules.linear.Identity"))
        _write(folder / sub, [("linear.weight", "weight", layer.weight)], dtype, max_shard_bytes)
    if model.normalize:
        i = len(modules)
        modules.append(dict(idx=i, name=str(i), path=f"{i}_Normalize", type=st + "Normalize"))
        _write_json(folder / f"{i}_Normalize" / "config.json", {})
    _write_json(folder / "modules.json", modules)
    _write_json(folder / "sentence_bert_config.json", dict(
        transformer_task="feature-extraction", module_output_name="token_embeddings",
        modality_config=dict(text=dict(method="forward", method_output_name="last_hidden_state"))))
    _write_json(folder / "config_sentence_transformers.json", dict(
        model_type="SentenceTransformer", prompts={}, default_prompt_name=None, similarity_fn_name="cosine"))


# ------------------------------------------------------------------------------------------ reconfigure
