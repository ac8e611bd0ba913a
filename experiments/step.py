"""The jitted train step: a model's parameters, the batch loss, and ``make_train_step`` (micro-steps,
data parallel per device, several steps per call) and ``make_eval_step``. The loop around them, with
its data, checkpoints and metrics, is :mod:`experiments.train`."""

from __future__ import annotations

import inspect
import math
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import arch
from experiments import sharding as shd
from experiments.distill.teacher import Teacher
from experiments.losses import get_loss, xent
from experiments.runconfig import RunConfig


def init_params(cfg: arch.ModelConfig, seed: int) -> tuple[Any, Any]:
    """``(params, static)`` of a fresh model: f32 arrays, and the rest of the module tree."""
    model = eqx.filter_jit(arch.LM)(cfg, key=jax.random.key(seed))
    return eqx.partition(model, eqx.is_inexact_array)


def batch_arrays(b) -> dict[str, np.ndarray]:
    """The parts of an ``experiments.data.batches.Batch`` the step reads (the loss mask when it has one)."""
    out = {"inputs": b.inputs, "targets": b.targets, "segment_ids": b.segment_ids}
    return out if b.loss_mask is None else out | {"loss_mask": b.loss_mask}


def stack_steps(per_step: list[dict]) -> dict:
    """The batches of consecutive steps stacked along a leading step axis: the input of a
    ``make_train_step(..., steps_per_call=len(per_step))`` call."""
    return jax.tree_util.tree_map(lambda *xs: np.stack(xs), *per_step)


def batch_loss(params, static, batch: dict, loss_fn=xent, loss_kwargs: dict | None = None,
               doc_mask: bool = True) -> tuple[jax.Array, jax.Array]:
    """Token-weighted mean of the per-sequence loss over the batch, and the token count.

    The model runs on the whole ``[B, T]`` batch, so every projection is one ``[B * T, d]`` matmul;
    the per-sequence loss is vmapped. A ``teacher`` model in ``loss_kwargs`` runs on the same tokens
    without gradient and the loss gets its ``teacher_logits``.
    """
    model = eqx.combine(params, static)
    kw = dict(loss_kwargs or {})
    teacher = kw.pop("teacher", None)
    seg = batch["segment_ids"] if doc_mask else None
    logits = model(batch["inputs"], segment_ids=seg)
    more = {}
    if teacher is not None:  # Gemma 2 section 3.2: the frozen teacher on the same tokens
        more["teacher_logits"] = jax.lax.stop_gradient(teacher(batch["inputs"], segment_ids=seg))
    # packed sequences: every target counts; task rows: their answers (Batch.loss_mask)
    mask = batch.get("loss_mask", jnp.ones(batch["targets"].shape, bool)).astype(jnp.float32)

    def one(logits, targets, mask, more):
        return loss_fn(logits.astype(jnp.float32), targets, mask, **kw, **more)

    losses, counts = jax.vmap(one)(logits, batch["targets"], mask, more), mask.sum(axis=-1)
    total = jnp.sum(counts)
    return jnp.sum(losses * counts) / jnp.maximum(total, 1.0), total


