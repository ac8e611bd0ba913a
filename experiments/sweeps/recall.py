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
- At 8 layers and lr 1e-2, 5:1 learned it by step 600 with 32 rows of 128 tokens and 24 queries (0.97;
  1.00 at 800) but not with 8 queries (0.25), 16 rows (0.25; 0.17 at lr 3e-3), 4 pairs (0.32) or 4
  heads of 16 (0.25). Global-only learned it in none of these (0.13-0.26 after 600-800 steps), nor with
  a RoPE base of 10k on its global layers (0.19 at 450).
- The default scale halves the row (64 tokens, window 4, 16 queries), which halves a step's cost: at
  lr 1e-2, 5:1 learned by step 300 with seed 0 (0.85; 1.00 at 450) and had not by step 450 with seed 1
  (0.21), and global-only stayed on the plateau in all three seeds (0.20 at 600).
- The learning rate was the obstacle at 8 layers: at lr 3e-3 (batch 32, 600 steps) global-only learned
  the association in every seed tried (training loss on the answers from 1.9 to 0.0 between steps 250
  and 450; 1.00 beyond), and so did 5:1 (two seeds, by step 350) and 7:1 (by step 450); lr 2e-3 learned
  too, later (step 450-550). Weight decay 0, no QK-norm or no post-norms at lr 1e-2 did not (0.16-0.20
  for global-only). The same schedule cut to 400 steps decays the rate before the transition: global-only
  0.28, 7:1 0.87. 16 rows per step at lr 3e-3: 0.19 after 600.
- Local-only (window 4) did not learn the association inside its window, where only a sixth of the
  answers lie: 0.38 in the window after 600 steps, 0.41 after 1,200 (window 8: 0.32). A question that
  asks the previous question's key again (``repeat``) brings answers into the window: at repeat 0.25
  local-only reached 0.95 there but global-only settled for that local copy (0.08 beyond; 0.5: 0.99
  and 0.08); at repeat 0.1 (a fifth of the answers in the window) local-only reached 1.00 there and
  global-only 1.00 beyond. The sweep uses 0.1.
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

TASK = (("pairs", 8), ("queries", 16), ("keys", 16), ("values", 16), ("repeat", 0.1))
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
        preset="tiny_gemma3", vocab_size=64, steps=600, batch=32, seq_len=64, warmup=50, lr=3e-3,
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
    """``x``: the family's own knob (ratio, window, recurrence width), the curve's order. ``base``: the
    point keeps the scale's window and recurrence width, the one the ``tradeoff`` figure shows for its
    pattern (:func:`tradeoff_recall`)."""
    over, base = dict(config.overrides), dict(BASES[scale].overrides)
    at_base = over["window"] == base["window"] and over.get("lru_width", base["width"]) == base["width"]
    return Run(label=label, config=config, quick=scale == "quick",
               tags=(("scale", scale), ("family", family), ("knob", x), ("pattern", over["pattern"]),
                     ("base", at_base)))


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
        plots.draw_interval(ax, mib, part, "evals.task_acc_beyond", color=f"C{i}", bounds=(0, 1))
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


def tradeoff_recall(figures: Path) -> pd.DataFrame | None:
    """The recall sweep's summary beside the figures (``figures/recall.csv``, written with them), one
    row per layer pattern at the scale's window and width (tag ``base``): what the ``tradeoff``
    figure and table show for their patterns. None when there is no such summary."""
    path = Path(figures) / "recall.csv"
    if not path.exists():
        return None
    df = pd.read_csv(path)
    if "tag.base" not in df:
        return None
    return df[df["tag.base"].astype(bool)].drop_duplicates("tag.pattern")


register("recall", "Based Fig. 2 / Zoology: trained MQAR recall vs decode-state bytes",
         plot=plot_recall)(recall)
