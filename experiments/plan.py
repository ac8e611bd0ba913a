"""Plan a pod run of a published size: per-device memory of the repository's own train step on a
mesh of fake CPU devices, the mesh to use, whether it fits, and the step's model FLOPs.

    python -m experiments.plan --preset gemma3_27b --devices 256 --device-memory 95GB

Nothing is allocated: the step (:func:`experiments.step.make_train_step` with ``RunConfig.optimizer``,
float32 weights and AdamW moments, bf16 matmul inputs, the preset's own vocabulary, the whole
per-device batch in one micro-step) is compiled from ``jax.ShapeDtypeStruct`` s for a
``("data", "fsdp")`` mesh (:mod:`experiments.sharding`) of ``--devices`` fake CPU devices.
How each figure is obtained (exact shard sizes, compiled reduced-depth programs scaled to the full
depth, per-block remat estimated) is :mod:`experiments.plan_memory`.

The mesh: ``--fsdp`` when given; otherwise the smallest power of two dividing ``--devices`` whose
FSDP shards hold weights, optimizer state and gradients in a quarter of ``--device-memory`` (the rest
is for activations), all devices when none does; ``data`` is the rest. FSDP traffic grows with
the group, so the group stays as small as memory allows. The tensor axis is 1: the repository shards
data and FSDP only, and tensor parallelism is not implemented.

The fake devices must exist before JAX starts its backend, which importing ``arch`` does, so the
command re-runs itself in a child process with ``--xla_force_host_platform_device_count`` (and
XLA's backend optimisation off: the buffer sizes are the same, the compiles faster).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import jax

import arch
from experiments import plan_memory as pm
from experiments import sharding as shd
from experiments.flops import flops_per_token
from experiments.runconfig import RunConfig

CHILD_ENV = "GEMMA_LAB_PLAN_CHILD"
FIGURE = Path("figures/plan.csv")
STATE_SHARE = 0.25  # of device memory for weights + optimizer + gradients when choosing the FSDP group


@dataclasses.dataclass(frozen=True)
class Plan:
    """One preset's plan; bytes are per device. ``activations`` are None with ``quick`` (not compiled)."""

    preset: str
    params: int
    devices: int
    data: int
    fsdp: int
    batch: int
    seq_len: int
    device_memory: float
    weights: int
    optimizer: int
    gradients: int
    batch_bytes: int
    activations: int | None
    activations_remat: int | None
    step_flops: float
    method: str
    seconds: float
    compiled: dict | None = None  # --check: the full-depth step's memory_analysis

    tensor: int = 1

    @property
    def state(self) -> int:
        return self.weights + self.optimizer + self.gradients + self.batch_bytes

    @property
    def total(self) -> int | None:
        return None if self.activations is None else self.state + self.activations

    @property
    def total_remat(self) -> int | None:
        return None if self.activations_remat is None else self.state + self.activations_remat

    @property
    def fits(self) -> str:
        if self.total is None:
            return "state fits, activations not compiled" if self.state <= self.device_memory else "no"
        if self.total <= self.device_memory:
            return "yes"
        return "with remat" if self.total_remat <= self.device_memory else "no"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self) | {"total": self.total, "total_remat": self.total_remat,
                                           "fits": self.fits}


def choose_fsdp(run: RunConfig, cfg: arch.ModelConfig, devices: int, memory: float) -> int:
    """The FSDP group size of the module docstring's rule."""
    sizes = [f for f in (2**i for i in range(devices.bit_length())) if devices % f == 0]
    for f in sizes:
        s = pm.state_bytes(run, cfg, devices, f)
        if s.weights + s.optimizer + s.gradients <= STATE_SHARE * memory:
            return f
    return devices