def make_train_step(static, optimizer: optax.GradientTransformation, run: RunConfig, *, mesh=None,
                    params=None, opt_state=None, teacher: Teacher | None = None, steps_per_call: int = 1):
    """One jitted ``(params, opt_state, batch, step) -> (params, opt_state, metrics)``.

    Params and optimizer state are donated (updated in place). With a mesh, their shardings are pinned
    on input and output (FSDP) and the batch is split over both mesh axes; a pure data-parallel mesh
    keeps the micro-steps, per device. A teacher's frozen parameters are a (replicated) argument of the
    jitted step, not constants baked into it. With ``steps_per_call`` > 1 one call runs that many steps
    (``lax.scan``): ``batch`` leaves carry a leading step axis, ``step`` is the first step's index and
    the metrics come back stacked.
    """
    if not isinstance(steps_per_call, int) or steps_per_call < 1:
        raise ValueError(f"steps_per_call={steps_per_call!r}: must be an int >= 1")
    loss_fn = get_loss(run.loss)
    kw = dict(run.loss_kwargs)
    wants_key = "key" in inspect.signature(loss_fn).parameters
    schedule = run.schedule()

    def loss_sum(params, batch, extra):
        mean, count = batch_loss(params, static, batch, loss_fn, extra, run.doc_mask)
        return mean * count, count

    grad_fn = jax.value_and_grad(loss_sum, has_aux=True)

    def sums(params, batch, extra):
        """Summed loss, token count and gradient of a batch, in micro-steps of ``run.microbatch``
        rows (or of the largest count that divides the batch, when it does not)."""
        b = batch["inputs"].shape[0]
        mb = math.gcd(b, run.microbatch) if run.microbatch else b
        if mb == b:
            (total, count), g = grad_fn(params, batch, extra)
            return total, count, g
        micro = jax.tree_util.tree_map(lambda x: x.reshape(b // mb, mb, *x.shape[1:]), batch)

        def body(carry, rows):
            (s, c), g = grad_fn(params, rows, extra)
            return jax.tree_util.tree_map(jnp.add, carry, (s, c, g)), None

        zeros = (jnp.zeros(()), jnp.zeros(()), jax.tree_util.tree_map(jnp.zeros_like, params))
        return jax.lax.scan(body, zeros, micro)[0]

    per_device = mesh is not None and mesh.shape["fsdp"] == 1 and mesh.shape["data"] > 1

    def grads(params, batch, extra):
        """Gradient of the token-mean loss over the batch.

        One device: summed over micro-steps. A pure data-parallel mesh: each device runs the
        micro-steps of its own rows and the sums meet in one all-reduce at the end (on a CPU split
        into one device per core, each core works through its rows undisturbed by the other).
        With FSDP the whole (sharded) batch is one step and XLA places the collectives.
        """
        if per_device:
            arrays, static_extra = eqx.partition(extra, eqx.is_array)  # loss settings stay Python values

            def local(params, batch, arrays):
                return jax.lax.psum(sums(params, batch, eqx.combine(arrays, static_extra)), "data")

            rep, rows = jax.sharding.PartitionSpec(), jax.sharding.PartitionSpec("data")
            # check_vma off: gemma_kernels.layout's guarded transposes mix per-device and constant branches
            total, count, g = jax.shard_map(local, mesh=mesh, in_specs=(rep, rows, rep), out_specs=rep,
                                            check_vma=False)(params, batch, arrays)
        elif mesh is not None:
            (total, count), g = grad_fn(params, batch, extra)
        else:
            total, count, g = sums(params, batch, extra)
        inv = 1.0 / jnp.maximum(count, 1.0)
        return total * inv, jax.tree_util.tree_map(lambda x: x * inv, g)

    tp = None if teacher is None else teacher.params

    def step(params, opt_state, batch, step, teacher_params=None):
        extra = dict(kw)
        if teacher_params is not None:
            extra["teacher"] = eqx.combine(teacher_params, teacher.static)
        if wants_key:  # randomness is a pure function of (seed, step): exact resume
            extra["key"] = jax.random.fold_in(jax.random.key(run.seed), step)
        loss, g = grads(params, batch, extra)
        updates, opt_state = optimizer.update(g, opt_state, params)
        params = optax.apply_updates(params, updates)
        return params, opt_state, {"loss": loss, "grad_norm": optax.tree.norm(g), "lr": schedule(step)}

    def steps(params, opt_state, batches, first, teacher_params=None):
        def body(carry, xs):
            batch, i = xs
            params, opt_state, m = step(*carry, batch, first + i, teacher_params)
            return (params, opt_state), m

        idx = jnp.arange(steps_per_call, dtype=jnp.int32)
        (params, opt_state), m = jax.lax.scan(body, (params, opt_state), (batches, idx))
        return params, opt_state, m

    fn = step if steps_per_call == 1 else steps
    if mesh is None:
        jitted = jax.jit(fn, donate_argnums=(0, 1))
    else:
        p_sh, o_sh = shd.state_shardings(mesh, params), shd.state_shardings(mesh, opt_state)
        rep = shd.replicated(mesh)
        b_sh = shd.batch_sharding(mesh, leading=steps_per_call > 1)
        jitted = jax.jit(fn, donate_argnums=(0, 1), out_shardings=(p_sh, o_sh, rep),
                         in_shardings=(p_sh, o_sh, b_sh, rep, rep)[:4 + (tp is not None)])
    return jitted if tp is None else (lambda p, o, b, s: jitted(p, o, b, s, tp))


def make_eval_step(static, *, doc_mask: bool = True):
    """Jitted ``(params, batch) -> (sum of token cross-entropies, token count)``."""

    def step(params, batch):
        mean, count = batch_loss(params, static, batch, xent, None, doc_mask)
        return mean * count, count

    return jax.jit(step)
