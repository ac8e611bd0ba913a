"""Data and FSDP sharding over a ``jax.sharding`` mesh with axes ``("data", "fsdp")``.

- The batch is split over both axes (every device gets ``B / (data * fsdp)`` sequences).
- Parameters and optimizer state are split over ``fsdp`` along their largest axis that ``fsdp``
  divides, and replicated over ``data`` (ZeRO-3 / FSDP; XLA inserts the all-gathers and
  reduce-scatters). A leaf that nothing divides is replicated.
- Axis types are ``Auto``: ``Explicit`` (the jax 0.10 default of ``jax.make_mesh``) makes a
  ``pallas_call`` under ``jit`` fail on sharded inputs.
- On a CPU, :func:`split_cpu` makes one device per core: a data-parallel mesh over them keeps every
  core busy with its own rows (one device leaves a core idle whenever an op does not split).
- Multi-host: every long-running command takes ``--coordinator``, ``--num-processes`` and
  ``--process-id`` (:func:`add_process_flags`; else the standard ``JAX_COORDINATOR_ADDRESS``,
  ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``) and joins the job in :func:`start_processes`. Each
  process then reads only its own rows of every global batch (:func:`process_rows`,
  :func:`put_local`), the rows its devices hold.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import jax
import jax.extend
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

AXES = ("data", "fsdp")


PROCESS_ENV = {"coordinator": "JAX_COORDINATOR_ADDRESS", "num_processes": "JAX_NUM_PROCESSES",
               "process_id": "JAX_PROCESS_ID"}


def add_process_flags(parser: argparse.ArgumentParser) -> None:
    """``--coordinator HOST:PORT``, ``--num-processes N``, ``--process-id I``: the flags of a multi-host
    job, read by :func:`start_processes` (each defaults to its ``jax.distributed`` environment variable)."""
    g = parser.add_argument_group("multi-host (jax.distributed)")
    g.add_argument("--coordinator", metavar="HOST:PORT",
                   help="address of process 0's coordinator service (default: $JAX_COORDINATOR_ADDRESS)")
    g.add_argument("--num-processes", type=int, dest="num_processes", metavar="N",
                   help="processes in the job (default: $JAX_NUM_PROCESSES)")
    g.add_argument("--process-id", type=int, dest="process_id", metavar="I",
                   help="this process, 0 .. N-1; process 0 writes logs and summaries "
                   "(default: $JAX_PROCESS_ID)")


def process_settings(args: argparse.Namespace | None = None) -> tuple[str, int, int] | None:
    """``(coordinator, num_processes, process_id)`` from the flags of :func:`add_process_flags`, each
    falling back to its environment variable; None for a single-process run (no coordinator)."""
    got = {}
    for name, env in PROCESS_ENV.items():
        value = getattr(args, name, None) if args is not None else None
        got[name] = value if value is not None else os.environ.get(env) or None
    flag = lambda name: f"--{name.replace('_', '-')} (${PROCESS_ENV[name]})"
    if got["coordinator"] is None:
        extra = [flag(n) for n in ("num_processes", "process_id") if got[n] is not None]
        if extra:
            raise ValueError(f"{', '.join(extra)} given without --coordinator HOST:PORT "
                             f"(${PROCESS_ENV['coordinator']})")
        return None
    host, sep, port = str(got["coordinator"]).rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"{flag('coordinator')}={got['coordinator']!r}: expected HOST:PORT, e.g. "
                         "127.0.0.1:12345")
    out = []
    for name in ("num_processes", "process_id"):
        if got[name] is None:
            raise ValueError(f"{flag(name)} is required with --coordinator")
        try:
            out.append(int(got[name]))
        except ValueError:
            raise ValueError(f"{flag(name)}={got[name]!r}: must be an int") from None
    num, pid = out
    if num < 1 or not 0 <= pid < num:
        raise ValueError(f"--num-processes={num}, --process-id={pid}: need num >= 1 and 0 <= id < num")
    return str(got["coordinator"]), num, pid


def start_processes(args: argparse.Namespace | None = None, *, devices: int = 1) -> bool:
    """The one place a command joins a multi-host job; True if it did (several processes).

    ``args``: the parsed flags of :func:`add_process_flags` (None: the environment only). ``devices``:
    the mesh size the command will ask for; on a CPU, each process exposes ``devices / num_processes``
    devices (:func:`split_cpu`), so a job of N processes on one host is a mesh of N x that many.
    Cross-process collectives on CPU go through gloo. Must run before JAX starts its backends."""
    settings = process_settings(args)
    num = 1 if settings is None else settings[1]
    if devices < 1 or (devices > 1 and devices % num):  # 1: no mesh, each process on its own device
        raise ValueError(f"a mesh of {devices} devices does not split over --num-processes={num} "
                         "(use a multiple of the process count)")
    if devices // num > 1:
        split_cpu(devices // num)
    if settings is None or jax.distributed.is_initialized():
        return settings is not None
    coordinator, num, pid = settings
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU collectives across processes
    try:
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num, process_id=pid)
    except RuntimeError as e:
        _drop_idle_backends(e, f"join the job at {coordinator} as process {pid} of {num}")
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num, process_id=pid)
    return True


def _drop_idle_backends(err: RuntimeError, what: str) -> None:
    """Shut JAX's backends down so that they restart with new settings, when no array lives on them
    (something asked for ``jax.devices()`` before the command read its flags; importing the packages
    starts no backend, see ``tests/test_layering.py``)."""
    if jax.live_arrays():
        raise RuntimeError(f"cannot {what}: JAX's backends are already started and hold arrays (call "
                           "experiments.sharding.start_processes before any jax.devices() or array)") from err
    jax.extend.backend.clear_backends()


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
        _drop_idle_backends(e, f"split the CPU into {n} devices")
        jax.config.update("jax_num_cpu_devices", n)


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


def _batch_axis(sharding: NamedSharding) -> int:
    return next(i for i, names in enumerate(sharding.spec) if names is not None)


def process_rows(sharding: NamedSharding, rows: int) -> slice:
    """The rows of a global batch of ``rows`` that this process's devices hold under ``sharding`` (a
    :func:`batch_sharding`): one contiguous slice, the whole batch on a single process."""
    if rows % sharding.mesh.size:
        raise ValueError(f"batch of {rows} rows does not split over {sharding.mesh.size} devices")
    axis = _batch_axis(sharding)
    shape = (1,) * axis + (rows,)
    spans = sorted({idx[axis].indices(rows)[:2] for idx in
                    sharding.addressable_devices_indices_map(shape).values()})
    if any(a[1] != b[0] for a, b in zip(spans, spans[1:])):
        raise ValueError(f"this process's devices hold rows {spans} of the batch: not one contiguous "
                         "slice (order the mesh's devices by process)")
    return slice(spans[0][0], spans[-1][1])


def put_local(batch: Any, sharding: NamedSharding, rows: int) -> Any:
    """Global sharded arrays of ``rows`` rows from this process's own rows (``process_rows``) of each
    leaf of ``batch``: no process holds or reads the others' rows."""
    axis = _batch_axis(sharding)
    local = process_rows(sharding, rows)

    def one(x):
        x = np.asarray(x)
        if x.shape[axis] != local.stop - local.start:
            raise ValueError(f"this process holds rows {local.start}:{local.stop} of {rows}; got "
                             f"{x.shape[axis]} rows")
        shape = x.shape[:axis] + (rows,) + x.shape[axis + 1:]
        return jax.make_array_from_process_local_data(sharding, x, shape)

    return jax.tree_util.tree_map(one, batch)


def shard_batch(batch: Any, sharding: NamedSharding) -> Any:
    """Place a host batch (global, identical on every process) as global sharded arrays: each process
    hands over only its own rows (:func:`put_local`). The batch axis is the one the sharding splits
    (the first, or the second after a step axis)."""
    axis = _batch_axis(sharding)
    rows = np.shape(jax.tree_util.tree_leaves(batch)[0])[axis]
    local = process_rows(sharding, rows)
    cut = lambda x: np.asarray(x)[(slice(None),) * axis + (local,)]
    return put_local(jax.tree_util.tree_map(cut, batch), sharding, rows)
