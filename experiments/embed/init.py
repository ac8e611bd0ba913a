"""Initialisations of the embedding trunk (EmbeddingGemma section 2.1 and Table 2).

- ``random``: a fresh bidirectional trunk;
- ``decoder``: a decoder LM trained by this repository's own loop (:func:`experiments.train.train`,
  cached under ``<root>/embedding_lm/<hash>/``), its attention switched to bidirectional with
  ``arch.reconfigure(model, causal=False)`` and its weights copied into the ``EmbeddingModel``;
- ``encoder``: that decoder adapted with a short bidirectional denoising phase, standing in for the
  report's UL2 encoder-decoder adaptation (T5Gemma): spans are replaced by a sentinel token and the
  bidirectional trunk predicts the original tokens there through the tied output layer. The length
  is kept (one sentinel per masked token) because there is no decoder to emit the spans.
"""

from __future__ import annotations

import json
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import arch
from arch.embedding import EmbeddingModel, from_lm
from experiments.data.batches import prepare_data
from experiments.data.corpus import load_corpus
from experiments.loop import fit
from experiments.optim import adamw
from experiments.runconfig import RunConfig
from experiments.train import load_trained, train

INITS = ("random", "decoder", "encoder")
NOISE_DENSITY, MEAN_SPAN = 0.15, 3.0  # T5's span-corruption defaults


def span_mask(rng: np.random.Generator, length: int, density: float = NOISE_DENSITY,
              mean_span: float = MEAN_SPAN) -> np.ndarray:
    """A boolean mask over ``length`` tokens with about ``density * length`` positions in spans of
    geometric length with mean ``mean_span`` (T5 / UL2 "R-denoiser" shape)."""
    mask = np.zeros(length, bool)
    target = max(1, int(round(density * length)))
    while mask.sum() < target:
        span = min(int(rng.geometric(1.0 / mean_span)), length)
        start = int(rng.integers(0, length - span + 1))
        mask[start:start + span] = True
    return mask


def denoising_loss(model: arch.LM, corrupted, original, mask) -> jax.Array:
    """Cross-entropy of the original tokens at the masked positions (tied output layer)."""

    logits = model(corrupted).astype(jnp.float32)  # the whole [B, T] batch in one call
    nll = jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, original[..., None], -1)[..., 0]
    m = mask.astype(jnp.float32)
    return jnp.sum(nll * m) / jnp.maximum(jnp.sum(m), 1.0)


