"""``ModelConfig``: every architecture of the repository is a value of this one dataclass.

The layer stack is a pattern string over three block kinds, tiled to ``num_layers`` and cut (never
padded), as Gemma 3 does with its 5:1 pattern (Gemma 3 report section 2; DeepMind ``_config.py``):

- ``G`` global attention, ``L`` local (sliding-window) attention, ``R`` Griffin recurrent block.

Gemma 2 = ``"LG"``, Gemma 3 = ``"LLLLLG"``, RecurrentGemma = ``"RRL"``, Hawk = ``"R"``, Llama = ``"G"``.
"""

import dataclasses
from typing import Literal

from arch.quant import FORMATS
from arch.quant import TARGETS as QUANT_TARGETS
from gemma_kernels import ATTENTION_IMPLS, SCAN_IMPLS

BlockKind = Literal["G", "L", "R"]
KINDS = ("G", "L", "R")
ACTIVATIONS = ("gelu_tanh", "gelu", "silu", "relu")
DTYPES = ("float32", "bfloat16")
WEIGHT_FORMATS = ("bfloat16", *FORMATS)  # what ModelConfig.weight_format may name
DEFAULT_WINDOW = 4096  # Gemma 2's span, and transformers' default sliding_window


def ratio(**counts: int) -> str:
    """Pattern string from counts in the order given: ``ratio(L=5, G=1) == "LLLLLG"``."""
    for kind, n in counts.items():
        if kind not in KINDS:
            raise ValueError(f"ratio: block kind {kind!r} is not one of {KINDS}")
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"ratio: count for {kind} must be a non-negative int, got {n!r}")
    pattern = "".join(kind * n for kind, n in counts.items())
    if not pattern:
        raise ValueError("ratio: at least one count must be positive")
    return pattern


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """One Gemma-family architecture. Frozen and hashable: safe as a static field and as a cache key."""

    # sizes
    vocab_size: int  # rows of the (tied) embedding table
    width: int  # d_model
    num_layers: int  # residual blocks
    num_heads: int = 8  # query heads
    num_kv_heads: int = 1  # KV heads: == num_heads is MHA, 1 is MQA, anything between is GQA
    head_dim: int = 128
    mlp_width: int = 512  # hidden width of each GeGLU branch (gate and up)
    # layer stack
    pattern: str = "G"  # over G/L/R, tiled to num_layers and cut
    window: int = DEFAULT_WINDOW  # local attention span (causal) or HF sliding_window (bidirectional)
    # attention details
    query_pre_attn_scalar: float | None = None  # logits scaled by this ** -0.5; None: head_dim
    attn_softcap: float | None = None  # Gemma 2: 50.0
    logit_softcap: float | None = None  # Gemma 2 and RecurrentGemma: 30.0
    qk_norm: bool = False  # Gemma 3: RMSNorm over head_dim on q and k, before RoPE
    rope_base_global: float = 10_000.0
    rope_base_local: float = 10_000.0
    rope_scale_global: float = 1.0  # linear RoPE scaling factor on global layers only (Gemma 3: 8)
    partial_rotary: float = 1.0  # fraction of head_dim that is rotated (RecurrentGemma: 0.5)
    attn_out_bias: bool = False  # RecurrentGemma's o_proj has a bias
    causal: bool = True  # False: bidirectional encoder (EmbeddingGemma)
    # norms and MLP
    post_norms: bool = True  # Gemma 2/3: pre+post RMSNorm around mixer and MLP; Griffin: pre only
    norm_eps: float = 1e-6
    mlp_activation: str = "gelu_tanh"  # GeGLU with the tanh GELU
    mlp_bias: bool = False  # RecurrentGemma's MLP has biases
    # recurrent (Griffin) blocks
    lru_width: int | None = None  # RG-LRU width; required when the pattern has R
    lru_gate_blocks: int = 1  # block-diagonal gate blocks (RecurrentGemma code: num_heads)
    conv_width: int = 4  # temporal Conv1D width
    lru_c: float = 8.0  # log a_t = -c * r_t * softplus(Lambda)  (Griffin eq. 3)
    # embeddings
    tie_embeddings: bool = True
    embed_scale: bool = True  # multiply input embeddings by sqrt(width)
    embed_scale_bf16: bool = False  # RecurrentGemma rounds sqrt(width) to bfloat16
    # how it runs
    attn_impl: str = "auto"
    scan_impl: str = "auto"
    matmul_dtype: str = "float32"  # "bfloat16": bf16 matmul inputs, f32 accumulation and params
    # the format the weights are served in (arch.quant.FORMATS, or "bfloat16"); None: as stored. The
    # forward quantizes them with a straight-through gradient, so one config serves post-training
    # quantization (arch.reconfigure of a trained model) and quantization-aware training alike
    weight_format: str | None = None
    quant_targets: tuple[str, ...] = QUANT_TARGETS  # the tensor groups weight_format applies to

    def __post_init__(self):
        def fail(field, allowed):
            raise ValueError(f"ModelConfig.{field}={getattr(self, field)!r}: {allowed}")

        for field in ("vocab_size", "width", "num_layers", "num_heads", "num_kv_heads", "head_dim"):
            value = getattr(self, field)
            if not isinstance(value, int) or value < 1:
                fail(field, "must be a positive int")
        if not isinstance(self.mlp_width, int) or self.mlp_width < 1:
            fail("mlp_width", "must be a positive int")
        if not self.pattern or any(c not in KINDS for c in self.pattern):
            fail("pattern", f"must be a non-empty string over {''.join(KINDS)} (e.g. 'LLLLLG')")
        if not isinstance(self.window, int) or self.window < 1:
            fail("window", "must be an int >= 1")
        if self.num_heads % self.num_kv_heads:
            fail("num_heads", f"must be a multiple of num_kv_heads={self.num_kv_heads}")
        if self.query_pre_attn_scalar is not None and self.query_pre_attn_scalar <= 0:
            fail("query_pre_attn_scalar", "must be None or > 0")
        for field in ("attn_softcap", "logit_softcap"):
            value = getattr(self, field)
            if value is not None and not value > 0:
                fail(field, "must be None (off) or > 0")
        for field in ("rope_base_global", "rope_base_local", "rope_scale_global", "norm_eps", "lru_c"):
            if not getattr(self, field) > 0:
                fail(field, "must be > 0")
        if not 0 < self.partial_rotary <= 1:
            fail("partial_rotary", "must be in (0, 1]")
        if self.head_dim % 2:
            fail("head_dim", "must be even (RoPE rotates pairs of dims)")
        rotary = self.rotary_dim
        if rotary % 2 or rotary != self.partial_rotary * self.head_dim:
            fail("partial_rotary", f"must rotate an even whole number of the head_dim={self.head_dim} dims")
        if self.mlp_activation not in ACTIVATIONS:
            fail("mlp_activation", f"must be one of {ACTIVATIONS}")
        if "R" in self.pattern:
            if not isinstance(self.lru_width, int) or self.lru_width < 1:
                fail("lru_width", "must be a positive int when the pattern has R layers")
            if self.lru_gate_blocks < 1 or self.lru_width % self.lru_gate_blocks:
                fail("lru_gate_blocks", f"must be >= 1 and divide lru_width={self.lru_width}")
        if self.lru_width is not None and (not isinstance(self.lru_width, int) or self.lru_width < 1):
            fail("lru_width", "must be None or a positive int")
        if not isinstance(self.conv_width, int) or self.conv_width < 1:
            fail("conv_width", "must be an int >= 1")
        if self.attn_impl not in ATTENTION_IMPLS:
            fail("attn_impl", f"must be one of {ATTENTION_IMPLS}")
        if self.scan_impl not in SCAN_IMPLS:
            fail("scan_impl", f"must be one of {SCAN_IMPLS}")
        if self.matmul_dtype not in DTYPES:
            fail("matmul_dtype", f"must be one of {DTYPES}")
        if self.weight_format is not None and self.weight_format not in WEIGHT_FORMATS:
            fail("weight_format", f"must be None (as stored) or one of {WEIGHT_FORMATS}")
        targets = tuple(self.quant_targets) if isinstance(self.quant_targets, list | tuple) else None
        if not targets or any(t not in QUANT_TARGETS for t in targets) or len(set(targets)) < len(targets):
            fail("quant_targets", f"must be a non-empty tuple of distinct names from {QUANT_TARGETS}")
        object.__setattr__(self, "quant_targets", targets)  # a list from JSON stays hashable
        if not self.causal and "R" in self.pattern:
            fail("causal", "False (bidirectional) is only defined for attention layers, not R")

    @property
    def layer_kinds(self) -> tuple[str, ...]:
        """The pattern tiled to ``num_layers`` and cut: ``("L", "L", ..., "G", ...)``."""
        reps = -(-self.num_layers // len(self.pattern))
        return tuple((self.pattern * reps)[: self.num_layers])

    def attention_window(self, kind: str) -> int | None:
        """The config window of an attention layer of ``kind``: None for ``G``, ``window`` for ``L``
        (``arch.masks.kernel_window`` turns it into what the kernels take)."""
        if kind not in ("G", "L"):
            raise ValueError(f"block kind {kind!r} has no attention window; allowed: G, L")
        return None if kind == "G" else self.window

    @property
    def rotary_dim(self) -> int:
        return int(round(self.partial_rotary * self.head_dim))

    @property
    def query_scale(self) -> float:
        return (self.query_pre_attn_scalar or self.head_dim) ** -0.5

    def count(self, kind: str) -> int:
        return self.layer_kinds.count(kind)

    def replace(self, **overrides) -> "ModelConfig":
        """A copy with some fields changed (validated again)."""
        unknown = set(overrides) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown ModelConfig field(s) {sorted(unknown)}")
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["quant_targets"] = list(self.quant_targets)  # as JSON gives it back: summaries re-read equal
        return d
