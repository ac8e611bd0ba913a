"""Sharded, atomic, checksummed checkpoints of a training state through Orbax, without pickle.

A checkpoint ``path`` is a folder that an Orbax ``CheckpointManager`` keeps: one numbered save,
``path/<n>/`` (``n`` counts the saves), holding
- ``state/``: every array leaf of the tree as ``leaf_00000 ...`` (tree-leaves order), in Orbax's
  tensorstore (OCDBT) files; each process writes, and reads back, only its own shards: nothing is
  gathered to one host;
- ``meta/``: the JSON of the step, data position, RNG key and anything else the caller stores;
- ``checksums/``: the sha256 of every shard written, by leaf and index (each process hashes its own
  shards; process 0 writes them). Orbax does not checksum: a restore hashes each shard it reads and
  a truncated or corrupted file fails loudly, naming the checkpoint, instead of loading garbage.
Orbax writes a save into a temporary folder and renames it once every process is done, then deletes
the save before: a crash mid-save leaves the previous checkpoint intact.

The single-file format of before (``GALCKPT1``: a header line with the payload's sha256, then an
``.npz``) is refused with the command that converts it:
``python -m experiments.checkpoint convert OLD_FILE NEW_FOLDER``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

CKPT_NAME = "checkpoint"  # the folder a run directory keeps its checkpoint in
LEGACY_NAME = "checkpoint.ckpt"  # the GALCKPT1 file a run directory held before
MAGIC = b"GALCKPT1"

logging.getLogger("absl").setLevel(logging.ERROR)  # Orbax logs every save at INFO/WARNING


class CheckpointError(ValueError):
    """A checkpoint that cannot be trusted (truncated, corrupted, of another structure or format)."""


def _convert_hint(path: Path) -> str:
    new = path.with_name(CKPT_NAME) if path.name == LEGACY_NAME else path.with_name(path.name + ".orbax")
    return f"convert it with: python -m experiments.checkpoint convert {path} {new}"


def exists(path: str | Path) -> bool:
    """True if a checkpoint is at ``path``; raises CheckpointError, naming the command that converts
    it, where only a checkpoint of the old single-file format is (``path`` itself, or the run
    directory's ``checkpoint.ckpt`` beside a missing ``checkpoint``)."""
    path = Path(path)
    if path.is_file():
        raise CheckpointError(f"checkpoint {path}: a single file, not a checkpoint folder"
                              + (f" (the old {MAGIC.decode()} format); {_convert_hint(path)}"
                                 if path.read_bytes()[: len(MAGIC)] == MAGIC else ""))
    legacy = path.with_name(LEGACY_NAME)
    if not path.exists() and path.name == CKPT_NAME and legacy.is_file():
        raise CheckpointError(f"checkpoint {legacy}: the old {MAGIC.decode()} format; "
                              f"{_convert_hint(legacy)}")
    return path.is_dir()


def _manager(path: Path) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=1, create=False, enable_async_checkpointing=False)
    return ocp.CheckpointManager(path.absolute(), options=options)


def _region(index: tuple, shape: tuple[int, ...]) -> list[list[int]]:
    return [list(s.indices(n)[:2]) for s, n in zip(index, shape)]


def _digest(x: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(x).view(np.uint8).tobytes()).hexdigest()


def _shard_sums(name: str, x: jax.Array) -> list[list]:
    """``[leaf, region, sha256]`` of each shard of ``x`` this process holds the first copy of."""
    return [[name, _region(s.index, x.shape), _digest(np.asarray(s.data))]
            for s in x.addressable_shards if s.replica_id == 0]


def _gather_json(obj: list) -> list:
    """Every process's ``obj`` (a JSON list), concatenated in process order, on every process."""
    if jax.process_count() == 1:
        return obj
    raw = np.frombuffer(json.dumps(obj).encode(), np.uint8)
    sizes = multihost_utils.process_allgather(np.asarray([raw.size], np.int64))
    padded = np.zeros(int(sizes.max()), np.uint8)
    padded[: raw.size] = raw
    rows = multihost_utils.process_allgather(padded)
    return [e for row, n in zip(rows, sizes.reshape(-1)) for e in json.loads(bytes(row[: int(n)]))]


