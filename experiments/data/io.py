"""Atomic file writes: a reader (another process, a resumed run) sees the old file or the new one,
never a partial one. In a multi-host job only process 0 writes results (:func:`is_primary`); caches
that any process may need on its own host (tokenizers, token streams) are written by whoever builds
them, atomically, with the same bytes."""

import json
import os
from pathlib import Path

import jax


def is_primary() -> bool:
    """True in the process that writes logs, metrics, summaries and figures: process 0 of a
    ``jax.distributed`` job, or the only process (asked without starting JAX's backends)."""
    return not jax.distributed.is_initialized() or jax.process_index() == 0


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temp file in the same folder and rename, so readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, obj: dict) -> None:
    """Atomic JSON (sorted keys; non-JSON values as strings): a reader sees the old file or the new one.
    A result file: written by the primary process only (:func:`is_primary`)."""
    if not is_primary():
        return
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n").encode())
