"""Inference-time overrides without retraining: the same weights under a new config.

Gemma 2 Table 10 turns global layers into local ones at inference (``pattern``); Gemma 3 section 5.3
changes RoPE scaling after training (``rope_scale_global``); windows can shrink (Gemma 3 Fig. 4
trains them, Gemma 2 Table 10 changes them at inference); ``attn_impl`` / ``scan_impl`` pick kernels.
All of these keep every parameter's shape, so the trained leaves can be moved into the new module
tree. Changes that alter shapes (an ``L`` layer turned ``R``, a new width) cannot reuse the weights and
raise ValueError naming the layers and fields that differ.
"""

import equinox as eqx
import jax

from arch.model import LM
from arch.params import abstract_model


def _path_str(path) -> str:
    parts = []
    for key in path:
        if hasattr(key, "name"):
            parts.append(f".{key.name}")
        elif hasattr(key, "idx"):
            parts.append(f"[{key.idx}]")
        else:
            parts.append(str(key))
    return "".join(parts).lstrip(".")


def _shapes(tree) -> dict[str, tuple[int, ...]]:
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {_path_str(p): tuple(x.shape) for p, x in flat}


def _differences(old: LM, new, cfg_old, cfg_new) -> list[str]:
    """Human-readable list of what makes the parameter trees incompatible."""
    out, changed = [], set()
    kinds_old, kinds_new = cfg_old.layer_kinds, cfg_new.layer_kinds
    for i in range(max(len(kinds_old), len(kinds_new))):
        a = kinds_old[i] if i < len(kinds_old) else "-"  # "-": no such layer
        b = kinds_new[i] if i < len(kinds_new) else "-"
        if a != b and ("R" in (a, b) or "-" in (a, b)):  # G <-> L keeps the attention weights
            out.append(f"layer {i}: {a} -> {b}")
            changed.add(f"blocks[{i}].")
    old_shapes, new_shapes = _shapes(old), _shapes(new)
    for name in sorted(old_shapes.keys() | new_shapes.keys()):
        if any(name.startswith(prefix) for prefix in changed):
            continue  # already named by its layer
        a, b = old_shapes.get(name), new_shapes.get(name)
        if a != b:
            out.append(f"{name}: {'absent' if a is None else a} -> {'absent' if b is None else b}")
    return out


def reconfigure(model: LM, **overrides) -> LM:
    """``model`` with the same weights under ``model.cfg.replace(**overrides)``.

    The new module tree is built abstractly (nothing allocated) and the old array leaves are moved
    into it in order; static fields (windows, RoPE bases and scales, kernel choices) come from the new
    config. Leaf dtypes are kept as they are in ``model``. A model with a ``trunk`` (an
    ``EmbeddingModel``) gets its trunk reconfigured and keeps its head; a ``MultimodalLM`` gets its
    ``lm`` reconfigured and keeps its vision tower.
    """
    if hasattr(model, "trunk"):
        return eqx.tree_at(lambda m: m.trunk, model, reconfigure(model.trunk, **overrides))
    if hasattr(model, "vision") and hasattr(model, "lm"):
        return eqx.tree_at(lambda m: m.lm, model, reconfigure(model.lm, **overrides))
    cfg_new = model.cfg.replace(**overrides)
    target = abstract_model(cfg_new)
    diffs = _differences(model, target, model.cfg, cfg_new)
    old_leaves = jax.tree_util.tree_leaves(model)
    new_leaves, treedef = jax.tree_util.tree_flatten(target)
    if diffs or len(old_leaves) != len(new_leaves):
        listing = "; ".join(diffs[:8]) or "the parameter trees differ in structure"
        listing += f"; ... ({len(diffs) - 8} more)" if len(diffs) > 8 else ""
        raise ValueError(f"reconfigure({', '.join(f'{k}={v!r}' for k, v in overrides.items())}) changes "
                         f"parameter shapes, so the weights cannot be reused: {listing}")
    return jax.tree_util.tree_unflatten(treedef, old_leaves)
