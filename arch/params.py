"""Parameter counts from the module tree itself (never from a formula)."""

import math

import equinox as eqx
import jax

from arch.config import ModelConfig
from arch.model import LM


def abstract_model(cfg: ModelConfig):
    """The model's structure with ShapeDtypeStructs in place of arrays: nothing is allocated (the key
    too is traced, so not even JAX's backend starts)."""
    return eqx.filter_eval_shape(lambda: LM(cfg, key=jax.random.key(0)))


def _key(k) -> str:
    return str(k.name if hasattr(k, "name") else k.idx if hasattr(k, "idx") else k.key)


def flat_paths(tree) -> tuple[list[tuple[str, object]], object]:
    """``[(dotted leaf path, leaf)]`` in tree order (``blocks.3.mixer.q_proj.weight``), and the treedef."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
    return [(".".join(_key(k) for k in path), leaf) for path, leaf in flat], treedef


def _size(tree) -> int:
    return sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(tree) if hasattr(x, "shape"))


def count_params(cfg_or_model) -> dict[str, int]:
    """``{"embedding", "non_embedding", "total"}`` for a config (built abstractly) or a model.

    The embedding is the token table (plus an untied output head, if any); everything else is
    non-embedding, as the reports count it. A :class:`arch.multimodal.MultimodalLM` (its ``lm`` and
    ``vision``) adds ``"vision"``: the encoder and projector, inside ``"total"``.
    """
    model = abstract_model(cfg_or_model) if isinstance(cfg_or_model, ModelConfig) else cfg_or_model
    if hasattr(model, "vision") and hasattr(model, "lm"):
        text, vision = count_params(model.lm), _size(model.vision)
        return {**text, "vision": vision, "total": text["total"] + vision}
    total = _size(model)
    embedding = _size(model.embed) + (0 if model.lm_head is None else _size(model.lm_head))
    return {"embedding": embedding, "non_embedding": total - embedding, "total": total}
