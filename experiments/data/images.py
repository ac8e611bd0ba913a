"""Images for the vision tower: resize and normalise to the encoder's input, and Gemma 3's pan & scan.

Pan & scan (Gemma 3 report section 2.1, Table 8) is an inference-time option for images far from
square: the image is cut into equal, non-overlapping crops along its long side, each resized to the
encoder's input, and the model sees the whole image followed by its crops. The rule (the report names
it; its numbers are the defaults of transformers' ``Gemma3ImageProcessor``): apply only when the long
side is at least ``min_ratio`` times the short one; take the aspect ratio rounded half up crops,
no more than fit ``min_crop_size`` pixels each along the long side, then at least 2 and at most
``max_crops``; skip it if a crop would be narrower than ``min_crop_size``.

Images are arrays ``[channels, height, width]`` with values in [0, 1]; SigLIP's normalisation maps
them to [-1, 1] (mean 0.5, std 0.5 per channel).
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np

from arch.vision import VisionConfig

MEAN = STD = 0.5  # SigLIP (HF IMAGENET_STANDARD_MEAN / _STD)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PanScan:
    min_crop_size: int = 256
    max_crops: int = 4
    min_ratio: float = 1.2

    def __post_init__(self):
        if not isinstance(self.min_crop_size, int) or self.min_crop_size < 1:
            raise ValueError(f"PanScan.min_crop_size={self.min_crop_size!r}: must be a positive int")
        if not isinstance(self.max_crops, int) or self.max_crops < 2:
            raise ValueError(f"PanScan.max_crops={self.max_crops!r}: must be an int >= 2 (one is no cut)")
        if not self.min_ratio >= 1:
            raise ValueError(f"PanScan.min_ratio={self.min_ratio!r}: must be >= 1 (long side / short side)")


def crop_boxes(height: int, width: int, rule: PanScan) -> list[tuple[int, int, int, int]]:
    """``[(top, left, crop_height, crop_width)]`` of the crops, row-major; ``[]`` when pan & scan does
    not apply. The last crop along the long side may run past the edge (it is cut there)."""
    long, short = max(height, width), min(height, width)
    if long / short < rule.min_ratio:
        return []
    n = min(math.floor(long / short + 0.5), long // rule.min_crop_size)
    n = min(max(2, n), rule.max_crops)
    rows, cols = (1, n) if width >= height else (n, 1)
    crop_h, crop_w = math.ceil(height / rows), math.ceil(width / cols)
    if min(crop_h, crop_w) < rule.min_crop_size:
        return []
    return [(r * crop_h, c * crop_w, crop_h, crop_w) for r, c in itertools.product(range(rows), range(cols))]


def pan_and_scan(image: np.ndarray, rule: PanScan) -> list[np.ndarray]:
    """The crops of ``image [c, h, w]`` (:func:`crop_boxes`), as views; ``[]`` when it does not apply."""
    boxes = crop_boxes(image.shape[1], image.shape[2], rule)
    return [image[:, top:top + h, left:left + w] for top, left, h, w in boxes]


def to_encoder(image, cfg: VisionConfig) -> jax.Array:
    """``image [c, h, w]`` in [0, 1] -> ``[c, S, S]`` for the encoder: bilinear resize to
    ``cfg.image_size`` (aspect ratio not kept, as Gemma 3 does), then SigLIP's normalisation."""
    if image.ndim != 3 or image.shape[0] != cfg.channels:
        raise ValueError(f"image of shape {tuple(image.shape)}: expected [{cfg.channels}, height, width]")
    size = (cfg.channels, cfg.image_size, cfg.image_size)
    resized = jax.image.resize(jnp.asarray(image, jnp.float32), size, method="bilinear", antialias=True)
    return (resized - MEAN) / STD


def views(image: np.ndarray, cfg: VisionConfig, rule: PanScan | None = None) -> jax.Array:
    """``[n, c, S, S]``: the whole image, then (with ``rule``) its pan & scan crops, each made ready for
    the encoder; every view becomes ``cfg.soft_tokens`` soft tokens."""
    crops = pan_and_scan(image, rule) if rule is not None else []
    return jnp.stack([to_encoder(v, cfg) for v in [image, *crops]])
