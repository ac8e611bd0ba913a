"""Pan & scan and the encoder's input: crops against transformers' ``Gemma3ImageProcessor`` on a grid of
shapes, the tiling property, and the views the vision tower reads."""

import numpy as np
import pytest

from arch.presets import vision_preset
from experiments.data.images import PanScan, crop_boxes, pan_and_scan, views

SHAPES = [(h, w) for h in (200, 256, 300, 513, 896, 1000) for w in (200, 300, 600, 896, 1500, 3000)]


def positions(h, w):
    """An image whose pixels say where they are, so a crop names its own box."""
    return np.arange(3 * h * w, dtype=np.float32).reshape(3, h, w)


@pytest.mark.parametrize("rule", [PanScan(), PanScan(min_crop_size=100, max_crops=3, min_ratio=1.5)])
def test_crops_tile_the_image_once_within_the_rule(rule):
    for h, w in SHAPES:
        boxes = crop_boxes(h, w, rule)
        ratio = max(h, w) / min(h, w)
        if ratio < rule.min_ratio:
            assert boxes == [], (h, w)
        if not boxes:
            continue
        assert 2 <= len(boxes) <= rule.max_crops and ratio >= rule.min_ratio
        cover = np.zeros((h, w), int)
        for top, left, ch, cw in boxes:
            assert min(ch, cw) >= rule.min_crop_size and (ch == h or cw == w)  # cut along the long side
            cover[top:top + ch, left:left + cw] += 1
        assert (cover == 1).all(), (h, w)  # every pixel in exactly one crop


def test_views_are_the_whole_image_then_its_crops_normalised():
    cfg = vision_preset("tiny_siglip")
    wide = np.full((3, 300, 1000), 0.5, np.float32)
    out = views(wide, cfg, PanScan())
    assert out.shape == (1 + len(crop_boxes(300, 1000, PanScan())), 3, 28, 28) == (4, 3, 28, 28)
    np.testing.assert_allclose(out, 0.0, atol=1e-6)  # 0.5 is SigLIP's mean
    assert views(wide, cfg).shape == (1, 3, 28, 28)  # pan & scan is opt-in (inference only)
    ramp = np.linspace(0, 1, 3 * 56 * 56, dtype=np.float32).reshape(3, 56, 56)
    got = np.asarray(views(ramp, cfg))
    assert got.min() >= -1 - 1e-6 and got.max() <= 1 + 1e-6
    with pytest.raises(ValueError, match=r"image of shape \(56, 56\): expected \[3, height, width\]"):
        views(ramp[0], cfg)


def test_rule_errors_name_the_field():
    with pytest.raises(ValueError, match=r"PanScan.max_crops=1: must be an int >= 2"):
        PanScan(max_crops=1)
    with pytest.raises(ValueError, match=r"PanScan.min_ratio=0.5: must be >= 1"):
        PanScan(min_ratio=0.5)


@pytest.mark.hf
def test_crops_equal_transformers_gemma3_image_processor():
    tf = pytest.importorskip("transformers")
    processor = tf.Gemma3ImageProcessorPil()  # the NumPy backend (the default one needs torchvision)
    for rule in (PanScan(), PanScan(min_crop_size=100, max_crops=3, min_ratio=1.5)):
        for h, w in SHAPES:
            image = positions(h, w)
            ref = processor.pan_and_scan(image, rule.min_crop_size, rule.max_crops, rule.min_ratio)
            ours = pan_and_scan(image, rule)
            assert len(ours) == len(ref), (h, w)
            for a, b in zip(ours, ref):
                np.testing.assert_array_equal(a, np.asarray(b))
