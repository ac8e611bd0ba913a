"""``load_trained(run_dir)``: a finished (or checkpointed) training run read back as a model; and
``save_served`` / ``load_served``: a model stored as it is served, its weights packed in a quantized
format (``arch.quant.pack_model``: integer codes and bf16 scales, every other array in bf16).

Used by evaluations, sweeps, sampling, teachers, runs that start from another's weights
(``RunConfig.init``) and notebooks; the params are the leading part of the ``(params, opt_state)``
checkpoint the training loop writes.
"""

from __future__ import annotations

import json
from pathlib import Path

import equinox as eqx
import jax

import arch
from arch import quant
from arch.config import ModelConfig
from experiments import checkpoint
from experiments.data.corpus import load_corpus
from experiments.data.tasks import TaskVocab
from experiments.data.tokenizer import Tokenizer, get_tokenizer, load_tokenizer
from experiments.runconfig import RunConfig


def resolve_run(spec: str, run_dir: str | Path | None = None) -> Path:
    """``"@<hash>"`` -> the sibling run directory of ``run_dir``; anything else is a path."""
    if spec.startswith("@"):
        if run_dir is None:
            raise ValueError(f"{spec!r} names a sibling run; it needs the run directory it is a sibling of")
        return Path(run_dir).parent / spec[1:]
    return Path(spec)


def initial_params(run: RunConfig, run_dir: str | Path, params, tokenizer):
    """The weights ``run`` starts from: ``params`` (a fresh initialisation), or with ``run.init`` the
    trained weights of that run, after checking they fit (same parameter shapes, same tokenizer)."""
    if run.init is None:
        return params
    path = resolve_run(run.init, run_dir)
    if not (path / "summary.json").exists():
        raise ValueError(f"RunConfig.init={run.init!r}: {str(path)!r} is not a finished run (no "
                         f"summary.json); train it first (a sweep lists it before the runs starting from it)")
    model, tok, _ = load_trained(path)
    if tok.fingerprint != tokenizer.fingerprint:
        raise ValueError(f"RunConfig.init={run.init!r}: its tokenizer {tok.fingerprint} is not this run's "
                         f"{tokenizer.fingerprint}")
    # leaves, not tree structures: the module tree's static config differs (e.g. a QAT run's format)
    loaded = jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_inexact_array))
    own, treedef = jax.tree_util.tree_flatten(params)
    if [(x.shape, x.dtype) for x in loaded] != [(x.shape, x.dtype) for x in own]:
        raise ValueError(f"RunConfig.init={run.init!r}: the trained model's parameters do not have this "
                         f"run's shapes (its config: {model.cfg}); init needs the same architecture")
    return jax.tree_util.tree_unflatten(treedef, loaded)


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


def save_served(model: eqx.Module, path: str | Path, fmt: str | None = None) -> int:
    """Store ``model`` in ``fmt`` (default: its ``cfg.weight_format``) at ``path`` (an atomic,
    checksummed :mod:`experiments.checkpoint` folder) and return the bytes of its arrays, which equal
    ``arch.memory.weights_bytes(model.cfg, fmt)``: what is measured is what is stored."""
    fmt = fmt or model.cfg.weight_format
    if fmt not in quant.FORMATS:
        raise ValueError(f"save_served: format {fmt!r}: must be one of {quant.FORMATS} (or the model's "
                         f"ModelConfig.weight_format)")
    packed = quant.pack_model(model, fmt, model.cfg.quant_targets)
    checkpoint.save(path, packed, {"weight_format": fmt, "model_config": model.cfg.to_dict()})
    return quant.packed_bytes(packed)


def load_served(path: str | Path) -> tuple[eqx.Module, eqx.Module]:
    """``(packed, model)`` from :func:`save_served`: the stored arrays exactly as written, and the model
    they serve (float32 weights, dequantized once; its ``weight_format`` is None, as the weights
    already are the served ones)."""
    _, meta = checkpoint.read(path)
    cfg = ModelConfig(**meta["model_config"]).replace(weight_format=None)
    abstract = eqx.filter_eval_shape(arch.LM, cfg, key=jax.random.key(0))
    like = eqx.filter_eval_shape(quant.pack_model, abstract, meta["weight_format"], cfg.quant_targets)
    packed, _ = checkpoint.restore(path, like)
    return packed, quant.unpack_model(packed, abstract)
