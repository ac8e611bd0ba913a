"""The one optimizer recipe reproduces what each stack built by hand before it served them all."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments.embed.config import BASES
from experiments.optim import TrainSettings, adamw, decay_mask, warmup_cosine
from experiments.runconfig import RunConfig


def _updates(opt, params, steps=5):
    state, out = opt.init(params), []
    for s in range(steps):
        grads = jax.tree.map(lambda p, s=s: jnp.sin(p + s), params)
        upd, state = opt.update(grads, state, params)
        params = optax.apply_updates(params, upd)
        out.append(params)
    return out


PARAMS = {"w": jnp.linspace(-1, 1, 12).reshape(3, 4), "bias": jnp.ones(4), "gain": jnp.arange(3.0)}


@pytest.mark.parametrize("steps, warmup", [(100, 10), (5, 30)])
def test_schedule_warms_up_then_decays_to_the_floor(steps, warmup):
    sched = warmup_cosine(1e-3, steps, warmup, 0.1)
    w = min(warmup, steps - 1)
    assert float(sched(0)) == 0.0 and float(sched(w)) == pytest.approx(1e-3)
    assert float(sched(steps)) == pytest.approx(1e-4)


def test_run_config_optimizer_is_the_recipe_with_its_numbers():
    run = RunConfig(preset="tiny_gemma3", steps=20, warmup=4, lr=1e-2)
    by_hand = optax.chain(optax.clip_by_global_norm(run.clip), optax.adamw(
        optax.warmup_cosine_decay_schedule(0.0, run.lr, 4, 20, run.lr * run.min_lr_ratio), b1=run.b1,
        b2=run.b2, weight_decay=run.weight_decay, mask=decay_mask))
    for a, b in zip(_updates(run.optimizer(), PARAMS), _updates(by_hand, PARAMS)):
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
            np.testing.assert_array_equal(x, y)


def test_embedding_optimizer_keeps_adamw_defaults_and_decays_matrices_only():
    ec = BASES["quick"]
    by_hand = optax.chain(optax.clip_by_global_norm(ec.clip), optax.adamw(
        optax.warmup_cosine_decay_schedule(0.0, ec.lr, ec.warmup, ec.steps, ec.lr * 0.1),
        weight_decay=ec.weight_decay, mask=decay_mask))
    for a, b in zip(_updates(ec.optimizer(), PARAMS), _updates(by_hand, PARAMS)):
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
            np.testing.assert_array_equal(x, y)
    assert decay_mask(PARAMS) == {"w": True, "bias": False, "gain": False}
    # mask=None decays every parameter: a zero gradient still shrinks a vector
    zero = jax.tree.map(jnp.zeros_like, PARAMS)
    opt = adamw(1.0, 10, warmup=0, min_lr_ratio=0.1, weight_decay=0.5, clip=1.0, mask=None)
    upd, _ = opt.update(zero, opt.init(PARAMS), PARAMS)
    assert float(jnp.abs(upd["gain"]).sum()) > 0


def test_both_configs_extend_the_common_settings_and_check_them():
    """Language-model and embedding runs share the optimizer fields, their validation and their
    optimizer; each keeps its own defaults (the embedding recipe AdamW's b2 = 0.999)."""
    run, ec = RunConfig(preset="tiny_gemma3"), BASES["quick"]
    assert isinstance(run, TrainSettings) and isinstance(ec, TrainSettings)
    assert (run.b2, ec.b2) == (0.95, 0.999)
    for cfg in (run, ec):
        name = type(cfg).__name__
        with pytest.raises(ValueError, match=rf"{name}\.ckpt_every=0: must be a positive int"):
            cfg.replace(ckpt_every=0)
        with pytest.raises(ValueError, match=rf"{name}\.min_lr_ratio=2"):
            cfg.replace(min_lr_ratio=2)
        with pytest.raises(ValueError, match=rf"{name}\.lr=0"):
            cfg.replace(lr=0)
