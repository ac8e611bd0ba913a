"""The ``embedding`` sweep: EmbeddingGemma's ablations at lab scale (report Tables 1-4 and 6-8).

    python -m experiments.sweeps embedding [--scale quick|default|full] [--workers N] [--update-figures]

Points, one factor at a time around a base recipe (encoder init, mean pooling, spread-out and, when a
teacher is found, distillation on, MRL on, mixture 1; at default scale the token table starts from the
teacher's vectors of the vocabulary and every block starts near the identity), plus:

- Table 2 init: random / decoder-only / encoder (denoising-adapted decoder);
- Table 3 pooling: mean / first / last / attention;
- losses: spread-out on/off x distillation on/off;
- Tables 6-8 MRL: every run is evaluated at every prefix; MRL training on vs off;
- Table 4 souping: three mixtures (code/topic weights and seeds) and their uniform parameter average;
- Table 1 quantization: the base served in bf16 and post-training quantized, and QAT int8 / int4 /
  mixed runs served quantized;
- baselines: BM25 and the untrained models (the floor).

With ``--seeds N`` a trained point's seed replica ``i`` varies both of its seeds, ``seed`` (data order)
and ``init_seed`` (the initial model and its decoder), by ``i`` (:func:`seed_replica`); the points built
from trained ones (untrained, soup, deploy) follow their configs' replicas; BM25 and the teacher are
deterministic and run once.

The sweep runs through the common runner (:mod:`experiments.sweeps.runner`): each point is a
:class:`~experiments.sweeps.runner.Run` subclass with its own ``execute``: :class:`EmbedRun` trains a
model, :class:`BM25Run`, :class:`TeacherRun`, :class:`UntrainedRun`, :class:`SoupRun` and
:class:`DeployRun` evaluate one without training their own. Every point writes
``results/embedding/<key>/`` with ``config.json`` and ``summary.json`` (``label``, ``tags``, ``kind``,
``precision``, ``evals``), so ``experiments.sweeps.collect.collect("embedding")`` reads them.
:func:`prepare_shared` builds what the points share before parallel workers start; the decoder LM and
its encoder live beside the sweep, in ``<out>/embedding_lm/``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, ClassVar

import jax

from arch import quant
from arch.embedding import EmbeddingModel
from experiments.data.io import write_json
from experiments.embed import teacher as teacher_mod
from experiments.embed import train as tr
from experiments.embed.config import BASES, EmbedConfig
from experiments.embed.data import EmbedData, prepare
from experiments.embed.evaluate import evaluate_bm25, evaluate_embeddings
from experiments.embed.init import initial_model
from experiments.embed.plots import plot_all, report
from experiments.embed.soup import soup
from experiments.sweeps.runner import Run, register

SWEEP = "embedding"
LM_DIR = "embedding_lm"  # beside the sweep's folder: the decoder LM and its encoder, shared by the points
MIXTURES = {"mix1": ((("code", 0.9), ("topic", 0.1)), 0), "mix2": ((("code", 0.7), ("topic", 0.3)), 1),
            "mix3": ((("code", 1.0), ("topic", 0.0)), 2)}  # name -> (weights, seed)


def seed_replica(c: EmbedConfig, i: int) -> EmbedConfig:
    """The config of a point's ``i``-th seed replica: ``seed`` and ``init_seed`` both moved by ``i``
    (a soup's ingredients keep sharing their initial model, as souping needs); ``c`` itself for 0."""
    return c.replace(seed=c.seed + i, init_seed=c.init_seed + i) if i else c


def lm_root(sweep_dir: Path) -> Path:
    """Where the points of the sweep in ``sweep_dir`` keep the decoder LM and its encoder."""
    return Path(sweep_dir).parent / LM_DIR


@dataclasses.dataclass(frozen=True, kw_only=True)
class EmbedRun(Run):
    """A trained point of the embedding sweep: fine-tune and evaluate ``config`` (an ``EmbedConfig``);
    its directory is the config's hash. The evaluated points (:class:`EvalRun`) subclass it for its
    ``config`` and ``group``, with a ``key`` and an ``execute`` of their own."""

    config: EmbedConfig
    group: str | None = None  # runs sharing a group go to one shard (a soup and its ingredients)
    kind: ClassVar[str] = "train"  # the summary's "kind"
    replicated: ClassVar[bool] = True  # False: deterministic, one run whatever the seeds

    @property
    def is_variant(self) -> bool:
        return False

    def replica(self, i: int) -> EmbedRun | None:
        """Seed replica ``i`` >= 1 (see :meth:`Run.with_seed`): the config's :func:`seed_replica`, the
        group suffixed by the seed (replicas of a soup and of its ingredients share one shard, apart from
        the other seeds'); None for a deterministic point."""
        if not self.replicated:
            return None
        return dataclasses.replace(self, config=seed_replica(self.config, i),
                                   group=f"{self.group}-seed{i}" if self.group else None)

    @property
    def key(self) -> str:
        return self.config.short_hash()

    def execute(self, sweep_dir: Path, *, progress: bool = True) -> dict:
        """Train (or reuse) the model and return its summary (written by ``train_embedding``)."""
        return tr.train_embedding(self.config, sweep_dir / self.key, lm_root=lm_root(sweep_dir),
                                  label=self.label, tags=dict(self.tags), progress=progress)


@dataclasses.dataclass(frozen=True, kw_only=True)
class EvalRun(EmbedRun):
    """A point that is evaluated without training a model of its own: a baseline, or a model built
    from trained points. ``config`` is the trained model's config (for a baseline: the base config,
    whose data settings it shares). Subclasses set ``kind`` and define :meth:`evaluate`."""

    precision: ClassVar[str | None] = None  # how the model is served; DeployRun makes it a field
    ingredients: ClassVar[tuple[EmbedConfig, ...]] = ()  # the averaged models; SoupRun makes it a field

    @property
    def is_variant(self) -> bool:
        return True

    @property
    def key(self) -> str:
        spec = json.dumps([self.kind, self.config.short_hash(), self.precision,
                           [c.short_hash() for c in self.ingredients]])
        return f"{self.kind}-{hashlib.sha256(spec.encode()).hexdigest()[:10]}"

    def spec(self) -> dict:
        """What ``config.json`` holds: the kind, the precision, the config and the ingredients' hashes."""
        return {"kind": self.kind, "precision": self.precision, **self.config.to_dict(),
                "ingredients": [c.short_hash() for c in self.ingredients]}

    def evaluate(self, data: EmbedData, sweep_dir: Path, *, progress: bool) -> tuple[dict, dict]:
        """``(evals, extra summary fields)`` of the point."""
        raise NotImplementedError(f"{type(self).__name__}.evaluate")

    def execute(self, sweep_dir: Path, *, progress: bool = True) -> dict:
        """Evaluate the point (or reuse its summary) and return the summary."""
        d = sweep_dir / self.key
        if (d / "summary.json").exists():
            return json.loads((d / "summary.json").read_text())
        d.mkdir(parents=True, exist_ok=True)
        write_json(d / "config.json", self.spec())
        evals, extra = self.evaluate(prepare(self.config), sweep_dir, progress=progress)
        summary = {"label": self.label, "tags": dict(self.tags), "kind": self.kind,
                   "precision": self.precision, "evals": evals, **extra}
        write_json(d / "summary.json", summary)
        return summary


@dataclasses.dataclass(frozen=True, kw_only=True)
class BM25Run(EvalRun):
    """The lexical baseline on the same held-out tasks (one "dimension": the config's largest)."""

    kind: ClassVar[str] = "bm25"
    replicated: ClassVar[bool] = False

    def evaluate(self, data: EmbedData, sweep_dir: Path, *, progress: bool) -> tuple[dict, dict]:
        return {name: {f"d{self.config.dims()[0]}": evaluate_bm25(task)}
                for name, (task, _, _) in data.eval_tasks.items()}, {}


@dataclasses.dataclass(frozen=True, kw_only=True)
class TeacherRun(EvalRun):
    """The distillation target: the teacher projected to the student's width (:func:`teacher_evals`)."""

    kind: ClassVar[str] = "teacher"
    replicated: ClassVar[bool] = False

    def evaluate(self, data: EmbedData, sweep_dir: Path, *, progress: bool) -> tuple[dict, dict]:
        return teacher_evals(self.config, data)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelEvalRun(EvalRun):
    """A point that evaluates a model it builds (:meth:`model`) at ``precision``, and reports its
    storage bits per weight."""

    def model(self, data: EmbedData, sweep_dir: Path, *, progress: bool) -> tuple[EmbeddingModel, dict]:
        """``(model to evaluate, extra summary fields)``."""
        raise NotImplementedError(f"{type(self).__name__}.model")

    def evaluate(self, data: EmbedData, sweep_dir: Path, *, progress: bool) -> tuple[dict, dict]:
        model, extra = self.model(data, sweep_dir, progress=progress)
        evals = tr.evaluate(model, data, self.config.dims(), self.precision)
        scheme = self.precision if self.precision in quant.SCHEMES else None
        bits = quant.bits_per_weight(model, scheme, float_bits=16 if self.precision == "bfloat16" else 32)
        return evals, {**extra, "bits_per_weight": bits}


@dataclasses.dataclass(frozen=True, kw_only=True)
class UntrainedRun(ModelEvalRun):
    """The floor: the model ``config.init`` starts fine-tuning from, evaluated as it is."""

    kind: ClassVar[str] = "untrained"

    def model(self, data: EmbedData, sweep_dir: Path, *, progress: bool) -> tuple[EmbeddingModel, dict]:
        return initial_model(self.config, data.tokenizer, lm_root=lm_root(sweep_dir),
                             key=jax.random.key(self.config.init_seed), vocab_vectors=data.teacher_vocab)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SoupRun(ModelEvalRun):
    """The uniform parameter average of the trained ``ingredients`` (report Table 4). They are listed
    before the soup in the sweep and share its ``group``; one not trained yet is trained here."""

    kind: ClassVar[str] = "soup"
    ingredients: tuple[EmbedConfig, ...]

    def replica(self, i: int) -> SoupRun:
        """The soup of the ingredients' seed replicas ``i``, in their replicas' group."""
        return dataclasses.replace(super().replica(i),
                                   ingredients=tuple(seed_replica(c, i) for c in self.ingredients))

    def model(self, data: EmbedData, sweep_dir: Path, *, progress: bool) -> tuple[EmbeddingModel, dict]:
        dirs = [sweep_dir / c.short_hash() for c in self.ingredients]
        for c, d in zip(self.ingredients, dirs):
            tr.train_embedding(c, d, lm_root=lm_root(sweep_dir), progress=progress)
        return soup([tr.load_model(d)[0] for d in dirs]), {"ingredients": [d.name for d in dirs]}


@dataclasses.dataclass(frozen=True, kw_only=True)
class DeployRun(ModelEvalRun):
    """The trained ``config`` served at ``precision``: "bfloat16" or a quantization scheme of
    ``arch.quant`` (post-training quantization; a QAT run is served at its own scheme)."""

    kind: ClassVar[str] = "deploy"
    precision: str

    def model(self, data: EmbedData, sweep_dir: Path, *, progress: bool) -> tuple[EmbeddingModel, dict]:
        trained = sweep_dir / self.config.short_hash()
        tr.train_embedding(self.config, trained, lm_root=lm_root(sweep_dir), progress=progress)
        return tr.load_model(trained)[0], {}


def _tags(scale: str, c: EmbedConfig, **extra) -> tuple[tuple[str, Any], ...]:
    mix = next((m for m, (w, s) in MIXTURES.items() if w == c.mixture and s == c.seed), "other")
    tags = dict(scale=scale, init=c.init, pooling=c.pooling, spread_out=c.w_spread > 0,
                distill=c.w_distill > 0, mrl_train=c.mrl_train, mixture=mix, precision=c.qat or "float32",
                qat=c.qat is not None, base=False)
    return tuple((tags | extra).items())


def runs(scale: str) -> list[EmbedRun]:
    """The points, headline first (base, baselines, the base served quantized), then the ablations:
    an interrupted sweep has already answered "does it beat BM25, and at what precision"."""
    b = BASES[scale]
    quick = scale == "quick"
    out: list[EmbedRun] = []
    soup_group = f"soup-{b.short_hash()}"

    def train(label: str, c: EmbedConfig, group: str | None = None, **extra):
        out.append(EmbedRun(label=label, config=c, quick=quick, group=group, tags=_tags(scale, c, **extra)))
        return c

    base = train("base", b, group=soup_group, base=True)
    out.append(BM25Run(label="BM25", config=b, quick=quick,
                       tags=_tags(scale, b, init="none", pooling="none", precision="none")))
    if b.teacher not in (None, "none"):
        out.append(TeacherRun(label="teacher", config=b, quick=quick,
                              tags=_tags(scale, b, init="none", pooling="mean", precision="float32")))
    for init in ("random", "encoder"):
        out.append(UntrainedRun(label=f"untrained {init}", config=b.replace(init=init), quick=quick,
                                tags=_tags(scale, b.replace(init=init))))
    for precision in ("bfloat16", "int8", "int4", "mixed") if not quick else ("int8",):
        out.append(DeployRun(label=f"base served {precision} (PTQ)" if precision != "bfloat16" else
                             "base served bfloat16", precision=precision, config=base, quick=quick,
                             group=soup_group, tags=_tags(scale, b, precision=precision, qat=False)))
    for init in ("random", "decoder"):
        train(f"init {init}", b.replace(init=init))
    for pooling in ("first", "last", "attention") if not quick else ("attention",):
        train(f"pooling {pooling}", b.replace(pooling=pooling))
    train("no spread-out", b.replace(w_spread=0.0))
    if not quick:
        train("no distillation", b.replace(w_distill=0.0))
        train("no spread-out, no distillation", b.replace(w_spread=0.0, w_distill=0.0))
    train("no MRL", b.replace(mrl_train=False))
    mixes = [base]
    for name in ("mix2", "mix3") if not quick else ("mix2",):
        weights, seed = MIXTURES[name]
        mixes.append(train(f"single {name}", b.replace(mixture=weights, seed=seed), group=soup_group))
    out.append(SoupRun(label="soup", config=b, ingredients=tuple(mixes), quick=quick, group=soup_group,
                       tags=_tags(scale, b, mixture="soup")))
    for scheme in ("int8", "int4", "mixed") if not quick else ("int8",):
        train(f"QAT {scheme}", b.replace(qat=scheme))
    return out

def teacher_evals(ec: EmbedConfig, data) -> tuple[dict, dict]:
    """The teacher's held-out metrics on raw texts: projected on the distillation basis (what the
    student is trained to match, as ``evals`` at the student's width) and at its own width (the
    ceiling, as ``teacher_full_width``)."""
    if data.teacher_basis is None:
        raise ValueError(f"EmbedConfig.teacher={ec.teacher!r}: no teacher found to evaluate")
    evals, full = {}, {}
    for name, (task, _, _) in data.eval_tasks.items():
        q, d = (teacher_mod.embeddings(list(texts), data.teacher_name) for texts in (task.queries, task.docs))
        evals[name] = evaluate_embeddings(teacher_mod.project(q, data.teacher_basis),
                                          teacher_mod.project(d, data.teacher_basis), task, ec.dims())
        full[name] = evaluate_embeddings(q, d, task, (q.shape[1],))
    return evals, {"teacher": data.teacher_name, "teacher_full_width": full}


def prepare_shared(scale: str, out: Path, seeds: int = 1) -> None:
    """Build what the points share (tokenizer, pairs, teacher cache, and for each of the ``seeds``
    replicas the decoder LM and its denoising-adapted encoder) once, so parallel workers never build
    it side by side: the sweep's ``prepare``, called by the runner before its workers start."""
    for i in range(seeds):
        b = seed_replica(BASES[scale], i)
        data = prepare(b)  # memoised: the data do not depend on the seeds
        if b.init in ("decoder", "encoder"):
            initial_model(b, data.tokenizer, lm_root=lm_root(Path(out) / SWEEP),
                          key=jax.random.key(b.init_seed), vocab_vectors=data.teacher_vocab)


register(SWEEP, "EmbeddingGemma Tables 1-4, 6-8 (init, pooling, losses, MRL, souping, quantization)",
         plot=plot_all, prepare=prepare_shared, report=report)(runs)
