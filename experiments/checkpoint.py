"""Atomic, checksummed checkpoints of a training state, without pickle.

File layout: one ASCII header line ``GALCKPT1 <payload bytes> <sha256 of payload>\\n`` followed by an
``.npz`` payload (``numpy.savez``, ``allow_pickle=False`` on load) holding every array leaf as
``leaf_00000 ...`` plus ``__meta__``: the JSON of the step, data position, RNG key and anything else the
caller stores. The header makes a truncated or corrupted file fail loudly, naming the file, instead of
loading garbage. Writes go to a temp file in the same folder and ``os.replace`` it (atomic on POSIX),
so a crash mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

MAGIC = b"GALCKPT1"
CKPT_NAME = "checkpoint.ckpt"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be trusted (truncated, corrupted, or of another structure)."""


def _to_host(x: Any) -> np.ndarray:
    if isinstance(x, jax.Array) and not x.is_fully_addressable:  # multi-host: gather every shard
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))


def save(path: str | Path, tree: Any, meta: dict) -> None:
    """Write every array leaf of ``tree`` and the JSON-able ``meta`` to ``path`` atomically."""
    path = Path(path)
    leaves = jax.tree_util.tree_leaves(tree)
    arrays = {f"leaf_{i:05d}": _to_host(leaf) for i, leaf in enumerate(leaves)}
    arrays["__meta__"] = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    payload = buf.getvalue()
    if jax.process_index() != 0:  # every process gathers (a collective), one writes
        return
    header = b"%s %d %s\n" % (MAGIC, len(payload), hashlib.sha256(payload).hexdigest().encode())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(header + payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read(path: str | Path) -> tuple[list[np.ndarray], dict]:
    """The leaves (in order) and meta of a checkpoint; raises CheckpointError naming the file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"checkpoint {path}: cannot read ({e.strerror or e})") from e
    line, sep, payload = raw.partition(b"\n")
    parts = line.split(b" ")
    if not sep or len(parts) != 3 or parts[0] != MAGIC or not parts[1].isdigit():
        raise CheckpointError(f"checkpoint {path}: bad header (not a {MAGIC.decode()} file, or truncated)")
    expected = int(parts[1])
    if len(payload) != expected:
        raise CheckpointError(f"checkpoint {path}: truncated or padded: payload is {len(payload)} bytes, "
                              f"header says {expected}")
    if hashlib.sha256(payload).hexdigest().encode() != parts[2]:
        raise CheckpointError(f"checkpoint {path}: corrupted: payload sha256 does not match the header")
    with np.load(io.BytesIO(payload), allow_pickle=False) as z:
        meta = json.loads(bytes(z["__meta__"]).decode())
        names = sorted(k for k in z.files if k.startswith("leaf_"))
        leaves = [z[k] for k in names]
    return leaves, meta


def restore(path: str | Path, like: Any) -> tuple[Any, dict]:
    """Load into the structure (and shardings, if any) of ``like``; checks count, shapes and dtypes."""
    leaves, meta = read(path)
    ref, treedef = jax.tree_util.tree_flatten(like)
    if len(leaves) != len(ref):
        raise CheckpointError(f"checkpoint {path}: holds {len(leaves)} arrays, the model and optimiser "
                              f"state have {len(ref)}: a different config?")
    out = []
    for i, (got, want) in enumerate(zip(leaves, ref)):
        if got.dtype.kind == "V" and got.dtype.itemsize == np.dtype(want.dtype).itemsize:
            got = got.view(want.dtype)  # .npy stores dtypes numpy lacks (bfloat16) as raw bytes
        if got.shape != tuple(want.shape) or got.dtype != want.dtype:
            raise CheckpointError(f"checkpoint {path}: array {i} is {got.dtype}{list(got.shape)}, expected "
                                  f"{want.dtype}{list(want.shape)}: a different config?")
        sharding = getattr(want, "sharding", None)
        out.append(jax.device_put(got, sharding) if sharding is not None else jax.numpy.asarray(got))
    return jax.tree_util.tree_unflatten(treedef, out), meta


def restore_prefix(path: str | Path, like: Any) -> Any:
    """The first leaves of a checkpoint loaded into ``like`` (e.g. the params of ``(params, opt_state)``)."""
    leaves, _ = read(path)
    ref, treedef = jax.tree_util.tree_flatten(like)
    if len(leaves) < len(ref) or any(a.shape != tuple(b.shape) for a, b in zip(leaves, ref)):
        raise CheckpointError(f"checkpoint {path}: does not start with the {len(ref)} arrays expected")
    return jax.tree_util.tree_unflatten(treedef, [jax.numpy.asarray(x) for x in leaves[: len(ref)]])


def load_params(path: str | Path, abstract: Any) -> Any:
    """A module whose inexact arrays come from the leading leaves of the checkpoint at ``path`` (the
    params of the training loop's ``(params, opt_state)``); ``abstract`` is its
    ``eqx.filter_eval_shape`` skeleton, which gives the structure and every static part."""
    is_param = lambda x: isinstance(x, jax.ShapeDtypeStruct) and jnp.issubdtype(x.dtype, jnp.inexact)
    like, static = eqx.partition(abstract, is_param)
    return eqx.combine(restore_prefix(path, like), static)
