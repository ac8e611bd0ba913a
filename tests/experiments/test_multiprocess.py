"""Multi-host training on one machine: two ``jax.distributed`` processes on CPU (``python -m
experiments.train --coordinator ... --num-processes 2 --process-id i``) train a tiny run on a data x
fsdp mesh, checkpoint, exit (``--stop-at``), resume and end bit for bit where one process with the
same mesh ends; only process 0 writes anything but checkpoint files."""

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from experiments import checkpoint

REPO = Path(__file__).resolve().parents[2]
STEPS = 4
RUN = ["--preset", "tiny_gemma3", "--override", "num_layers=2", "--override", "pattern=LG", "--task", "mqar",
       "--task-kwarg", "pairs=4", "--vocab-size", "256", "--seq", "32", "--batch", "8", "--steps", str(STEPS),
       "--matmul-dtype", "float32", "--steps-per-call", "1", "--no-progress"]

# Runs the command line under an audit hook that records every path the Python side of the process
# opens for writing, renames or creates, so the test can tell which process wrote which file.
DRIVER = textwrap.dedent("""
    import os, runpy, sys
    log, argv = sys.argv[1], sys.argv[2:]
    written = []
    def hook(event, args):
        if event == "open" and args[0] is not None and (
                (isinstance(args[1], str) and any(c in args[1] for c in "wax+"))
                or (isinstance(args[2], int) and args[2] & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))):
            written.append(args[0])
        elif event in ("os.rename", "os.mkdir"):
            written.append(args[1] if event == "os.rename" else args[0])
    sys.addaudithook(hook)
    sys.argv = ["experiments.train", *argv]
    try:
        runpy.run_module("experiments.train", run_name="__main__")
    finally:
        with open(log, "w") as f:
            f.write("\\n".join(os.fsdecode(p) for p in written if not isinstance(p, int)))
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(out: Path, mesh: list[str], processes: int, logs: Path, extra: list[str]) -> None:
    """Run the CLI as a job of ``processes`` processes and wait for all of them. The one-process
    reference is a job too: its collectives then go through gloo as the two processes' do, which sum
    in the same order (XLA's in-process CPU all-reduce differs in the last bit of a few elements)."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO),
           "GEMMA_ARCH_LAB_CACHE": str(logs.parent / "cache")}
    port = _free_port()
    procs = []
    for i in range(processes):
        job = ["--coordinator", f"127.0.0.1:{port}", "--num-processes", str(processes),
               "--process-id", str(i)]
        cmd = [sys.executable, "-c", DRIVER, str(logs / f"writes.{i}.{len(list(logs.iterdir()))}"),
               *RUN, *mesh, "--out", str(out), *extra, *job]
        procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    for p in procs:
        try:
            _, err = p.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        assert p.returncode == 0, err[-4000:]


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _check(tmp_path: Path, mesh: list[str]) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    ref, multi = tmp_path / "single", tmp_path / "multi"
    _launch(ref, mesh, 1, logs, ["--stop-at", str(STEPS)])
    _launch(multi, mesh, 2, logs, ["--stop-at", "2"])  # checkpoint at step 2, exit: a preemption
    assert checkpoint.read(multi / checkpoint.CKPT_NAME)[1]["step"] == 2
    _launch(multi, mesh, 2, logs, ["--stop-at", str(STEPS)])  # resumes from step 2
    want, meta = checkpoint.read(ref / checkpoint.CKPT_NAME)
    got, got_meta = checkpoint.read(multi / checkpoint.CKPT_NAME)
    assert meta["step"] == got_meta["step"] == STEPS and len(got) == len(want) > 10
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
    assert [r["step"] for r in _metrics(multi)] == [2, STEPS]  # one line per flush, none twice
    ckpt = (multi / checkpoint.CKPT_NAME).resolve()
    for log in logs.glob("writes.1.*"):  # process 1 of both launches
        mine = [Path(p).resolve() for p in log.read_text().splitlines() if p]
        inside = [p for p in mine if p.is_relative_to(multi.resolve())]
        assert all(p.is_relative_to(ckpt) or p.name.startswith(f".{ckpt.name}") for p in inside), inside
    wrote_0 = {Path(p).resolve() for log in logs.glob("writes.0.*") for p in log.read_text().splitlines()}
    assert {multi.resolve() / "config.json", multi.resolve() / "metrics.jsonl"} <= wrote_0


@pytest.mark.slow
def test_two_processes_one_device_each_match_one_process(tmp_path):
    _check(tmp_path, ["--data-parallel", "1", "--fsdp", "2"])


@pytest.mark.slow
def test_two_processes_two_devices_each_match_one_process(tmp_path):
    _check(tmp_path, ["--data-parallel", "2", "--fsdp", "2"])
