"""Data and FSDP sharding over a ``jax.sharding`` mesh with axes ``("data", "fsdp")``.

- The batch is split over both axes (every device gets ``B / (data * fsdp)`` sequences).
- Parameters and optimizer state are split over ``fsdp`` along their largest axis that ``fsdp``
  divides, and replicated over ``data`` (ZeRO-3 / FSDP; XLA inserts the all-gathers and
  reduce-scatters). A leaf that nothing divides is replicated.
- Axis types are ``Auto``: ``Explicit`` (the jax 0.10 default of ``jax.make_mesh``) makes a
  ``pallas_call`` under ``jit`` fail on sharded inputs.
- On a CPU, :func:`split_cpu` makes one device per core: a data-parallel mesh over them keeps every
  core busy with its own rows (one device leaves a core idle whenever an op does not split).
- Multi-host: ``maybe_initialize_distributed`` calls ``jax.distributed.initialize`` when
  ``JAX_COORDINATOR_ADDRESS`` is set; each process then feeds its own rows of the global batch.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

AXES = ("data", "fsdp")


def maybe_initialize_distributed() -> bool:
    """Join a multi-host job when the coordinator env vars are set; True if it did."""
    address = os.environ.get("JAX_COORDINATOR_ADDRESS")
    if not address or jax.distributed.is_initialized():
        return False
    num = os.environ.get("JAX_NUM_PROCESSES")
    pid = os.environ.get("JAX_PROCESS_ID")
    jax.distributed.initialize(
        coordinator_address=address,
        num_processes=int(num) if num else None,
        process_id=int(pid) if pid else None,
    )
    return True


def split_cpu(n: int) -> None:
    """Expose the host CPU as ``n`` XLA devices (``jax_num_cpu_devices``), so that a mesh can run data
    parallel over its cores. Harmless where the accelerator is the default device; it must run before
    JAX starts its backends (the first ``jax.devices()`` or array), else it raises naming the cause."""
    if n < 1:
        raise ValueError(f"split_cpu(n={n}): n must be >= 1")
    if jax.config.jax_num_cpu_devices == n:
        return
    try:
        jax.config.update("jax_num_cpu_devices", n)
    except RuntimeError as e:
        raise RuntimeError(f"cannot split the CPU into {n} devices: JAX's backends are already started "
                           "(call experiments.sharding.split_cpu before any jax.devices() or array)") from e


def make_mesh(data: int = 1, fsdp: int = 1) -> Mesh:
    """A ``(data, fsdp)`` mesh over the first ``data * fsdp`` devices (all processes)."""
    n = len(jax.devices())
    if data < 1 or fsdp < 1 or data * fsdp > n:
        raise ValueError(f"mesh data={data} x fsdp={fsdp} needs {data * fsdp} devices; {n} available")
    return jax.make_mesh((data, fsdp), AXES, axis_types=(AxisType.Auto, AxisType.Auto),
                         devices=jax.devices()[: data * fsdp])


def param_spec(shape: tuple[int, ...], fsdp: int) -> PartitionSpec:
    """Shard the largest axis that ``fsdp`` divides (ties: the first); replicate if none does."""
    if fsdp > 1:
        for axis in sorted(range(len(shape)), key=lambda a: (-shape[a], a)):
            if shape[axis] % fsdp == 0:
                return PartitionSpec(*(["fsdp" if a == axis else None for a in range(len(shape))]))
    return PartitionSpec()


def state_shardings(mesh: Mesh, tree: Any) -> Any:
    """A NamedSharding per array leaf of ``tree`` (parameters or optimizer state), by ``param_spec``."""
    fsdp = mesh.shape["fsdp"]

    def one(x):
        shape = tuple(getattr(x, "shape", ()))
        return NamedSharding(mesh, param_spec(shape, fsdp))

    return jax.tree_util.tree_map(one, tree)


def batch_sharding(mesh: Mesh, leading: bool = False) -> NamedSharding:
    """The batch axis over both mesh axes: the first axis, or the second after a ``leading`` one
    (several steps' batches stacked for one call)."""
    return NamedSharding(mesh, PartitionSpec(None, AXES) if leading else PartitionSpec(AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def shard_batch(batch: Any, sharding: NamedSharding) -> Any:
    """Place a host batch (global, identical on every process) as global sharded arrays.

    The batch axis is the one the sharding splits (the first, or the second after a step axis). Each
    process hands over only its own contiguous rows, which is what
    ``make_array_from_process_local_data`` expects.
    """
    nproc, pid = jax.process_count(), jax.process_index()
    axis = next(i for i, names in enumerate(sharding.spec) if names is not None)

    def one(x):
        x = np.asarray(x)
        if x.shape[axis] % sharding.mesh.size:
            raise ValueError(f"batch of {x.shape[axis]} rows does not split over {sharding.mesh.size} "
                             "devices")
        rows = x.shape[axis] // nproc
        local = x[(slice(None),) * axis + (slice(pid * rows, (pid + 1) * rows),)]
        return jax.make_array_from_process_local_data(sharding, local, x.shape)

    return jax.tree_util.tree_map(one, batch)
