"""Teachers for logit distillation (Gemma 2 section 3.2, Gemma 3 section 2.2): load and check.

``RunConfig.teacher`` names one of:

- a run directory the training loop produced (``config.json`` + checkpoint + ``summary.json``), or
  ``"@<short hash>"``: a sibling run of the same sweep directory (so a sweep's configs do not depend on
  ``--out``). Loaded with :func:`experiments.train.load_trained`;
- a Hugging Face checkpoint folder (``config.json`` + safetensors), loaded with :func:`arch.from_hf`.

The teacher is frozen: its parameters are an argument of the jitted train step (not a baked-in constant)
and its logits pass through ``stop_gradient``. It must share the student's tokenizer: a run teacher's
tokenizer fingerprint must equal the student's, an HF teacher's vocabulary size must (and its
``tokenizer.model``, when there, must have the same fingerprint); otherwise loading fails naming both.
``distill_sampled`` draws its ``k`` teacher entries on the fly, inside the step, from the teacher's logits.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import equinox as eqx

import arch
from experiments import checkpoint
from experiments.data.tokenizer import load_tokenizer
from experiments.trained import load_trained, resolve_run


@dataclasses.dataclass(frozen=True)
class Teacher:
    """A frozen teacher: ``params``/``static`` (its model) and ``info`` (what the student's summary
    records)."""

    params: Any
    static: Any
    info: dict

def _kind(path: Path) -> str:
    """"run" or "hf"; a run directory holding only the older single-file checkpoint raises
    ``checkpoint.CheckpointError`` with the command that converts it."""
    if (path / "config.json").exists() and checkpoint.exists(path / checkpoint.CKPT_NAME):
        return "run"
    if (path / "config.json").exists() and any(path.glob("*.safetensors*")):
        return "hf"
    raise ValueError(f"teacher {str(path)!r} is not a trained run directory (config.json + "
                     f"{checkpoint.CKPT_NAME} + summary.json), a Hugging Face folder (config.json + "
                     f"*.safetensors)")


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
    if model.cfg.vocab_size != tokenizer.vocab_size:
        raise _mismatch(path, "vocab_size", model.cfg.vocab_size, tokenizer.vocab_size)
    info["params"] = arch.count_params(model.cfg)["total"]
    return model, info


def load_teacher(run, data, run_dir: str | Path | None = None) -> Teacher | None:
    """The frozen teacher of ``run`` (None when it has none), checked against ``data.tokenizer``."""
    if run.teacher is None:
        return None
    path = resolve_run(run.teacher, run_dir)
    model, info = load_teacher_model(path, data.tokenizer)
    params, static = eqx.partition(model, eqx.is_inexact_array)
    return Teacher(params, static, info)
