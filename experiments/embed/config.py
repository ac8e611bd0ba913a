"""The embedding run's configuration (``EmbedConfig``) and its base recipe at each scale (``BASES``),
shared by ``experiments.embed.train`` (one run) and ``experiments.embed.sweep`` (the ablations)."""

from __future__ import annotations

import dataclasses
from typing import Any

import arch
from arch import quant
from experiments.embed.pairs import TEXT_NORMS
from experiments.optim import TrainSettings


@dataclasses.dataclass(frozen=True, kw_only=True)
class EmbedConfig(TrainSettings):
    """One embedding fine-tuning run. Frozen and JSON round-trippable; its hash names the run dir.
    The optimizer, steps, seed and intervals are :class:`experiments.optim.TrainSettings`' fields,
    with this recipe's defaults."""

    # trunk (a preset + overrides, made bidirectional) and head
    preset: str = "small_embeddinggemma"
    overrides: tuple[tuple[str, Any], ...] = ()
    vocab_size: int = 8192
    matmul_dtype: str = "float32"
    pooling: str = "mean"
    dense_mult: int = 4  # projections d -> mult * d -> d (report: 768 -> 3072 -> 768); 0: none
    mrl_dims: tuple[int, ...] = ()  # evaluated prefixes, largest first; () = full width only
    mrl_train: bool = True  # the losses summed over the prefixes (MRL) or at full width only
    # initialisation (Table 2)
    init: str = "random"
    lm_steps: int = 300
    lm_batch: int = 16
    lm_seq_len: int = 128
    lm_lr: float = 3e-3
    adapt_steps: int = 200
    adapt_seq_len: int = 128
    block_gain: float = 1.0  # post-norm gains of every block scaled by this at init (1: unchanged)
    embed_init: str = "model"  # token table: the init's own ("model") or the teacher's ("teacher")
    # data
    mixture: tuple[tuple[str, float], ...] = (("code", 0.9), ("topic", 0.1))
    hard_negatives: str = "bm25"  # "bm25" | "none"
    text_norm: str = "code"  # "code": identifiers split and lower-cased (pairs.normalise_code) | "raw"
    q_len: int = 32
    p_len: int = 128
    max_train_pairs: int | None = None
    eval_queries: int | None = 400
    eval_docs: int | None = 1000
    # objective (eqs. 1-5)
    tau: float = 0.05
    alpha: float = 5.0
    w_spread: float = 1.0
    w_distill: float = 0.0
    distill_kind: str = "l2"
    distill_mrl: bool = False
    teacher: str | None = "auto"
    qat: str | None = None  # quantization-aware training scheme (arch.quant.SCHEMES)
    # optimisation (TrainSettings' fields with this recipe's defaults: AdamW's own b2 = 0.999, decay
    # to 0.1 x lr); seed: data order (and the mixture's identity when souping)
    batch: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    b2: float = 0.999
    log_every: int = 25
    init_seed: int = 0  # the initial model (and its decoder): souped runs must share it

    def __post_init__(self):
        super().__post_init__()
        for name in ("overrides", "mixture"):
            object.__setattr__(self, name, tuple(sorted((str(k), v) for k, v in getattr(self, name))))
        object.__setattr__(self, "mrl_dims", tuple(int(d) for d in self.mrl_dims))
        if self.qat is not None and self.qat not in quant.SCHEMES:
            raise ValueError(f"EmbedConfig.qat={self.qat!r}: must be None or one of {quant.SCHEMES}")
        if not self.block_gain >= 0:
            raise ValueError(f"EmbedConfig.block_gain={self.block_gain}: must be >= 0 (1: unchanged)")
        if self.embed_init not in ("model", "teacher"):
            raise ValueError(f"EmbedConfig.embed_init={self.embed_init!r}: 'model' or 'teacher'")
        if self.text_norm not in TEXT_NORMS:
            raise ValueError(f"EmbedConfig.text_norm={self.text_norm!r}: must be one of {TEXT_NORMS}")
        if self.hard_negatives not in ("bm25", "none"):
            raise ValueError(f"EmbedConfig.hard_negatives={self.hard_negatives!r}: 'bm25' or 'none'")
        width = self.model_config(self.vocab_size).width
        if any(not 1 <= d <= width for d in self.mrl_dims):
            raise ValueError(f"EmbedConfig.mrl_dims={self.mrl_dims}: each must be in [1, {width}]")

    def model_config(self, vocab_size: int) -> arch.ModelConfig:
        return arch.preset(self.preset, **dict(self.overrides)).replace(
            vocab_size=vocab_size, causal=False, matmul_dtype=self.matmul_dtype)

    def dense_dims(self) -> tuple[int, ...]:
        d = self.model_config(self.vocab_size).width
        return (self.dense_mult * d, d) if self.dense_mult else ()

    def dims(self) -> tuple[int, ...]:
        return self.mrl_dims or (self.model_config(self.vocab_size).width,)



