"""The decode benchmark's speed table: the floor and the peer ratio it reports, and the transformers
timing that runs in its own process (the repository's ``kernels/`` folder must not shadow the
distribution transformers imports)."""

import math

import pytest

from experiments.bench import decode as bench


def test_speed_rows_put_each_step_against_its_floor_and_the_peer():
    timings = {("m", "bfloat16"): dict(wall_s=[0.1, 0.2], weight_bytes=2e9, cache_bytes=[0, 1e9]),
               ("m", "int8"): dict(wall_s=[0.05, 0.1], weight_bytes=1e9, cache_bytes=[0, 1e9])}
    peer = {"models": {"m": {"sdpa": {"wall_s": [0.3, 0.5]}, "eager": {"wall_s": [0.2, 0.6]}}}}
    rows = bench.speed_rows(timings, peer, [1024, 32768], bandwidth=20e9)
    first = rows[0]
    assert first["label"] == "m bfloat16" and first["context"] == 1024
    assert math.isclose(first["gb_per_s"], 20.0) and math.isclose(first["x_floor"], 1.0)
    assert math.isclose(first["transformers_ms"], 200.0) and math.isclose(first["speedup"], 2.0)
    assert math.isclose(rows[1]["read_gb"], 3.0) and math.isclose(rows[1]["x_floor"], 0.2 / 0.15)
    assert "speedup" not in rows[2]  # the peer is timed in bf16 only


def test_transformers_is_timed_in_its_own_process():
    pytest.importorskip("transformers")
    out = bench.peer_times(["tiny_gemma3", "tiny_recurrentgemma"], [16, 40], rounds=1)
    for spec in ("tiny_gemma3", "tiny_recurrentgemma"):
        for impl in bench.PEER_IMPLS:
            wall = out["models"][spec][impl]["wall_s"]
            assert len(wall) == 2 and all(0 < w < 10 for w in wall)
