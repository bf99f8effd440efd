"""Qwen2.5-VL in Flax NNX."""

from zoomiqa_jax.model.qwen2_5_vl import Qwen25VL, causal_mask, prepare_inputs
from zoomiqa_jax.model.rope import get_rope_index
from zoomiqa_jax.model.text import LayerCache
from zoomiqa_jax.model.vision import VisionMeta, vision_metadata

__all__ = [
    "LayerCache",
    "Qwen25VL",
    "VisionMeta",
    "causal_mask",
    "get_rope_index",
    "prepare_inputs",
    "vision_metadata",
]