def _global(x: Any) -> jax.Array:
    """A leaf as a jax.Array every process agrees on: an array that spans the job as it is, any other
    (host values, or one process's own copy in a job without a mesh) replicated over every device."""
    if isinstance(x, jax.Array) and (jax.process_count() == 1 or not x.is_fully_addressable):
        return x
    x = np.asarray(x)
    if jax.process_count() == 1:
        return jnp.asarray(x)
    mesh = jax.make_mesh((jax.device_count(),), ("all",), axis_types=(jax.sharding.AxisType.Auto,))
    return jax.make_array_from_process_local_data(jax.sharding.NamedSharding(mesh, jax.P()), x, x.shape)


def save(path: str | Path, tree: Any, meta: dict) -> None:
    """Write every array leaf of ``tree`` and the JSON-able ``meta`` as a new save in the folder
    ``path`` (a collective in a multi-host job: every process calls it and writes its own shards)."""
    path = Path(path)
    json.dumps(meta)  # meta that is not JSON fails here, before anything is written
    if path.is_file():
        exists(path)  # a single file where the folder goes: raises, naming it
    leaves = {f"leaf_{i:05d}": _global(x) for i, x in enumerate(jax.tree_util.tree_leaves(tree))}
    sums = _gather_json([e for name, x in leaves.items() for e in _shard_sums(name, x)])
    if jax.process_index() == 0:
        path.mkdir(parents=True, exist_ok=True)
    multihost_utils.sync_global_devices(f"checkpoint folder {path}")
    with _manager(path) as mngr:
        step = (mngr.latest_step() or 0) + 1
        mngr.save(step, args=ocp.args.Composite(state=ocp.args.PyTreeSave(leaves),
                                                 meta=ocp.args.JsonSave(meta),
                                                 checksums=ocp.args.JsonSave({"shards": sums})))
        mngr.wait_until_finished()


def _latest(path: Path) -> int:
    if not exists(path):
        raise CheckpointError(f"checkpoint {path}: cannot read (no such folder)")
    with _manager(path) as mngr:
        step = mngr.latest_step()
    if step is None:
        raise CheckpointError(f"checkpoint {path}: holds no completed save (empty, or every save was "
                              "interrupted)")
    return step


def _metadata(path: Path, step: int) -> dict[str, Any]:
    """Shape and dtype of each stored leaf, by name."""
    try:
        md = ocp.PyTreeCheckpointer().metadata(path.absolute() / str(step) / "state")
    except Exception as e:  # a damaged folder: Orbax and tensorstore raise many kinds
        raise CheckpointError(f"checkpoint {path}: truncated or corrupted, its metadata cannot be read "
                              f"({type(e).__name__}: {e})") from e
    tree = getattr(md, "item_metadata", md)
    tree = getattr(tree, "tree", tree)
    if not isinstance(tree, dict) or not all(k.startswith("leaf_") for k in tree):
        raise CheckpointError(f"checkpoint {path}: truncated or corrupted, its metadata lists no arrays")
    return dict(sorted(tree.items()))


def _restore(path: Path, step: int, targets: dict, partial: bool = False) -> tuple[dict, dict, list]:
    """``(arrays, meta, checksums)`` of save ``step``; ``targets``: Orbax restore args by leaf name
    (``partial``: only those leaves are read)."""
    item = None
    if partial:
        item = {n: jax.ShapeDtypeStruct(t.global_shape, t.dtype, sharding=t.sharding)
                for n, t in targets.items()}
    state = ocp.args.PyTreeRestore(item=item, restore_args=targets, partial_restore=partial)
    args = ocp.args.Composite(state=state,
                              meta=ocp.args.JsonRestore(), checksums=ocp.args.JsonRestore())
    try:
        with _manager(path) as mngr:
            got = mngr.restore(step, args=args)
    except Exception as e:  # a damaged folder: Orbax and tensorstore raise many kinds
        raise CheckpointError(f"checkpoint {path}: truncated or corrupted, Orbax cannot read it "
                              f"({type(e).__name__}: {e})") from e
    return dict(got["state"]), dict(got["meta"]), got["checksums"]["shards"]


