"""Synthetic documents and their token sequences: answers are printed where the page says, pages are
a pure function of their seed, the loss sees only the answer, pan & scan views line up with prompts."""

import numpy as np
import pytest

from experiments.data.images import PanScan, crop_boxes
from experiments.vision import documents as docs
from experiments.vision.config import BASES, ReadConfig
from experiments.vision.data import (
    EOS,
    HELD_OUT,
    IMAGE,
    TRAIN,
    VOCAB,
    decode,
    encode,
    example,
    make_batch,
    view_groups,
)

KW = dict(height=48, aspects=(1.0, 2.0, 4.0), font_sizes=(6, 8), max_digits=3)


def test_same_seed_same_document_and_streams_differ():
    a, b = example(TRAIN, 0, 5, **KW), example(TRAIN, 0, 5, **KW)
    np.testing.assert_array_equal(a.document.image, b.document.image)
    assert a.question == b.question and a.answer == b.answer
    other = [example(HELD_OUT, 0, i, **KW).document.image for i in range(8)]
    assert not any(o.shape == a.document.image.shape and np.array_equal(o, a.document.image) for o in other)


def test_pages_have_the_asked_shape_and_range():
    for i in range(20):
        ex = example(TRAIN, 1, i, **KW)
        c, h, w = ex.document.image.shape
        assert (c, h) == (3, 48) and w == round(48 * ex.document.aspect)
        assert ex.document.image.min() >= 0.0 and ex.document.image.max() <= 1.0
        assert ex.answer and all(d.isdigit() for d in ex.answer) and len(ex.answer) <= 3
        assert len(ex.question) == 5


def test_the_answer_is_printed_on_the_page():
    """Redrawing a page's answer digits with the renderer's own glyphs finds them in the ink: the
    page's darkest pixels cover each answer glyph somewhere on the page."""
    rng = np.random.default_rng(3)
    doc = docs.render(rng, height=64, aspects=(1.0,), font_sizes=(10,), max_digits=4)
    ink = 1.0 - doc.image[0] / doc.image[0].max()  # paper is the brightest pixel
    for field in doc.fields:
        text = f"{field.key} {field.value}" if field.kind == "form" else field.value
        size = doc.font_size
        stamp = np.concatenate([docs.glyph(ch, size) if ch != " " else np.zeros_like(docs.glyph("0", size))
                                for ch in text], axis=1) > 0.5
        h, w = stamp.shape
        found = any((ink[y:y + h, x:x + w][stamp] > 0.3).mean() > 0.95
                    for y in range(ink.shape[0] - h + 1) for x in range(ink.shape[1] - w + 1))
        assert found, field


def test_the_number_layout_prints_one_number_at_the_top_left():
    for i in range(6):
        rng = np.random.default_rng(i)
        doc = docs.render(rng, height=48, aspects=(1.0, 2.0), font_sizes=(6, 12), max_digits=3,
                          layout="number")
        (field,) = doc.fields
        assert field.kind == "number" and docs.question(field) == ["what", "is", "the", "number", "?"]
        ink = 1.0 - doc.image[0] / doc.image[0].max()
        stamp = np.concatenate([docs.glyph(ch, doc.font_size) for ch in field.value], axis=1)
        m = 48 // 16  # the margin
        h, w = stamp.shape
        assert (ink[m:m + h, m:m + w][stamp > 0.5] > 0.3).mean() > 0.95  # the digits, where they belong
        assert ink[:, m + w + 1:].max() < 0.05 and ink[m + h + 1:].max() < 0.05  # nothing else
    with pytest.raises(ValueError, match="layout='table'"):
        docs.render(np.random.default_rng(0), height=48, aspects=(1.0,), font_sizes=(6,), max_digits=3,
                    layout="table")
    with pytest.raises(ValueError, match=r"ReadConfig.layout='x': must be one of \('forms', 'number'\)"):
        ReadConfig(layout="x")


def test_vocabulary_round_trips_and_covers_every_question():
    for i in range(30):
        ex = example(TRAIN, 2, i, **KW)
        assert decode(encode(ex.question + ex.answer)) == ex.question + ex.answer
    assert len(VOCAB) == len(set(VOCAB)) < 64


def test_mask_covers_the_answer_and_eos_only():
    rc = BASES["quick"]
    exs = [example(TRAIN, 0, i, **KW) for i in range(4)]
    b = make_batch(exs, rc.vision_config(), KW["max_digits"])
    targets = b.targets
    for ex, t, m in zip(exs, targets, b.answer_mask):
        assert decode(t[m > 0]) == ex.answer + ["<eos>"]
        assert t[m > 0][-1] == EOS
    assert (b.tokens == IMAGE).sum(1).tolist() == [rc.vision_config().soft_tokens] * 4
    assert b.images.shape == (4, 1, 3, rc.image_size, rc.image_size)


def test_pan_and_scan_batches_hold_one_prompt_per_view():
    rule = PanScan(min_crop_size=24)
    exs = [example(HELD_OUT, 0, i, **KW) for i in range(12)]
    groups = view_groups(exs, rule)
    assert set(groups) <= {1, 3, 5} and sum(map(len, groups.values())) == 12
    cfg = BASES["quick"].vision_config()
    for views, idx in groups.items():
        b = make_batch([exs[i] for i in idx], cfg, KW["max_digits"], rule)
        assert b.images.shape[1] == views
        assert ((b.tokens == IMAGE).sum(1) == views * cfg.soft_tokens).all()
        for i in idx:
            _, h, w = exs[i].document.image.shape
            assert views == 1 + len(crop_boxes(h, w, rule))
    with pytest.raises(ValueError, match="view"):
        make_batch(exs, cfg, KW["max_digits"], rule)


BAD = [("soft_tokens", 8, "square"), ("image_size", 36, "multiple"), ("font_sizes", (40,), "sizes"),
       ("max_digits", 0, "positive"), ("aspects", (0.5,), "ratios")]


@pytest.mark.parametrize("field,value,allowed", BAD)
def test_bad_config_names_field_value_and_what_is_allowed(field, value, allowed):
    with pytest.raises(ValueError, match=rf"ReadConfig\.{field}=.*{allowed}"):
        ReadConfig(**{field: value})


def test_soft_tokens_set_the_pool():
    for size, soft in ((32, 4), (64, 16), (128, 4)):
        assert ReadConfig(image_size=size, soft_tokens=soft).vision_config().soft_tokens == soft
