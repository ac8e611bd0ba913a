"""The named sweeps over the design choices of the four reports. Each is a few lines of config.

| sweep | mirrors |
|---|---|
| tradeoff | the memory/quality trade-off across local:global ratios, recurrence and hybrids |
| ratio, window | Gemma 3 Figures 3 and 4 (local:global ratio, sliding-window size) |
| inference_window | Gemma 2 Table 10 (window changed at inference only; globals turned local) |
| gqa | Gemma 2 Table 8 (MHA vs GQA) |
| depth_width | Gemma 2 Table 9 (deep vs wide at equal parameters) |
| softcap_vs_qknorm | Gemma 2 soft-capping vs Gemma 3 QK-norm |
| long_context | Gemma 3 section 5.3 (RoPE base 10k vs 1M, linear rescaling, lengths beyond training) |
"""

from __future__ import annotations

import functools
from pathlib import Path

import pandas as pd

import arch
from arch.config import ratio
from experiments.runconfig import RunConfig
from experiments.sweeps import plots
from experiments.sweeps.recall import tradeoff_recall
from experiments.sweeps.runner import Run, register

# One base model per scale. quick: seconds per run (CI, notebooks; 6 layers and a subset of each sweep);
# default: minutes per run on a 2-core CPU; full: a GPU/TPU at ~100M parameters. default and full use
# 8+ layers so that 7:1 differs from local-only.
BASES: dict[str, RunConfig] = {
    "quick": RunConfig(
        preset="tiny_gemma3", vocab_size=512, steps=6, batch=4, seq_len=64, warmup=2, lr=3e-3,
        eval_every=6, eval_batches=1, ckpt_every=6, log_every=2,
        overrides=(("num_layers", 6), ("width", 32), ("num_heads", 2), ("num_kv_heads", 1),
                   ("head_dim", 16), ("mlp_width", 64), ("window", 16))),
    "default": RunConfig(
        preset="small_gemma3", vocab_size=8192, steps=200, batch=16, seq_len=256, warmup=20, lr=3e-3,
        eval_every=100, eval_batches=4, ckpt_every=50, log_every=10,
        overrides=(("num_layers", 8), ("width", 128), ("num_heads", 2), ("num_kv_heads", 1),
                   ("head_dim", 64), ("mlp_width", 512), ("window", 64))),
    # one large GPU: the default shape twice as wide, 4x the tokens per step, in bf16; sized for the
    # tradeoff sweep in about 3 minutes (compilation included), not yet timed on one
    "device": RunConfig(
        preset="small_gemma3", vocab_size=8192, steps=400, batch=32, seq_len=512, warmup=40, lr=2e-3,
        eval_every=400, eval_batches=8, ckpt_every=400, log_every=50, microbatch=0,
        overrides=(("num_layers", 8), ("width", 256), ("num_heads", 4), ("num_kv_heads", 1),
                   ("head_dim", 64), ("mlp_width", 1024), ("window", 128))),
    "full": RunConfig(
        preset="small_gemma3", vocab_size=32768, steps=20_000, batch=64, seq_len=2048, warmup=1000,
        lr=1e-3, eval_every=1000, eval_batches=16, ckpt_every=1000, log_every=50,
        overrides=(("num_layers", 16), ("width", 768), ("num_heads", 12), ("num_kv_heads", 4),
                   ("head_dim", 64), ("mlp_width", 3072), ("window", 512))),
}


def base(scale: str) -> RunConfig:
    return BASES[scale]


# The main job (`make run`: the tradeoff sweep at default scale, three seeds per point, under half an
# hour on a 2-core CPU with the install) trains the recall sweep's 8-layer, d = 64 trunk on the corpus,
# so both of its panels show one shape: 328K tokens per run (f32: faster than bf16 at this width on the
# 2-core host, 8.9K against 7.5K tokens/s). The other default sweeps keep the d = 128 base.
MAIN_JOB = RunConfig(
    preset="small_gemma3", vocab_size=8192, steps=160, batch=8, seq_len=256, warmup=16, lr=3e-3,
    matmul_dtype="float32", eval_every=80, eval_batches=8, ckpt_every=40, log_every=10,
    overrides=(("num_layers", 8), ("width", 64), ("num_heads", 2), ("num_kv_heads", 1), ("head_dim", 32),
               ("mlp_width", 128), ("window", 64)))


def window_of(scale: str) -> int:
    return dict(base(scale).overrides)["window"]


