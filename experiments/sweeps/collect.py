"""``collect(sweep)``: one pandas DataFrame row per run directory, for notebooks and plots.

Columns: ``run``, ``label``, ``status`` (done / trained / failed / partial), ``error``; the run config
(``run.<field>``) and the resolved model config (``model.<field>``) flattened; summary figures
(``final_val_loss``, ``tokens_per_s``, ``mfu``, ...); evaluation metrics (``evals.<name>``); sweep tags
(``tag.<name>``).

A point run with ``--seeds N`` has N rows, one per seed replica, under the same ``label``; the seed is
the config column ``run.seed`` (language models and embedding points alike). :func:`per_label`,
:func:`table` and the summary CSV (:func:`markdown`) reduce them to each label's mean and 95% interval
(:mod:`experiments.sweeps.stats`); with one seed per label they show the runs as they are.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pandas as pd

from experiments.sweeps import stats

DEFAULT_OUT = Path("results")  # where sweeps write results/<sweep>/<run>/


def _scalars(prefix: str, d: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_scalars(f"{prefix}{k}.", v))
        elif isinstance(v, list | tuple):
            out[f"{prefix}{k}"] = json.dumps(v)
        else:
            out[f"{prefix}{k}"] = v
    return out


def read_run(run_dir: Path) -> dict[str, Any] | None:
    config_path = run_dir / "config.json"
    if not config_path.exists():
        return None
    config = json.loads(config_path.read_text())
    row: dict[str, Any] = {"run": run_dir.name, "status": "partial"}
    row.update(_scalars("run.", {k: v for k, v in config.items() if k != "overrides"}))
    row.update({f"run.override.{k}": v for k, v in config.get("overrides", [])})
    summary_path, error_path = run_dir / "summary.json", run_dir / "error.json"
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())
        row["status"] = "done" if "evals" in summary else "trained"
        row.update(_scalars("model.", summary.pop("model_config", {})))
        row.update(_scalars("evals.", summary.pop("evals", {})))
        row.update(_scalars("tag.", summary.pop("tags", {}) or {}))
        row.update(_scalars("", summary))
    if error_path.exists() and row["status"] != "done":
        error = json.loads(error_path.read_text())
        row.update(status="failed", error=error.get("error"), label=error.get("label"))
    return row


def collect(sweep: str, *, out: str | Path = DEFAULT_OUT, scale: str | None = None) -> pd.DataFrame:
    """Every run of ``sweep`` under ``out`` (default ``results/``), one row each, sorted by label;
    ``scale`` keeps only the finished runs of that scale (``quick``, ``default``, ``full``)."""
    sweep_dir = Path(out) / sweep
    rows = [r for d in sorted(sweep_dir.glob("*/")) if (r := read_run(d)) is not None]
    df = pd.DataFrame(rows)
    if scale is not None:
        df = df[df["tag.scale"] == scale] if "tag.scale" in df else df.iloc[0:0]
    if "label" in df:
        df = df.sort_values("label", kind="stable").reset_index(drop=True)
    return df


COLUMNS = ["label", "status", "evals.val_ppl", "evals.passkey_mean", "evals.mqar_mean",
           "evals.task_acc_window", "evals.task_acc_field", "evals.task_acc_beyond",
           "evals.cache_bytes_32k", "evals.weights_bytes", "evals.params_non_embedding", "tokens_per_s"]


def per_label(df: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """``df`` (finished runs, in the order to show) as it is when no label has more than one run;
    otherwise one row per label, in the order labels first appear: the label's other columns from its
    first run (seed 0 in a sweep's order), then ``n`` and each metric's mean, ``.lo`` and ``.hi``
    (:func:`experiments.sweeps.stats.summarize`)."""
    if "label" not in df or not df["label"].duplicated().any():
        return df
    first = df.drop_duplicates("label")[[c for c in df if c not in metrics]]
    return first.merge(stats.summarize(df, metrics), on="label", how="left")


def table(df: pd.DataFrame, columns: list[str] | None = None) -> str:
    """The sweep's main figures as a plain-text table (cache bytes in MiB); a ValueError when ``df``
    has no rows, so an empty sweep never prints as a table. When a label has more than one seed, one
    row per label of its finished runs: ``n`` and each figure as ``mean [lo, hi]`` (:func:`per_label`)."""
    if df.empty:
        raise ValueError("table: no runs to show (the sweep has no finished run at this scale)")
    fmt = "{:,.3f}".format
    cols = [c for c in (columns or COLUMNS) if c in df]
    view = df[cols].copy()
    if "evals.cache_bytes_32k" in view:
        view["evals.cache_bytes_32k"] = view["evals.cache_bytes_32k"] / 2**20
    done = view[df["status"] == "done"].drop(columns="status", errors="ignore") if "status" in df else view
    if "label" in done and done["label"].duplicated().any():
        view = stats.fold(per_label(done, [c for c in done if c != "label"]), fmt)
    view = view.rename(columns={"evals.cache_bytes_32k": "cache@32K MiB"})
    view.columns = [c.removeprefix("evals.") for c in view.columns]
    return view.to_string(index=False, float_format=fmt)


def _mib(nbytes: float) -> str:
    return f"{nbytes / 2**20:.1f} MiB" if nbytes >= 2**20 else f"{nbytes / 2**20:.3f} MiB"


# A sweep's summary CSV (``--update-figures`` writes it beside the README's figures) as the README's
# table: column -> (header, format, format of its interval's bounds). ``n`` is there when a label has
# more than one seed (the CSV then holds ``<column>.lo`` and ``<column>.hi`` too).
MARKDOWN = {"label": ("run", str, str), "tag.pattern": ("pattern", lambda p: f"`{p}`", str),
            "n": ("seeds", "{:.0f}".format, str),
            "evals.val_ppl": ("val perplexity", "{:.2f}".format, "{:.1f}".format),
            "evals.passkey_mean": ("passkey (chance 0.25)", "{:.2f}".format, "{:.2f}".format),
            "evals.mqar_mean": ("MQAR", "{:.3f}".format, "{:.3f}".format),
            "evals.task_acc_window": ("recall in window", "{:.2f}".format, "{:.2f}".format),
            "evals.task_acc_field": ("recall in local reach", "{:.2f}".format, "{:.2f}".format),
            "evals.task_acc_beyond": ("recall beyond", "{:.2f}".format, "{:.2f}".format),
            "evals.cache_bytes_32k": ("cache at 32K (bf16)", _mib, _mib),
            "evals.weights_bytes": ("weights as served", _mib, _mib),
            "tokens_per_s": ("train tokens/s", "{:,.0f}".format, "{:,.0f}".format),
            # the qat sweep's recovery tables (experiments.sweeps.qat.recovery): perplexity added, recall lost
            "float": ("float32", "{:.2f}".format, "{:.1f}".format),
            "ptq_cost": ("PTQ cost", "{:.2f}".format, "{:.2f}".format),
            "qat_cost": ("QAT cost", "{:.2f}".format, "{:.2f}".format),
            "recovered": ("recovered by QAT", "{:.2f}".format, "{:.2f}".format),
            # the vision sweep (experiments.vision.sweep): greedy answers read off the held-out pages
            "evals.exact_match": ("exact match", "{:.2f}".format, "{:.2f}".format),
            "evals.exact_match_narrow": ("exact, square pages", "{:.2f}".format, "{:.2f}".format),
            "evals.exact_match_wide": ("exact, 2:1 pages", "{:.2f}".format, "{:.2f}".format),
            "evals.token_acc": ("digits right", "{:.2f}".format, "{:.2f}".format),
            # the decode speed table (experiments.bench.decode --speed): per model, format and context
            "context": ("context", lambda c: f"{c / 1024:.0f}K", str),
            "ms_per_token": ("ms / token", "{:.1f}".format, str),
            "read_gb": ("GB read / token", "{:.2f}".format, str),
            "gb_per_s": ("GB/s", "{:.1f}".format, str),
            "x_floor": ("x floor", "{:.2f}".format, str),
            "transformers_ms": ("transformers ms", "{:.1f}".format, str),
            "speedup": ("speed-up", "{:.2f}".format, str),
            # the pod-run plans (experiments.plan --update-figures): GB per device
            "plan.devices": ("devices", "{:.0f}".format, str),
            "plan.memory": ("GB each", "{:.0f}".format, str),
            "plan.mesh": ("data x fsdp x tensor", str, str), "plan.tokens": ("batch x seq", str, str),
            "plan.weights": ("weights", "{:.2f}".format, str),
            "plan.optimizer": ("AdamW", "{:.2f}".format, str),
            "plan.gradients": ("grads", "{:.2f}".format, str),
            "plan.activations": ("activations", "{:.1f}".format, str),
            "plan.activations_remat": ("activations, remat", "{:.1f}".format, str),
            "plan.total": ("total", "{:.1f}".format, str),
            "plan.total_remat": ("total, remat", "{:.1f}".format, str),
            "plan.fits": ("fits", str, str), "plan.pflops": ("PFLOPs / step", "{:,.0f}".format, str)}


def markdown(df: pd.DataFrame) -> str:
    """The columns of :data:`MARKDOWN` that ``df`` has, as a Markdown table, rows in ``df``'s order;
    a column with ``.lo``/``.hi`` bounds prints as ``38.33 [37.9, 38.8]`` where the bounds are known
    and apart (:func:`experiments.sweeps.stats.cell`)."""
    if df.empty:
        raise ValueError("markdown: no runs to show")
    cols = [c for c in MARKDOWN if c in df]
    lines = ["| " + " | ".join(MARKDOWN[c][0] for c in cols) + " |", "|" + "---|" * len(cols)]
    nan = float("nan")
    for _, row in df.iterrows():
        cells = ("" if pd.isna(row[c]) else
                 stats.cell(row[c], row.get(f"{c}.lo", nan), row.get(f"{c}.hi", nan), *MARKDOWN[c][1:])
                 for c in cols)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.sweeps.collect",
                                description="Print a sweep's summary CSV (e.g. figures/tradeoff.csv) as "
                                            "the README's Markdown table.")
    p.add_argument("csv", type=Path)
    p.add_argument("--compare", nargs=3, action="append", metavar=("A", "B", "METRIC"), default=[],
                   help="instead of the table, one sentence per use comparing labels A and B on METRIC "
                        "(e.g. evals.task_acc_beyond) with their 95%% intervals and whether they overlap")
    p.add_argument("--against", nargs=2, action="append", metavar=("B", "METRIC"), default=[],
                   help="as --compare, for every other label A of the summary in turn")
    args = p.parse_args(argv)
    df = pd.read_csv(args.csv)
    pairs = [*args.compare, *((a, b, metric) for b, metric in args.against for a in df["label"] if a != b)]
    if not pairs:
        print(markdown(df))
    for a, b, metric in pairs:
        print(f"- {stats.compare(df, a, b, metric, decimals=2)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
