"""The authors' Zoom-IQA evaluation protocol, `official`: stage-2 labels, routing, fallback, crop geometry.

First pieces of issue 18 ("Reproduce the authors' Zoom-IQA evaluation exactly"), items 3-6. Pure functions
that reproduce what the authors' released evaluation does, read from their code (GitHub
EthanLiang99/Zoom-IQA, commit f4dee23, `src/zoomiqa/inference/protocol.py` and `evaluate.py`; the line numbers
cited below are of that commit). Nothing here is wired into `zoomiqa score` / `eval` / GRPO yet; the
project's own rule (`strict`, today's behaviour) stays in `processing/crop.py` and `processing/answers.py`.

Where `official` differs from `crop.py`:

* Routing takes the decoded answer object as it is: a box that is not all zero (`== 0`, so `False` and `0.0`
  count as zero, `"0"` does not) asks for a crop unless `tool` is exactly the string "final".
* A box is read with Python `float()`: numeric strings (`" 0.5 "`, `"1_0"`, `"nan"`), booleans (1.0 / 0.0) and
  NaN are numbers here. NaN is clamped to 0 by `max(0.0, min(nan, W))`, it does NOT fall back; only a box
  that is not a list/tuple, not four values, not float-convertible or all zero after `float()` falls back.
* The central-crop fallback [W//4, H//4, 3W//4, 3H//4] is neither widened (it is empty on a 1 px side) nor
  upscaled.
* The crop size side fix runs two passes (a 28 px pass with float `delta // 2` and `(delta + 1) // 2`, then a
  `min(28, side)` pass), and the upscale size is `int(W / ratio)` / `int(H * ratio)` on the float aspect ratio
  with a strict `>`. Both can land one pixel away from `crop.py`'s integer rule on thin and odd sizes (the
  cases are pinned in tests/processing/test_official.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from PIL import Image

from zoomiqa_jax.processing.crop import MAX_AREA_RATIO, MIN_AREA_RATIO, MIN_SIDE

# Stage-2 labels as the authors write them (protocol.py:223 and :225), trailing spaces and capitals included.
# The project's `strict` default PromptSet writes "Cropped image: " (lower-case i).
OFFICIAL_ORIGINAL_LABEL = "Original image: "
OFFICIAL_CROP_LABEL = "Cropped Image: "

RoutingWarning = Literal["invalid_bbox", "invalid_rating", "invalid_tool", "parse_error"]


@dataclass(frozen=True)
class OfficialRouting:
    """Whether a stage-1 answer gets a second round under the authors' evaluation.

    `rounds` is 1 or 2. `warning` is the class the authors record as `routing_warning` when the answer object
    lacks a key the router needs (evaluate.py:291); it is None for a well-formed answer. `bbox` is the raw box
    to hand to `stage2_box` when `rounds == 2`, else None. The round-1 rating of a one-round answer is read
    separately (evaluate.py:360, `extract_rating`): a missing rating is then also the record's `error`.
    """

    rounds: int
    warning: RoutingWarning | None
    bbox: object = None
    tool: object = None


@dataclass(frozen=True)
class OfficialCrop:
    """The pixel box (x1, y1, x2, y2) the authors cut from a W x H image, and whether it is the fallback.

    `reasons` lists the adjustments their `adjust_bbox` logs (protocol.py:241-316), in order.
    """

    pixel: tuple[int, int, int, int]
    fallback: bool
    reasons: tuple[str, ...] = ()


def route_answer(answer: object) -> OfficialRouting:
    """Route a decoded stage-1 answer object (the JSON value inside `<answer>`) as the authors do.

    Their `parse_answer` (protocol.py:170-194) and the loop of `_evaluate_batch` (evaluate.py:279-304):

    1. A value that is not a dict: one round, "parse_error" (protocol.py:149-150; its message has none of the
       words `_categorize_parse_error`, evaluate.py:173-185, looks for).
    2. Keys are checked in the order `bbox_2d`, `rating`, `tool` (protocol.py:173-184): the first missing one
       gives one round and "invalid_bbox" / "invalid_rating" / "invalid_tool". So a crop request without a
       `rating` gets one round and "invalid_rating". A present rating is NOT checked here: `"rating": "bad"`
       or `null` with a crop request still gets two rounds (the authors' own test says so).
    3. `all(c == 0 for c in bbox_2d)`; a box that cannot be iterated (a number, `null`, `true`) gives one round
       and "invalid_bbox" (protocol.py:185-188). A string or dict iterates over its characters / keys.
    4. Two rounds unless the box is all zero or `tool == "final"` exactly (protocol.py:193); `"Final"`,
       `" final"`, `["final"]` and any other tool ask for a crop when the box is not all zero.

    Missing or unparsable `<answer>` blocks (`missing_answer`, `malformed_json`) are decided by the answer
    parser before this function (issue 18 item 7, not built yet).
    """
    if not isinstance(answer, dict):
        return OfficialRouting(1, "parse_error")
    for key, warning in (("bbox_2d", "invalid_bbox"), ("rating", "invalid_rating"), ("tool", "invalid_tool")):
        if key not in answer:
            return OfficialRouting(1, warning)
    bbox, tool = answer["bbox_2d"], answer["tool"]
    try:
        all_zero = all(value == 0 for value in bbox)
    except TypeError:
        return OfficialRouting(1, "invalid_bbox")
    if all_zero or tool == "final":
        return OfficialRouting(1, None, tool=tool)
    return OfficialRouting(2, None, bbox=bbox, tool=tool)


def central_fallback_box(width: int, height: int) -> tuple[int, int, int, int]:
    """The authors' central crop [W//4, H//4, 3W//4, 3H//4] (protocol.py:340), with `W * 3 // 4` as written.

    Not widened: an image 1 px wide or high gives an empty side ([0, 0, 0, 0] on a 1 x 1 image), where
    `crop.central_box` widens to 1 px.
    """
    _check_size(width, height)
    return width // 4, height // 4, width * 3 // 4, height * 3 // 4


def stage2_box(bbox: object, width: int, height: int) -> OfficialCrop:
    """The pixel box the authors cut for a crop request `bbox` on a W x H image (`crop_bbox_for_stage2`).

    protocol.py:331-340, the fallback: `bbox` is falsy, not a list/tuple, not 4 long, some value fails
    `float()` (TypeError or ValueError: `None`, `"a"`, `[0.1]`), or every `float()` value is 0 (so
    `["0", "0", "0", "0"]`, which routing sends to a crop, falls back here). Booleans and numeric strings
    pass `float()` and are numbers. An int too large for a float raises OverflowError, which their
    `except (TypeError, ValueError)` does not catch either (their worker then marks the whole batch
    `runtime_error`, evaluate.py `_worker`); it is left to propagate here too.
    protocol.py:342-345: all four values in [0, 1] (NaN fails this test) -> scaled by (W, H), else pixels.
    protocol.py:346-351: clamp to [0, W] / [0, H] by `max(0.0, min(v, W))` (NaN -> 0.0, inf -> W), then swap.
    protocol.py:352-361: equal corners widen by 1 (right/bottom, or left/top on the far border), in float.
    protocol.py:362: then `adjust_box`.
    """
    _check_size(width, height)
    values = _float_box(bbox)
    if values is None or all(value == 0 for value in values):
        return OfficialCrop(central_fallback_box(width, height), True, ("central fallback",))
    x1, y1, x2, y2 = values
    if all(0.0 <= value <= 1.0 for value in values):
        x1, x2, y1, y2 = x1 * width, x2 * width, y1 * height, y2 * height
    x1, x2 = _clamp_float(x1, width), _clamp_float(x2, width)
    y1, y2 = _clamp_float(y1, height), _clamp_float(y2, height)
    x1, x2 = min(x1, x2), max(x1, x2)
    y1, y2 = min(y1, y2), max(y1, y2)
    x1, x2 = _widen_float(x1, x2, width)
    y1, y2 = _widen_float(y1, y2, height)
    pixel, reasons = adjust_box((x1, y1, x2, y2), width, height)
    return OfficialCrop(pixel, False, reasons)


def adjust_box(
    box: Sequence[float], width: int, height: int
) -> tuple[tuple[int, int, int, int], tuple[str, ...]]:
    """The authors' `adjust_bbox` (protocol.py:232-324) with its defaults (28 px, area in [0.25, 0.75] W H).

    1. (:242-252) `int()` each corner (truncation toward zero), swap, clamp to the image, widen an empty side
       by 1 px to the right/bottom (`min(x1 + 1, W)`, so it stays empty at x1 == W).
    2. (:254-268) An area `0 < a < 0.25 W H` or `a > 0.75 W H` is rescaled by `sqrt(target / a)` about the
       centre and clipped to the image (floats from here on).
    3. (:270-294) First pass, a side under 28 px (28, not min(28, W)): `delta = 28 - side` (a float after a
       rescale), `x1 -= delta // 2`, `x2 += (delta + 1) // 2` (float floor division: for a non-integer delta
       the side grows by one pixel less than delta), shift right if x1 < 0, shift left if x2 > W, `x1 = max(0,
       x1)`.
    4. (:296-316) Second pass, a side under `min(28, W)`: `need = target - side`; grow the left by
       `min(need // 2, x1)`, the right by `min(need - left, W - x2)`; still short (and W >= target) ->
       `x1 = max(0, min(x1 - (target - side), W - target))`, `x2 = x1 + target`.
    5. (:318-323) Clamp and `int()` each corner separately.

    Returns the pixel box and the logged reasons. `box` must hold four finite numbers (ValueError otherwise;
    `stage2_box` guarantees it).
    """
    _check_size(width, height)
    if len(box) != 4 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in box):
        raise ValueError(f"official adjust_box: expected four finite numbers, found {box!r}")
    reasons: list[str] = []
    ix1, iy1, ix2, iy2 = (int(v) for v in box)
    ix1, ix2 = _clamp_int(min(ix1, ix2), width), _clamp_int(max(ix1, ix2), width)
    iy1, iy2 = _clamp_int(min(iy1, iy2), height), _clamp_int(max(iy1, iy2), height)
    if ix1 == ix2:
        ix2 = min(ix1 + 1, width)
    if iy1 == iy2:
        iy2 = min(iy1 + 1, height)

    area, full = (ix2 - ix1) * (iy2 - iy1), width * height
    x1: float = ix1
    x2: float = ix2
    y1: float = iy1
    y2: float = iy2
    scale = 1.0
    if 0 < area < full * MIN_AREA_RATIO:
        scale = math.sqrt(full * MIN_AREA_RATIO / area)
        reasons.append("area too small")
    elif area > full * MAX_AREA_RATIO:
        scale = math.sqrt(full * MAX_AREA_RATIO / area)
        reasons.append("area too large")
    if scale != 1.0:
        cx, cy = (ix1 + ix2) / 2, (iy1 + iy2) / 2
        new_w, new_h = (ix2 - ix1) * scale, (iy2 - iy1) * scale
        x1, x2 = max(0, cx - new_w / 2), min(width, cx + new_w / 2)
        y1, y2 = max(0, cy - new_h / 2), min(height, cy + new_h / 2)

    x1, x2 = _first_pass(x1, x2, width, reasons, "width")
    y1, y2 = _first_pass(y1, y2, height, reasons, "height")
    x1, x2 = _second_pass(x1, x2, width, reasons, "width")
    y1, y2 = _second_pass(y1, y2, height, reasons, "height")
    pixel = (
        int(max(0, min(x1, width))),
        int(max(0, min(y1, height))),
        int(max(0, min(x2, width))),
        int(max(0, min(y2, height))),
    )
    return pixel, tuple(reasons)


def upscale_size(crop_width: int, crop_height: int, width: int, height: int) -> tuple[int, int]:
    """The size the authors resize a (non-fallback) crop to (protocol.py:375-384).

    `ratio = crop_w / crop_h`; if `ratio > W / H` (strict, floats): `(W, int(W / ratio))`, else
    `(int(H * ratio), H)`; each side at least 1. The float division can truncate one pixel below
    `crop.zoom_size`'s integer `crop_h * W // crop_w`, and a crop with exactly the image's aspect ratio takes
    the second branch.
    """
    _check_size(crop_width, crop_height)
    _check_size(width, height)
    ratio = crop_width / crop_height
    if ratio > width / height:
        new_width, new_height = width, int(width / ratio)
    else:
        new_width, new_height = int(height * ratio), height
    return max(1, new_width), max(1, new_height)


def stage2_crop(image: Image.Image, bbox: object) -> tuple[Image.Image, OfficialCrop]:
    """The authors' `crop_for_stage2` (protocol.py:366-387): cut `stage2_box` from `image` (its file size and
    mode, as loaded); the central fallback is returned as cut, without upscaling (protocol.py:373-374); any
    other crop is resized to `upscale_size` with LANCZOS (PIL itself uses NEAREST for "P" and "1" images).
    """
    width, height = image.size
    crop = stage2_box(bbox, width, height)
    region = image.crop(crop.pixel)
    if crop.fallback:
        return region, crop
    size = upscale_size(region.width, region.height, width, height)
    return region.resize(size, resample=Image.Resampling.LANCZOS), crop


def _float_box(bbox: object) -> tuple[float, float, float, float] | None:
    """Four `float()` values, or None where the authors fall back (protocol.py:331-336)."""
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        return None
    try:
        x1, y1, x2, y2 = (float(value) for value in bbox)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return x1, y1, x2, y2


def _clamp_float(value: float, limit: int) -> float:
    # max(0.0, min(v, limit)) keeps Python's argument order: min(nan, W) is nan, max(0.0, nan) is 0.0.
    return max(0.0, min(value, limit))


def _clamp_int(value: int, limit: int) -> int:
    return max(0, min(value, limit))


def _widen_float(lo: float, hi: float, limit: int) -> tuple[float, float]:
    if lo != hi:
        return lo, hi
    return (lo, hi + 1) if hi < limit else (lo - 1, hi)


def _first_pass(lo: float, hi: float, limit: int, reasons: list[str], name: str) -> tuple[float, float]:
    """protocol.py:271-294: grow a side under 28 px by delta // 2 and (delta + 1) // 2, shift inside."""
    side = hi - lo
    if side >= MIN_SIDE:
        return lo, hi
    delta = MIN_SIDE - side
    reasons.append(f"{name} < {MIN_SIDE}px")
    lo -= delta // 2
    hi += (delta + 1) // 2
    if lo < 0:
        hi -= lo
        lo = 0
    if hi > limit:
        lo -= hi - limit
        hi = limit
    return max(0, lo), hi


def _second_pass(lo: float, hi: float, limit: int, reasons: list[str], name: str) -> tuple[float, float]:
    """protocol.py:296-316: grow a side under min(28, limit) to that length."""
    target = min(MIN_SIDE, limit)
    if hi - lo >= target:
        return lo, hi
    need = target - (hi - lo)
    add_lo = min(need // 2, max(0, lo))
    add_hi = min(need - add_lo, max(0, limit - hi))
    lo, hi = lo - add_lo, hi + add_hi
    if hi - lo < target and limit >= target:
        lo = max(0, min(lo - (target - (hi - lo)), limit - target))
        hi = lo + target
    reasons.append(f"final enforce {name} >= {target}px")
    return lo, hi


def _check_size(width: object, height: object) -> None:
    for name, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"official crop geometry: expected a positive int {name}, found {value!r}")