def run(scale: str, label: str, config: RunConfig, *, tags=(), **kw) -> Run:
    """A sweep point; its scale is a tag so ``collect(sweep, scale=...)`` can keep scales apart."""
    return Run(label=label, config=config, quick=scale == "quick", tags=(("scale", scale), *tags), **kw)


@functools.cache
def matched_lru_width(config: RunConfig, pattern: str, target: int) -> int:
    """The RG-LRU width (a multiple of the gate blocks) that brings a pattern with R layers closest to
    ``target`` non-embedding parameters, so recurrent and attention models are compared at equal size."""
    cfg = config.base_model_config()
    blocks = cfg.num_heads

    def size(r: int) -> int:
        c = cfg.replace(pattern=pattern, lru_width=r, lru_gate_blocks=blocks)
        return arch.count_params(c)["non_embedding"]

    lo, hi = 1, 4 * cfg.width // blocks  # in units of `blocks`
    while lo < hi:  # parameters grow with r: bisect for the first width at or above the target
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if size(mid * blocks) < target else (lo, mid)
    best = min((lo - 1, lo), key=lambda m: abs(size(max(m, 1) * blocks) - target))
    return max(best, 1) * blocks


TRADEOFF = [  # (label, pattern)
    ("global-only", "G"),
    ("1:1", ratio(L=1, G=1)),
    ("3:1", ratio(L=3, G=1)),
    ("5:1", ratio(L=5, G=1)),
    ("7:1", ratio(L=7, G=1)),
    ("local-only", "L"),
    ("Griffin RRL", "RRL"),
    ("hybrid RRG", "RRG"),
    ("Hawk R", "R"),
]


def with_pattern(config: RunConfig, pattern: str) -> RunConfig:
    """The base with a new pattern; R-containing patterns get a parameter-matched LRU width."""
    if "R" not in pattern:
        return config.with_model(pattern=pattern)
    target = arch.count_params(config.with_model(pattern="G").base_model_config())["non_embedding"]
    width = matched_lru_width(config, pattern, target)
    cfg = config.base_model_config()
    return config.with_model(pattern=pattern, lru_width=width, lru_gate_blocks=cfg.num_heads)


RECALL_COLUMNS = ("evals.task_acc_window", "evals.task_acc_beyond")


def with_recall(rows: pd.DataFrame, figures: Path) -> pd.DataFrame:
    """The tradeoff summary with each pattern's recall (in the window, beyond the local reach; mean and
    interval) from the recall sweep's summary in the same folder (:func:`tradeoff_recall`): the same
    layer pattern, trained on MQAR at the recall sweep's shape. Unchanged when there is none."""
    recall = tradeoff_recall(figures)
    if recall is None or "tag.pattern" not in rows:
        return rows
    cols = [c for m in RECALL_COLUMNS for c in (m, f"{m}.lo", f"{m}.hi") if c in recall]
    return rows.merge(recall[["tag.pattern", *cols]], on="tag.pattern", how="left")


def plot_tradeoff(df: pd.DataFrame, figures: Path, name: str = "tradeoff") -> list[Path]:
    """:func:`plots.plot_tradeoff` with the recall panel read from the recall summary beside it."""
    return plots.plot_tradeoff(df, figures, name, recall=tradeoff_recall(figures))


@register("tradeoff", "memory/quality trade-off (Gemma 3 Fig. 5-6, RecurrentGemma)", plot=plot_tradeoff,
          extend=with_recall)
def tradeoff(scale: str) -> list[Run]:
    items = TRADEOFF if scale != "quick" else [TRADEOFF[i] for i in (0, 3, 6)]
    b = MAIN_JOB if scale == "default" else base(scale)
    return [run(scale, label, with_pattern(b, p), tags=(("pattern", p),)) for label, p in items]


def _ratio_window(scale: str, ratios, windows) -> list[Run]:
    out = []
    for local in ratios:
        for w in windows:
            p = ratio(L=local, G=1)
            out.append(run(scale, f"{local}:1 w{w}", base(scale).with_model(pattern=p, window=w),
                           tags=(("ratio", local), ("window", w))))
    return out


@register("ratio", "Gemma 3 Fig. 3 (local:global ratio)", plot=plots.plot_ratio_window)
def ratio_sweep(scale: str) -> list[Run]:
    return _ratio_window(scale, (1, 3) if scale == "quick" else (1, 3, 5, 7), (window_of(scale),))