def make_plan(preset: str, *, devices: int, memory: float, batch: int, seq_len: int,
              fsdp: int | None = None, quick: bool = False, check: bool = False) -> Plan:
    """Plan ``preset`` on the first ``devices`` JAX devices (see the module docstring)."""
    start = time.perf_counter()
    run = RunConfig(preset=preset, batch=batch, seq_len=seq_len, microbatch=0)
    cfg = run.base_model_config()  # the preset's own vocabulary, not the corpus tokenizer's
    fsdp = fsdp or choose_fsdp(run, cfg, devices, memory)
    state = pm.state_bytes(run, cfg, devices, fsdp)
    act = remat = compiled = None
    method = "state only (--quick: nothing compiled)"
    if not quick:
        mesh = shd.make_mesh(devices // fsdp, fsdp)
        temp = pm.temp_bytes(run, cfg, mesh)
        act = temp.total - state.gradients
        remat = min(act, pm.remat_activations(temp, cfg, batch // devices, seq_len))
        base, _ = pm.depth_programs(cfg)
        method = (f"compiled {base.num_layers} and {base.num_layers + 1} blocks, scaled per kind to "
                  f"{cfg.num_layers}; remat estimated")
        if check:
            compiled = pm.compiled_sizes(run, cfg, mesh)
            compiled["predicted"] = {"argument": state.argument, "output": state.output, "temp": temp.total}
    flops = flops_per_token(cfg, seq_len) * batch * seq_len
    return Plan(preset=preset, params=state.params, devices=devices, data=devices // fsdp, fsdp=fsdp,
                batch=batch, seq_len=seq_len, device_memory=memory, weights=state.weights,
                optimizer=state.optimizer, gradients=state.gradients, batch_bytes=state.batch,
                activations=act, activations_remat=remat, step_flops=flops, method=method,
                seconds=time.perf_counter() - start, compiled=compiled)


def _gb(n: int | None) -> str:
    return "   n/a" if n is None else f"{n / pm.GB:6.2f}"


def format_plan(p: Plan) -> str:
    lines = [
        f"{p.preset}: {p.devices} devices of {p.device_memory / pm.GB:.1f} GB, batch {p.batch} x "
        f"{p.seq_len} tokens (float32 weights and AdamW moments, bf16 matmuls)",
        f"  parameters     {p.params:,}",
        f"  mesh           data {p.data} x fsdp {p.fsdp} x tensor {p.tensor} (tensor parallelism: "
        "not implemented)",
        "  per device         GB",
        f"  weights        {_gb(p.weights)}",
        f"  optimizer      {_gb(p.optimizer)}   (AdamW mu and nu)",
        f"  gradients      {_gb(p.gradients)}",
        f"  batch          {_gb(p.batch_bytes)}",
        f"  activations    {_gb(p.activations)}   no remat (the step as it is)",
        f"  activations    {_gb(p.activations_remat)}   remat per block (estimate)",
        f"  total          {_gb(p.total)}   no remat",
        f"  total          {_gb(p.total_remat)}   remat per block",
        f"  fits           {p.fits}",
        f"  step FLOPs     {p.step_flops:.3e} model FLOPs ({p.step_flops / p.devices:.3e} per device; "
        "remat recomputes one forward more)",
        f"  method         {p.method}; {p.seconds:.1f} s",
    ]
    if p.compiled:
        pred = p.compiled["predicted"]
        lines.append("  check          full depth compiled: " + ", ".join(
            f"{k} {p.compiled[k] / pm.GB:.3f} GB (planned {pred[k] / pm.GB:.3f}, "
            f"{100 * (pred[k] / p.compiled[k] - 1):+.1f}%)" for k in pred))
    return "\n".join(lines)


CSV_COLUMNS = {"label": lambda p: p.preset, "plan.devices": lambda p: p.devices,
               "plan.mesh": lambda p: f"{p.data} x {p.fsdp} x {p.tensor}",
               "plan.tokens": lambda p: f"{p.batch} x {p.seq_len}",
               "plan.weights": lambda p: p.weights / pm.GB, "plan.optimizer": lambda p: p.optimizer / pm.GB,
               "plan.gradients": lambda p: p.gradients / pm.GB,
               "plan.activations": lambda p: p.activations / pm.GB,
               "plan.activations_remat": lambda p: p.activations_remat / pm.GB,
               "plan.total": lambda p: p.total / pm.GB, "plan.total_remat": lambda p: p.total_remat / pm.GB,
               "plan.memory": lambda p: p.device_memory / pm.GB, "plan.fits": lambda p: p.fits,
               "plan.pflops": lambda p: p.step_flops / 1e15}


def write_figure(plans: list[Plan], path: Path = FIGURE) -> None:
    """The plans as the README's summary CSV (``python -m experiments.sweeps.collect figures/plan.csv``)."""
    if any(p.activations is None for p in plans):
        raise ValueError("--update-figures: the figure needs compiled plans; drop --quick")
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        w.writerows([[fn(p) for fn in CSV_COLUMNS.values()] for p in plans])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m experiments.plan", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", nargs="+", default=["gemma3_27b"],
                   help="names in arch.PRESETS, or 'all' (default: gemma3_27b)")
    p.add_argument("--devices", type=int, default=256, help="devices in the mesh (default 256)")
    p.add_argument("--device-memory", default="95GB",
                   help="memory per device, e.g. 95GB or 80GiB (default 95GB)")
    p.add_argument("--batch", type=int, default=None,
                   help="global batch in sequences, a multiple of --devices (default: one per device)")
    p.add_argument("--seq-len", type=int, default=4096, help="tokens per sequence (default 4096)")
    p.add_argument("--fsdp", type=int, default=None, help="FSDP group size (default: chosen, see above)")
    p.add_argument("--quick", action="store_true", help="no compiles: weights, optimizer, gradients, FLOPs")
    p.add_argument("--check", action="store_true",
                   help="also compile the full-depth step and print the planned-vs-compiled agreement")
    p.add_argument("--json", action="store_true", help="print the plans as JSON")
    p.add_argument("--update-figures", action="store_true", help=f"write {FIGURE} for the README")
    args = p.parse_args(argv)
    names = list(arch.PRESETS) if args.preset == ["all"] else args.preset
    for name in names:
        if name not in arch.PRESETS:
            p.error(f"--preset={name!r}: unknown; allowed: all, {', '.join(arch.PRESETS)}")
    args.preset = names
    if args.devices < 1:
        p.error(f"--devices={args.devices}: must be an int >= 1")
    try:
        args.memory = pm.parse_bytes(args.device_memory)
    except ValueError as e:
        p.error(str(e))
    args.batch = args.devices if args.batch is None else args.batch
    if args.batch < 1 or args.batch % args.devices:
        p.error(f"--batch={args.batch}: must be a positive multiple of --devices={args.devices} "
                "(the batch is split over every device)")
    if args.seq_len < 1:
        p.error(f"--seq-len={args.seq_len}: must be an int >= 1")
    if args.fsdp is not None and (args.fsdp < 1 or args.devices % args.fsdp):
        p.error(f"--fsdp={args.fsdp}: must be a positive divisor of --devices={args.devices}")
    return args


def _child_env(devices: int) -> dict[str, str]:
    flags = f"--xla_force_host_platform_device_count={devices} --xla_backend_optimization_level=0"
    return {**os.environ, CHILD_ENV: "1", "JAX_PLATFORMS": "cpu",
            "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} {flags}".strip()}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if jax.devices()[0].platform != "cpu" or jax.device_count() != args.devices:
        if os.environ.get(CHILD_ENV):
            raise RuntimeError(f"--devices={args.devices}: the child process has {jax.device_count()} "
                               f"{jax.devices()[0].platform} devices")
        return subprocess.run([sys.executable, "-m", "experiments.plan", *argv],
                              env=_child_env(args.devices)).returncode
    plans = []
    for name in args.preset:
        plans.append(make_plan(name, devices=args.devices, memory=args.memory, batch=args.batch,
                               seq_len=args.seq_len, fsdp=args.fsdp, quick=args.quick, check=args.check))
        if not args.json:
            print(format_plan(plans[-1]), flush=True)
    if args.json:
        print(json.dumps([p.to_dict() for p in plans], indent=1))
    if args.update_figures:
        write_figure(plans)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