def adapt_encoder(lm: arch.LM, tokenizer, run_dir: Path, *, steps: int, batch: int, seq_len: int,
                  lr: float, seed: int, progress: bool = False) -> arch.LM:
    """The bidirectional denoising phase (see module docstring) on the default corpus' training split,
    by the one training loop (:func:`experiments.loop.fit`) in ``run_dir``: a finished phase is read
    back from its checkpoint, an interrupted one resumes."""
    model = arch.reconfigure(lm, causal=False) if lm.cfg.causal else lm
    data = prepare_data(load_corpus(None), tokenizer, seq_len)
    batches = data.batches(batch, seed + 1)
    sentinel = tokenizer.unk_id  # byte fallback: <unk> never occurs in real text, a free sentinel
    # every parameter decayed (mask=None), as this phase has always trained
    opt = adamw(lr, steps, warmup=max(steps // 10, 1), min_lr_ratio=0.1, weight_decay=0.1, clip=1.0,
                mask=None)
    params, static = eqx.partition(model, eqx.is_inexact_array)
    # the spans of every step drawn up front, in order: step s's corruption is fixed whatever step a
    # resumed attempt starts from (a span mask depends on the length only, not on the tokens)
    rng = np.random.default_rng(seed)
    masks = [np.stack([span_mask(rng, seq_len) for _ in range(batch)]) for _ in range(steps)]

    @jax.jit
    def step(params, state, c, o, m):
        loss, g = jax.value_and_grad(lambda p: denoising_loss(eqx.combine(p, static), c, o, m))(params)
        upd, state = opt.update(g, state, params)
        return optax.apply_updates(params, upd), state, {"loss": loss, "grad_norm": optax.tree.norm(g)}

    def advance(state, s: int, n: int):
        original = np.asarray(batches.batch(s).inputs)
        corrupted = np.where(masks[s], sentinel, original).astype(np.int32)
        params, opt_state, m = step(*state, corrupted, original, masks[s])
        return (params, opt_state), m

    fitted = fit((params, opt.init(params)), advance, run_dir=run_dir, steps=steps, seed=seed,
                 log_every=25, ckpt_every=steps, tokens_per_step=batch * seq_len, progress=progress,
                 desc="denoise")
    return eqx.combine(fitted.state[0], static)


def lm_run(cfg_preset: str, overrides: tuple, *, vocab_size: int, steps: int, batch: int, seq_len: int,
           lr: float, seed: int) -> RunConfig:
    """The decoder pretraining run: the embedding trunk's shape, causal, trained as an LM."""
    over = (*overrides, ("causal", True))
    return RunConfig(preset=cfg_preset, overrides=over, vocab_size=vocab_size, steps=steps, batch=batch,
                     seq_len=seq_len, lr=lr, warmup=max(steps // 10, 1), seed=seed, matmul_dtype="float32",
                     eval_every=steps, eval_batches=2, ckpt_every=steps, log_every=max(steps // 10, 1))


def scale_blocks(model: EmbeddingModel, gain: float) -> EmbeddingModel:
    """Every block's post-norm gains ``(1 + w)`` multiplied by ``gain`` (``w -> gain * (1 + w) - 1``).

    A small gain starts each block near the identity, so the pooled embedding is close to the mean of
    the (scaled) input token embeddings: token identity survives the trunk at the start of
    fine-tuning, and the gains are trained from there. ``gain=1`` returns ``model`` unchanged."""
    if gain == 1.0:
        return model
    if not model.cfg.post_norms:
        raise ValueError(f"block_gain={gain}: needs post-norms (ModelConfig.post_norms=True)")
    norms = lambda m: [n for b in m.trunk.blocks for n in (b.post_mixer_norm, b.post_mlp_norm)]
    return eqx.tree_at(lambda m: [n.weight for n in norms(m)], model,
                       [gain * (1.0 + n.weight) - 1.0 for n in norms(model)])


def with_token_table(model: EmbeddingModel, vectors: np.ndarray) -> EmbeddingModel:
    """``model`` with its token table replaced by ``vectors`` ``[vocab, width]`` rescaled to the
    table's current root-mean-square (so the trunk sees inputs of the size it was built for)."""
    old = model.trunk.embed
    if vectors.shape != old.shape:
        raise ValueError(f"token table {vectors.shape}: the model's is {old.shape}")
    v = jnp.asarray(vectors, old.dtype)
    v = v * jnp.sqrt(jnp.mean(old**2) / jnp.maximum(jnp.mean(v**2), 1e-12))
    return eqx.tree_at(lambda m: m.trunk.embed, model, v)


def initial_model(ec, tokenizer, *, lm_root: Path, key, vocab_vectors: np.ndarray | None = None,
                  progress: bool = False) -> tuple[EmbeddingModel, dict]:
    """The ``EmbeddingModel`` to fine-tune under ``ec.init``, its blocks scaled by ``ec.block_gain``
    and, with ``ec.embed_init == "teacher"``, its token table from ``vocab_vectors`` (the teacher's
    vectors of the vocabulary, :func:`experiments.embed.teacher.vocabulary_vectors`); and facts about
    it for the summary."""
    model, info = _initial_model(ec, tokenizer, lm_root=lm_root, key=key, progress=progress)
    if ec.embed_init == "teacher":
        if vocab_vectors is None:
            raise ValueError("embed_init='teacher' needs a teacher (EmbedConfig.teacher found none)")
        model = with_token_table(model, vocab_vectors)
        info["embed_init"] = "teacher"
    return scale_blocks(model, ec.block_gain), info


def _initial_model(ec, tokenizer, *, lm_root: Path, key, progress: bool) -> tuple[EmbeddingModel, dict]:
    cfg = ec.model_config(tokenizer.vocab_size)
    head = dict(dense_dims=ec.dense_dims(), pooling=ec.pooling)
    if ec.init == "random":
        return EmbeddingModel(cfg, key=key, **head), {"init": "random"}
    if ec.init not in INITS:
        raise ValueError(f"init={ec.init!r}: must be one of {INITS}")

    run = lm_run(ec.preset, ec.overrides, vocab_size=ec.vocab_size, steps=ec.lm_steps, batch=ec.lm_batch,
                 seq_len=ec.lm_seq_len, lr=ec.lm_lr, seed=ec.init_seed)
    lm_dir = Path(lm_root) / run.short_hash()
    lm_summary = train(run, lm_dir, progress=progress)
    lm, _, _ = load_trained(lm_dir)
    info = {"init": ec.init, "lm_run": str(lm_dir), "lm_val_loss": lm_summary.get("final_val_loss")}
    if ec.init == "encoder":
        lm = adapt_encoder(lm, tokenizer, lm_dir / f"encoder-{ec.adapt_steps}-{ec.adapt_seq_len}",
                           steps=ec.adapt_steps, batch=ec.lm_batch, seq_len=ec.adapt_seq_len,
                           lr=ec.lm_lr * 0.5, seed=ec.init_seed, progress=progress)
        info["adapt_steps"] = ec.adapt_steps
    if lm.cfg.replace(causal=False, matmul_dtype=cfg.matmul_dtype) != cfg.replace(causal=False):
        raise ValueError(f"init={ec.init}: the decoder's config differs from the embedding trunk's: "
                         f"{json.dumps(lm.cfg.to_dict())} vs {json.dumps(cfg.to_dict())}")
    model = from_lm(lm, key=key, **head)
    if model.cfg != cfg:  # e.g. the matmul dtype: same weights, the fine-tuning config
        model = eqx.tree_at(lambda m: m.trunk, model, arch.reconfigure(model.trunk, **{
            k: v for k, v in cfg.to_dict().items() if getattr(model.cfg, k) != v}))
    return model, info
