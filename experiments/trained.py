"""``load_trained(run_dir)``: a finished (or checkpointed) training run read back as a model.

Used by evaluations, sweeps, sampling, teachers and notebooks; the params are the leading part of the
``(params, opt_state)`` checkpoint the training loop writes.
"""

from __future__ import annotations

import json
from pathlib import Path

import equinox as eqx
import jax

import arch
from experiments import checkpoint
from experiments.data.corpus import load_corpus
from experiments.data.tasks import TaskVocab
from experiments.data.tokenizer import Tokenizer, get_tokenizer, load_tokenizer
from experiments.runconfig import RunConfig


def load_trained(run_dir: str | Path) -> tuple[eqx.Module, Tokenizer, RunConfig]:
    """``(model, tokenizer, run)`` from a run directory's final checkpoint, for evals and notebooks."""
    run_dir = Path(run_dir)
    run = RunConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
    summary_path = run_dir / "summary.json"
    tok_path = run.tokenizer
    if tok_path is None and summary_path.exists():
        tok_path = json.loads(summary_path.read_text()).get("tokenizer_path")
    if run.pure_task:
        tok = TaskVocab(run.vocab_size)
    elif tok_path is not None and Path(tok_path).exists():
        tok = load_tokenizer(tok_path)
    else:
        tok = get_tokenizer(load_corpus(run.data), vocab_size=run.vocab_size)
    cfg = run.model_config(tok.vocab_size)
    abstract = eqx.filter_eval_shape(arch.LM, cfg, key=jax.random.key(0))
    return checkpoint.load_params(run_dir / checkpoint.CKPT_NAME, abstract), tok, run
