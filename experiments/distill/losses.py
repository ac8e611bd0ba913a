"""Logit-distillation losses (Gemma 2 section 3.2, Gemma 3 section 2.2), registered in
:data:`experiments.losses.LOSSES` beside ``xent``.

Every loss has the registry's call shape ``loss(logits[t, v], targets[t], mask[t], *, teacher_logits[t, v],
tau=1.0, alpha=1.0, ...) -> scalar`` (mean over the masked tokens of one sequence) and is computed in
float32. Names, per token, with ``p_T = softmax(z_T / tau)`` and ``p_S = softmax(z_S / tau)``:

| name | per-token value | at p_S = p_T |
|---|---|---|
| ``distill`` | ``-sum_x p_T(x) log p_S(x)`` (G2 sec. 3.2) = KL(p_T‖p_S) + H(p_T) | H(p_T): its minimum |
| ``distill_kl`` | ``KL(p_T‖p_S)``: ``distill`` minus the constant H(p_T) | 0: its minimum |
| ``distill_reverse_kl`` | ``KL(p_S‖p_T)`` (mode seeking) | 0: its minimum |
| ``distill_topk`` | ``-sum_x q(x) log p_S(x)``, q = p_T on its top k, renormalised | H(q) - log m > 0 |
| ``distill_sampled`` | the same, q = p_T on k sampled entries, renormalised (G3 2.2) | H(q) - log m > 0 |

(all times ``tau**2``; m is the teacher mass on q's support). The sparse targets' minimiser is q itself,
not p_T, so for them "student == teacher" is not the minimum; their value there is H(q) - log m.

Sampling (``distill_sampled``): per token, ``k`` (default 256) entries are drawn from p_T WITHOUT replacement
by Gumbel-top-k (the top ``k`` of ``log p_T + Gumbel noise`` is an ordered sample without replacement;
Kool et al. 2019). It costs one noise draw per vocabulary entry, where ``jax.random.categorical`` with
replacement would draw ``k x v`` Gumbels per token (256 x 8192 = 2M per token: too slow on CPU). The report
does not say which it used (reference sheet section 5.2). The target keeps p_T at the drawn entries, zero
elsewhere, renormalised over the drawn set. Renormalising is biased towards the head of p_T (a tail entry is
in the set less often than its share), and the bias vanishes as ``k -> v``; the Monte Carlo test measures it.

Temperature: student and teacher logits are divided by ``tau`` and the distillation term is multiplied
by ``tau**2`` so its gradient keeps its scale as ``tau`` changes (Hinton et al. 2015, section 2).
Mixing: ``alpha * distill_term + (1 - alpha) * xent`` (xent at temperature 1 on the raw logits); alpha=1
(default) is pure distillation as in Gemma 2, alpha=0 is exactly ``xent``.

Memory: the per-token probabilities are computed ``chunk`` tokens at a time (``lax.map`` over chunks, each
chunk rematerialised in the backward pass by ``jax.checkpoint``), so at most one chunk of full-vocabulary
distributions is alive besides the logits themselves; the train step vmaps one sequence at a time.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name
from jaxtyping import Array, Float, Int

from experiments.xent import masked_mean, xent

CHUNK = 128  # tokens per chunk: 128 x 8192 x 4 B = 4 MiB per distribution array
DEFAULT_K = 256  # Gemma 3 section 2.2: 256 sampled logits per token
SPARSE = "sparse_target"  # checkpoint name of a sparse target (indices, weights): saved, not recomputed


def _check(name: str, logits: Array, teacher_logits: Array | None, tau: float, alpha: float) -> None:
    if teacher_logits is None:
        raise ValueError(f"loss {name!r} needs teacher_logits: set RunConfig.teacher to a trained run "
                         f"directory or a Hugging Face folder")
    if teacher_logits.shape != logits.shape:
        raise ValueError(f"loss {name!r}: teacher logits {tuple(teacher_logits.shape)} do not match student "
                         f"logits {tuple(logits.shape)}; teacher and student must share the tokenizer "
                         f"(same vocab_size)")
    _check_scalars(name, tau, alpha)


def _check_scalars(name: str, tau: float, alpha: float, k: int | None = None, v: int | None = None) -> None:
    if not tau > 0:
        raise ValueError(f"loss {name!r}: tau={tau!r}; must be > 0")
    if not 0 <= alpha <= 1:
        raise ValueError(f"loss {name!r}: alpha={alpha!r}; must be in [0, 1]")
    if k is not None and not (isinstance(k, int) and 1 <= k <= (v or k)):
        raise ValueError(f"loss {name!r}: k={k!r}; must be an int in [1, vocab_size={v}]")


def chunked(fn, per_token: tuple[Array, ...], per_chunk: tuple[Array, ...] = (), chunk: int = CHUNK
            ) -> Float[Array, " t"]:
    """``fn(*chunk_arrays, *chunk_extras) -> values[c]`` over the leading axis in chunks of ``chunk``
    tokens (padded at the end, padding dropped). ``per_chunk`` arrays have one row per chunk (keys)."""
    t = per_token[0].shape[0]
    c = max(1, min(chunk, t))
    n = -(-t // c)
    pad = n * c - t
    stacked = tuple(jnp.pad(a, [(0, pad)] + [(0, 0)] * (a.ndim - 1)).reshape(n, c, *a.shape[1:])
                    for a in per_token)
    # checkpoint: the backward pass recomputes a chunk's softmaxes instead of storing all of them, but
    # keeps the (small) sparse-target indices and weights: top_k is the slow part on CPU
    policy = jax.checkpoint_policies.save_only_these_names(SPARSE)
    out = jax.lax.map(jax.checkpoint(lambda xs: fn(*xs), policy=policy), (*stacked, *per_chunk))
    return out.reshape(-1)[:t]


def _finish(per_token: Float[Array, " t"], logits, targets, mask, tau: float, alpha: float
            ) -> Float[Array, ""]:
    """``alpha * tau^2 * mean(distill) + (1 - alpha) * xent``; alpha in {0, 1} skips the unused term."""
    if alpha == 0:
        return xent(logits, targets, mask)
    term = masked_mean(per_token, mask) * (tau * tau)
    if alpha == 1:
        return term
    return alpha * term + (1 - alpha) * xent(logits, targets, mask)


def sparse_xent(student: Float[Array, "c v"], idx: Int[Array, "c k"], weight: Float[Array, "c k"]
                ) -> Float[Array, " c"]:
    """``-sum_j q_j log p_S(idx_j)`` with ``q = weight / sum(weight)`` (the sparse target renormalised)."""
    logp = jax.nn.log_softmax(student, axis=-1)
    q = weight / jnp.maximum(jnp.sum(weight, axis=-1, keepdims=True), 1e-30)  # padded rows: 0, not NaN
    return -jnp.sum(q * jnp.take_along_axis(logp, idx, axis=-1), axis=-1)


def _prep(logits, teacher_logits, tau):
    return logits.astype(jnp.float32), teacher_logits.astype(jnp.float32) / tau


def distill(logits: Float[Array, "t v"], targets: Int[Array, " t"], mask: Float[Array, " t"], *,
            teacher_logits: Float[Array, "t v"] | None = None, tau: float = 1.0, alpha: float = 1.0,
            chunk: int = CHUNK) -> Float[Array, ""]:
    """Gemma 2 section 3.2: cross-entropy of the student against the full teacher distribution,
    ``-sum_x P_T(x|c) log P_S(x|c)``. Minimum ``tau^2 * H(p_T)`` (mean over tokens) at p_S = p_T."""
    _check("distill", logits, teacher_logits, tau, alpha)
    logits, zt = _prep(logits, teacher_logits, tau)

    def f(s, t):
        return -jnp.sum(jax.nn.softmax(t, axis=-1) * jax.nn.log_softmax(s / tau, axis=-1), axis=-1)

    return _finish(chunked(f, (logits, zt), chunk=chunk), logits, targets, mask, tau, alpha)


def distill_kl(logits: Float[Array, "t v"], targets: Int[Array, " t"], mask: Float[Array, " t"], *,
               teacher_logits: Float[Array, "t v"] | None = None, tau: float = 1.0, alpha: float = 1.0,
               chunk: int = CHUNK) -> Float[Array, ""]:
    """Forward ``KL(p_T || p_S)``: ``distill`` minus the teacher entropy (same gradient); 0 at p_S = p_T."""
    _check("distill_kl", logits, teacher_logits, tau, alpha)
    logits, zt = _prep(logits, teacher_logits, tau)

    def f(s, t):
        lt = jax.nn.log_softmax(t, axis=-1)
        return jnp.sum(jnp.exp(lt) * (lt - jax.nn.log_softmax(s / tau, axis=-1)), axis=-1)

    return _finish(chunked(f, (logits, zt), chunk=chunk), logits, targets, mask, tau, alpha)


def distill_reverse_kl(logits: Float[Array, "t v"], targets: Int[Array, " t"], mask: Float[Array, " t"], *,
                       teacher_logits: Float[Array, "t v"] | None = None, tau: float = 1.0,
                       alpha: float = 1.0, chunk: int = CHUNK) -> Float[Array, ""]:
    """Reverse ``KL(p_S || p_T)`` (mode seeking: the student is punished for mass where the teacher
    has little, not for missing teacher mass); 0 at p_S = p_T."""
    _check("distill_reverse_kl", logits, teacher_logits, tau, alpha)
    logits, zt = _prep(logits, teacher_logits, tau)

    def f(s, t):
        ls = jax.nn.log_softmax(s / tau, axis=-1)
        return jnp.sum(jnp.exp(ls) * (ls - jax.nn.log_softmax(t, axis=-1)), axis=-1)

    return _finish(chunked(f, (logits, zt), chunk=chunk), logits, targets, mask, tau, alpha)


def distill_topk(logits: Float[Array, "t v"], targets: Int[Array, " t"], mask: Float[Array, " t"], *,
                 teacher_logits: Float[Array, "t v"] | None = None, k: int = 32, tau: float = 1.0,
                 alpha: float = 1.0, chunk: int = CHUNK) -> Float[Array, ""]:
    """Cross-entropy against the teacher's top-``k`` entries, renormalised (a deterministic sparse
    target: the usual cheap alternative to Gemma 3's sampling, biased to the head of p_T)."""
    _check("distill_topk", logits, teacher_logits, tau, alpha)
    _check_scalars("distill_topk", tau, alpha, k, logits.shape[-1])
    logits, zt = _prep(logits, teacher_logits, tau)

    def f(s, t):
        vals, idx = jax.lax.top_k(t, k)
        idx, w = checkpoint_name((idx, jax.nn.softmax(vals, axis=-1)), SPARSE)
        return sparse_xent(s / tau, idx, w)

    return _finish(chunked(f, (logits, zt), chunk=chunk), logits, targets, mask, tau, alpha)


