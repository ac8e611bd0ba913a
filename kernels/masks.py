"""The one visibility convention shared by kernels, references, caches and tests.

Causal (decoder) layers: query position i sees key position j iff ``0 <= i - j < window``
(``window=None``: iff ``j <= i``). This is Hugging Face's and DeepMind's sliding-window rule
(Gemma 2 section 2, Gemma 3 section 2).

Bidirectional (encoder) layers: i sees j iff ``|i - j| < radius``. EmbeddingGemma configs state a
``sliding_window`` w; transformers turns it into ``radius = w // 2 + 1`` (see
:func:`bidirectional_radius`), and this repo does the same wherever a bidirectional local layer runs.

Negative key positions mark empty slots (unused cache entries, padding) and are never visible.
"""

import jax.numpy as jnp
from jaxtyping import Array, Bool, Int


def bidirectional_radius(window: int) -> int:
    """The |i - j| bound a bidirectional local layer uses for a config window (HF Gemma3TextConfig)."""
    return window // 2 + 1


def visible(
    q_pos: Int[Array, " t"],
    k_pos: Int[Array, " s"],
    *,
    window: int | None = None,
    causal: bool = True,
) -> Bool[Array, "t s"]:
    """Boolean [t, s] mask: may the query at ``q_pos[i]`` attend to the key at ``k_pos[j]``?
    (Leading axes broadcast: ``[..., t]`` and ``[..., s]`` give ``[..., t, s]``.)

    ``window`` is the causal span (``0 <= i - j < window``) or, when ``causal=False``, the
    bidirectional radius (``|i - j| < window``).
    """
    d = q_pos[..., :, None] - k_pos[..., None, :]
    ok = k_pos[..., None, :] >= 0
    if causal:
        ok &= d >= 0
        if window is not None:
            ok &= d < window
    elif window is not None:
        ok &= jnp.abs(d) < window
    return ok
