"""``MultimodalLM``: Gemma 3's language model reading images (HF ``Gemma3ForConditionalGeneration``).

Gemma 3 report section 2.1: each image becomes ``vision.soft_tokens`` soft tokens (:class:`VisionTower`:
SigLIP, 4 x 4 average pooling, RMS norm, linear map into the text width). In the token sequence an image
is a run of that many placeholder tokens (``image_token``), wrapped by the begin- and end-of-image
tokens (:func:`image_prompt`); the placeholders' embeddings are replaced by the image's soft tokens, in
order, unscaled (the text embeddings keep Gemma's sqrt(width) factor). Attention is causal for text and
bidirectional among the tokens of one image, never towards a later image, the sliding window of local
layers applying on top (:mod:`arch.masks`). Positions run over text and image tokens alike.

The text half is an unchanged :class:`arch.LM`, so every config knob, cache and quantized format of
the text model applies; the tower is frozen in the report, and is an ordinary module here.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from arch.config import ModelConfig
from arch.masks import image_ids
from arch.mixer import ImageLayout
from arch.model import LM, Cache
from arch.typing import Hidden, Logits, Tokens
from arch.vision import VisionConfig, VisionTower

Images = Float[Array, "*b n c s s"]


def image_prompt(*, boi: int, image_token: int, eoi: int, soft_tokens: int) -> list[int]:
    """The tokens standing for one image: begin-of-image, ``soft_tokens`` placeholders, end-of-image."""
    return [boi] + [image_token] * soft_tokens + [eoi]


class MultimodalLM(eqx.Module):
    lm: LM
    vision: VisionTower
    image_token: int = eqx.field(static=True)
    boi_token: int = eqx.field(static=True)
    eoi_token: int = eqx.field(static=True)

    def __init__(self, cfg: ModelConfig, vision: VisionConfig, *, image_token: int, boi_token: int,
                 eoi_token: int, key: PRNGKeyArray):
        for name, value in (("image_token", image_token), ("boi_token", boi_token), ("eoi_token", eoi_token)):
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"MultimodalLM {name}={value!r}: must be a token id >= 0")
        if not cfg.causal:
            raise ValueError("MultimodalLM: ModelConfig.causal=False; Gemma 3 reads images in a causal "
                             "language model")
        lkey, vkey = jr.split(key)
        self.lm = LM(cfg, key=lkey)
        self.vision = VisionTower(vision, cfg.width, key=vkey)
        self.image_token, self.boi_token, self.eoi_token = image_token, boi_token, eoi_token

    @property
    def cfg(self) -> ModelConfig:
        return self.lm.cfg

    @property
    def vision_cfg(self) -> VisionConfig:
        return self.vision.cfg

    def image_prompt(self) -> list[int]:
        """The tokens one image takes in a sequence (see :func:`image_prompt`)."""
        return image_prompt(boi=self.boi_token, image_token=self.image_token, eoi=self.eoi_token,
                            soft_tokens=self.vision_cfg.soft_tokens)

    def check_images(self, tokens: Tokens, images) -> None:
        """Placeholders and images must agree (checked whenever the tokens are concrete)."""
        n = 0 if images is None else images.shape[-4]
        if isinstance(tokens, jax.core.Tracer):
            return
        have = np.asarray(tokens == self.image_token).sum(-1)
        want = n * self.vision_cfg.soft_tokens
        if np.any(have != want):
            raise ValueError(f"{int(np.max(have))} image placeholder tokens (id {self.image_token}) for {n} "
                             f"image(s) of {self.vision_cfg.soft_tokens} soft tokens: expected {want} per "
                             f"sequence (one image_prompt() per image)")

    def embed(self, tokens: Int[Array, " t"], images: Float[Array, "n c s s"] | None) -> Hidden:
        """Token embeddings with each placeholder replaced by the next soft token of the images."""
        return self._embed(self.lm.served(), tokens, images)

    def _embed(self, lm: LM, tokens, images) -> Hidden:
        is_image = tokens == self.image_token
        x = lm.embed_tokens(jnp.where(is_image, 0, tokens))  # the placeholder may lie outside the vocab
        if images is None:
            return x
        soft = jax.vmap(self.vision)(images.astype(self.vision.vision_model.patch_embedding.weight.dtype))
        soft = soft.reshape(-1, x.shape[-1]).astype(x.dtype)
        k = jnp.clip(jnp.cumsum(is_image) - 1, 0, soft.shape[0] - 1)  # the k-th placeholder takes soft[k]
        return jnp.where(is_image[:, None], soft[k], x)

    def layout(self, tokens: Tokens, images) -> ImageLayout | None:
        """Where the images are (None without images: plain causal attention)."""
        if images is None:
            return None
        return ImageLayout(ids=image_ids(tokens == self.image_token), span=self.vision_cfg.soft_tokens)

    def hidden(self, tokens: Tokens, images: Images | None = None) -> Hidden:
        """The residual stream after the last block, for ``tokens [t]`` and ``images [n, c, s, s]`` (or a
        batch: ``[b, t]`` and ``[b, n, c, s, s]``, every sequence holding ``n`` images)."""
        self.check_images(tokens, images)
        lm = self.lm.served()
        embed = lambda t, i: self._embed(lm, t, i)  # noqa: E731
        if tokens.ndim == 2:
            embed = jax.vmap(embed, in_axes=(0, None if images is None else 0))
        return lm.blocks_forward(embed(tokens, images), images=self.layout(tokens, images))

    def __call__(self, tokens: Tokens, images: Images | None = None) -> Logits:
        """Logits ``[t, vocab]`` (or ``[b, t, vocab]``); see :meth:`hidden`."""
        return self.lm.served().logits(self.hidden(tokens, images))

    def init_cache(self, max_len: int, *, dtype=jnp.float32) -> Cache:
        return self.lm.init_cache(max_len, dtype=dtype)

    def step(self, tokens: Int[Array, " t"], cache: Cache, images: Float[Array, "n c s s"] | None = None
             ) -> tuple[Logits, Cache]:
        """Prefill a chunk (with the images whose placeholders it holds, each image whole in the chunk)
        or decode a token: logits for the chunk and the new cache."""
        self.check_images(tokens, images)
        lm = self.lm.served()
        return lm.blocks_step(self._embed(lm, tokens, images), cache, images=self.layout(tokens, images))