@register("window", "Gemma 3 Fig. 4 (sliding-window size) x ratio", plot=plots.plot_ratio_window)
def window_sweep(scale: str) -> list[Run]:
    w = window_of(scale)
    windows = (w // 2, w) if scale == "quick" else (w // 4, w // 2, w, 2 * w)
    return _ratio_window(scale, (1, 3) if scale == "quick" else (1, 3, 5), windows)


@register("inference_window", "Gemma 2 Table 10 (window at inference only)", plot=plots.plot_bar)
def inference_window(scale: str) -> list[Run]:
    w = window_of(scale)
    trained = base(scale).with_model(pattern=ratio(L=1, G=1), window=w)
    runs = [run(scale, f"trained w{w}", trained, tags=(("eval_window", w), ("globals", "kept")))]
    for ew in (w // 2, w // 4):
        runs.append(run(scale, f"eval w{ew}", trained, eval_overrides=(("window", ew),),
                        tags=(("eval_window", ew), ("globals", "kept"))))
    runs.append(run(scale, f"globals->local w{w}", trained, eval_overrides=(("pattern", "L"),),
                    tags=(("eval_window", w), ("globals", "turned local"))))
    return runs


@register("gqa", "Gemma 2 Table 8 (MHA vs GQA vs MQA)", plot=plots.plot_bar)
def gqa(scale: str) -> list[Run]:
    heads = 4
    b = base(scale).with_model(num_heads=heads, head_dim=dict(base(scale).overrides)["head_dim"] // 2)
    items = (("MHA", heads), ("GQA", heads // 2), ("MQA", 1))
    return [run(scale, f"{name} ({kv} kv)", b.with_model(num_kv_heads=kv), tags=(("kv_heads", kv),))
            for name, kv in (items if scale != "quick" else items[::2])]


@register("depth_width", "Gemma 2 Table 9 (deep vs wide, equal parameters)", plot=plots.plot_bar)
def depth_width(scale: str) -> list[Run]:
    o = dict(base(scale).overrides)
    deep = base(scale).with_model(num_layers=o["num_layers"])
    # half the depth: widen d and the MLP by ~sqrt(2) (rounded to the head layout) for equal size
    wide_width = int(round(o["width"] * 2**0.5 / 16)) * 16
    wide = base(scale).with_model(num_layers=o["num_layers"] // 2, width=wide_width,
                                  mlp_width=4 * wide_width)
    return [run(scale, "deep", deep, tags=(("shape", "deep"),)),
            run(scale, "wide", wide, tags=(("shape", "wide"),))]


@register("softcap_vs_qknorm", "Gemma 2 soft-caps vs Gemma 3 QK-norm", plot=plots.plot_bar)
def softcap_vs_qknorm(scale: str) -> list[Run]:
    b = base(scale)
    variants = [
        ("soft-caps (Gemma 2)", dict(qk_norm=False, attn_softcap=50.0, logit_softcap=30.0)),
        ("QK-norm (Gemma 3)", dict(qk_norm=True, attn_softcap=None, logit_softcap=None)),
        ("neither", dict(qk_norm=False, attn_softcap=None, logit_softcap=None)),
        ("both", dict(qk_norm=True, attn_softcap=50.0, logit_softcap=30.0)),
    ]
    items = variants if scale != "quick" else variants[:2]
    return [run(scale, label, b.with_model(**o), tags=(("variant", label),)) for label, o in items]


@register("long_context", "Gemma 3 section 5.3 (RoPE base, rescaling, length generalisation)",
          plot=plots.plot_long_context)
def long_context(scale: str) -> list[Run]:
    b = base(scale)
    t = b.seq_len
    factors = (2, 4) if scale == "quick" else (2, 4, 8)
    runs = []
    archs = (("5:1", ratio(L=5, G=1)), ("global-only", "G"))
    for arch_label, pattern in archs if scale != "quick" else archs[:1]:
        for rope in (10_000.0, 1_000_000.0):
            trained = b.with_model(pattern=pattern, rope_base_global=rope)
            tags = (("arch", arch_label), ("rope_base_global", rope))
            runs.append(run(scale, f"{arch_label} base {rope:g} @T", trained,
                            tags=(*tags, ("eval_len", t), ("rescale", 1))))
            for f in factors:
                for rescale in (1, f):
                    ov = (("rope_scale_global", float(rescale)),) if rescale != 1 else ()
                    runs.append(run(scale, f"{arch_label} base {rope:g} @{f}T x{rescale}", trained,
                                    eval_overrides=ov, eval_seq_len=f * t,
                                    tags=(*tags, ("eval_len", f * t), ("rescale", rescale))))
    return runs
