"""``RunConfig``: one training run as a frozen value (model preset + overrides, data, optimiser, steps,
seed, loss). Its ``short_hash`` names the run directory, so the same config always lands in the same
place (DESIGN.md, "Experiments and results").
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import arch
from arch.config import ModelConfig
from experiments.data.tasks import Task, parse_task
from experiments.data.tokenizer import load_tokenizer
from experiments.distill.losses import check_loss_and_teacher
from experiments.losses import get_loss
from experiments.optim import TrainSettings


def _freeze(value: Any) -> Any:
    """Lists (from JSON) back into tuples, recursively, so the config stays hashable."""
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    return value


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunConfig(TrainSettings):
    """Everything that decides a training run's result. Frozen, hashable and JSON round-trippable.
    The optimizer, steps, seed and intervals are :class:`experiments.optim.TrainSettings`' fields."""

    # model
    preset: str  # a name in arch.PRESETS
    overrides: tuple[tuple[str, Any], ...] = ()  # ModelConfig field overrides, e.g. (("window", 64),)
    matmul_dtype: str = "bfloat16"  # bf16 matmul inputs, f32 accumulation: ~1.3-2x faster on AVX-512 CPUs
    # data
    data: str | None = None  # None: the default corpus (stdlib source + pydoc topics)
    tokenizer: str | None = None  # an existing SentencePiece .model; None: train one on the corpus
    vocab_size: int = 8192  # for a trained tokenizer; a loaded one decides its own
    doc_mask: bool = True  # attention and recurrence restart at document boundaries inside a sequence
    seq_len: int = 256
    # sequences per gradient micro-step (lax.scan over micro-steps, gradients summed); 0 = the whole
    # batch at once. On a 2-core CPU, micro-steps of 2 sequences (1,024 rows at T=512) are the fastest:
    # 15% faster than 4 and 20% faster than 8 (small_gemma3, B=8, T=512, bf16), as each step's
    # activations stay in cache. A pure data-parallel mesh runs them on each device's own rows; an
    # FSDP mesh takes the whole (sharded) batch at once.
    microbatch: int = 2
    # objective
    loss: str = "xent"  # a name in experiments.losses.LOSSES
    loss_kwargs: tuple[tuple[str, Any], ...] = ()
    # distillation: a trained run directory, "@<short hash>" (a run of the same sweep) or a Hugging Face
    # folder (experiments.distill.teacher); required by the distill* losses
    teacher: str | None = None
    # a synthetic task (experiments.data.tasks.TASKS) with its sizes (Task's fields), as the whole
    # training data (task_fraction 1: the loss counts the answers only) or as that fraction of the rows
    # mixed into the corpus
    task: str | None = None
    task_kwargs: tuple[tuple[str, Any], ...] = ()
    task_fraction: float = 1.0
    # start from a trained run's weights (a run directory or "@<short hash>" of a sibling run) instead
    # of a fresh initialisation, with a fresh optimizer: quantization-aware training (Gemma 3 section
    # 2.3) fine-tunes a trained checkpoint. The model shapes and the tokenizer must match.
    init: str | None = None
    # bookkeeping (does not change the trained weights, but is part of the hash for simplicity)
    eval_every: int = 100
    eval_batches: int = 4

    def __post_init__(self):
        if self.preset not in arch.PRESETS:
            raise ValueError(f"RunConfig.preset={self.preset!r}: unknown; known: {', '.join(arch.PRESETS)}")
        super().__post_init__()
        for name in ("seq_len", "eval_every", "eval_batches"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"RunConfig.{name}={value!r}: must be a positive int")
        if not isinstance(self.microbatch, int) or self.microbatch < 0 or (
                self.microbatch and self.batch % self.microbatch):
            raise ValueError(f"RunConfig.microbatch={self.microbatch!r}: must be 0 or divide "
                             f"batch={self.batch}")
        # Normalise sequences (e.g. lists from JSON or callers) to hashable tuples of pairs.
        # Sorted by name (later duplicates win, as in a dict): equal configs get equal hashes.
        for name in ("overrides", "loss_kwargs", "task_kwargs"):
            pairs = dict((str(k), _freeze(v)) for k, v in getattr(self, name))
            object.__setattr__(self, name, tuple(sorted(pairs.items())))
        if not 0 < self.task_fraction <= 1:
            raise ValueError(f"RunConfig.task_fraction={self.task_fraction!r}: must be in (0, 1]")
        if self.task is None and (self.task_kwargs or self.task_fraction != 1.0):
            raise ValueError("RunConfig.task_kwargs / task_fraction given without RunConfig.task")
        self.task_spec()  # an unknown task or size fails here, naming it
        self.base_model_config()  # fail now, naming the field, rather than at the first step
        get_loss(self.loss)  # an unknown loss fails here, listing the known ones
        check_loss_and_teacher(self.loss, self.teacher)
        if self.init is not None and (not isinstance(self.init, str) or not self.init.strip("@")):
            raise ValueError(f"RunConfig.init={self.init!r}: must be None, a run directory or "
                             f"'@<short hash>'")

    def base_model_config(self) -> ModelConfig:
        """The preset with the overrides and matmul dtype, vocab size as the preset has it."""
        return arch.preset(self.preset, **{"matmul_dtype": self.matmul_dtype, **dict(self.overrides)})

    def model_config(self, vocab_size: int | None = None) -> ModelConfig:
        """The model this run trains: preset + overrides, with the tokenizer's vocabulary size.

        ``vocab_size`` is the loaded tokenizer's size when known; otherwise the ``.model`` file is read
        (if given) or the size the tokenizer will be trained to (``self.vocab_size``) is used.
        """
        if vocab_size is None:
            if self.tokenizer is not None:
                vocab_size = load_tokenizer(self.tokenizer).vocab_size
            else:
                vocab_size = self.vocab_size
        return self.base_model_config().replace(vocab_size=vocab_size)

    def to_dict(self) -> dict:
        """Every field, except the task fields at their defaults: they came after many results were
        named by their hash, and a run without a task keeps its name."""
        d = dataclasses.asdict(self)
        for name in ("overrides", "loss_kwargs", "task_kwargs"):
            d[name] = [list(p) for p in getattr(self, name)]
        for name in _LATER_FIELDS:
            if getattr(self, name) == _DEFAULTS[name]:
                del d[name]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"RunConfig.from_dict: unknown field(s) {sorted(unknown)}")
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def task_spec(self, vocab_size: int | None = None) -> Task | None:
        """The synthetic task this run trains on (None: the corpus only), in a vocabulary of
        ``vocab_size`` ids (default: ``self.vocab_size``, a pure-task run's own)."""
        if self.task is None:
            return None
        return parse_task(self.task, self.seq_len, vocab_size or self.vocab_size, self.task_kwargs)

    @property
    def pure_task(self) -> bool:
        return self.task is not None and self.task_fraction == 1.0

    def with_model(self, **overrides) -> RunConfig:
        """A copy with more ModelConfig overrides (later ones win)."""
        return self.replace(overrides=(*self.overrides, *overrides.items()))

    @property
    def tokens_per_step(self) -> int:
        return self.batch * self.seq_len


_LATER_FIELDS = ("task", "task_kwargs", "task_fraction", "init")
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(RunConfig) if f.name in _LATER_FIELDS}
