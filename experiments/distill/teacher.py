"""Teachers for logit distillation (Gemma 2 section 3.2, Gemma 3 section 2.2): load, check, precompute.

``RunConfig.teacher`` names one of:

- a run directory the training loop produced (``config.json`` + checkpoint + ``summary.json``), or
  ``"@<short hash>"``: a sibling run of the same sweep directory (so a sweep's configs do not depend on
  ``--out``). Loaded with :func:`experiments.train.load_trained`;
- a Hugging Face checkpoint folder (``config.json`` + safetensors), loaded with :func:`arch.from_hf`;
- a folder of precomputed samples written by :func:`precompute_sampled` (``sampled.json``), for the
  ``distill_sampled`` loss only.

The teacher is frozen: its parameters are an argument of the jitted train step (not a baked-in constant)
and its logits pass through ``stop_gradient``. It must share the student's tokenizer: a run teacher's
tokenizer fingerprint must equal the student's, an HF teacher's vocabulary size must (and its
``tokenizer.model``, when there, must have the same fingerprint); otherwise loading fails naming both.

On the fly vs precomputed (``distill_sampled``):

- on the fly: a teacher forward pass inside every step (for a teacher 2-4x the student, the step costs
  roughly 1.3-2x a next-token step), no disk, and fresh samples every time a sequence comes back (each
  epoch, each step key);
- precomputed: the teacher runs once per sequence; each step reads ``k`` (index, probability) pairs per
  token from disk (uint16/int32 + float16: ``k * 4`` bytes per token for vocabularies <= 65,536, 1 KiB at
  k = 256, so 1 GiB per million tokens), the samples are fixed (a sequence seen twice gets the same
  target), and ``tau`` for the teacher is frozen at precompute time. Worth it when the teacher is large
  and the student sees the data about once; on a small CPU run the disk and IO cost more than the
  teacher forward does.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import arch
from experiments import checkpoint
from experiments.data.io import atomic_write_bytes
from experiments.data.tokenizer import load_tokenizer
from experiments.distill.losses import DEFAULT_K, sample_teacher
from experiments.trained import load_trained

SAMPLED_META = "sampled.json"


@dataclasses.dataclass(frozen=True)
class Teacher:
    """A frozen teacher: ``params``/``static`` (a model; None for precomputed samples), ``store`` (the
    precomputed samples, else None) and ``info`` (what the student's summary records)."""

    params: Any
    static: Any
    info: dict
    store: SampledStore | None = None

    def feed(self, batches, step: int) -> dict[str, np.ndarray]:
        """Extra batch entries for step ``step``: the precomputed samples of its sequences, else none."""
        if self.store is None:
            return {}
        idx, probs = self.store.get(batch_indices(batches, step))
        return {"teacher_indices": idx, "teacher_probs": probs}


def batch_indices(batches, step: int) -> np.ndarray:
    """The training-split sequence indices of ``batches(step)`` (see
    :class:`experiments.data.batches.Batches`)."""
    epoch, k = divmod(step, batches.steps_per_epoch)
    b = batches.batch_size
    return batches.permutation(epoch)[k * b : (k + 1) * b]


def resolve(spec: str, run_dir: str | Path | None = None) -> Path:
    """``"@<hash>"`` -> the sibling run directory of ``run_dir``; anything else is a path."""
    if spec.startswith("@"):
        if run_dir is None:
            raise ValueError(f"teacher {spec!r} names a sibling run; it needs the student's run directory")
        return Path(run_dir).parent / spec[1:]
    return Path(spec)


def _kind(path: Path) -> str:
    if (path / SAMPLED_META).exists():
        return "sampled"
    if (path / "config.json").exists() and (path / checkpoint.CKPT_NAME).exists():
        return "run"
    if (path / "config.json").exists() and any(path.glob("*.safetensors*")):
        return "hf"
    raise ValueError(f"teacher {str(path)!r} is not a trained run directory (config.json + "
                     f"{checkpoint.CKPT_NAME} + summary.json), a Hugging Face folder (config.json + "
                     f"*.safetensors) or precomputed samples ({SAMPLED_META})")


def _mismatch(path: Path, what: str, teacher: Any, student: Any) -> ValueError:
    return ValueError(f"teacher {str(path)!r} and the student do not share a tokenizer: teacher {what} "
                      f"{teacher!r}, student {what} {student!r}; distillation compares distributions "
                      f"over the same vocabulary")


def load_teacher_model(path: str | Path, tokenizer) -> tuple[eqx.Module, dict]:
    """``(model, info)`` of a run-directory or HF teacher, after checking it shares ``tokenizer``."""
    path = Path(path)
    kind = _kind(path)
    if kind == "run":

        if not (path / "summary.json").exists():
            raise ValueError(f"teacher run {str(path)!r} has no summary.json: it is not trained yet. "
                             f"Train it first (a sweep lists the teacher before its students; with "
                             f"--shard, run the shard holding the teacher first)")
        model, tok, run = load_trained(path)
        summary = json.loads((path / "summary.json").read_text())
        if tok.fingerprint != tokenizer.fingerprint:
            raise _mismatch(path, "tokenizer fingerprint", tok.fingerprint, tokenizer.fingerprint)
        info = {"kind": "run", "path": str(path), "run": run.short_hash(), "preset": run.preset,
                "steps": run.steps, "tokens_seen": summary.get("tokens_seen"),
                "final_val_ppl": summary.get("final_val_ppl")}
    elif kind == "hf":
        model = arch.from_hf(path)
        if (path / "tokenizer.model").exists():

            fp = load_tokenizer(path / "tokenizer.model").fingerprint
            if fp != tokenizer.fingerprint:
                raise _mismatch(path, "tokenizer fingerprint", fp, tokenizer.fingerprint)
        info = {"kind": "hf", "path": str(path)}
    else:
        raise ValueError(f"teacher {str(path)!r} holds precomputed samples, not a model")
    if model.cfg.vocab_size != tokenizer.vocab_size:
        raise _mismatch(path, "vocab_size", model.cfg.vocab_size, tokenizer.vocab_size)
    info["params"] = arch.count_params(model.cfg)["total"]
    return model, info


def load_teacher(run, data, run_dir: str | Path | None = None) -> Teacher | None:
    """The frozen teacher of ``run`` (None when it has none), checked against ``data.tokenizer``."""
    if run.teacher is None:
        return None
    path = resolve(run.teacher, run_dir)
    if _kind(path) == "sampled":
        store = SampledStore(path)
        meta = store.meta
        if meta["tokenizer_fingerprint"] != data.tokenizer.fingerprint:
            raise _mismatch(path, "tokenizer fingerprint", meta["tokenizer_fingerprint"],
                            data.tokenizer.fingerprint)
        if meta["seq_len"] != run.seq_len or run.loss != "distill_sampled":
            raise ValueError(f"precomputed samples {str(path)!r} (seq_len {meta['seq_len']}) serve the "
                             f"'distill_sampled' loss at that seq_len; run has loss={run.loss!r}, "
                             f"seq_len={run.seq_len}")
        info = {"kind": "sampled", "path": str(path), **{k: meta[k] for k in ("k", "tau", "teacher")}}
        return Teacher(None, None, info, store)
    model, info = load_teacher_model(path, data.tokenizer)
    params, static = eqx.partition(model, eqx.is_inexact_array)
    return Teacher(params, static, info)


# ------------------------------------------------------------------------- precomputed sampled targets
class SampledStore:
    """Precomputed ``(indices, probs)`` per token, in ``.npy`` shards of whole sequences (memory-mapped)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.meta = json.loads((self.path / SAMPLED_META).read_text())
        self.where = {}  # sequence index -> (shard, row)
        for s, seqs in enumerate(self.meta["shards"]):
            self.where.update({int(q): (s, r) for r, q in enumerate(seqs)})
        self._open: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def _shard(self, s: int) -> tuple[np.ndarray, np.ndarray]:
        if s not in self._open:
            self._open[s] = (np.load(self.path / f"indices-{s:05d}.npy", mmap_mode="r"),
                             np.load(self.path / f"probs-{s:05d}.npy", mmap_mode="r"))
        return self._open[s]

    def get(self, sequences) -> tuple[np.ndarray, np.ndarray]:
        missing = [int(q) for q in sequences if int(q) not in self.where]
        if missing:
            raise KeyError(f"{self.path}: no precomputed samples for training sequences {missing[:8]}; "
                           f"precompute_sampled(..., sequences=run_sequences(...)) for this run's steps")
        rows = [self.where[int(q)] for q in sequences]
        idx = np.stack([self._shard(s)[0][r] for s, r in rows])
        probs = np.stack([self._shard(s)[1][r] for s, r in rows])
        return idx, probs


def run_sequences(batches, steps: int) -> np.ndarray:
    """Sorted unique training-sequence indices that steps ``0..steps-1`` of ``batches`` read."""
    return np.unique(np.concatenate([batch_indices(batches, s) for s in range(steps)]))


def precompute_sampled(teacher_dir: str | Path, data, out_path: str | Path, k: int = DEFAULT_K, *,
                       sequences=None, tau: float = 1.0, seed: int = 0, shard_size: int = 64,
                       batch_size: int = 4) -> Path:
    """Gemma 3 section 2.2 offline: draw ``k`` teacher entries per token (Gumbel-top-k, as
    :func:`experiments.distill.losses.sample_teacher`) for the training sequences ``sequences`` of ``data``
    (default all; :func:`run_sequences` gives one run's) and write them as ``.npy`` shards."""
    out = Path(out_path)
    out.mkdir(parents=True, exist_ok=True)
    model, info = load_teacher_model(teacher_dir, data.tokenizer)
    v = model.cfg.vocab_size
    if not (isinstance(k, int) and 1 <= k <= v):
        raise ValueError(f"precompute_sampled: k={k!r}; must be an int in [1, vocab_size={v}]")
    seqs = np.arange(len(data.train)) if sequences is None else np.asarray(sequences, np.int64)
    idx_dtype = np.uint16 if v <= 2**16 else np.int32
    params, static = eqx.partition(model, eqx.is_inexact_array)

    @jax.jit
    def draw(params, tokens, segment_ids, qs):
        m = eqx.combine(params, static)

        def one(tok, seg, q):
            z = m(tok, segment_ids=seg).astype(jnp.float32) / tau
            t = z.shape[0]
            n = t // max(d for d in range(1, min(128, t) + 1) if t % d == 0)  # chunks of <= 128 tokens
            keys = jax.random.split(jax.random.fold_in(jax.random.key(seed), q), n)
            pair = lambda zz, kk: jnp.stack(  # noqa: E731  (indices exactly representable in f32)
                [a.astype(jnp.float32) for a in sample_teacher(zz, kk, k)])
            return jax.lax.map(lambda xs: pair(*xs), (z.reshape(n, -1, v), keys))

        return jax.vmap(one)(tokens, segment_ids, qs)

    shards = []
    for s, start in enumerate(range(0, len(seqs), shard_size)):
        part = seqs[start : start + shard_size]
        idx_out, p_out = [], []
        for i in range(0, len(part), batch_size):
            q = part[i : i + batch_size]
            b = data.train.get(q)
            r = np.asarray(draw(params, b.inputs, b.segment_ids, jnp.asarray(q, jnp.uint32)))
            r = r.transpose(0, 2, 1, 3, 4).reshape(len(q), 2, -1, k)  # [B, 2, t, k]
            idx_out.append(r[:, 0].astype(idx_dtype))
            p_out.append(r[:, 1].astype(np.float16))
        np.save(out / f"indices-{s:05d}.npy", np.concatenate(idx_out))
        np.save(out / f"probs-{s:05d}.npy", np.concatenate(p_out))
        shards.append([int(x) for x in part])
    meta = {"teacher": info, "k": k, "tau": tau, "seed": seed, "seq_len": data.train.seq_len,
            "tokenizer_fingerprint": data.tokenizer.fingerprint, "vocab_size": v, "shards": shards}
    atomic_write_bytes(out / SAMPLED_META, json.dumps(meta, indent=1).encode())  # written last: complete
    return out
