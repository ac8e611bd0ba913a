"""Model souping (EmbeddingGemma section 2.3, Table 4): the uniform average of the parameters of runs
fine-tuned from one initialisation on different mixtures (Wortsman et al. 2022, "uniform soup")."""

from __future__ import annotations

from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp


def soup(models: Sequence[eqx.Module]) -> eqx.Module:
    """``sum_k theta_k / K`` over every float array; everything else (static fields, integer arrays)
    from the first model. All models must share one structure (same config, same head)."""
    if not models:
        raise ValueError("soup of no models")
    params = [eqx.filter(m, eqx.is_inexact_array) for m in models]
    shapes = lambda p: (jax.tree_util.tree_structure(p), [x.shape for x in jax.tree_util.tree_leaves(p)])
    first = shapes(params[0])
    for i, p in enumerate(params[1:], 1):
        if shapes(p) != first:
            raise ValueError(f"soup: model {i} has another parameter structure than model 0")
    mean = jax.tree_util.tree_map(
        lambda *xs: (sum(x.astype(jnp.float32) for x in xs) / len(xs)).astype(xs[0].dtype), *params)
    return eqx.combine(mean, eqx.filter(models[0], eqx.is_inexact_array, inverse=True))
