"""The device check's CPU rehearsal end to end, so the one command a GPU session runs cannot rot.

``scripts/device_check.sh --cpu`` runs every step at tiny sizes (the gpu-marked kernel tests only
collected: CI runs them interpreted elsewhere); then ``gemma_kernels.bench_report`` fills a copy of
``kernels/BENCHMARKS.md`` from the JSON it wrote.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gemma_kernels import bench_report

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "device_check.sh"


@pytest.fixture(scope="module")
def cpu_check(tmp_path_factory):
    """``(OUT, finished process)`` of one CPU-mode run; no wheels installed, whatever lies in .whl/."""
    out = tmp_path_factory.mktemp("device_check")
    env = dict(os.environ, OUT=str(out), PYTHON=sys.executable, WHEELS=str(out / "no-wheels"))
    proc = subprocess.run(["bash", str(SCRIPT), "--cpu"], env=env, capture_output=True, text=True,
                          timeout=1200, stdin=subprocess.DEVNULL)
    return out, proc


@pytest.mark.slow
def test_cpu_mode_runs_every_step_and_writes_json(cpu_check):
    out, proc = cpu_check
    log = proc.stdout[-4000:] + proc.stderr[-2000:]
    steps = json.loads((out / "steps.json").read_text())
    assert steps["mode"] == "cpu"
    assert [s["name"] for s in steps["steps"]] == ["tests", "bench", "sweeps", "decode"], log
    assert [s["name"] for s in steps["steps"] if s["rc"] != 0] == [], log
    assert proc.returncode == 0, log
    collected = json.loads((out / "kernel_tests.json").read_text())["collected"]
    assert any("test_attention_pallas.py" in t for t in collected)
    assert any("test_scan.py" in t for t in collected)
    bench = json.loads((out / "bench.json").read_text())
    assert bench["meta"]["device"] == "cpu" and bench["meta"]["jaxlib"] and bench["meta"]["date"]
    measured = {(r["shape"], r["impl"]) for r in bench["rows"] if r["ms"]}
    for shape, impl in [("local", "pallas"), ("local", "xla"), ("scan", "pallas"), ("scan", "assoc")]:
        assert (shape, impl) in measured
    decode = json.loads((out / "decode.json").read_text())
    assert decode["contexts"] == [64, 256] and all(len(m["wall_s"]) == 2 for m in decode["models"].values())
    for name in ("env.json", "recall.csv", "tradeoff.csv", "device_check.log"):
        assert (out / name).exists(), name


@pytest.mark.slow
def test_report_fills_the_cpu_block_of_a_copy(cpu_check, tmp_path):
    out, _ = cpu_check
    doc = tmp_path / "BENCHMARKS.md"
    shutil.copy(bench_report.DOC, doc)
    before = doc.read_text()
    bench_report.main([str(out), "--doc", str(doc)])
    text = doc.read_text()
    block = text.split("<!-- results:cpu begin")[1].split("<!-- results:cpu end -->")[0]
    env = json.loads((out / "env.json").read_text())
    assert f"jaxlib {env['jaxlib']}" in block and "measured " in block
    assert "| sweeps | 0 |" in block and "collected" in block and "Decode, batch 1" in block
    assert "\nlocal " in block and " pallas " in block  # the bench table, rendered from the rows
    # the GPU block and everything outside the markers stay as they were
    assert text.split("<!-- results:cpu begin")[0] == before.split("<!-- results:cpu begin")[0]
    bench_report.main([str(out), "--doc", str(doc)])
    assert doc.read_text() == text  # filling again replaces, never appends


def test_report_names_the_missing_markers(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("# no markers here\n")
    with pytest.raises(ValueError, match="results:gpu begin"):
        bench_report.fill(doc, "gpu", "numbers\n")


def test_script_rejects_an_unknown_step():
    proc = subprocess.run(["bash", str(SCRIPT), "--only", "bench,nap"], capture_output=True, text=True)
    assert proc.returncode == 2 and "'nap' is not one of tests, bench, sweeps, decode" in proc.stderr