def _verify(path: Path, arrays: dict, sums: list) -> None:
    """Hash every stored shard this process holds whole (in one of its own shards, or a host array)
    and compare with the checksums written beside it."""
    held = {}
    for name, x in arrays.items():
        if isinstance(x, jax.Array):
            held[name] = [(_region(s.index, x.shape), s.data) for s in x.addressable_shards
                          if s.replica_id == 0]
        else:
            held[name] = [([[0, n] for n in np.shape(x)], x)]
    for name, region, digest in sums:
        for have, data in held.get(name, ()):
            if all(a <= lo and hi <= b for (lo, hi), (a, b) in zip(region, have)):
                cut = tuple(slice(lo - a, hi - a) for (lo, hi), (a, _) in zip(region, have))
                part = np.asarray(data)[cut]
                if _digest(part) != digest:
                    raise CheckpointError(f"checkpoint {path}: corrupted: {name} rows {region} do not match "
                                          "their sha256 (a damaged or truncated file)")
                break


def _check_like(path: Path, stored: dict[str, Any], ref: list) -> None:
    if len(stored) != len(ref):
        raise CheckpointError(f"checkpoint {path}: holds {len(stored)} arrays, the model and optimiser "
                              f"state have {len(ref)}: a different config?")
    for i, (md, want) in enumerate(zip(stored.values(), ref)):
        shape, dtype = tuple(md.shape), np.dtype(md.dtype)
        if shape != tuple(want.shape) or dtype != np.dtype(want.dtype):
            raise CheckpointError(f"checkpoint {path}: array {i} is {dtype}{list(shape)}, expected "
                                  f"{np.dtype(want.dtype)}{list(want.shape)}: a different config?")


def read(path: str | Path) -> tuple[list[np.ndarray], dict]:
    """The leaves (in order, as whole host arrays) and meta of a checkpoint, checksums verified;
    raises CheckpointError naming the checkpoint. For inspection and tests: a restore that keeps the
    shards where they belong is :func:`restore`."""
    path = Path(path)
    step = _latest(path)
    names = list(_metadata(path, step))
    arrays, meta, sums = _restore(path, step, {n: ocp.RestoreArgs(restore_type=np.ndarray) for n in names})
    _verify(path, arrays, sums)
    return [arrays[n] for n in names], meta


def _target(x: Any) -> ocp.ArrayRestoreArgs:
    sharding = getattr(x, "sharding", None)
    if sharding is None:  # a host value or an abstract one: one whole copy on this process's device
        sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return ocp.ArrayRestoreArgs(sharding=sharding, global_shape=tuple(x.shape), dtype=np.dtype(x.dtype))


def restore(path: str | Path, like: Any) -> tuple[Any, dict]:
    """Load into the structure (and shardings, if any) of ``like``; checks count, shapes and dtypes,
    and the checksums of every shard read. Each process reads only the shards its devices hold."""
    path = Path(path)
    step = _latest(path)
    stored = _metadata(path, step)
    ref, treedef = jax.tree_util.tree_flatten(like)
    _check_like(path, stored, ref)
    arrays, meta, sums = _restore(path, step, {n: _target(x) for n, x in zip(stored, ref)})
    _verify(path, arrays, sums)
    return jax.tree_util.tree_unflatten(treedef, [arrays[n] for n in stored]), meta


