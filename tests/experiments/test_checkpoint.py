"""Checkpoint files: exact round trip, and loud failures naming the file for anything untrustworthy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import checkpoint


@pytest.fixture
def state(getkey):
    return {"w": jax.random.normal(getkey(), (5, 3)), "b": jnp.arange(4, dtype=jnp.float32),
            "count": jnp.asarray(7, jnp.int32), "nested": (jax.random.normal(getkey(), (2,)),)}


def test_round_trip_is_exact(tmp_path, state):
    path = tmp_path / "c.ckpt"
    checkpoint.save(path, state, {"step": 12, "rng": [0, 1]})
    like = jax.tree_util.tree_map(jnp.zeros_like, state)
    restored, meta = checkpoint.restore(path, like)
    assert meta == {"step": 12, "rng": [0, 1]}
    for a, b in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(restored)):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert [p.name for p in tmp_path.iterdir()] == ["c.ckpt"]  # no temp file left behind


@pytest.mark.parametrize("damage", ["truncate", "flip", "header", "empty"])
def test_damaged_file_raises_naming_it(tmp_path, state, damage):
    path = tmp_path / "c.ckpt"
    checkpoint.save(path, state, {"step": 1})
    raw = bytearray(path.read_bytes())
    if damage == "truncate":
        raw = raw[: len(raw) - 10]
    elif damage == "flip":
        raw[-100] ^= 0xFF
    elif damage == "header":
        raw = b"PICKLE" + raw[8:]
    else:
        raw = b""
    path.write_bytes(bytes(raw))
    expected = {"truncate": "truncated", "flip": "corrupted", "header": "bad header", "empty": "bad header"}
    with pytest.raises(checkpoint.CheckpointError, match=f"{path}.*{expected[damage]}"):
        checkpoint.read(path)


def test_missing_file_and_wrong_structure(tmp_path, state):
    with pytest.raises(checkpoint.CheckpointError, match="nope.ckpt.*cannot read"):
        checkpoint.read(tmp_path / "nope.ckpt")
    path = tmp_path / "c.ckpt"
    checkpoint.save(path, state, {"step": 1})
    with pytest.raises(checkpoint.CheckpointError, match="holds 4 arrays.*have 3"):
        checkpoint.restore(path, {"a": jnp.zeros(1), "b": jnp.zeros(1), "c": jnp.zeros(1)})
    wrong_shape = dict(state, w=jnp.zeros((3, 5)))
    with pytest.raises(checkpoint.CheckpointError, match=r"float32\[5, 3\], expected float32\[3, 5\]"):
        checkpoint.restore(path, wrong_shape)


def test_failed_write_keeps_previous_checkpoint(tmp_path, state):
    path = tmp_path / "c.ckpt"
    checkpoint.save(path, state, {"step": 1})
    before = path.read_bytes()
    with pytest.raises(TypeError):  # meta that is not JSON: fails before anything is written
        checkpoint.save(path, state, {"step": object()})
    assert path.read_bytes() == before
