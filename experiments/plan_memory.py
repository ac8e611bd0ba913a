"""Per-device bytes of one step of :func:`experiments.step.make_train_step` on a ``("data", "fsdp")``
mesh, with nothing allocated: the model, its optimizer state and the batch are
``jax.ShapeDtypeStruct`` s, and the step is lowered and compiled for the mesh, never run.

- Weights, AdamW moments and gradients are exact: each leaf's shard under
  :func:`experiments.sharding.param_spec` (the FSDP rule the step pins). Gradients are float32 and
  sharded as the weights are (XLA reduce-scatters them before the update).
- Activations are what XLA's buffer assignment reports as the step's temporary memory
  (``compiled.memory_analysis().temp_size_in_bytes``) minus the gradients: the residuals kept for the
  backward pass, FSDP's all-gathered weights and the loss's logits. Compiling a 27B step for 256
  devices takes a while per program, so :func:`temp_bytes` compiles reduced-depth copies (one block of
  each kind, then one more of each kind in turn) and scales each kind's increment to the full depth.
- The repository's step has no rematerialisation; :func:`remat_activations` estimates per-block
  remat (``jax.checkpoint`` around each block) from the same programs: every block keeps only its
  float32 input ``[rows, t, width]``, and one block's activations are rebuilt at a time.

These are XLA CPU's buffer sizes for the same SPMD program; a GPU or TPU compiler schedules buffers
differently, and on those the Pallas attention kernels keep no ``[t, t]`` scores for global layers
where the XLA path of :mod:`gemma_kernels.attention.xla` does.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from arch.config import ModelConfig
from experiments import sharding as shd
from experiments.runconfig import RunConfig
from experiments.step import init_params, make_train_step

GB = 1e9
_UNITS = {"": 1, "b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
UNIT_NAMES = "B, KB, MB, GB, TB, KiB, MiB, GiB, TiB"  # case-insensitive
BATCH_KEYS = ("inputs", "targets", "segment_ids")
METRICS_BYTES = 3 * 4  # loss, grad_norm, lr: float32 scalars
RESIDUAL_BYTES = 4  # the residual stream is float32 (float32 weights, bf16 matmul inputs only)


def parse_bytes(text: str, flag: str = "--device-memory") -> float:
    """``"95GB"`` -> 95e9, ``"80GiB"`` -> 80 * 2**30, ``"1e11"`` -> bytes; a ValueError naming ``flag``."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*", str(text))
    if m is None or m.group(2).lower() not in _UNITS or float(m.group(1)) <= 0:
        raise ValueError(f"{flag}={text!r}: not a size; allowed: a positive number with an optional unit "
                         f"({UNIT_NAMES}), e.g. 95GB")
    return float(m.group(1)) * _UNITS[m.group(2).lower()]


@functools.lru_cache(maxsize=16)  # the mesh choice asks for the same model's shards at several sizes
def abstract_state(run: RunConfig, cfg: ModelConfig) -> tuple[Any, Any, Any]:
    """``(params, static, opt_state)`` of ``cfg`` under ``run``'s optimizer, as ShapeDtypeStructs."""
    params, static = eqx.filter_eval_shape(init_params, cfg, run.seed)
    return params, static, jax.eval_shape(run.optimizer().init, params)


def shard_bytes(tree: Any, fsdp: int) -> int:
    """Bytes one device holds of ``tree`` when each leaf is split by ``shd.param_spec(shape, fsdp)``."""
    total = 0
    for x in jax.tree_util.tree_leaves(tree):
        shape = tuple(x.shape)
        spec = shd.param_spec(shape, fsdp)
        local = [n // fsdp if i < len(spec) and spec[i] == "fsdp" else n for i, n in enumerate(shape)]
        total += math.prod(local) * jnp.dtype(x.dtype).itemsize
    return total


def batch_struct(run: RunConfig) -> dict[str, jax.ShapeDtypeStruct]:
    """The global batch the step reads: ``[batch, seq_len]`` int32 inputs, targets and segment ids."""
    return {k: jax.ShapeDtypeStruct((run.batch, run.seq_len), jnp.int32) for k in BATCH_KEYS}


@dataclasses.dataclass(frozen=True)
class StateBytes:
    """Exact per-device bytes of what the step reads and keeps (see the module docstring)."""

    params: int  # parameter count of the whole model
    weights: int
    optimizer: int
    gradients: int
    batch: int

    @property
    def argument(self) -> int:  # params, optimizer state, batch, the step index
        return self.weights + self.optimizer + self.batch + 4

    @property
    def output(self) -> int:  # params, optimizer state (donated: they alias the arguments), metrics
        return self.weights + self.optimizer + METRICS_BYTES


def state_bytes(run: RunConfig, cfg: ModelConfig, devices: int, fsdp: int) -> StateBytes:
    params, _, opt_state = abstract_state(run, cfg)
    weights = shard_bytes(params, fsdp)
    batch = len(BATCH_KEYS) * run.batch * run.seq_len * 4 // devices
    count = sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(params))
    return StateBytes(params=count, weights=weights, optimizer=shard_bytes(opt_state, fsdp),
                      gradients=weights, batch=batch)


