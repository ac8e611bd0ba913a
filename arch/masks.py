"""The attention visibility convention, re-exported from :mod:`gemma_kernels.masks` where it is defined
once for kernels, references, caches and tests alike.

- causal local layer: query i sees key j iff ``0 <= i - j < window``;
- causal global layer: iff ``j <= i``;
- bidirectional local layer (EmbeddingGemma): iff ``|i - j| < window // 2 + 1`` where ``window`` is
  the config's ``sliding_window`` (Hugging Face's conversion, ``bidirectional_radius``);
- bidirectional global layer: always.
"""

from gemma_kernels import bidirectional_radius, visible


def kernel_window(window: int | None, causal: bool) -> int | None:
    """The ``window`` argument the kernels take for a layer of this config window."""
    if window is None or causal:
        return window
    return bidirectional_radius(window)


__all__ = ["bidirectional_radius", "kernel_window", "visible"]
