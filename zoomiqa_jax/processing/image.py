"""Qwen2-VL / Qwen2.5-VL image preprocessing in NumPy and PIL, bit-compatible with transformers.

The pipeline reproduces `transformers.Qwen2VLImageProcessorPil` (transformers 5.x):

1. load and convert to RGB (`load_image`): paths are decoded, EXIF-transposed and converted with a plain
   `convert("RGB")` (alpha bands are dropped, 16-bit grayscale saturates at 255, as PIL does); then, for
   paths and in-memory PIL images alike, an alpha band or a `transparency` entry is composited onto white;
   arrays follow HF's NumPy rules;
2. resize to `smart_resize(h, w)` with PIL bicubic on the uint8 image;
3. rescale by 1/255 (in float64, then cast to float32) and normalize with the OpenAI CLIP mean/std (float32);
4. repeat the single frame `temporal_patch_size` times and flatten into patches of
   `[channel, temporal, patch_row, patch_col]`, ordered by `merge_size x merge_size` blocks.

Steps 3 and 4 are one table look-up per uint8 value (the table holds exactly the float32 HF computes),
applied after a uint8 transpose, so the output equals HF's bit for bit. This module never imports torch or
transformers.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageOps

# OpenAI CLIP statistics, as in transformers.image_utils.OPENAI_CLIP_MEAN / OPENAI_CLIP_STD.
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
RESCALE_FACTOR = 1 / 255
PATCH_SIZE = 14
TEMPORAL_PATCH_SIZE = 2
MERGE_SIZE = 2
MIN_PIXELS = 56 * 56
MAX_PIXELS = 28 * 28 * 1280
MAX_ASPECT_RATIO = 200

ImageInput = str | os.PathLike | Image.Image | np.ndarray


class ImageLoadError(ValueError):
    """An image file is missing or cannot be decoded, or an in-memory image has an unsupported layout."""


def _make_lut() -> np.ndarray:
    """The float32 value HF produces for each (channel, uint8 value): `[3, 256]`.

    HF rescales with `(x.astype(float64) * (1/255)).astype(float32)`, then normalizes in float32 with
    `(x - mean) / std`; IEEE float32 subtraction and division are correctly rounded, so tabulating the 256
    inputs per channel gives exactly HF's numbers.
    """
    scaled = (np.arange(256, dtype=np.float64) * RESCALE_FACTOR).astype(np.float32)  # [256]
    mean = np.asarray(OPENAI_CLIP_MEAN, dtype=np.float32)[:, None]  # [3, 1]
    std = np.asarray(OPENAI_CLIP_STD, dtype=np.float32)[:, None]  # [3, 1]
    return (scaled[None, :] - mean) / std  # [3, 256] float32


_LUT = _make_lut()


def smart_resize(
    height: int,
    width: int,
    factor: int = 28,
    min_pixels: int = MIN_PIXELS,
    max_pixels: int = MAX_PIXELS,
) -> tuple[int, int]:
    """Target (height, width) for an image, with HF's exact rounding.

    Both sides become multiples of `factor`, the area is brought inside `[min_pixels, max_pixels]` and the
    aspect ratio is kept as closely as possible:

        h, w = round(H / f) * f, round(W / f) * f                       (Python's round: half to even)
        if h * w > max_pixels:  b = sqrt(H * W / max_pixels); h, w = max(f, floor(H / b / f) * f), ...
        elif h * w < min_pixels: b = sqrt(min_pixels / (H * W)); h, w = ceil(H * b / f) * f, ...

    Raises:
        ValueError: the aspect ratio `max(H, W) / min(H, W)` exceeds 200 (HF's message).
    """
    if min(height, width) <= 0:
        raise ValueError(f"image height and width must be positive, got height={height}, width={width}")
    ratio = max(height, width) / min(height, width)
    if ratio > MAX_ASPECT_RATIO:
        raise ValueError(f"absolute aspect ratio must be smaller than {MAX_ASPECT_RATIO}, got {ratio}")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def num_image_tokens(grid_thw: Sequence[int] | np.ndarray, merge_size: int = MERGE_SIZE) -> int:
    """Number of LLM placeholder tokens for one image grid `[t, h, w]`: `t * h * w // merge_size**2`."""
    values = np.asarray(grid_thw).reshape(-1)
    if values.size != 3:
        raise ValueError(f"expected one image grid [t, h, w], got shape {np.shape(grid_thw)}")
    t, h, w = (int(v) for v in values)
    return t * h * w // merge_size**2


def _pil_to_rgb(image: Image.Image) -> Image.Image:
    """HF's `convert_to_rgb` for PIL input: alpha (an "A" band or a `transparency` entry) goes onto white."""
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def _float_to_uint8(array: np.ndarray) -> np.ndarray:
    """HF's float -> uint8 step before PIL resizing: `x * 255` in float64, cast to float32, then truncated."""
    return (array.astype(np.float64) * 255).astype(np.float32).astype(np.uint8)


def _array_to_rgb(array: np.ndarray) -> Image.Image:
    """An `[H, W]` or `[H, W, C]` array (C in 1, 3, 4) as an RGB PIL image, following HF's NumPy rules.

    uint8: 1 channel is repeated, 4 channels are blended on white as `round(a * rgb + (1 - a) * 255)` with
    `a = alpha / 255` in float64. float: values must lie in [0, 1]; the same blend with white = 1.0 in the
    array's dtype, then HF's `x * 255` truncation to uint8. uint16: reduced to 8 bits by its high byte (as PIL
    decodes 16-bit RGB PNGs; HF itself rejects such arrays), then treated as uint8.
    Channels-first arrays are not accepted: the layout is always channels-last.
    """
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise ImageLoadError(
            "expected an image array of shape [H, W] or [H, W, C] with C in (1, 3, 4), "
            f"got shape {array.shape}"
        )
    if array.dtype == np.uint16:
        array = (array >> 8).astype(np.uint8)
    if array.dtype == np.uint8:
        white: float = 255
    elif np.issubdtype(array.dtype, np.floating):
        if array.size and not (np.all(np.isfinite(array)) and array.min() >= 0.0 and array.max() <= 1.0):
            raise ImageLoadError(
                f"expected a float image array with values in [0, 1], got [{array.min()}, {array.max()}]"
            )
        white = 1.0
    else:
        raise ImageLoadError(f"expected an image array of dtype uint8, uint16 or float, got {array.dtype}")

    channels = array.shape[-1]
    if channels == 1:
        rgb = np.repeat(array, 3, axis=-1)
    elif channels == 4:
        alpha = array[..., 3:4] / white
        blended = alpha * array[..., :3] + (1 - alpha) * white
        rgb = np.round(blended).astype(array.dtype) if white == 255 else blended.astype(array.dtype)
    else:
        rgb = array
    if rgb.dtype != np.uint8:
        rgb = _float_to_uint8(rgb)
    return Image.fromarray(np.ascontiguousarray(rgb))  # uint8 [H, W, 3] -> mode "RGB"


def _open_rgb(path: str | os.PathLike) -> Image.Image:
    """HF's route for a local file: decode, EXIF-transpose, plain `convert("RGB")` (alpha bands dropped).

    HF then applies its in-memory RGB rule to the result, which matters for palette or grayscale files with a
    `transparency` entry: PIL carries it over as an RGB colour key, and pixels of that colour become white.
    """
    name = os.fspath(path)
    if not os.path.isfile(name):
        raise ImageLoadError(f"image file {name!r} does not exist (or is not a regular file)")
    try:
        with Image.open(name) as opened:
            opened.load()
            rgb = ImageOps.exif_transpose(opened).convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise ImageLoadError(
            f"cannot read image file {name!r}: expected a file PIL can decode, "
            f"got {type(err).__name__}: {err}"
        ) from err
    return _pil_to_rgb(rgb)


def load_image(image: ImageInput) -> Image.Image:
    """Load `image` as the RGB PIL image HF's Qwen2-VL processor would resize.

    Args:
        image: a local file path (str or PathLike; not a URL or base64 string), a PIL image of any mode, or a
            NumPy array `[H, W]` / `[H, W, C]` (C in 1, 3, 4) of uint8, uint16 or float in [0, 1].

    Returns:
        An RGB PIL image (mode "RGB").

    Raises:
        ImageLoadError: the file is missing or undecodable (the message names the file), or the array has an
            unsupported shape, dtype or value range.
    """
    if isinstance(image, (str, os.PathLike)):
        return _open_rgb(image)
    if isinstance(image, Image.Image):
        return _pil_to_rgb(image)
    if isinstance(image, np.ndarray):
        return _array_to_rgb(image)
    raise ImageLoadError(
        f"expected an image path, a PIL.Image.Image or a numpy.ndarray, got {type(image).__name__}"
    )


def _patchify(rgb: np.ndarray, patch_size: int, temporal_patch_size: int, merge_size: int) -> np.ndarray:
    """Normalize and flatten a resized uint8 image `[H, W, 3]` into float32 `[gh * gw, 3 * T * p * p]`.

    Rows are ordered block by block: (gh / m, gw / m, m, m); each row is (channel, temporal, patch_row,
    patch_col), the layout of the vision tower's Conv3d weight.
    """
    height, width, channels = rgb.shape
    p, m, t = patch_size, merge_size, temporal_patch_size
    gh, gw = height // p, width // p
    # [gh/m, m, p, gw/m, m, p, C] -> [gh/m, gw/m, m, m, C, p, p]; a uint8 transpose moves 4x fewer bytes.
    blocks = np.ascontiguousarray(
        rgb.reshape(gh // m, m, p, gw // m, m, p, channels).transpose(0, 3, 1, 4, 6, 2, 5)
    )
    out = np.empty((gh // m, gw // m, m, m, channels, t, p, p), dtype=np.float32)
    for c in range(channels):
        np.take(_LUT[c], blocks[:, :, :, :, c], out=out[:, :, :, :, c, 0])
    out[:, :, :, :, :, 1:] = out[:, :, :, :, :, :1]  # a still image is repeated over the temporal patch
    return out.reshape(gh * gw, channels * t * p * p)


def preprocess_images(
    images: ImageInput | Sequence[ImageInput],
    min_pixels: int = MIN_PIXELS,
    max_pixels: int = MAX_PIXELS,
    patch_size: int = PATCH_SIZE,
    temporal_patch_size: int = TEMPORAL_PATCH_SIZE,
    merge_size: int = MERGE_SIZE,
) -> tuple[np.ndarray, np.ndarray]:
    """Qwen2-VL `pixel_values` and `image_grid_thw` for one image or a list, equal to HF's PIL processor.

    Args:
        images: one image or a list/tuple of images, each as accepted by `load_image`.
        min_pixels, max_pixels: area bounds for `smart_resize` (HF's `size["shortest_edge"/"longest_edge"]`).
        patch_size, temporal_patch_size, merge_size: the vision tower's patch geometry.

    Returns:
        pixel_values: float32 `[sum_i gh_i * gw_i, 3 * temporal_patch_size * patch_size**2]`, images
            concatenated in order.
        image_grid_thw: int64 `[num_images, 3]`, rows `[1, gh_i, gw_i]` in patches.

    Raises:
        ValueError: an empty list, or an aspect ratio over 200 (HF's message).
        ImageLoadError: an image cannot be loaded (see `load_image`).
    """
    if isinstance(images, (list, tuple)):
        items = list(images)
    else:
        items = [images]
    if not items:
        raise ValueError("expected at least one image, got an empty list")

    factor = patch_size * merge_size
    all_patches: list[np.ndarray] = []
    grids: list[list[int]] = []
    for item in items:
        rgb = load_image(item)
        new_h, new_w = smart_resize(
            rgb.height, rgb.width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels
        )
        resized = np.asarray(rgb.resize((new_w, new_h), resample=Image.Resampling.BICUBIC))  # [h, w, 3] uint8
        all_patches.append(_patchify(resized, patch_size, temporal_patch_size, merge_size))
        grids.append([1, new_h // patch_size, new_w // patch_size])

    pixel_values = all_patches[0] if len(all_patches) == 1 else np.concatenate(all_patches, axis=0)
    return pixel_values, np.asarray(grids, dtype=np.int64)


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