def sample_teacher(teacher_logits: Float[Array, "c v"], key: Array, k: int
                   ) -> tuple[Int[Array, "c k"], Float[Array, "c k"]]:
    """Gemma 3 section 2.2: ``k`` distinct entries per token drawn from ``softmax(teacher_logits)``
    without replacement (Gumbel-top-k), and the teacher probabilities there (not renormalised)."""
    logp = jax.nn.log_softmax(teacher_logits, axis=-1)
    _, idx = jax.lax.top_k(logp + jax.random.gumbel(key, logp.shape), k)
    return checkpoint_name((idx, jnp.exp(jnp.take_along_axis(logp, idx, axis=-1))), SPARSE)


def _sequence_key(key: Array, targets: Int[Array, " t"]) -> Array:
    # The train step gives every sequence of a step (and every micro-step) the same key; folding in a
    # hash of the sequence's own tokens gives each sequence its own draws.
    t = targets.astype(jnp.uint32)
    h = jnp.sum(t * (jnp.arange(t.shape[0], dtype=jnp.uint32) * jnp.uint32(2654435761) + jnp.uint32(1)))
    return jax.random.fold_in(key, h)


def distill_sampled(logits: Float[Array, "t v"], targets: Int[Array, " t"], mask: Float[Array, " t"], *,
                    teacher_logits: Float[Array, "t v"] | None = None, key: Array | None = None,
                    k: int = DEFAULT_K, tau: float = 1.0, alpha: float = 1.0, chunk: int = CHUNK
                    ) -> Float[Array, ""]:
    """Gemma 3 section 2.2: cross-entropy against p_T kept at ``k`` sampled entries (zero elsewhere),
    renormalised over the drawn set, drawn on the fly from ``teacher_logits`` with the step's ``key``."""
    name = "distill_sampled"
    _check(name, logits, teacher_logits, tau, alpha)
    _check_scalars(name, tau, alpha, k, logits.shape[-1])
    if key is None:
        raise ValueError(f"loss {name!r} needs a PRNG key (the train step passes one per step)")
    logits, zt = _prep(logits, teacher_logits, tau)
    n_chunks = -(-logits.shape[0] // max(1, min(chunk, logits.shape[0])))
    keys = jax.random.split(_sequence_key(key, targets), n_chunks)

    def f(s, t, kk):
        idx, w = sample_teacher(t, kk, k)
        return sparse_xent(s / tau, idx, w)

    return _finish(chunked(f, (logits, zt), (keys,), chunk=chunk), logits, targets, mask, tau, alpha)


DISTILL_LOSSES = {"distill": distill, "distill_kl": distill_kl, "distill_reverse_kl": distill_reverse_kl,
                  "distill_topk": distill_topk, "distill_sampled": distill_sampled}


def needs_teacher(loss: str) -> bool:
    return loss in DISTILL_LOSSES


def check_loss_and_teacher(loss: str, teacher: str | None) -> None:
    """RunConfig validation: a distillation loss needs a teacher and a teacher needs one."""
    if needs_teacher(loss) and teacher is None:
        raise ValueError(f"RunConfig.loss={loss!r} distils: set RunConfig.teacher (a run directory, "
                         f"'@<hash>' of a sibling run or a Hugging Face folder)")
    if teacher is not None and not needs_teacher(loss):
        raise ValueError(f"RunConfig.teacher={teacher!r} with loss={loss!r}, which ignores it; use a "
                         f"distillation loss (distill, distill_kl, distill_reverse_kl, distill_topk, "
                         f"distill_sampled)")
