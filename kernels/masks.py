"""The one visibility convention shared by kernels, references, caches and tests.

Causal (decoder) layers: query position i sees key position j iff ``0 <= i - j < window``
(``window=None``: iff ``j <= i``). This is Hugging Face's and DeepMind's sliding-window rule
(Gemma 2 section 2, Gemma 3 section 2).

Bidirectional (encoder) layers: i sees j iff ``|i - j| < radius``. EmbeddingGemma configs state a
``sliding_window`` w; transformers turns it into ``radius = w // 2 + 1`` (see
:func:`bidirectional_radius`), and this repo does the same wherever a bidirectional local layer runs.

Negative key positions mark empty slots (unused cache entries, padding) and are never visible.

Images in a causal sequence (Gemma 3 section 2.1; HF ``Gemma3ForConditionalGeneration``): with image
ids (the index of the image a token's soft token belongs to, -1 for text; :func:`image_ids`), a query
also sees the later tokens of its own image, so each image is read bidirectionally, never a later
image. A local layer keeps its span on top: i sees j iff ``(j <= i or same image) and i - j < window``.
A key ahead of its query is then visible only inside one image, so a static bound on an image's length
(``image_span``) bounds how far ahead of the diagonal the fast paths must look (:func:`image_reach`).
"""

import numbers

import jax.numpy as jnp
from jaxtyping import Array, Bool, Int


def bidirectional_radius(window: int) -> int:
    """The |i - j| bound a bidirectional local layer uses for a config window (HF Gemma3TextConfig)."""
    return window // 2 + 1


def image_ids(is_image: Bool[Array, "*b t"]) -> Int[Array, "*b t"]:
    """For each position, the index of the image whose soft tokens it holds (0, 1, ... in order), or -1
    for text. An image is a run of consecutive image positions (Gemma 3 wraps each in begin/end-of-image
    text tokens, so two images never touch)."""
    start = is_image & ~jnp.pad(is_image[..., :-1], [(0, 0)] * (is_image.ndim - 1) + [(1, 0)])
    return jnp.where(is_image, jnp.cumsum(start, axis=-1) - 1, -1).astype(jnp.int32)


def image_reach(image_ids: Array | None, image_span: int | None, *, causal: bool) -> int | None:
    """How many positions ahead of a query a key it sees may lie, in a causal layer: 0 without images;
    with them ``image_span - 1`` (an image's tokens see one another both ways, Gemma 3 section 2.1), or
    None when no span bounds an image. ``image_span`` is a static upper bound on the tokens of one image
    (256 soft tokens in Gemma 3); an image longer than it breaks the contract and loses keys.

    Checks the arguments: image ids only in causal layers (a bidirectional layer already sees every
    token of its span), ``image_span`` None or an int >= 1.
    """
    static_int = isinstance(image_span, numbers.Integral) and not isinstance(image_span, bool)
    if image_span is not None and (not static_int or image_span < 1):
        raise ValueError(f"image_span={image_span!r} must be None or a static int >= 1 (an upper bound on "
                         "the tokens of one image, e.g. 256 for Gemma 3)")
    if image_ids is None:
        return 0
    if not causal:
        raise ValueError("image_ids apply to causal layers only (Gemma 3 section 2.1); with causal=False "
                         "every token of the span is visible already: pass image_ids=None")
    return None if image_span is None else int(image_span) - 1


def visible(
    q_pos: Int[Array, " t"],
    k_pos: Int[Array, " s"],
    *,
    window: int | None = None,
    causal: bool = True,
    q_image: Int[Array, " t"] | None = None,
    k_image: Int[Array, " s"] | None = None,
) -> Bool[Array, "t s"]:
    """Boolean [t, s] mask: may the query at ``q_pos[i]`` attend to the key at ``k_pos[j]``?
    (Leading axes broadcast: ``[..., t]`` and ``[..., s]`` give ``[..., t, s]``.)

    ``window`` is the causal span (``0 <= i - j < window``) or, when ``causal=False``, the
    bidirectional radius (``|i - j| < window``). ``q_image`` / ``k_image`` (:func:`image_ids`, causal
    layers only) open each image to all of its own tokens.
    """
    d = q_pos[..., :, None] - k_pos[..., None, :]
    ok = k_pos[..., None, :] >= 0
    if causal:
        ahead = d >= 0
        if q_image is not None:
            ahead |= (q_image[..., :, None] == k_image[..., None, :]) & (q_image[..., :, None] >= 0)
        ok &= ahead
        if window is not None:
            ok &= d < window
    elif window is not None:
        ok &= jnp.abs(d) < window
    return ok
