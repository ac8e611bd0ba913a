"""The ``recall`` sweep: trained associative recall against decode-state size, the Based Figure 2
analogue for this family (Arora et al. 2024; the task is Zoology's MQAR, section 3).

Every point trains on multi-query associative recall alone (``experiments.data.tasks``, the loss on
the answers) and is scored on held-out rows by how far back each answer sits: inside the local
window, inside what the stack's local layers reach together (``layers * (window - 1)``), and beyond,
where a local-only stack provably cannot see the key. Families: global-only and local:global
1:1 / 3:1 / 5:1 / 7:1; local-only at several windows; Hawk (``R``) and Griffin (``RRL``) at several
recurrence widths; the ``RRG`` hybrid. The figure draws accuracy beyond the window against the decode
state at 32K tokens, one curve per family.

Sizing (measured on the 2-core CPU, held-out accuracy beyond the local reach; "plateau" is the level a
model reaches by spreading its guess over the values present in the row, about 0.2, chance 0.06):
- Keys must be queried with replacement. When every key was asked once, the last answers followed by
  elimination, and models that never learned the association scored 0.25-0.50 beyond.
- The association is learned in a sudden transition whose timing varies from seed to seed, and batch
  size matters more than steps: a 2-layer global model (seq 128, 8 pairs, 24 queries) learned it by
  step 200-300 with 32 rows per step (1.00) and not in 400 with 16 rows (0.20).
- At 8 layers, 5:1 learned it by step 600 with 32 rows of 128 tokens and 24 queries (0.97; 1.00 at 800)
  but not with 8 queries (0.25), 16 rows (0.25), lr 3e-3 (0.17), 4 pairs (0.32) or 4 heads of 16
  (0.25). Global-only learned it in none of these (0.13-0.26 after 600-800 steps), nor with a RoPE base
  of 10k on its global layers (0.19 at 450): the stack without local layers is the slowest to find the
  previous-token step of the copy.
- The default scale halves the row (64 tokens, window 4, 16 queries), which halves a step's cost: 5:1
  learned by step 300 with seed 0 (0.85; 1.00 at 450) and had not by step 450 with seed 1 (0.21).
So at this budget the attention points are a mixture of seeds that found the association and seeds
on the plateau; the seed intervals say how often each pattern gets there.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from arch.config import ratio
from experiments.runconfig import RunConfig
from experiments.sweeps import plots, stats
from experiments.sweeps.runner import Run, register

TASK = (("pairs", 8), ("queries", 16), ("keys", 16), ("values", 16))
_TRUNK = (("num_heads", 2), ("num_kv_heads", 1), ("head_dim", 32))
BASES: dict[str, RunConfig] = {
    # seconds per run: CI and the notebooks
    "quick": RunConfig(
        preset="tiny_gemma3", vocab_size=64, steps=12, batch=8, seq_len=48, warmup=3, lr=1e-2,
        matmul_dtype="float32", microbatch=0, eval_every=12, eval_batches=1, ckpt_every=12, log_every=6,
        task="mqar", task_kwargs=(("pairs", 4), ("keys", 16), ("values", 16)),
        overrides=(*_TRUNK, ("num_layers", 2), ("width", 32), ("mlp_width", 64), ("window", 8),
                   ("head_dim", 16))),
    # minutes per run on a 2-core CPU
    "default": RunConfig(
        preset="tiny_gemma3", vocab_size=64, steps=600, batch=32, seq_len=64, warmup=50, lr=1e-2,
        matmul_dtype="float32", microbatch=0, eval_every=600, eval_batches=2, ckpt_every=200, log_every=50,
        task="mqar", task_kwargs=TASK,
        overrides=(*_TRUNK, ("num_layers", 8), ("width", 64), ("mlp_width", 128), ("window", 4))),
    # one large GPU: the default task at twice the width, 4x the batch and the steps that let a single
    # global layer (5:1) learn the association; sized for the sweep in about 5 minutes, not yet timed
    "device": RunConfig(
        preset="tiny_gemma3", vocab_size=64, steps=2000, batch=128, seq_len=128, warmup=100, lr=3e-3,
        eval_every=2000, eval_batches=2, ckpt_every=1000, log_every=100, microbatch=0, task="mqar",
        task_kwargs=TASK, overrides=(*_TRUNK, ("num_layers", 8), ("width", 128), ("mlp_width", 256),
                                     ("window", 8))),
    # a GPU: longer rows, more pairs, a wider model
    "full": RunConfig(
        preset="small_gemma3", vocab_size=256, steps=3000, batch=128, seq_len=512, warmup=200, lr=3e-3,
        eval_every=3000, eval_batches=4, ckpt_every=1000, log_every=100, task="mqar",
        task_kwargs=(("pairs", 32), ("keys", 64), ("values", 64)),
        overrides=(("num_heads", 4), ("num_kv_heads", 1), ("head_dim", 64), ("num_layers", 8),
                   ("width", 256), ("mlp_width", 768), ("window", 32))),
}

RATIOS = (("global-only", "G"), ("1:1", ratio(L=1, G=1)), ("3:1", ratio(L=3, G=1)),
          ("5:1", ratio(L=5, G=1)), ("7:1", ratio(L=7, G=1)))
FAMILIES = ("attention L:G", "local-only", "Hawk R", "Griffin RRL", "hybrid RRG")


def _point(scale: str, label: str, family: str, config: RunConfig, x: float) -> Run:
    """``x``: the family's own knob (ratio, window, recurrence width), the curve's order."""
    return Run(label=label, config=config, quick=scale == "quick",
               tags=(("scale", scale), ("family", family), ("knob", x)))


def recall(scale: str) -> list[Run]:
    base = BASES[scale]
    over = dict(base.overrides)
    window, width = over["window"], over["width"]
    ratios = RATIOS if scale != "quick" else RATIOS[:1]
    windows = (window // 2, window, 2 * window) if scale != "quick" else (window,)
    widths = (width // 4, width // 2, width) if scale != "quick" else (width,)
    out = [_point(scale, label, "attention L:G", base.with_model(pattern=p), i)
           for i, (label, p) in enumerate(ratios)]
    out += [_point(scale, f"local-only w{w}", "local-only", base.with_model(pattern="L", window=w), w)
            for w in windows]
    heads = over["num_heads"]
    for family, pattern in (("Hawk R", "R"), ("Griffin RRL", "RRL")):
        out += [_point(scale, f"{pattern} lru{r}", family,
                       base.with_model(pattern=pattern, lru_width=r, lru_gate_blocks=heads), r)
                for r in widths]
    if scale != "quick":
        out.append(_point(scale, "hybrid RRG", "hybrid RRG",
                          base.with_model(pattern="RRG", lru_width=width, lru_gate_blocks=heads), width))
    return out


def plot_recall(df: pd.DataFrame, figures: Path, name: str = "recall") -> list[Path]:
    """Accuracy beyond the local stack's reach (and inside the window, dashed) against decode-state
    bytes at 32K, one curve per family, 95% intervals over seeds where there are several (drawn clipped
    to [0, 1])."""
    metrics = ["evals.task_acc_beyond", "evals.task_acc_window", "evals.cache_bytes_32k"]
    df = plots.done_runs(df, "plot_recall", needs=tuple(metrics))
    points = stats.summarize(df, metrics, by=("label", "tag.family", "tag.knob"))
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for i, family in enumerate(f for f in FAMILIES if f in set(points["tag.family"])):
        part = points[points["tag.family"] == family].sort_values("evals.cache_bytes_32k")
        mib = part["evals.cache_bytes_32k"].to_numpy(float) / 2**20
        ax.plot(mib, part["evals.task_acc_beyond"], "o-", color=f"C{i}", label=family)
        ax.plot(mib, part["evals.task_acc_window"], ":", color=f"C{i}", alpha=0.5)
        # an accuracy lies in [0, 1]: a t-interval over a few bimodal seeds (learned / not) may not
        bounds = {f"evals.task_acc_beyond.{b}": part[f"evals.task_acc_beyond.{b}"].clip(0, 1)
                  for b in ("lo", "hi") if f"evals.task_acc_beyond.{b}" in part}
        plots.draw_interval(ax, mib, part.assign(**bounds), "evals.task_acc_beyond", color=f"C{i}")
        below = family == "hybrid RRG"  # it shares its cache size with 3:1: label it underneath
        for x, y, label in zip(mib, part["evals.task_acc_beyond"], part["label"]):
            ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, -11 if below else 3),
                        fontsize=7)
    chance = df["evals.task_chance"].dropna()
    if len(chance):
        ax.axhline(float(np.mean(chance)), color="grey", lw=0.8, ls="--", label="chance")
    ax.set_ylim(-0.03, 1.05)
    plots.label_axes(ax, "decode state at 32K tokens, bf16, batch 1 (MiB, log scale)",
                     "MQAR accuracy beyond the local reach",
                     "Recall vs state size (dotted: inside the window)",
                     xscale="log", legend=8)
    return [plots.save_figure(fig, Path(figures) / f"{name}.png")]


register("recall", "Based Fig. 2 / Zoology: trained MQAR recall vs decode-state bytes",
         plot=plot_recall)(recall)
