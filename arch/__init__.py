"""What a model IS: one config, presets, Equinox modules, caches, parameter counts."""

from arch.cache import Cache, init_cache
from arch.config import ModelConfig, ratio
from arch.masks import visible
from arch.model import LM
from arch.params import count_params
from arch.presets import PRESETS, preset

__all__ = [
    "LM",
    "PRESETS",
    "Cache",
    "ModelConfig",
    "count_params",
    "init_cache",
    "preset",
    "ratio",
    "visible",
]
