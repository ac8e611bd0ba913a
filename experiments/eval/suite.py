"""Evaluations of a trained ``arch.LM``: the long-range probes that separate local, global and
recurrent layers, run with settings scaled to the model's window and flattened for ``summary.json``.

The probes themselves (``loss_by_position``, ``passkey``, ``mqar``) live in `experiments.eval.probes` and
take any batched ``logits_fn``; this module adapts a model to that interface and picks the settings.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from experiments.eval.probes import (
    Accuracy,
    BucketedLoss,
    ByBucket,
    ByDistance,
    LogitsFn,
    default_buckets,
    distance_edges,
    loss_by_position,
    mqar,
    passkey,
    task_accuracy,
)

__all__ = [
    "Accuracy",
    "BucketedLoss",
    "ByBucket",
    "ByDistance",
    "LogitsFn",
    "default_buckets",
    "digit_ids",
    "distance_edges",
    "loss_by_position",
    "model_logits_fn",
    "mqar",
    "passkey",
    "probe_distances",
    "run_probes",
    "task_accuracy",
]


# The model is an argument, not a closure: a closed-over model would be baked into the compiled
# program as constants (slow to compile, and recompiled for every new set of weights).
@eqx.filter_jit
def _logits(model, tokens):
    return model(tokens)  # one sequence [T] or a batch [B, T] (one product per projection)


def model_logits_fn(model, *, batch_jit: bool = True) -> LogitsFn:
    """``tokens int32[B, T] -> logits[B, T, V]`` for an ``arch.LM``.

    ``batch_jit=True`` compiles the batched model once per (B, T); ``False`` compiles one sequence and
    loops over rows, which keeps only one sequence's activations alive (for long T on little memory).
    """
    if batch_jit:
        return lambda tokens: _logits(model, jnp.asarray(tokens, jnp.int32))
    return lambda tokens: jnp.stack([_logits(model, jnp.asarray(row, jnp.int32)) for row in tokens])


def digit_ids(tokenizer) -> np.ndarray | None:
    """Ids of the pieces "0".."9" (or their byte-fallback pieces), or None if some digit has neither.

    Gemma tokenizers split digits one per token, so a digit passkey is a string of single-token keys.
    """
    found: dict[str, int] = {}
    for i in range(tokenizer.vocab_size):
        piece = tokenizer.id_to_piece(i)
        for d in "0123456789":
            if piece == d or (piece == f"<0x{ord(d):02X}>" and d not in found):
                found[d] = i
    return np.array([found[d] for d in "0123456789"], np.int32) if len(found) == 10 else None


def probe_distances(window: int, max_distance: int) -> tuple[int, ...]:
    """window/2 (inside a local layer's reach), 2*window and 4*window (beyond it), capped at the
    longest distance the sequence length allows; duplicates after capping are dropped."""
    wanted = (max(1, window // 2), 2 * window, 4 * window)
    return tuple(sorted({min(d, max_distance) for d in wanted if max_distance >= 1}))


def run_probes(
    model,
    tokenizer,
    val_batch,
    *,
    window: int,
    seq_len: int,
    quick: bool = False,
    seed: int = 0,
    batch_size: int | None = None,
) -> dict[str, float]:
    """All probes on one model, as a flat ``{metric: float}`` dict for ``summary.json``.

    - ``loss_pos_{lo}_{hi}``: validation loss by position bucket (`window` is one of the edges);
    - ``passkey_{d}``, ``passkey_mean``, ``passkey_chance``: digit passkey at distances window/2,
      2*window and 4*window (capped by seq_len), 4 choices;
    - ``mqar_gap_{g}``, ``mqar_mean``, ``mqar_chance``: associative recall with the same gaps.

    Every sequence is `seq_len` tokens long (one compile per probe). Filler is drawn from the
    validation tokens, so the model sees in-distribution text around the planted information.
    `tokenizer` (optional) supplies the digit keys and BOS as the passkey marker; without it, mid-
    vocabulary ids stand in. `quick` cuts trials and rows for CI.

    Cost: about 28 (quick) or 80 (default) forward passes of `seq_len` tokens, at one compile (every
    call has the shape [batch_size, seq_len]); a d=256, 6-layer model at seq_len=1024 takes ~0.5 s a
    sequence on 2 CPU cores.
    """
    fn = model_logits_fn(model)
    batch_size = batch_size or (4 if quick else 8)
    vocab = model.cfg.vocab_size
    out: dict[str, float] = {}
    stream = None
    if val_batch is not None:
        rows = batch_size
        inputs = np.asarray(val_batch.inputs)[:rows, :seq_len]
        targets = np.asarray(val_batch.targets)[:rows, :seq_len]
        stream = inputs.ravel()
        bl = loss_by_position(fn, inputs, targets, buckets=default_buckets(inputs.shape[1], window),
                              batch_size=batch_size)
        out |= {f"loss_pos_{lo}_{hi}": v for (lo, hi), v in bl.loss.items()}

    keys = marker = None
    if tokenizer is not None:
        keys = digit_ids(tokenizer)
        # BOS never occurs in a packed stream (documents are joined by EOS only): as the marker it leaves
        # the filler text intact (only digits are replaced there), and the needle is its one occurrence.
        marker = [tokenizer.bos_id] if keys is not None and tokenizer.bos_id >= 0 else None
        keys = keys if marker is not None else None
    key_len = 4
    distances = probe_distances(window, seq_len - 2 * (1 + key_len))
    trials = 4 if quick else 16
    pk = passkey(fn, vocab_size=vocab, distances=distances, trials=trials, num_choices=4, seed=seed,
                 filler=stream, key_len=key_len, candidates=keys, marker=marker, seq_len=seq_len,
                 batch_size=batch_size)
    out |= {f"passkey_{d}": a for d, a in pk.accuracy.items()}
    out["passkey_mean"] = float(np.mean(list(pk.accuracy.values())))
    out["passkey_chance"] = pk.chance

    # Each MQAR trial asks num_pairs questions, so fewer trials give as many scored answers.
    num_pairs = min(8 if quick else 16, max(1, seq_len // 16))
    accs = []
    for gap in probe_distances(window, seq_len - 4 * num_pairs):
        res = mqar(fn, vocab_size=vocab, num_pairs=num_pairs, gap=gap, trials=batch_size,
                   seed=seed, filler=stream, seq_len=seq_len, batch_size=batch_size)
        out[f"mqar_gap_{gap}"] = res.accuracy
        accs.append(res.accuracy)
    out["mqar_mean"] = float(np.mean(accs))
    out["mqar_chance"] = res.chance
    return out
