"""Autoregressive sampling: one prefill ``model.step`` on the prompt, then a ``jax.lax.while_loop`` of
single-token steps, all inside ONE jit-compiled function.

Greedy, temperature, top-k, top-p (nucleus) and a stop token. Every sampling setting is a traced
value, so the function compiles once per (prompt length, ``max_new_tokens``, model structure).
The prompt-length "bucket" is the exact length on purpose: right-padding a prompt to a bucket would
overwrite live slots of the local ring buffers and advance the recurrent states through the padding.

The decode cache has ``len(prompt) + max_new_tokens`` positions: global layers hold them all, local
layers a ring of ``window`` slots, recurrent layers a fixed state (``arch.init_cache``).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

import arch
from arch.multimodal import MultimodalLM


def filter_logits(logits: Float[Array, " v"], top_k: Int[Array, ""], top_p: Float[Array, ""]
                  ) -> Float[Array, " v"]:
    """Mask (to -inf) everything outside the top-k and outside the smallest nucleus of mass top_p.

    ``top_k >= vocab`` and ``top_p >= 1`` switch each filter off; the most likely token always stays.
    """
    sorted_desc = jnp.sort(logits)[::-1]
    kth = sorted_desc[jnp.clip(top_k, 1, logits.shape[0]) - 1]
    probs = jax.nn.softmax(sorted_desc)
    before = jnp.cumsum(probs) - probs  # mass strictly above each sorted token
    keep = (before < top_p).at[0].set(True)
    nucleus_min = jnp.min(jnp.where(keep, sorted_desc, jnp.inf))
    threshold = jnp.maximum(kth, nucleus_min)
    return jnp.where(logits >= threshold, logits, -jnp.inf)


def pick(logits: Float[Array, " v"], key: PRNGKeyArray, temperature, top_k, top_p) -> Int[Array, ""]:
    """Greedy when ``temperature == 0``, else a draw from the filtered, tempered distribution."""
    greedy = jnp.argmax(logits).astype(jnp.int32)
    scaled = logits.astype(jnp.float32) / jnp.maximum(temperature, 1e-6)
    needs_filter = (top_k < logits.shape[0]) | (top_p < 1.0)
    scaled = jax.lax.cond(needs_filter, filter_logits, lambda x, *_: x, scaled, top_k, top_p)
    drawn = jax.random.categorical(key, scaled).astype(jnp.int32)
    return jnp.where(temperature > 0, drawn, greedy)


@eqx.filter_jit
def _generate(model: arch.LM | MultimodalLM, prompt, images, key, temperature, top_k, top_p, stop_token,
              max_new_tokens: int):
    cfg = model.cfg
    cache = arch.init_cache(cfg, prompt.shape[0] + max_new_tokens, dtype=jnp.float32)
    # prefill: one step over the whole prompt (so every image lies whole inside it)
    logits, cache = model.step(prompt, cache) if images is None else model.step(prompt, cache, images)
    key, sub = jax.random.split(key)
    first = pick(logits[-1], sub, temperature, top_k, top_p)
    out = jnp.zeros((max_new_tokens,), jnp.int32)

    def cond(state):
        i, _, _, _, _, done = state
        return (i < max_new_tokens) & ~done

    def body(state):
        i, tok, cache, key, out, _ = state
        out = out.at[i].set(tok)
        done = tok == stop_token
        # the step for the last emitted token is wasted; skipping it would need a cond around the model
        logits, cache = model.step(tok[None], cache)
        key, sub = jax.random.split(key)
        nxt = pick(logits[0], sub, temperature, top_k, top_p)
        return i + 1, nxt, cache, key, out, done

    state = (jnp.int32(0), first, cache, key, out, jnp.bool_(False))
    n, _, _, _, out, _ = jax.lax.while_loop(cond, body, state)
    return out, n


def sample(model: arch.LM | MultimodalLM, prompt_ids, *, max_new_tokens: int, temperature: float = 0.0,
           top_k: int | None = None, top_p: float | None = None, stop_token: int | None = None,
           key: PRNGKeyArray | None = None, images=None) -> np.ndarray:
    """New token ids (int32, at most ``max_new_tokens``) continuing ``prompt_ids``.

    ``images [n, c, s, s]``: the images whose placeholders the prompt holds (a :class:`MultimodalLM`).

    ``temperature=0`` is greedy (argmax); otherwise logits are divided by the temperature, cut to the
    ``top_k`` most likely and/or the ``top_p`` nucleus, and drawn with ``key`` (the same key gives the
    same ids). Generation stops after ``stop_token`` is emitted (it is included as the last id).
    """
    prompt = jnp.asarray(prompt_ids, jnp.int32)
    if prompt.ndim != 1 or prompt.shape[0] < 1:
        raise ValueError(f"prompt_ids must be a non-empty 1-D sequence, got shape {prompt.shape}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens!r} must be >= 1")
    if temperature < 0:
        raise ValueError(f"temperature={temperature!r} must be >= 0 (0: greedy)")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k={top_k!r} must be None or >= 1")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p={top_p!r} must be None or in (0, 1]")
    if images is not None and not isinstance(model, MultimodalLM):
        raise ValueError(f"images given to a {type(model).__name__}: only a MultimodalLM reads images")
    if isinstance(model, MultimodalLM):
        model.check_images(prompt, images)
    vocab = model.cfg.vocab_size
    out, n = _generate(
        model, prompt, None if images is None else jnp.asarray(images),
        jax.random.key(0) if key is None else key,
        jnp.float32(temperature), jnp.int32(vocab if top_k is None else min(top_k, vocab)),
        jnp.float32(1.0 if top_p is None else top_p), jnp.int32(-1 if stop_token is None else stop_token),
        int(max_new_tokens),
    )
    return np.asarray(out)[: int(n)]
