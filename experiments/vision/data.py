"""Token sequences and image batches for reading documents (Gemma 3 report section 2.1).

A sequence is ``[bos] + one image prompt per view + question + answer + [eos]``, padded: the views are
the whole page and, with pan & scan, its crops (:func:`experiments.data.images.views`), each taking
``[boi] + [image] * soft_tokens + [eoi]`` (:func:`arch.multimodal.image_prompt`). The loss and the
accuracies count the answer's tokens and the ``eos`` that ends it, nothing else (:func:`Batch.mask`).

Documents are drawn from ``(stream, seed, index)``: training batch ``s`` of seed ``k`` holds documents
``s * batch ...`` of stream 0 and seed ``k`` (a pure function of the step: exact resume), the held-out
documents are stream 1 of ``data_seed``, the same for every seed replica, so replicas are scored on
the same pages.

The vocabulary is a word list of a few dozen entries (:data:`VOCAB`): digits, the question words and
the special tokens; the SentencePiece tokenizer of the corpus runs would split nothing here.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import numpy as np

from arch.multimodal import image_prompt
from arch.vision import VisionConfig
from experiments.data.images import PanScan, crop_boxes, to_encoder
from experiments.vision.documents import QUESTION_WORDS, Document, answer, question, render

SPECIALS = ("<pad>", "<bos>", "<eos>", "<boi>", "<eoi>", "<image>")
VOCAB = (*SPECIALS, *(str(d) for d in range(10)), *QUESTION_WORDS)
IDS = {w: i for i, w in enumerate(VOCAB)}
PAD, BOS, EOS, BOI, EOI, IMAGE = (IDS[w] for w in SPECIALS)
QUESTION_LEN = 5  # every question is five words (documents.question)
TRAIN, HELD_OUT = 0, 1  # document streams


def encode(words: Sequence[str]) -> list[int]:
    """Token ids of ``words``; a KeyError names a word outside :data:`VOCAB`."""
    return [IDS[w] for w in words]


def decode(ids: Sequence[int]) -> list[str]:
    return [VOCAB[int(i)] for i in ids]


def prompt(views: int, soft_tokens: int) -> list[int]:
    """``[bos]`` then one image prompt per view."""
    one = image_prompt(boi=BOI, image_token=IMAGE, eoi=EOI, soft_tokens=soft_tokens)
    return [BOS] + one * views


def seq_len(views: int, soft_tokens: int, max_digits: int) -> int:
    """Tokens of the longest sequence: prompt, question, the longest answer and ``eos``."""
    return len(prompt(views, soft_tokens)) + QUESTION_LEN + max_digits + 1


class Example(NamedTuple):
    document: Document
    question: list[str]
    answer: list[str]


def example(stream: int, seed: int, index: int, *, height: int, aspects: tuple[float, ...],
            font_sizes: tuple[int, ...], max_digits: int, layout: str = "forms") -> Example:
    """Document ``index`` of ``(stream, seed)`` and a question about one of its fields, drawn from it."""
    rng = np.random.default_rng((stream, seed, index))
    doc = render(rng, height=height, aspects=aspects, font_sizes=font_sizes, max_digits=max_digits,
                 layout=layout)
    field = doc.fields[int(rng.integers(len(doc.fields)))]
    return Example(doc, question(field), answer(field))


class Batch(NamedTuple):
    """``tokens [b, t]`` (the inputs: position ``i`` predicts ``tokens[i + 1]``), ``images
    [b, views, c, S, S]`` ready for the encoder, and ``answer_mask [b, t]``: 1 where the next token
    belongs to the answer (its digits and the ``eos`` after them)."""

    tokens: np.ndarray
    images: np.ndarray
    answer_mask: np.ndarray

    @property
    def targets(self) -> np.ndarray:
        return np.concatenate([self.tokens[:, 1:], np.full_like(self.tokens[:, :1], PAD)], axis=1)


def sequence(ex: Example, views: int, soft_tokens: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """``(tokens [length], answer_mask [length])`` of one example read through ``views`` views."""
    head = prompt(views, soft_tokens) + encode(ex.question)
    ids = head + encode(ex.answer) + [EOS]
    if len(ids) > length:
        raise ValueError(f"sequence of {len(ids)} tokens for length={length}")
    tokens = np.full(length, PAD, np.int32)
    tokens[:len(ids)] = ids
    mask = np.zeros(length, np.float32)
    mask[len(head) - 1:len(ids) - 1] = 1.0  # predicting each answer token, then eos
    return tokens, mask


@functools.cache
def _encoder_input(cfg: VisionConfig):
    """Jitted :func:`to_encoder`: one compilation per page shape, whatever the batch holds."""
    return jax.jit(lambda image: to_encoder(image, cfg))


def encoder_views(images: Sequence[np.ndarray], cfg: VisionConfig) -> np.ndarray:
    """``[n, c, S, S]``: each image made ready for the encoder."""
    return np.stack(jax.device_get([_encoder_input(cfg)(image) for image in images]))


def view_images(doc: Document, rule: PanScan | None) -> list[np.ndarray]:
    """The page, then (with ``rule``) its pan & scan crops, at native resolution."""
    crops = []
    if rule is not None:
        crops = [doc.image[:, t:t + h, left:left + w]
                 for t, left, h, w in crop_boxes(doc.image.shape[1], doc.image.shape[2], rule)]
    return [doc.image, *crops]


def make_batch(examples: Sequence[Example], cfg: VisionConfig, max_digits: int,
               rule: PanScan | None = None) -> Batch:
    """The examples as one batch; with ``rule`` every page must give the same number of views."""
    per = [view_images(ex.document, rule) for ex in examples]
    views = {len(v) for v in per}
    if len(views) != 1:
        raise ValueError(f"make_batch: pages with {sorted(views)} views in one batch; group them by "
                         f"view count first (view_groups)")
    n = views.pop()
    length = seq_len(n, cfg.soft_tokens, max_digits)
    rows = [sequence(ex, n, cfg.soft_tokens, length) for ex in examples]
    images = encoder_views([im for v in per for im in v], cfg)
    return Batch(tokens=np.stack([r[0] for r in rows]), answer_mask=np.stack([r[1] for r in rows]),
                 images=images.reshape(len(examples), n, *images.shape[1:]))


def view_groups(examples: Sequence[Example], rule: PanScan | None) -> dict[int, list[int]]:
    """Indices of ``examples`` by how many views their page gives (1 without ``rule``)."""
    groups: dict[int, list[int]] = {}
    for i, ex in enumerate(examples):
        _, h, w = ex.document.image.shape
        n = 1 + (len(crop_boxes(h, w, rule)) if rule is not None else 0)
        groups.setdefault(n, []).append(i)
    return dict(sorted(groups.items()))
