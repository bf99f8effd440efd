"""Inputs for the model: image preprocessing (NumPy/PIL, equal to transformers' Qwen2-VL processor)."""

from zoomiqa_jax.processing.image import (
    MAX_PIXELS,
    MIN_PIXELS,
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    ImageLoadError,
    load_image,
    num_image_tokens,
    preprocess_images,
    smart_resize,
)

__all__ = [
    "MAX_PIXELS",
    "MIN_PIXELS",
    "OPENAI_CLIP_MEAN",
    "OPENAI_CLIP_STD",
    "ImageLoadError",
    "load_image",
    "num_image_tokens",
    "preprocess_images",
    "smart_resize",
]
