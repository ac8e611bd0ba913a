"""Synthetic documents to read, a CPU-scale stand-in for DocVQA / InfoVQA / TextVQA (Gemma 3 report
section 2.1, Tables 7-8): forms of labelled numbers and short tables, in several font sizes and aspect
ratios, each with a question whose answer is printed on the page.

A document is ``round(aspect)`` square-ish panels side by side on a ``height x (height * aspect)`` page;
each panel holds a few ``LABEL digits`` lines (a form) or a small ruled table whose rows are numbered.
Wide pages (aspect 2 to 4) are where the report's two findings can show at this scale: squashing a 4:1
page into a square encoder input keeps a quarter of its horizontal resolution, so its small digits blur
together, while pan & scan's crops (one per panel) reach the encoder unsquashed.

Glyphs are rasterised by matplotlib (the Agg canvas, DejaVu Sans Mono: every character one advance
wide) once per character and size, then pasted into the page: rendering a page costs a fraction of a
millisecond, so batches are drawn on the fly from ``(seed, index)`` instead of being cached.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

LABELS = ("ID", "CODE", "REF", "QTY", "NO", "SUM")  # the forms' fields; each at most once on a page
TABLE_ROWS = (2, 4)  # a table has between 2 and 4 numbered rows
FIELDS_PER_PANEL = (1, 3)
LAYOUTS = ("forms", "number")
GLYPHS = "0123456789" + "".join(sorted(set("".join(LABELS))))
ADVANCE = 0.602  # DejaVu Sans Mono's advance width, in ems
LINE = 1.3  # line height, in ems
DPI = 72  # one point is one pixel


@functools.cache
def glyph(ch: str, size: int) -> np.ndarray:
    """Ink ``[line height, advance]`` in [0, 1] of ``ch`` at ``size`` pixels per em, rasterised by
    matplotlib's Agg canvas with the baseline at the same row for every character."""
    h, w = math.ceil(LINE * size), math.ceil(ADVANCE * size)
    fig = Figure(figsize=(w / DPI, h / DPI), dpi=DPI)
    canvas = FigureCanvasAgg(fig)
    fig.text(0, 0.25 / LINE, ch, fontsize=size, family="DejaVu Sans Mono", va="baseline", ha="left")
    canvas.draw()
    gray = np.asarray(canvas.buffer_rgba())[..., 0].astype(np.float32) / 255.0
    ink = np.zeros((h, w), np.float32)  # the canvas may round a pixel off: keep the cell's exact size
    ink[:min(h, gray.shape[0]), :min(w, gray.shape[1])] = 1.0 - gray[:h, :w]
    return ink


def text_width(text: str, size: int) -> int:
    return len(text) * math.ceil(ADVANCE * size)


@dataclasses.dataclass(frozen=True)
class Field:
    """One answerable item printed on a page: a form label or a table row number, and its digits."""

    kind: str  # "form" or "table"
    key: str  # the label ("CODE") or the row number ("2")
    value: str  # the digits


@dataclasses.dataclass(frozen=True)
class Document:
    """A rendered page: ``image [3, height, width]`` in [0, 1] and the fields printed on it."""

    image: np.ndarray
    fields: tuple[Field, ...]
    aspect: float
    font_size: int


def _digits(rng: np.random.Generator, max_digits: int) -> str:
    n = int(rng.integers(1, max_digits + 1))
    return "".join(str(d) for d in rng.integers(0, 10, n))


def _draw(ink: np.ndarray, text: str, size: int, top: int, left: int) -> None:
    step = math.ceil(ADVANCE * size)
    for i, ch in enumerate(text):
        if ch != " ":
            g = glyph(ch, size)
            region = ink[top:top + g.shape[0], left + i * step:left + (i + 1) * step]
            np.maximum(region, g[:region.shape[0], :region.shape[1]], out=region)