_TRUNK = dict(num_heads=2, num_kv_heads=1, pattern="LLLLLG")
BASES: dict[str, EmbedConfig] = {
    # seconds per run on 2 cores: CI and the notebook
    "quick": EmbedConfig(
        preset="tiny_embeddinggemma", vocab_size=512, overrides=tuple({
            **_TRUNK, "num_layers": 2, "width": 32, "head_dim": 16, "mlp_width": 64, "window": 16}.items()),
        dense_mult=2, mrl_dims=(32, 16, 8), q_len=64, p_len=64, max_train_pairs=512, eval_queries=48,
        eval_docs=160, steps=25, batch=16, lr=3e-3, warmup=3, lm_steps=20, lm_batch=8, lm_seq_len=64,
        adapt_steps=10, adapt_seq_len=64, teacher="none", log_every=5, init="encoder"),
    # about 7 minutes per run on 2 cores (bf16 products); 1,000 steps: 600 only tie BM25 (0.515)
    "default": EmbedConfig(
        preset="small_embeddinggemma", vocab_size=8192, overrides=tuple({
            **_TRUNK, "num_layers": 4, "width": 128, "head_dim": 64, "mlp_width": 512, "window": 64}.items()),
        dense_mult=4, mrl_dims=(128, 64, 32, 16), q_len=32, p_len=64, eval_queries=400, eval_docs=1000,
        steps=1000, batch=64, lr=3e-3, warmup=20, lm_steps=300, lm_batch=16, lm_seq_len=128,
        adapt_steps=150, adapt_seq_len=128, teacher="auto", w_distill=5.0, init="encoder",
        embed_init="teacher", block_gain=0.1, matmul_dtype="bfloat16"),
    # a GPU: the report's head shape at a larger trunk
    "full": EmbedConfig(
        preset="small_embeddinggemma", vocab_size=32768, overrides=tuple({
            **_TRUNK, "num_layers": 12, "num_heads": 4, "width": 768, "head_dim": 128, "mlp_width": 2048,
            "window": 256}.items()),
        mrl_dims=(768, 512, 256, 128), q_len=32, p_len=256, eval_queries=None, eval_docs=None,
        steps=5000, batch=128, lr=5e-4, warmup=250, lm_steps=20_000, lm_batch=64, lm_seq_len=512,
        adapt_steps=2000, adapt_seq_len=512, w_distill=1.0, init="encoder"),
}


# one large GPU: the default recipe at twice the width and batch, twice the decoder pre-training
BASES["device"] = BASES["default"].replace(
    overrides=tuple({**dict(BASES["default"].overrides), "num_heads": 4, "width": 256,
                     "mlp_width": 1024}.items()),
    mrl_dims=(256, 128, 64, 32), batch=128, lm_steps=600, lm_batch=32, adapt_steps=300)


def config_for(scale: str, **kw) -> EmbedConfig:
    return BASES[scale].replace(**kw)


