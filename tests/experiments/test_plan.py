"""The pod-run planner: its bytes against the compiled step's, every preset, and its input errors.

The fake device count must be set before JAX starts, so the planner runs in subprocesses here."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

import arch
from experiments import plan
from experiments.plan_memory import parse_bytes

ROOT = Path(__file__).resolve().parents[2]


def _plan_json(*args: str, env: dict | None = None) -> list[dict]:
    out = subprocess.run([sys.executable, "-m", "experiments.plan", *args, "--json"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


def test_planned_bytes_match_the_compiled_step_on_8_fake_devices():
    """Planned from 2- and 3-block programs, compiled at the full 6 blocks on a data 2 x fsdp 4 mesh:
    arguments, outputs and temporaries per device agree within 10%."""
    (p,) = _plan_json("--preset", "small_gemma3", "--devices", "8", "--fsdp", "4", "--batch", "8",
                      "--seq-len", "128", "--device-memory", "1GB", "--check", env=plan._child_env(8))
    assert (p["data"], p["fsdp"], p["tensor"]) == (2, 4, 1)
    compiled, predicted = p["compiled"], p["compiled"]["predicted"]
    for key in ("argument", "output", "temp"):
        assert predicted[key] == pytest.approx(compiled[key], rel=0.10), key
    peak = compiled["argument"] + compiled["output"] - compiled["alias"] + compiled["temp"]
    assert p["total"] == pytest.approx(peak, rel=0.10)
    assert 0 < p["activations_remat"] <= p["activations"]


def test_every_preset_plans_quickly():
    """All presets in one process (through the re-run with fake devices); --quick compiles nothing."""
    plans = _plan_json("--preset", "all", "--devices", "8", "--batch", "8", "--seq-len", "64",
                       "--device-memory", "40GB", "--quick")
    assert [p["preset"] for p in plans] == list(arch.PRESETS)
    for p in plans:
        # float32: every device holds at least its 1/fsdp of the weights, AdamW twice that
        assert p["params"] * 4 / p["fsdp"] <= p["weights"] <= p["params"] * 4
        assert p["optimizer"] >= 2 * p["weights"] and p["gradients"] == p["weights"]
        assert p["data"] * p["fsdp"] == 8 and p["step_flops"] > 0 and p["activations"] is None
    by_name = {p["preset"]: p for p in plans}
    assert by_name["gemma3_27b"]["params"] == arch.count_params(arch.preset("gemma3_27b"))["total"]
    assert by_name["gemma3_27b"]["fsdp"] == 8 and by_name["tiny_gemma3"]["fsdp"] == 1


@pytest.mark.parametrize("argv, message", [
    (["--preset", "gemma5_1t"], "--preset='gemma5_1t': unknown; allowed: all, gemma2_2b"),
    (["--devices", "0"], "--devices=0: must be an int >= 1"),
    (["--device-memory", "lots"], "--device-memory='lots': not a size; allowed: a positive number"),
    (["--devices", "8", "--batch", "12"], "--batch=12: must be a positive multiple of --devices=8"),
    (["--devices", "8", "--fsdp", "3"], "--fsdp=3: must be a positive divisor of --devices=8"),
])
def test_bad_input_names_the_flag_the_value_and_what_is_allowed(argv, message, capsys):
    with pytest.raises(SystemExit):
        plan.parse_args(argv)
    assert message in capsys.readouterr().err


def test_sizes_parse_with_decimal_and_binary_units():
    assert parse_bytes("95GB") == 95e9
    assert parse_bytes("80 GiB") == 80 * 2**30
    assert parse_bytes("1.5e11") == 1.5e11
    with pytest.raises(ValueError, match="--device-memory='-3GB'"):
        parse_bytes("-3GB")
