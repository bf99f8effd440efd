"""Crop-and-zoom geometry of the Zoom-IQA crop tool (issue 3, "Zoom-IQA inference"; Zoom-IQA Sec. 3.2).

The model asks for a region with `"bbox_2d": [x1, y1, x2, y2]`. The region is cut from the ORIGINAL image (its
file pixel size W x H, not the smart-resized model input) and upscaled for the second turn. The rule, in
order:

1. A box that is not four finite numbers (numbers or numeric strings), or the all-zero "no crop" box, falls
   back to the central crop `[W//4, H//4, 3W//4, 3H//4]`, used as is (widened to 1 px on images under 4 px).
2. If all four values lie in [0, 1] the box is normalized and is scaled by (W, H); otherwise it is read as
   pixels. (So a pixel box `[0, 0, 1, 1]` is read as the whole image: this ambiguity is part of the protocol.)
3. Clamp each corner to the image, swap reversed corners.
4. Snap to the pixel grid by truncation (`int()`; the values are >= 0 here, so this is floor).
5. Widen a degenerate side by 1 px (to the right/bottom, or to the left/top when it sits on the far border).
6. If the area is under 0.25 W H or over 0.75 W H, rescale both sides by `sqrt(target / area)` about the box
   centre, then clip to the image. Clipping can leave a box that touches the border under 0.25 W H; this is
   the published behaviour (the box is not shifted back inside).
7. A side shorter than `min(28, W)` (resp. H) grows to exactly that length: `floor(delta / 2)` px on the
   left/top, the rest on the right/bottom, then the box is shifted back inside the image.
8. Truncate the (float) corners to integers with `int()`.

Rounding convention (fixed by the authors' golden cases): corners are truncated toward zero, never rounded,
both when the request is snapped to the grid (step 4) and on output (step 8).
`adjust_bbox([0, 0, 100, 100], 100, 100)` rescales to [6.70, 6.70, 93.30, 93.30]; truncation gives
[6, 6, 93, 93] where rounding would give [7, 7, 93, 93]. `adjust_bbox([40, 40, 50, 50], 100, 100)` rescales by
5 about (45, 45) to exactly [20, 20, 70, 70].

The crop is then upscaled with LANCZOS to the largest size inside W x H that keeps the crop's aspect ratio.
"""

from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass

from PIL import Image

MIN_AREA_RATIO = 0.25
MAX_AREA_RATIO = 0.75
MIN_SIDE = 28

_NUMERIC = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


