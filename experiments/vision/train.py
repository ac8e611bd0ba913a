"""Train a small :class:`arch.multimodal.MultimodalLM` to read synthetic documents, and score it by the
exact match of its greedy answers (Gemma 3 report section 2.1; the DocVQA / InfoVQA / TextVQA columns
of Tables 7-8 at CPU scale).

Training goes through the one loop, :func:`experiments.loop.fit`: the run directory holds
``config.json``, ``metrics.jsonl``, ``checkpoint.ckpt`` (an interrupted run resumes from it, exactly:
batch ``s`` is a pure function of the seed and ``s``) and ``summary.json`` (written last). The loss is
next-token cross-entropy on the answer's tokens and the ``eos`` that ends it only: the image and the
question are context, never targets. Training reads every page whole (no pan & scan): as in the
report, pan & scan is an inference-time option (:func:`evaluate`).

Exact match comes from one teacher-forced pass: greedy decoding reproduces the answer exactly if and
only if every answer position's argmax, given the true prefix, is the true next token (if each is, the
greedy prefix never leaves the true one; if one is not, greedy emits that wrong token there), so the
accuracy of greedy answers costs a forward pass, not one per answer token.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import arch
from arch.multimodal import MultimodalLM
from arch.vision import count_vision_params
from experiments import checkpoint
from experiments.data.io import write_json
from experiments.loop import fit, open_run
from experiments.vision.config import ReadConfig
from experiments.vision.data import (
    BOI,
    EOI,
    HELD_OUT,
    IMAGE,
    TRAIN,
    Batch,
    Example,
    example,
    make_batch,
    seq_len,
    view_groups,
)
from experiments.xent import xent


def build_model(rc: ReadConfig, key) -> MultimodalLM:
    return MultimodalLM(rc.model_config(), rc.vision_config(), image_token=IMAGE, boi_token=BOI,
                        eoi_token=EOI, key=key)


def train_batch(rc: ReadConfig, step: int) -> Batch:
    """Training batch ``step`` of seed ``rc.seed``: whole pages, one view each."""
    exs = [example(TRAIN, rc.seed, step * rc.batch + j, **rc.doc_kwargs()) for j in range(rc.batch)]
    return make_batch(exs, rc.vision_config(), rc.max_digits)


def held_out(rc: ReadConfig) -> list[Example]:
    """The evaluation documents: stream ``HELD_OUT`` of ``data_seed``, never trained on."""
    return [example(HELD_OUT, rc.data_seed, i, **rc.doc_kwargs()) for i in range(rc.eval_docs)]


def answer_loss(model: MultimodalLM, tokens, images, mask) -> jax.Array:
    """Mean cross-entropy over the answer positions of the batch (``mask``), each sequence weighted by
    its answer's length."""
    logits = model(tokens, images)
    targets = jnp.concatenate([tokens[:, 1:], jnp.zeros_like(tokens[:, :1])], axis=1)
    per_seq = jax.vmap(xent)(logits, targets, mask)
    weight = mask.sum(-1)
    return jnp.sum(per_seq * weight) / jnp.maximum(weight.sum(), 1.0)