def _form(ink, rng, labels: list[str], size: int, box: tuple[int, int, int, int],
          max_digits: int) -> list[Field]:
    """Lines ``LABEL digits`` at distinct random heights of the panel ``box`` (top, left, h, w)."""
    top, left, h, w = box
    line = math.ceil(LINE * size)
    slots = rng.choice(max(h // line, len(labels)), size=len(labels), replace=False)
    fields = []
    for label, slot in zip(labels, sorted(slots)):
        value = _digits(rng, max_digits)
        text = f"{label} {value}"
        room = max(w - text_width(text, size), 1)
        _draw(ink, text, size, top + int(slot) * line, left + int(rng.integers(0, room)))
        fields.append(Field("form", label, value))
    return fields


def _table(ink, rng, size: int, box: tuple[int, int, int, int], max_digits: int) -> list[Field]:
    """A ruled table of numbered rows ``r | digits`` (r = 1, 2, ...) at the top left of ``box``."""
    top, left, h, w = box
    line = math.ceil(LINE * size)
    rows = min(int(rng.integers(TABLE_ROWS[0], TABLE_ROWS[1] + 1)), max(h // line, 1))
    cell = math.ceil(ADVANCE * size)
    split = 2 * cell  # the row number's column
    width = min(split + (max_digits + 1) * cell, w)
    fields = []
    for r in range(rows):
        value = _digits(rng, max_digits)
        y = top + r * line
        _draw(ink, str(r + 1), size, y, left + cell // 2)
        _draw(ink, value, size, y, left + split + cell // 2)
        ink[y + line - 1, left:left + width] = 1.0  # the rule under the row
        fields.append(Field("table", str(r + 1), value))
    ink[top:top + rows * line, left + split] = 1.0  # the column rule
    return fields


def _number(ink, rng, size: int, margin: int, max_digits: int) -> list[Field]:
    """One number at the page's top left corner: where it is never has to be searched for."""
    value = _digits(rng, max_digits)
    _draw(ink, value, size, margin, margin)
    return [Field("number", "number", value)]


def render(rng: np.random.Generator, *, height: int, aspects: tuple[float, ...], font_sizes: tuple[int, ...],
           max_digits: int, layout: str = "forms") -> Document:
    """One page drawn from ``rng``: an aspect ratio and a font size from the lists, light paper and
    dark ink of random shades. ``layout="forms"``: ``round(aspect)`` panels (at most one of them a
    table), the size lowered until the longest line fits a panel; ``"number"``: one number at the top
    left (what a tiny model learns to read in a few hundred CPU steps; the forms' search for a label
    among several takes far longer)."""
    if layout not in LAYOUTS:
        raise ValueError(f"render: layout={layout!r}: must be one of {LAYOUTS}")
    aspect = float(aspects[int(rng.integers(len(aspects)))])
    size = int(font_sizes[int(rng.integers(len(font_sizes)))])
    width = round(height * aspect)
    panels = max(1, round(aspect))
    ink = np.zeros((height, width), np.float32)
    margin = max(height // 16, 1)
    if layout == "number":
        return _page(rng, ink, _number(ink, rng, size, margin, max_digits), aspect, size)
    pw = width // panels
    # the longest line, "LABEL digits", must fit its panel: the largest size that does caps the draw
    longest = max(map(len, LABELS)) + 1 + max_digits
    size = min(size, max([s for s in range(1, size + 1) if text_width("0" * longest, s) <= pw - 2 * margin],
                         default=1))
    labels = [str(x) for x in rng.permutation(LABELS)]
    table_panel = int(rng.integers(panels)) if rng.random() < 0.5 else -1
    fields: list[Field] = []
    for p in range(panels):
        box = (margin, p * pw + margin, height - 2 * margin, pw - 2 * margin)
        if p == table_panel:
            fields += _table(ink, rng, size, box, max_digits)
        else:
            k = min(int(rng.integers(FIELDS_PER_PANEL[0], FIELDS_PER_PANEL[1] + 1)), len(labels))
            fields += _form(ink, rng, [labels.pop() for _ in range(k)], size, box, max_digits)
    return _page(rng, ink, fields, aspect, size)


def _page(rng, ink: np.ndarray, fields: list[Field], aspect: float, size: int) -> Document:
    """The ink on light paper of a random tint, at a random contrast."""
    paper = rng.uniform(0.85, 1.0, size=(3, 1, 1)).astype(np.float32)
    dark = rng.uniform(0.6, 1.0)
    image = np.clip(paper * (1.0 - dark * ink[None]), 0.0, 1.0)
    return Document(image=image, fields=tuple(fields), aspect=aspect, font_size=size)


def question(field: Field) -> list[str]:
    """The question's words; every question is five words, so prompts of one layout share a length."""
    if field.kind == "number":
        return ["what", "is", "the", "number", "?"]
    if field.kind == "table":
        return ["value", "in", "row", field.key, "?"]
    return ["what", "is", "the", field.key.lower(), "?"]


def answer(field: Field) -> list[str]:
    """The answer's words: its digits, one word each."""
    return list(field.value)


QUESTION_WORDS = ("value", "in", "row", "what", "is", "the", "?", "number",
                  *(label.lower() for label in LABELS))
