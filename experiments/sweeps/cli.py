"""``python -m experiments.sweeps NAME [--scale ...] [--seeds N] [--workers N | --shard i/n]``: the
command line of :mod:`experiments.sweeps.runner`. In a multi-host job (``--coordinator ...``) every
process runs every point of the sweep together; process 0 writes the tables, figures and report."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import jax

from experiments import sharding as shd
from experiments.data.io import atomic_write_bytes, is_primary
from experiments.sweeps import runner
from experiments.sweeps.collect import COLUMNS, DEFAULT_OUT, per_label
from experiments.sweeps.runner import (
    SCALES,
    SWEEPS,
    check_seeds,
    check_workers,
    expand,
    get_sweep,
    load_sweeps,
    results,
    run_sweep,
)


def write_summary(name: str, scale: str, out: Path, folder: Path, seeds: int = 1) -> Path | None:
    """``folder/<name>.csv``: the main figures (:data:`~experiments.sweeps.collect.COLUMNS`) of the
    finished runs of :func:`results`, in the sweep's order (the README prints its table from it:
    ``python -m experiments.sweeps.collect figures/<name>.csv``). When a label has more than one seed,
    one row per label (``run``: its first seed's directory) with ``n`` and each figure's mean,
    ``.lo`` and ``.hi`` (:func:`experiments.sweeps.collect.per_label`), then the columns the sweep's
    ``extend`` takes from other summaries in ``folder``. None, and nothing written, when the runs have
    none of those figures (the embedding sweep: its tables are its report)."""
    runs = expand(name, scale, seeds)
    # by label (an evaluation variant's summary names its trained run, not its own key), then seed 0
    # first: per_label keeps the first row's run directory
    order = {}
    for i, r in enumerate(runs):
        order.setdefault(r.label, i)
    seed_order = {r.key: i for i, r in enumerate(runs)}
    df = results(name, scale, out, seeds)
    metrics = [c for c in COLUMNS[2:] if c in df]
    if not metrics:
        return None
    df = df[df["status"] == "done"].assign(order=lambda d: d["label"].map(order),
                                           within=lambda d: d["run"].map(seed_order))
    df = df.sort_values(["order", "within"], kind="stable")
    cols = [c for c in ("run", "label", "tag.pattern", "tag.base", *metrics) if c in df]
    rows = per_label(df[cols], metrics)
    if (extend := get_sweep(name).extend) is not None:
        rows = extend(rows, Path(folder))
    path = Path(folder) / f"{name}.csv"
    atomic_write_bytes(path, rows.to_csv(index=False).encode())
    return path


def parse_shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard {text!r}: expected i/n, e.g. 0/4") from None
    if not (n >= 1 and 0 <= i < n):
        raise argparse.ArgumentTypeError(f"--shard {text!r}: need 0 <= i < n")
    return i, n


def parse_seeds(text: str) -> int:
    try:
        return check_seeds(int(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds {text!r}: must be an int >= 1 (1: every point once)"
                                         ) from None


def parse_workers(text: str) -> int:
    try:
        return check_workers(int(text))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"--workers {text!r}: {err}") from None


def main(argv: list[str] | None = None) -> int:
    load_sweeps()

    p = argparse.ArgumentParser(description="Run a named sweep.", epilog="sweeps: " + ", ".join(
        f"{n} ({s.mirrors})" for n, s in sorted(SWEEPS.items())))
    p.add_argument("name", choices=sorted(SWEEPS))
    p.add_argument("--scale", choices=SCALES, default="default")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    split = p.add_mutually_exclusive_group()
    split.add_argument("--shard", type=parse_shard, default=(0, 1), metavar="i/n",
                       help="run only shard i of n (dependent runs stay together)")
    # default None, not 1: argparse takes a value identical to the default for "not given", so an explicit
    # --workers 1 beside --shard would slip through the exclusion
    split.add_argument("--workers", type=parse_workers, default=None, metavar="N",
                       help="run the N shards side by side, one process per core (2 on a 2-core CPU)")
    p.add_argument("--seeds", type=parse_seeds, default=1, metavar="N",
                   help="run every point as N seed replicas; tables and plots show 95%% intervals")
    p.add_argument("--core", type=int, default=None, help=argparse.SUPPRESS)  # a worker's core
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--no-plot", action="store_true")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--figures", type=Path, default=None,
                       help="where plots go (default: OUT/figures/SCALE)")
    where.add_argument("--update-figures", action="store_true",
                       help=f"draw into the README's figures ({runner.README_FIGURES})")
    shd.add_process_flags(p)
    args = p.parse_args(argv)
    try:
        settings = shd.process_settings(args)
    except ValueError as e:
        p.error(str(e))
    if settings is not None and (args.workers or args.shard != (0, 1)):
        p.error("--workers / --shard split a sweep into independent processes; a multi-host job "
                "(--coordinator) runs every point on all its processes together: give one or the other")
    shd.start_processes(args)
    if args.core is not None:  # before JAX starts its CPU backend: its thread pools follow this affinity
        os.sched_setaffinity(0, {args.core})
    if not jax.config.jax_compilation_cache_dir:  # JAX_COMPILATION_CACHE_DIR, when set, wins
        # seed replicas and repeated shapes compile the same programs: read back, not compiled again
        jax.config.update("jax_compilation_cache_dir", str(args.out.resolve() / ".jax-cache"))
    figures = runner.README_FIGURES if args.update_figures else args.figures
    result = run_sweep(args.name, scale=args.scale, out=args.out, shard_spec=args.shard, dry_run=args.dry_run,
                       plot=not args.no_plot and is_primary(), figures=figures, workers=args.workers or 1,
                       seeds=args.seeds)
    if result["failed"]:
        print(f"{len(result['failed'])} run(s) failed; see error.json in {args.out / args.name}/<run>/",
              file=sys.stderr)
        return 1
    # a worker leaves the report to the process that started it; a multi-host job to its process 0
    if not args.dry_run and args.core is None and is_primary():
        print(get_sweep(args.name).report(results(args.name, args.scale, args.out, args.seeds)))
        # beside the figures, where another sweep's figure or table may read it (tradeoff <- recall)
        folder = figures or runner.figures_dir(args.out, args.scale)
        if (path := write_summary(args.name, args.scale, args.out, folder, args.seeds)) is not None:
            print(f"summary: {path}")
    return 0
