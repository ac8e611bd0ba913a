"""The attention visibility convention, re-exported from :mod:`gemma_kernels.masks` where it is defined
once for kernels, references, caches and tests alike.

- causal local layer: query i sees key j iff ``0 <= i - j < window``;
- causal global layer: iff ``j <= i``;
- bidirectional local layer (EmbeddingGemma): iff ``|i - j| < window // 2 + 1`` where ``window`` is
  the config's ``sliding_window`` (Hugging Face's conversion, ``bidirectional_radius``);
- bidirectional global layer: always;
- with images (Gemma 3): a causal layer's query also sees the later tokens of its own image, never a
  later image, the local span still applying (``image_ids``).
"""

from gemma_kernels import bidirectional_radius, image_ids, visible


def kernel_window(window: int | None, causal: bool) -> int | None:
    """The ``window`` argument the kernels take for a layer of this config window."""
    if window is None or causal:
        return window
    return bidirectional_radius(window)


__all__ = ["bidirectional_radius", "image_ids", "kernel_window", "visible"]
