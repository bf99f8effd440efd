"""What the authors' Zoom-IQA evaluation gives the model: question, loaded file, stage-1 size (issue 18 items 2, 8, 9).

Pure functions read from their released code (GitHub EthanLiang99/Zoom-IQA, commit f4dee23:
`src/zoomiqa/inference/evaluate.py` and `protocol.py`) and from the qwen-vl-utils release they pin
(`qwen-vl-utils==0.0.10`, `qwen_vl_utils/vision_process.py`; with pillow 11.1.0); line numbers are of those
files. Not wired into `zoomiqa score` / `eval` / GRPO here.

* Question (item 2): each annotation file draws from its own `random.Random(seed)`, seed 42, one draw per
  record WITHOUT a question of its own, in file order (`draw_questions`).
* Loading (item 8): the file as PIL opens it: no EXIF transpose, its own mode (`load_official_image`). The
  stage-2 crop and its upscale run in that mode (`official.stage2_crop`), and only the checkpoint's processor
  turns the two images into RGB (`official_stage2_images`).
* Stage-1 size (item 9): qwen-vl-utils' `fetch_image` converts to RGB and resizes with its own `smart_resize`
  (`official_stage1_image`); the checkpoint's processor then resizes again with the checkpoint's
  min/max_pixels (`processing.image.preprocess_images`, unchanged), so an image can be resampled twice
  (`official_stage1_sizes` gives both sizes).

The processor the authors pin is a transformers git commit of the 4.x series, whose `convert_to_rgb` returns
an RGB image untouched and composites every other mode onto white via RGBA. The project's `load_image`
follows transformers 5.x, which also whitens the pixels of an RGB image's `transparency` colour key; the
functions here drop that key, so that `preprocess_images` sees what their processor saw (`processor_view`).
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image

from zoomiqa_jax.processing.image import ImageLoadError, smart_resize
from zoomiqa_jax.processing.official import OfficialCrop, stage2_crop

OFFICIAL_SEED = 42  # evaluate.py, build_parser: `--seed`, default 42
IMAGE_TAG = "<|image|>"  # removed from a record's own question for stage 1 (evaluate.py:86)

# qwen-vl-utils 0.0.10, vision_process.py:25-28.
FETCH_FACTOR = 28
FETCH_MIN_PIXELS = 4 * 28 * 28  # 3,136
FETCH_MAX_PIXELS = 16384 * 28 * 28  # 12,845,056
FETCH_MAX_RATIO = 200


@dataclass(frozen=True)
class OfficialQuestion:
    """The question of one record: `stage1` goes into the stage-1 prompt's `{question}`, `history` is the
    user turn of the stage-2 history (protocol.py:217); `drawn` is True when it came from the pool."""

    stage1: str
    history: str
    drawn: bool


def record_question(record: Mapping[str, Any]) -> OfficialQuestion | None:
    """The record's own question, as their `_questions_from_row` reads it (evaluate.py:79-86); None if it has none.

    `conversations` must be a non-empty list whose first entry is a dict; its question is
    `first.get("value") or first.get("content")` (so an empty or falsy "value" falls through to "content",
    but a blank one does not), and counts only if it is a string with a non-blank `.strip()`. Stage 1 gets it
    with every `<|image|>` removed and nothing else changed (no strip: `"<|image|>\\nQ?"` gives `"\\nQ?"`, a
    bare `"<|image|>"` gives `""`); the stage-2 history keeps the raw string.
    """
    conversations = record.get("conversations")
    if not isinstance(conversations, list) or not conversations:
        return None
    first = conversations[0]
    if not isinstance(first, dict):
        return None
    question = first.get("value") or first.get("content")
    if not isinstance(question, str) or not question.strip():
        return None
    return OfficialQuestion(question.replace(IMAGE_TAG, ""), question, False)


def draw_questions(
    records: Iterable[Mapping[str, Any]], pool: Sequence[str], seed: int = OFFICIAL_SEED
) -> list[OfficialQuestion]:
    """The question of every record of ONE annotation file, in order, as their `load_samples` draws them.

    evaluate.py:111: a fresh `random.Random(seed)` per annotation file (each file of a run starts again from
    the seed). evaluate.py:144 and :87: a record with its own question (`record_question`) takes it and draws
    nothing; any other record takes `rng.choice(pool)`, stage 1 and history alike. `--max-samples` keeps the
    first records of a file (evaluate.py:112), which does not change their draws. `pool` is their
    `RANDOM_QUESTIONS` in their order (a prompt file's `zoomiqa_questions`, from `zoomiqa prompts
    import-official`). Raises ValueError for a record that is not a mapping (their loader stops there too,
    evaluate.py:114-115) or an empty pool.
    """
    if not pool:
        raise ValueError("draw_questions: expected a non-empty question pool")
    rng = random.Random(seed)
    out: list[OfficialQuestion] = []
    for index, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise ValueError(f"draw_questions: record {index} is not an object, found {type(record).__name__}")
        own = record_question(record)
        if own is None:
            drawn = rng.choice(pool)
            own = OfficialQuestion(drawn, drawn, True)
        out.append(own)
    return out


def load_official_image(path: str | os.PathLike[str]) -> Image.Image:
    """The file as their `_load_image` gives it (evaluate.py:188-192): `Image.open(path).copy()`.

    No EXIF transpose (a JPEG with an orientation tag keeps its stored pixel layout), no mode conversion
    (P, RGBA, L, LA, CMYK, ... stay as decoded), the first frame of a multi-frame file. Raises ImageLoadError
    naming the file when it is missing or cannot be decoded.
    """
    name = os.fspath(path)
    if not os.path.isfile(name):
        raise ImageLoadError(f"image file {name!r} does not exist (or is not a regular file)")
    try:
        with Image.open(name) as opened:
            return opened.copy()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise ImageLoadError(
            f"cannot read image file {name!r}: expected a file PIL can decode, got {type(err).__name__}: {err}"
        ) from err


def fetch_image_size(
    height: int,
    width: int,
    factor: int = FETCH_FACTOR,
    min_pixels: int = FETCH_MIN_PIXELS,
    max_pixels: int = FETCH_MAX_PIXELS,
) -> tuple[int, int]:
    """qwen-vl-utils' own `smart_resize` (vision_process.py:59-85), the (height, width) `fetch_image` resizes to.

        ratio max(H, W) / min(H, W) > 200 -> ValueError (their worker then fails the whole batch)
        h, w = max(f, round(H / f) * f), max(f, round(W / f) * f)      (Python's round, half to even)
        if h * w > max_pixels:   b = sqrt(H * W / max_pixels); h, w = floor(H / b / f) * f, floor(W / b / f) * f
        elif h * w < min_pixels: b = sqrt(min_pixels / (H * W)); h, w = ceil(H * b / f) * f, ceil(W * b / f) * f

    It differs from the processor's (`processing.image.smart_resize`) in the `max(f, .)` of the first line
    (a 10 px side rounds to 28 here, to 0 there, which sends the processor to its min_pixels branch) and in
    having no `max(f, .)` after the floor.
    """
    if isinstance(height, bool) or isinstance(width, bool) or min(height, width) <= 0:
        raise ValueError(f"fetch_image_size: expected positive sides, found height={height}, width={width}")
    ratio = max(height, width) / min(height, width)
    if ratio > FETCH_MAX_RATIO:
        raise ValueError(f"absolute aspect ratio must be smaller than {FETCH_MAX_RATIO}, got {ratio}")
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = math.floor(height / beta / factor) * factor
        w_bar = math.floor(width / beta / factor) * factor
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def fetch_image_rgb(image: Image.Image) -> Image.Image:
    """qwen-vl-utils' `to_rgb` (vision_process.py:88-94): RGBA is pasted onto white with its alpha as the mask;
    every other mode is a plain `convert("RGB")`, which DROPS the alpha of LA and PA and the transparency of
    palette images (only the processor, in stage 2, composites those)."""
    if image.mode == "RGBA":
        white = Image.new("RGB", image.size, (255, 255, 255))
        white.paste(image, mask=image.split()[3])
        return white
    return image.convert("RGB")


def official_stage1_image(
    image: str | os.PathLike[str] | Image.Image,
    *,
    min_pixels: int = FETCH_MIN_PIXELS,
    max_pixels: int = FETCH_MAX_PIXELS,
    factor: int = FETCH_FACTOR,
) -> Image.Image:
    """The stage-1 image as qwen-vl-utils' `fetch_image` hands it to the processor (vision_process.py:97-140).

    Their stage-1 message names the file (`file://` + path, protocol.py:208) and carries no min/max_pixels;
    `process_vision_info` (evaluate.py:259) calls `fetch_image`, which opens it with `Image.open` (no EXIF
    transpose), applies `fetch_image_rgb`, and resizes to `fetch_image_size` with PIL's default filter for
    RGB, BICUBIC (`image.resize((w, h))`; an unchanged size is a copy). `image` is a path or a PIL image as
    opened (`load_official_image`). The result is RGB, without a `transparency` key (`processor_view`); give
    it to `preprocess_images` with the checkpoint's min/max_pixels for the processor's own resize. Raises
    ImageLoadError for an unreadable file, ValueError for an aspect ratio over 200.
    """
    source = load_official_image(image) if isinstance(image, (str, os.PathLike)) else image
    rgb = fetch_image_rgb(source)
    height, width = fetch_image_size(rgb.height, rgb.width, factor, min_pixels, max_pixels)
    return processor_view(rgb.resize((width, height), resample=Image.Resampling.BICUBIC))


def official_stage1_sizes(
    height: int, width: int, processor_min_pixels: int, processor_max_pixels: int
) -> tuple[tuple[int, int], tuple[int, int]]:
    """(fetch_image's (h, w), the processor's (h, w)) for an H x W stage-1 image: the two resizes in a row.

    The second is the processor's `smart_resize` (`processing.image.smart_resize`, factor 28) applied to the
    first; it changes nothing when the first already lies in the checkpoint's [min_pixels, max_pixels]. A
    checkpoint without max_pixels in its preprocessor_config.json gets the processor default 28 * 28 * 1280 =
    1,003,520 (transformers' and this project's `MAX_PIXELS`).
    """
    first = fetch_image_size(height, width)
    second = smart_resize(*first, factor=FETCH_FACTOR, min_pixels=processor_min_pixels,
                          max_pixels=processor_max_pixels)
    return first, second


def processor_view(image: Image.Image) -> Image.Image:
    """`image` as the project's `load_image` must see it to give what the authors' processor gave.

    Their transformers (4.x) `convert_to_rgb` returns an RGB image unchanged, colour key or not, and converts
    any other mode through RGBA with an alpha composite on white; the project's rule (transformers 5.x) does
    the same except that it also applies an RGB image's `transparency` colour key. So an RGB image loses that
    key here; every other image is returned as it is.
    """
    if image.mode != "RGB" or "transparency" not in image.info:
        return image
    plain = image.copy()
    del plain.info["transparency"]
    return plain


def official_stage2_images(original: Image.Image, bbox: object) -> tuple[Image.Image, Image.Image, OfficialCrop]:
    """The two stage-2 images in the order their processor gets them (evaluate.py:306-310, :317-323), and the crop.

    `original` is `load_official_image(path)`: the file's own mode and pixel layout. The crop is cut and
    upscaled in that mode by `official.stage2_crop` (protocol.py:366-387; PIL resamples P and 1 images with
    NEAREST and LA / RGBA in premultiplied alpha), so an RGBA crop is resized BEFORE the processor composites
    it onto white. Both go through `processor_view`; give them to `preprocess_images`.
    """
    crop_image, crop = stage2_crop(original, bbox)
    return processor_view(original), processor_view(crop_image), crop
