"""Memory of weights and decode caches: every preset, Gemma 3 Table 3, Gemma 3 Figures 5 and 6.

``python -m experiments.bench.memory`` prints the tables and writes ``figures/kv_vs_context.png`` (Gemma 3
Figure 6: cache memory against context length) and ``figures/kv_overhead.png`` (Figure 5: cache
overhead at 32K as a share of the weights, across local:global ratios and windows).

The figures use a "2B text-only" model as the report's section 5.2 does. Its shapes are not
published; we take Gemma 2 2B's (width 2304, 26 layers, 8 heads, 4 KV heads of 256, MLP 9216) with
the Gemma 3 vocabulary (262,144) and vary only the layer pattern and the window. The RecurrentGemma
-style variant keeps those attention shapes (4 KV heads, not RecurrentGemma's MQA) and uses RRL with a
2048 window and lru_width = width, so that only the pattern differs between curves.
"""

import argparse
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import arch
from arch import memory
from experiments.bench import table3

CONTEXTS = (8_192, 32_768, 131_072)
FIGURES = Path("figures")


def two_b(**overrides) -> arch.ModelConfig:
    """The assumed "2B text-only" model of Gemma 3 section 5.2 (see the module docstring)."""
    return arch.preset("gemma2_2b", vocab_size=262_144, attn_softcap=None, logit_softcap=None,
                       qk_norm=True, **overrides)


FIG6_VARIANTS = {
    "global only": dict(pattern="G"),
    "1:1, sw=4096 (Gemma 2)": dict(pattern="LG", window=4096),
    "5:1, sw=1024 (Gemma 3)": dict(pattern="LLLLLG", window=1024),
    "RRL, sw=2048 (RecurrentGemma-style)": dict(pattern="RRL", window=2048, lru_width=2304,
                                                lru_gate_blocks=8),
}
FIG5_RATIOS = {"global only": "G", "1:1": "LG", "3:1": "LLLG", "5:1": "LLLLLG", "7:1": "LLLLLLLG"}
FIG5_WINDOWS = (512, 1024, 2048, 4096)


def _gb(x: float) -> str:
    return f"{x / 1e9:10.4f}"


def presets_table() -> str:
    head = f"{'preset':<22}{'pattern':<8}{'weights bf16':>13}" + "".join(
        f"{'cache @' + str(c // 1024) + 'K':>13}" for c in CONTEXTS)
    lines = ["Weights and bf16 decode cache per sequence (GB = 1e9 bytes)", head, "-" * len(head)]
    for name, cfg in arch.PRESETS.items():
        row = f"{name:<22}{cfg.pattern:<8}{_gb(memory.weights_bytes(cfg)):>13}"
        if cfg.causal:
            row += "".join(f"{_gb(memory.cache_bytes(cfg, c)):>13}" for c in CONTEXTS)
        else:
            row += "   n/a: bidirectional encoder, no decode cache"
        lines.append(row)
    return "\n".join(lines)


def fig6_data(contexts) -> dict[str, list[float]]:
    """Cache GB per variant and context length."""
    return {label: [memory.cache_bytes(two_b(**kw), c) / 1e9 for c in contexts]
            for label, kw in FIG6_VARIANTS.items()}


def fig5_data(ctx: int = 32_768) -> dict[str, list[float]]:
    """Cache overhead in % of the bf16 weights per ratio (rows) and window (columns)."""
    out = {}
    for label, pattern in FIG5_RATIOS.items():
        cfgs = [two_b(pattern=pattern, window=w) for w in FIG5_WINDOWS]
        out[label] = [100 * memory.cache_bytes(c, ctx) / memory.weights_bytes(c) for c in cfgs]
    return out


def plot_kv_vs_context(path: Path) -> None:
    contexts = [2**k for k in range(10, 18)]  # 1K .. 128K
    data = fig6_data(contexts)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, gb in data.items():
        ax.plot([c / 1024 for c in contexts], gb, marker="o", label=label)
    ax.axhline(memory.weights_bytes(two_b(pattern="LLLLLG")) / 1e9, color="grey", ls="--", lw=1,
               label="model weights (bf16)")
    ax.set_xscale("log", base=2)
    ax.set_xticks([c / 1024 for c in contexts], [f"{c // 1024}K" for c in contexts])
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("decode cache, bf16, batch 1 (GB)")
    ax.set_title("Cache memory vs context, 2B-like model (Gemma 3 report Fig. 6)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_kv_overhead(path: Path, ctx: int = 32_768) -> None:
    data = fig5_data(ctx)
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    x = np.arange(len(data))
    width = 0.2
    for j, w in enumerate(FIG5_WINDOWS):
        vals = [row[j] for row in data.values()]
        bars = ax.bar(x + (j - 1.5) * width, vals, width, label=f"sw={w}")
        ax.bar_label(bars, fmt="%.0f", fontsize=6)
    ax.set_xticks(x, list(data))
    ax.set_xlabel("local:global ratio (global only: the window is unused)")
    ax.set_ylabel(f"cache / weights at {ctx // 1024}K tokens (%)")
    ax.set_title("KV cache overhead, 2B-like model, bf16 (Gemma 3 report Fig. 5)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(title="window")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def figures_text() -> str:
    contexts = (1024, 8192, 32_768, 131_072)
    lines = ["Figure 6 data: cache GB of the 2B-like model", f"{'variant':<38}" + "".join(
        f"{str(c // 1024) + 'K':>9}" for c in contexts)]
    for label, gb in fig6_data(contexts).items():
        lines.append(f"{label:<38}" + "".join(f"{g:>9.3f}" for g in gb))
    lines += ["", "Figure 5 data: cache overhead at 32K, % of bf16 weights (report: global only ~60%,"
              " <15% with sw=1024)", f"{'ratio':<14}" + "".join(f"{'sw=' + str(w):>9}" for w in FIG5_WINDOWS)]
    for label, vals in fig5_data().items():
        lines.append(f"{label:<14}" + "".join(f"{v:>9.1f}" for v in vals))
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=FIGURES, help="folder for the two figures")
    parser.add_argument("--no-figures", action="store_true")
    args = parser.parse_args(argv)
    print(presets_table(), end="\n\n")
    print(table3.format_table3(), end="\n\n")
    print(figures_text())
    if not args.no_figures:
        args.out.mkdir(parents=True, exist_ok=True)
        plot_kv_vs_context(args.out / "kv_vs_context.png")
        plot_kv_overhead(args.out / "kv_overhead.png")
        print(f"\nwrote {args.out / 'kv_vs_context.png'} and {args.out / 'kv_overhead.png'}")


if __name__ == "__main__":
    main()