def compiled_sizes(run: RunConfig, cfg: ModelConfig, mesh) -> dict[str, int]:
    """``memory_analysis()`` of ``make_train_step`` for ``cfg`` on ``mesh``, compiled from abstract
    arguments: argument, output, alias and temp bytes per device."""
    params, static, opt_state = abstract_state(run, cfg)
    step = make_train_step(static, run.optimizer(), run, mesh=mesh, params=params, opt_state=opt_state)
    m = step.lower(params, opt_state, batch_struct(run), jax.ShapeDtypeStruct((), jnp.int32)).compile()
    m = m.memory_analysis()
    return {k: int(getattr(m, f"{k}_size_in_bytes")) for k in ("argument", "output", "alias", "temp")}


def depth_programs(cfg: ModelConfig) -> tuple[ModelConfig, dict[str, ModelConfig]]:
    """One block of each kind in ``cfg``'s pattern (in order of first appearance), and per kind the
    same with one more block of that kind."""
    kinds = "".join(dict.fromkeys(cfg.layer_kinds))
    base = cfg.replace(pattern=kinds, num_layers=len(kinds))
    more = {k: cfg.replace(pattern=kinds.replace(k, k + k), num_layers=len(kinds) + 1) for k in kinds}
    return base, more


@dataclasses.dataclass(frozen=True)
class TempBytes:
    """The step's temporary bytes per device at full depth, scaled from the reduced programs."""

    total: int  # temp at full depth
    base: int  # temp of one block of each kind
    per_block: dict[str, int]  # temp added by one more block of a kind
    grad_per_block: dict[str, int]  # of which that block's gradient shard
    grads_base: int  # gradient bytes of the one-of-each program


def temp_bytes(run: RunConfig, cfg: ModelConfig, mesh) -> TempBytes:
    """Compile :func:`depth_programs` on ``mesh`` and scale: ``temp(base) + sum over kinds of
    (blocks of that kind - 1) x (temp(base + one block) - temp(base))``."""
    fsdp, devices = mesh.shape["fsdp"], mesh.size
    base, more = depth_programs(cfg)
    t0 = compiled_sizes(run, base, mesh)["temp"]
    g0 = state_bytes(run, base, devices, fsdp).gradients
    per_block = {k: compiled_sizes(run, c, mesh)["temp"] - t0 for k, c in more.items()}
    grads = {k: state_bytes(run, c, devices, fsdp).gradients - g0 for k, c in more.items()}
    total = t0 + sum((cfg.count(k) - 1) * d for k, d in per_block.items())
    return TempBytes(total=total, base=t0, per_block=per_block, grad_per_block=grads, grads_base=g0)


def remat_activations(temp: TempBytes, cfg: ModelConfig, rows: int, seq_len: int) -> int:
    """Activations per device with ``jax.checkpoint`` around each block (an estimate, not compiled):
    what the programs keep outside the blocks, plus every block's float32 input, plus the largest
    one block's own activations (rebuilt in the backward pass one block at a time)."""
    act = {k: max(temp.per_block[k] - temp.grad_per_block[k], 0) for k in temp.per_block}
    outside = max(temp.base - temp.grads_base - sum(act.values()), 0)
    inputs = cfg.num_layers * rows * seq_len * cfg.width * RESIDUAL_BYTES
    return outside + inputs + max(act.values())