@dataclass(frozen=True)
class CropBox:
    """An adjusted crop on an image of `image_size` = (W, H).

    `pixel` holds integer corners (x1, y1, x2, y2) with 0 <= x1 < x2 <= W, 0 <= y1 < y2 <= H; `normalized` is
    the same box divided by (W, H). `fallback` is True when the request was unusable and the central crop was
    used; `adjustments` names the rule steps that changed the request, for logs.
    """

    pixel: tuple[int, int, int, int]
    normalized: tuple[float, float, float, float]
    image_size: tuple[int, int]
    fallback: bool
    adjustments: tuple[str, ...] = ()

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the crop in pixels."""
        x1, y1, x2, y2 = self.pixel
        return x2 - x1, y2 - y1


def coerce_number(value: object) -> float | None:
    """A finite float from a real number (int, float, NumPy scalar) or a numeric string; None for anything
    else, bools included."""
    if isinstance(value, str):
        text = value.strip()
        if _NUMERIC.fullmatch(text) is None:
            return None
        value = text
    elif isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    try:
        number = float(value)
    except (OverflowError, ValueError):
        return None
    return number if math.isfinite(number) else None


def coerce_box(box: object) -> tuple[float, float, float, float] | None:
    """Four finite numbers from a list, tuple or 1-D NumPy array of four numbers or numeric strings."""
    if not isinstance(box, (list, tuple)) and type(box).__module__ == "numpy" and hasattr(box, "tolist"):
        box = box.tolist()
    if not isinstance(box, (list, tuple)) or len(box) != 4:
        return None
    values = [coerce_number(v) for v in box]
    if any(v is None for v in values):
        return None
    x1, y1, x2, y2 = values
    return x1, y1, x2, y2


def central_box(width: int, height: int) -> tuple[int, int, int, int]:
    """The fallback crop [W//4, H//4, 3W//4, 3H//4], widened to 1 px where the image is under 4 px."""
    _check_size(width, height)
    x1, y1, x2, y2 = width // 4, height // 4, 3 * width // 4, 3 * height // 4
    return x1, y1, max(x2, x1 + 1), max(y2, y1 + 1)


def crop_box(box: object, width: int, height: int) -> CropBox:
    """Adjust a model-requested box on a W x H image by the rule in the module docstring (issue 3).

    Never raises on the box (any object); raises ValueError only when width or height is not a positive int.
    """
    _check_size(width, height)
    values = coerce_box(box)
    if values is None or all(v == 0 for v in values):
        return _make(central_box(width, height), width, height, fallback=True, notes=("central fallback",))
    notes: list[str] = []
    x1, y1, x2, y2 = values
    if all(0.0 <= v <= 1.0 for v in values):
        x1, x2, y1, y2 = x1 * width, x2 * width, y1 * height, y2 * height
        notes.append("normalized")
    fx1, fx2 = _clamp(x1, width), _clamp(x2, width)
    fy1, fy2 = _clamp(y1, height), _clamp(y2, height)
    if (fx1, fx2, fy1, fy2) != (x1, x2, y1, y2):
        notes.append("clamped")
    if fx1 > fx2 or fy1 > fy2:
        notes.append("swapped")
    snapped = (*sorted((int(fx1), int(fx2))), *sorted((int(fy1), int(fy2))))
    ix1, ix2 = _widen(snapped[0], snapped[1], width)
    iy1, iy2 = _widen(snapped[2], snapped[3], height)
    if (ix1, ix2, iy1, iy2) != snapped:
        notes.append("widened degenerate")

    bx1, by1, bx2, by2 = _rescale_area(ix1, iy1, ix2, iy2, width, height, notes)
    bx1, bx2 = _min_side(bx1, bx2, width, notes, "width")
    by1, by2 = _min_side(by1, by2, height, notes, "height")
    pixel = (int(bx1), int(by1), int(bx2), int(by2))
    return _make(pixel, width, height, fallback=False, notes=tuple(notes))


def adjust_bbox(box: object, width: int, height: int) -> list[int]:
    """The pixel corners [x1, y1, x2, y2] of `crop_box(box, width, height)` (the golden-case function)."""
    return list(crop_box(box, width, height).pixel)


def zoom_size(crop_width: int, crop_height: int, width: int, height: int) -> tuple[int, int]:
    """The largest (w, h) inside W x H with the crop's aspect ratio; the longer relative side fills W or H.

    Integer arithmetic: if crop_w * H >= crop_h * W then (W, floor(crop_h * W / crop_w)) else
    (floor(crop_w * H / crop_h), H); each side at least 1.
    """
    _check_size(crop_width, crop_height)
    _check_size(width, height)
    if crop_width * height >= crop_height * width:
        return width, max(1, crop_height * width // crop_width)
    return max(1, crop_width * height // crop_height), height


def crop_and_zoom(image: Image.Image, box: object) -> Image.Image:
    """Cut `box` (a raw model box, or a CropBox for this image) from the ORIGINAL image; upscale it (LANCZOS).

    The output keeps the crop's aspect ratio and fits inside the image's own W x H (see `zoom_size`).
    Use `crop_box(box, *image.size)` first when the box is needed in pixel and normalized frames.
    """
    width, height = image.size
    if isinstance(box, CropBox):
        if box.image_size != (width, height):
            raise ValueError(
                f"crop_and_zoom: CropBox was computed for an image of size {box.image_size}, "
                f"but the image is {(width, height)}"
            )
        crop = box
    else:
        crop = crop_box(box, width, height)
    region = image.crop(crop.pixel)
    return region.resize(zoom_size(*crop.size, width, height), resample=Image.Resampling.LANCZOS)


def _check_size(width: object, height: object) -> None:
    for name, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"crop geometry: expected a positive int {name}, found {value!r}")


def _clamp(value: float, limit: int) -> float:
    return min(max(value, 0.0), float(limit))


def _widen(lo: int, hi: int, limit: int) -> tuple[int, int]:
    """A zero-length side grows by 1 px: to hi + 1 when room is left, else to lo - 1."""
    if lo != hi:
        return lo, hi
    return (lo, hi + 1) if hi < limit else (lo - 1, hi)


def _rescale_area(
    x1: int, y1: int, x2: int, y2: int, width: int, height: int, notes: list[str]
) -> tuple[float, float, float, float]:
    """Scale about the centre so the area reaches [0.25, 0.75] x W x H, then clip to the image."""
    area = (x2 - x1) * (y2 - y1)
    full = width * height
    if area < MIN_AREA_RATIO * full:
        scale = math.sqrt(MIN_AREA_RATIO * full / area)
        notes.append("area too small")
    elif area > MAX_AREA_RATIO * full:
        scale = math.sqrt(MAX_AREA_RATIO * full / area)
        notes.append("area too large")
    else:
        return float(x1), float(y1), float(x2), float(y2)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    half_w, half_h = (x2 - x1) * scale / 2, (y2 - y1) * scale / 2
    return (
        max(0.0, cx - half_w),
        max(0.0, cy - half_h),
        min(float(width), cx + half_w),
        min(float(height), cy + half_h),
    )


def _min_side(lo: float, hi: float, limit: int, notes: list[str], name: str) -> tuple[float, float]:
    """Grow a side shorter than min(28, limit) to that length, floor(delta/2) before, then shift inside."""
    target = min(MIN_SIDE, limit)
    if hi - lo >= target:
        return lo, hi
    notes.append(f"{name} < {target}px")
    lo = lo - math.floor((target - (hi - lo)) / 2)
    lo = min(max(lo, 0.0), float(limit - target))
    return lo, lo + target


def _make(
    pixel: tuple[int, int, int, int], width: int, height: int, *, fallback: bool, notes: tuple[str, ...]
) -> CropBox:
    x1, y1, x2, y2 = pixel
    x1, x2 = min(max(x1, 0), width), min(max(x2, 0), width)
    y1, y2 = min(max(y1, 0), height), min(max(y2, 0), height)
    normalized = (x1 / width, y1 / height, x2 / width, y2 / height)
    return CropBox((x1, y1, x2, y2), normalized, (width, height), fallback, notes)


def box_iou(a: object, b: object) -> float:
    """Intersection over union of two boxes ``[x1, y1, x2, y2]`` (numbers or numeric strings, as
    `coerce_box` reads them), reversed corners swapped.

    ``IoU = area(a & b) / (area(a) + area(b) - area(a & b))``; 0.0 when either box is None, not four finite
    numbers, or of zero area (the "no crop" box ``[0, 0, 0, 0]``); range [0, 1].
    """
    boxes = []
    for box in (a, b):
        values = None if box is None else coerce_box(box)
        if values is None:
            return 0.0
        x1, y1, x2, y2 = values
        boxes.append((min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)))
    (ax1, ay1, ax2, ay2), (bx1, by1, bx2, by2) = boxes
    area_a = (ax2 - ax1) * (ay2 - ay1)
    area_b = (bx2 - bx1) * (by2 - by1)
    if area_a <= 0.0 or area_b <= 0.0:
        return 0.0
    inter = max(0.0, min(ax2, bx2) - max(ax1, bx1)) * max(0.0, min(ay2, by2) - max(ay1, by1))
    return inter / (area_a + area_b - inter)
