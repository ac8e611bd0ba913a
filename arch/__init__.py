"""What a model IS: one config, presets, Equinox modules, caches, parameter counts."""

from arch import memory as memory  # bytes of weights and caches (arch.memory)
from arch.cache import Cache, init_cache
from arch.config import ModelConfig, ratio
from arch.embedding import EmbeddingModel
from arch.hf import from_hf, to_hf
from arch.masks import visible
from arch.model import LM
from arch.multimodal import MultimodalLM
from arch.params import count_params
from arch.presets import PRESETS, VISION_PRESETS, preset, vision_preset
from arch.reconfigure import reconfigure as reconfigure  # same weights, new config (arch.reconfigure)
from arch.vision import VisionConfig, VisionTower

__all__ = [
    "LM",
    "PRESETS",
    "VISION_PRESETS",
    "Cache",
    "EmbeddingModel",
    "ModelConfig",
    "MultimodalLM",
    "VisionConfig",
    "VisionTower",
    "count_params",
    "from_hf",
    "init_cache",
    "preset",
    "ratio",
    "to_hf",
    "visible",
    "vision_preset",
]
