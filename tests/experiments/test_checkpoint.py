"""Checkpoints: exact round trip, and loud failures naming the checkpoint for anything untrustworthy
(damaged files, another structure, the old single-file format, which converts)."""

import hashlib
import io
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import checkpoint

# a read that fails midway leaves tensorstore objects for the garbage collector to close, which it
# reports as unraisable exceptions
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture
def state(getkey):
    return {"w": jax.random.normal(getkey(), (64, 32)), "b": jnp.arange(4, dtype=jnp.float32),
            "count": jnp.asarray(7, jnp.int32),
            "nested": (jax.random.normal(getkey(), (2,)).astype(jnp.bfloat16),)}


def _files(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_round_trip_is_exact(tmp_path, state):
    path = tmp_path / "c"
    checkpoint.save(path, state, {"step": 11})
    checkpoint.save(path, state, {"step": 12, "rng": [0, 1]})
    like = jax.tree_util.tree_map(jnp.zeros_like, state)
    restored, meta = checkpoint.restore(path, like)
    assert meta == {"step": 12, "rng": [0, 1]}
    for a, b in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(restored)):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    leaves, _ = checkpoint.read(path)
    assert [x.dtype for x in leaves] == [x.dtype for x in jax.tree_util.tree_leaves(state)]
    assert [p.name for p in tmp_path.iterdir()] == ["c"]
    assert [p.name for p in path.iterdir()] == ["2"]  # the previous save went once this one was in


def _largest_data_file(path: Path) -> Path:
    return max((p for p in path.rglob("*") if p.is_file() and "ocdbt.process_" in str(p)),
               key=lambda p: p.stat().st_size)


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete", "metadata"])
def test_damaged_checkpoint_raises_naming_it(tmp_path, state, damage):
    path = tmp_path / "c"
    checkpoint.save(path, state, {"step": 1})
    target = _largest_data_file(path) if damage != "metadata" else path / "1" / "state" / "_METADATA"
    raw = bytearray(target.read_bytes())
    if damage == "truncate":
        target.write_bytes(bytes(raw[: len(raw) // 2]))
    elif damage == "flip":
        raw[len(raw) // 2] ^= 0xFF
        target.write_bytes(bytes(raw))
    elif damage == "delete":
        target.unlink()
    else:
        target.write_bytes(bytes(raw[:10]))
    with pytest.raises(checkpoint.CheckpointError, match=f"{path}.*corrupted"):
        checkpoint.read(path)
    with pytest.raises(checkpoint.CheckpointError, match=f"{path}.*corrupted"):
        checkpoint.restore(path, state)


def test_checksums_catch_what_orbax_reads_without_error(tmp_path, state, monkeypatch):
    path = tmp_path / "c"
    checkpoint.save(path, state, {"step": 1})
    sums = path / "1" / "checksums" / "metadata"
    doc = json.loads(sums.read_text())
    doc["shards"][0][2] = "0" * 64  # as if the stored bytes had changed under an intact file
    sums.write_text(json.dumps(doc))
    with pytest.raises(checkpoint.CheckpointError, match=f"{path}: corrupted: leaf_00000"):
        checkpoint.restore(path, state)


def test_missing_empty_and_wrong_structure(tmp_path, state):
    with pytest.raises(checkpoint.CheckpointError, match="nope.*cannot read"):
        checkpoint.read(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(checkpoint.CheckpointError, match="empty.*no completed save"):
        checkpoint.read(tmp_path / "empty")
    path = tmp_path / "c"
    checkpoint.save(path, state, {"step": 1})
    with pytest.raises(checkpoint.CheckpointError, match="holds 4 arrays.*have 3"):
        checkpoint.restore(path, {"a": jnp.zeros(1), "b": jnp.zeros(1), "c": jnp.zeros(1)})
    wrong_shape = dict(state, w=jnp.zeros((32, 64)))
    with pytest.raises(checkpoint.CheckpointError, match=r"float32\[64, 32\], expected float32\[32, 64\]"):
        checkpoint.restore(path, wrong_shape)


def test_failed_write_keeps_previous_checkpoint(tmp_path, state):
    path = tmp_path / "c"
    checkpoint.save(path, state, {"step": 1})
    before = _files(path)
    with pytest.raises(TypeError):  # meta that is not JSON: fails before anything is written
        checkpoint.save(path, state, {"step": object()})
    assert _files(path) == before


def _legacy_file(path: Path, leaves: list[np.ndarray], meta: dict) -> None:
    """A GALCKPT1 file as the old save wrote it (bfloat16 stored as raw bytes by .npy)."""
    buf = io.BytesIO()
    arrays = {f"leaf_{i:05d}": x for i, x in enumerate(leaves)}
    np.savez(buf, **arrays, __meta__=np.frombuffer(json.dumps(meta).encode(), np.uint8))
    payload = buf.getvalue()
    header = b"GALCKPT1 %d %s\n" % (len(payload), hashlib.sha256(payload).hexdigest().encode())
    path.write_bytes(header + payload)


def test_old_single_file_checkpoints_convert_or_fail_saying_how(tmp_path, state):
    run = tmp_path / "run"
    run.mkdir()
    old = run / checkpoint.LEGACY_NAME
    leaves = [np.asarray(x) for x in jax.tree_util.tree_leaves(state)]
    _legacy_file(old, leaves, {"step": 5})
    for where in (run / checkpoint.CKPT_NAME, old):
        with pytest.raises(checkpoint.CheckpointError, match=f"{old}.*GALCKPT1.*checkpoint convert"):
            checkpoint.restore(where, state)
    assert checkpoint.main(["convert", str(old), str(run / checkpoint.CKPT_NAME)]) == 0
    restored, meta = checkpoint.restore(run / checkpoint.CKPT_NAME, state)
    assert meta == {"step": 5}
    for a, b in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(restored)):
        assert a.dtype == b.dtype and np.asarray(a).tobytes() == np.asarray(b).tobytes()