def make_step(static, optimizer):
    def step(params, opt_state, tokens, images, mask):
        loss, grads = jax.value_and_grad(lambda p: answer_loss(eqx.combine(p, static), tokens, images, mask))(
            params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, {"loss": loss,
                                                                 "grad_norm": optax.tree.norm(grads)}

    return jax.jit(step)


@eqx.filter_jit
def _correct(model: MultimodalLM, tokens, images, mask):
    """Per sequence: answer positions whose argmax is the next token, and whether all of them are."""
    targets = jnp.concatenate([tokens[:, 1:], jnp.zeros_like(tokens[:, :1])], axis=1)
    hit = (jnp.argmax(model(tokens, images), -1) == targets) & (mask > 0)
    return hit.sum(-1), jnp.all(hit | (mask == 0), axis=-1)


def score(model: MultimodalLM, examples: list[Example], rc: ReadConfig, rule=None) -> dict[str, np.ndarray]:
    """Per example: ``exact`` (the greedy answer is the answer, see the module docstring), ``hits`` and
    ``tokens`` (answer positions right, and answer positions), and ``views``. With ``rule`` each page is
    read as the whole page then its pan & scan crops."""
    n = len(examples)
    out = {k: np.zeros(n, dt) for k, dt in (("exact", bool), ("hits", int), ("tokens", int), ("views", int))}
    cfg = rc.vision_config()
    for views, idx in view_groups(examples, rule).items():
        for start in range(0, len(idx), rc.eval_batch):
            part = idx[start:start + rc.eval_batch]
            padded = part + [part[-1]] * (rc.eval_batch - len(part))  # one compiled shape per view count
            b = make_batch([examples[i] for i in padded], cfg, rc.max_digits, rule)
            hits, exact = jax.device_get(_correct(model, b.tokens, b.images, b.answer_mask))
            k = len(part)
            out["exact"][part], out["hits"][part] = exact[:k], hits[:k]
            out["tokens"][part], out["views"][part] = b.answer_mask[:k].sum(-1), views
    return out


def evaluate(model: MultimodalLM, rc: ReadConfig, pan_scan: bool = False) -> dict:
    """Exact match and answer-token accuracy on the held-out documents, over all of them, the wide
    pages (aspect >= ``rc.wide_from``) and the narrow ones, read whole or with pan & scan."""
    exs = held_out(rc)
    s = score(model, exs, rc, rc.pan_scan() if pan_scan else None)
    wide = np.array([ex.document.aspect >= rc.wide_from for ex in exs])
    evals = {"pan_scan": pan_scan, "mean_views_wide": float(s["views"][wide].mean())}
    for name, sel in (("", np.ones_like(wide)), ("_wide", wide), ("_narrow", ~wide)):
        if sel.any():
            evals[f"exact_match{name}"] = float(s["exact"][sel].mean())
            evals[f"token_acc{name}"] = float(s["hits"][sel].sum() / s["tokens"][sel].sum())
            evals[f"docs{name}"] = int(sel.sum())
    return evals


def abstract_model(rc: ReadConfig) -> MultimodalLM:
    return eqx.filter_eval_shape(build_model, rc, jax.random.key(0))


def load_model(run_dir: str | Path) -> tuple[MultimodalLM, ReadConfig]:
    """The trained model of a finished run directory (its final checkpoint) and its config."""
    run_dir = Path(run_dir)
    rc = ReadConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
    return checkpoint.load_params(run_dir / checkpoint.CKPT_NAME, abstract_model(rc)), rc


def train_read(rc: ReadConfig, run_dir: str | Path, *, label: str | None = None, tags: dict | None = None,
               progress: bool = True, stop_at: int | None = None) -> dict:
    """Train and evaluate ``rc`` in ``run_dir`` (skipped when its summary exists; resumed from its
    checkpoint when one is there); the summary's ``evals`` read each page whole. ``stop_at``: checkpoint
    after that many steps and return ``{"stopped_at": step}`` without a summary (as
    :func:`experiments.train.train` does)."""
    run_dir = Path(run_dir)
    if (summary := open_run(rc, run_dir)) is not None:
        return summary
    start = time.perf_counter()
    model = build_model(rc, jax.random.key(rc.seed))
    params, static = eqx.partition(model, eqx.is_inexact_array)
    optimizer = rc.optimizer()
    step = make_step(static, optimizer)

    def advance(state, s: int, n: int):  # batch s is a pure function of (rc.seed, s): exact resume
        b = train_batch(rc, s)
        params, opt_state, m = step(*state, b.tokens, b.images, b.answer_mask)
        return (params, opt_state), m

    fitted = fit((params, optimizer.init(params)), advance, run_dir=run_dir, steps=rc.steps, seed=rc.seed,
                 log_every=rc.log_every, ckpt_every=rc.ckpt_every,
                 tokens_per_step=rc.batch * seq_len(1, rc.soft_tokens, rc.max_digits),
                 evaluate=lambda state: evaluate(eqx.combine(state[0], static), rc),
                 progress=progress, desc=f"vision {label or run_dir.name}", stop_at=stop_at)
    if fitted.stopped_at is not None:
        return {"stopped_at": fitted.stopped_at}
    vision = count_vision_params(rc.vision_config(), rc.width)
    summary = {
        "label": label or run_dir.name, "tags": tags or {}, "evals": fitted.evals,
        "model_config": rc.model_config().to_dict(),
        "lm_params": arch.count_params(rc.model_config())["total"],
        "vision_params": vision["total"], "train_tokens_per_s": fitted.tokens_per_s,
        "train_seconds": round(fitted.train_seconds, 1), "seconds": round(time.perf_counter() - start, 1),
    }
    write_json(run_dir / "summary.json", summary)
    return summary
