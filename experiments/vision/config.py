"""The document-reading run's configuration (``ReadConfig``) and its base recipe at each scale
(``BASES``), shared by :mod:`experiments.vision.train` (one run) and :mod:`experiments.vision.sweep`.

The sweep's axes (Gemma 3 report Tables 7-8) are fields: ``image_size`` (the encoder's input
resolution), ``soft_tokens`` (what the pooled patch grid leaves per image) and, at evaluation only,
pan & scan (not a field: the same trained model is read with and without it).

Sizing (``default``): the forms layout (several labelled fields and tables per page) was not learned
by any recipe tried within 300-1,500 CPU steps (the answer loss stayed at the answer-length prior), while
one number at a fixed place is: at 48 px and 16 soft tokens, exact match 0.32 after 500 steps and still
rising. The default scale reads such numbers for 800 steps (0.1-0.3 s a step on one core)."""

from __future__ import annotations

import dataclasses
import math

import arch
from arch.vision import VisionConfig
from experiments.data.images import PanScan
from experiments.optim import TrainSettings
from experiments.vision.data import VOCAB
from experiments.vision.documents import LAYOUTS


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReadConfig(TrainSettings):
    """One run: a small multimodal model trained to answer questions about synthetic documents.
    Frozen and JSON round-trippable; its hash names the run directory. ``seed``: the model's
    initialisation and the training documents; the held-out documents follow ``data_seed`` only."""

    # documents (experiments.vision.documents)
    layout: str = "forms"  # "forms" (labelled fields and tables) or "number" (one number, top left)
    height: int = 96  # page height in pixels; the width is height * aspect
    aspects: tuple[float, ...] = (1.0, 1.5, 2.0, 3.0, 4.0)
    wide_from: float = 2.0  # pages at least this wide make the "wide" evaluation subset
    font_sizes: tuple[int, ...] = (7, 8, 10, 12)
    max_digits: int = 4
    eval_docs: int = 256
    eval_batch: int = 64
    data_seed: int = 0
    # vision encoder (arch.VisionConfig); patches and pooling give soft_tokens per image
    image_size: int = 64
    patch_size: int = 8
    soft_tokens: int = 16
    vision_width: int = 64
    vision_layers: int = 2
    vision_heads: int = 4
    vision_mlp: int = 128
    # language model (arch.preset(preset) with these fields): every layer global, the question must
    # reach every soft token of every view
    preset: str = "tiny_gemma3"
    width: int = 64
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 1
    head_dim: int = 16
    mlp_width: int = 128
    pattern: str = "G"
    # optimisation (TrainSettings' fields with this recipe's defaults)
    batch: int = 32
    lr: float = 3e-3
    warmup: int = 30
    weight_decay: float = 0.01
    ckpt_every: int = 100
    log_every: int = 25

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "aspects", tuple(float(a) for a in self.aspects))
        object.__setattr__(self, "font_sizes", tuple(int(s) for s in self.font_sizes))

        def fail(field, allowed):
            raise ValueError(f"ReadConfig.{field}={getattr(self, field)!r}: {allowed}")

        for field in ("height", "max_digits", "eval_docs", "eval_batch", "image_size", "patch_size",
                      "soft_tokens", "vision_width", "vision_layers", "vision_heads", "vision_mlp"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                fail(field, "must be a positive int")
        if self.layout not in LAYOUTS:
            fail("layout", f"must be one of {LAYOUTS}")
        if not self.aspects or any(not 1.0 <= a <= 8.0 for a in self.aspects):
            fail("aspects", "must be a non-empty tuple of width / height ratios in [1, 8]")
        if not self.font_sizes or any(not 4 <= s <= self.height // 4 for s in self.font_sizes):
            fail("font_sizes", f"must be a non-empty tuple of sizes in [4, height / 4 = {self.height // 4}]")
        if self.max_digits > 6:
            fail("max_digits", "must be at most 6 (answers are short numbers)")
        side = math.isqrt(self.soft_tokens)
        if side * side != self.soft_tokens:
            fail("soft_tokens", "must be a square (a pooled grid of side x side tokens)")
        if self.image_size % self.patch_size:
            fail("image_size", f"must be a multiple of patch_size={self.patch_size}")
        per_side = self.image_size // self.patch_size
        if per_side % side:
            fail("soft_tokens", f"its side ({side}) must divide the {per_side} patches per side of "
                                f"image_size={self.image_size} / patch_size={self.patch_size}")
        if not any(a >= self.wide_from for a in self.aspects):
            fail("wide_from", f"no aspect in {self.aspects} reaches it: the wide subset would be empty")

    def vision_config(self) -> VisionConfig:
        """The encoder: ``pool`` follows from the patch grid and ``soft_tokens``."""
        per_side = self.image_size // self.patch_size
        return VisionConfig(image_size=self.image_size, patch_size=self.patch_size, width=self.vision_width,
                            num_layers=self.vision_layers, num_heads=self.vision_heads,
                            mlp_width=self.vision_mlp, pool=per_side // math.isqrt(self.soft_tokens))

    def model_config(self) -> arch.ModelConfig:
        return arch.preset(self.preset, vocab_size=len(VOCAB), width=self.width, num_layers=self.num_layers,
                           num_heads=self.num_heads, num_kv_heads=self.num_kv_heads, head_dim=self.head_dim,
                           mlp_width=self.mlp_width, pattern=self.pattern)

    def pan_scan(self) -> PanScan:
        """Gemma 3's rule with a minimum crop of half the page height (the report's 256 px is about a
        third of a typical 896 px side): a 4:1 page gives four square crops, a 1.5:1 page two."""
        return PanScan(min_crop_size=max(self.height // 2, 1))

    def doc_kwargs(self) -> dict:
        return dict(height=self.height, aspects=self.aspects, font_sizes=self.font_sizes,
                    max_digits=self.max_digits, layout=self.layout)


BASES: dict[str, ReadConfig] = {
    # seconds per run: CI and the notebook
    "quick": ReadConfig(layout="number", height=32, aspects=(1.0, 2.0), font_sizes=(6, 8), max_digits=2,
                        eval_docs=16, eval_batch=16, image_size=32, patch_size=8, soft_tokens=4,
                        vision_width=32, vision_layers=1, vision_mlp=64, width=32, num_layers=1, head_dim=8,
                        mlp_width=64, steps=8, batch=8, warmup=2, ckpt_every=4, log_every=4),
    # 1-3 minutes per run on one core of the 2-core CPU: one number at the top left of a 48 px high
    # page (square or 2:1), in fonts of 6, 9 and 12 px, read through 4 px patches
    "default": ReadConfig(layout="number", height=48, aspects=(1.0, 2.0), font_sizes=(6, 9, 12),
                          max_digits=3, image_size=48, patch_size=4, soft_tokens=16, steps=800),
}

# the sweep's axes per scale: encoder input resolutions and soft tokens per image
RESOLUTIONS = {"quick": (16, 32), "default": (16, 32, 48)}
SOFT_TOKENS = {"quick": (1, 4), "default": (4, 16)}