def restore_prefix(path: str | Path, like: Any) -> Any:
    """The first leaves of a checkpoint loaded into ``like`` (e.g. the params of ``(params, opt_state)``)."""
    path = Path(path)
    step = _latest(path)
    stored = _metadata(path, step)
    ref, treedef = jax.tree_util.tree_flatten(like)
    names = list(stored)[: len(ref)]
    if len(names) < len(ref) or any(tuple(stored[n].shape) != tuple(x.shape) for n, x in zip(names, ref)):
        raise CheckpointError(f"checkpoint {path}: does not start with the {len(ref)} arrays expected")
    arrays, _, sums = _restore(path, step, {n: _target(x) for n, x in zip(names, ref)}, partial=True)
    _verify(path, {n: arrays[n] for n in names}, sums)
    return jax.tree_util.tree_unflatten(treedef, [arrays[n] for n in names])


def load_params(path: str | Path, abstract: Any) -> Any:
    """A module whose inexact arrays come from the leading leaves of the checkpoint at ``path`` (the
    params of the training loop's ``(params, opt_state)``); ``abstract`` is its
    ``eqx.filter_eval_shape`` skeleton, which gives the structure and every static part."""
    is_param = lambda x: isinstance(x, jax.ShapeDtypeStruct) and jnp.issubdtype(x.dtype, jnp.inexact)
    like, static = eqx.partition(abstract, is_param)
    return eqx.combine(restore_prefix(path, like), static)


# ------------------------------------------------------------------------------- the old format
def read_legacy(path: str | Path) -> tuple[list[np.ndarray], dict]:
    """The leaves and meta of a ``GALCKPT1`` file (header checked, sha256 verified)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"checkpoint {path}: cannot read ({e.strerror or e})") from e
    line, sep, payload = raw.partition(b"\n")
    parts = line.split(b" ")
    if not sep or len(parts) != 3 or parts[0] != MAGIC or not parts[1].isdigit():
        raise CheckpointError(f"checkpoint {path}: bad header (not a {MAGIC.decode()} file, or truncated)")
    if len(payload) != int(parts[1]):
        raise CheckpointError(f"checkpoint {path}: truncated or padded: payload is {len(payload)} bytes, "
                              f"header says {int(parts[1])}")
    if hashlib.sha256(payload).hexdigest().encode() != parts[2]:
        raise CheckpointError(f"checkpoint {path}: corrupted: payload sha256 does not match the header")
    with np.load(io.BytesIO(payload), allow_pickle=False) as z:
        meta = json.loads(bytes(z["__meta__"]).decode())
        leaves = [z[k] for k in sorted(k for k in z.files if k.startswith("leaf_"))]
    return leaves, meta


def convert(old: str | Path, new: str | Path, dtypes: list | None = None) -> int:
    """Rewrite the ``GALCKPT1`` file ``old`` as a checkpoint folder ``new``; returns the array count.
    ``.npy`` stores dtypes numpy lacks (bfloat16) as raw bytes: such leaves come back as bfloat16 when
    their byte width is 2 (the only such dtype the repository saves), or as ``dtypes`` says."""
    leaves, meta = read_legacy(old)
    if Path(new).exists():
        raise CheckpointError(f"checkpoint {new}: already exists; convert into a new folder")
    out = []
    for i, x in enumerate(leaves):
        want = np.dtype(dtypes[i]) if dtypes else (jnp.bfloat16 if x.dtype.kind == "V" else x.dtype)
        out.append(x.view(want) if x.dtype.kind == "V" else x)
    save(new, out, meta)
    return len(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.checkpoint", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("convert", help=f"rewrite a single-file {MAGIC.decode()} checkpoint as a folder")
    c.add_argument("old", type=Path, help="the old file (e.g. a run directory's checkpoint.ckpt)")
    c.add_argument("new", type=Path, help=f"the new folder (in a run directory: {CKPT_NAME})")
    a = p.parse_args(argv)
    try:
        n = convert(a.old, a.new)
    except CheckpointError as e:
        p.error(str(e))
    print(f"{a.old} -> {a.new}: {n} arrays")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
