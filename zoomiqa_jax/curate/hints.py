"""Low-level hints per image for the HACF rater prompt (Zoom-IQA (Liang et al.), Sec. 3.1.1 and supp. 6.3).

The paper gives its rater "pre-computed, low-level hints H (e.g., global brightness, sharpness, color
metrics)" and, for KonIQ, the dataset's own attributes; it does not say how they were computed. These are our
definitions, NumPy only:

Colour space and scale. Every image is first made RGB float64 on [0, 1] (`to_rgb_float`): a path or PIL image
goes through `processing.image.load_image`, the conversion the model itself sees (mode "L" repeated to three
channels, "P" expanded through its palette, an alpha band ("RGBA", "LA", "PA") or a ``transparency`` entry
composited onto white; 16-bit grey saturates at 255, as PIL converts it), then divided by 255. A NumPy array
`[H, W]` or `[H, W, C]` (C in 1, 3, 4) of uint8 / uint16 takes the same route; a float array must lie in
[0, 1] and is used as is (one channel repeated, four channels blended onto white as `a * rgb + (1 - a)`),
without rounding to 8 bits. Luma is BT.601 on that [0, 1] scale: ``Y = 0.299 R + 0.587 G + 0.114 B``.

* brightness   ``mean(Y)``; range [0, 1].
* contrast     RMS contrast ``std(Y)`` (population standard deviation, ddof 0); range [0, 0.5] (0.5 for an
               image half black, half white).
* colorfulness Hasler & Suesstrunk, "Measuring colourfulness in natural images" (SPIE 2003), metric M^(3):
               ``rg = R - G``, ``yb = 0.5 (R + G) - B``,
               ``C = sqrt(sd_rg^2 + sd_yb^2) + 0.3 sqrt(mean_rg^2 + mean_yb^2)`` (population sd) on RGB in
               [0, 1], i.e. the paper's 0-255 value divided by 255; range [0, 1.3 sqrt(2) ~ 1.84], 0 for any
               grey image.
* sharpness    variance of the 4-neighbour Laplacian ``[[0, 1, 0], [1, -4, 1], [0, 1, 0]]`` of Y over the
               interior pixels (no padding, so a flat image gives exactly 0); range [0, 16]. Noise raises
               it too: read it together with noisiness.
* noisiness    Immerkaer, "Fast noise variance estimation" (CVIU 64(2), 1996): the standard deviation
               ``sigma = sqrt(pi / 2) / (6 (W - 2) (H - 2)) * sum |Y * N|`` with
               ``N = [[1, -2, 1], [-2, 4, -2], [1, -2, 1]]`` over the interior pixels; an estimate of the
               sd of additive Gaussian noise on Y, on the [0, 1] scale; range [0, 16 sqrt(pi / 2) / 6
               ~ 3.34]. N cancels any image of the form ``f(x) + g(y)`` (ramps, constant levels), so
               smooth content contributes little; edges and texture do contribute.

Images under 3 x 3 pixels have no interior: sharpness and noisiness are then 0.0 (documented, not an error).

A dataset's own attributes replace the computed values where given (`compute_hints(..., overrides=...)`,
`overrides_from_metadata`). Our label loaders (`data.labels`, `data.builders.manual`) keep only the MOS, not
KonIQ's or SPAQ's attribute columns, so the caller passes them: a dict ``{hint name: value}``. Such values
are on the dataset's scale, not ours, so `render_hints` prints them without a bin word and marks them
"(dataset)".
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping

import numpy as np
from PIL import Image

from zoomiqa_jax.processing.image import ImageLoadError, load_image

HINT_NAMES = ("brightness", "contrast", "colorfulness", "sharpness", "noisiness")
BT601 = (0.299, 0.587, 0.114)

_LAPLACIAN = np.array([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
_IMMERKAER = np.array([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])

# Bins for the words of `render_hints`: (upper bound, word) pairs, half-open [previous bound, bound); a value
# at or above the last bound gets the last word. Our own choice, on the scales above.
BINS: dict[str, tuple[tuple[float, str], ...]] = {
    "brightness": ((0.25, "dark"), (0.40, "dim"), (0.60, "balanced"), (0.75, "bright"), (math.inf, "very bright")),
    "contrast": ((0.08, "low"), (0.16, "moderate"), (0.25, "high"), (math.inf, "very high")),
    # Hasler & Suesstrunk's M^(3) levels (15, 33, 45, 59, 82 on 0-255, from their Table 2 as we recall it)
    # divided by 255.
    "colorfulness": (
        (15 / 255, "not colourful"),
        (33 / 255, "slightly colourful"),
        (45 / 255, "moderately colourful"),
        (59 / 255, "averagely colourful"),
        (82 / 255, "quite colourful"),
        (math.inf, "highly colourful"),
    ),
    # Variance of the Laplacian on [0, 1] luma; 100 on 0-255 luma (a common "blurry below" level) is 0.0015.
    "sharpness": ((0.0005, "blurry"), (0.0015, "soft"), (0.006, "sharp"), (math.inf, "very sharp")),
    # Noise sd on [0, 1]: 1, 3 and 8 grey levels of 255.
    "noisiness": (
        (1 / 255, "clean"),
        (3 / 255, "slight noise"),
        (8 / 255, "noticeable noise"),
        (math.inf, "heavy noise"),
    ),
}

ImageLike = str | os.PathLike | Image.Image | np.ndarray


@dataclasses.dataclass(frozen=True)
class ImageHints:
    """The five hints of one image (scales in the module docstring); `from_metadata` names the fields whose
    value came from the dataset's own attributes instead of our formulas."""

    brightness: float
    contrast: float
    colorfulness: float
    sharpness: float
    noisiness: float
    from_metadata: frozenset[str] = frozenset()

    def to_dict(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in HINT_NAMES}


def to_rgb_float(image: ImageLike) -> np.ndarray:
    """`image` as float64 RGB `[H, W, 3]` on [0, 1], converted as the module docstring says."""
    if isinstance(image, np.ndarray) and np.issubdtype(image.dtype, np.floating):
        array = image[:, :, None] if image.ndim == 2 else image
        if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
            raise ImageLoadError(f"expected an image array [H, W] or [H, W, C], C in (1, 3, 4), got {image.shape}")
        array = array.astype(np.float64)
        if array.size and not (np.all(np.isfinite(array)) and array.min() >= 0.0 and array.max() <= 1.0):
            raise ImageLoadError(f"expected a float image array in [0, 1], got [{array.min()}, {array.max()}]")
        if array.shape[-1] == 1:
            return np.repeat(array, 3, axis=-1)
        if array.shape[-1] == 4:
            alpha = array[..., 3:4]
            return alpha * array[..., :3] + (1.0 - alpha)
        return array
    return np.asarray(load_image(image), dtype=np.float64) / 255.0


def luma(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma ``0.299 R + 0.587 G + 0.114 B`` of `[H, W, 3]` RGB, on the input's scale: `[H, W]`."""
    return rgb[..., 0] * BT601[0] + rgb[..., 1] * BT601[1] + rgb[..., 2] * BT601[2]


def _filter3(y: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Correlation of `[H, W]` with a 3 x 3 kernel over the interior ('valid'): `[H - 2, W - 2]`."""
    h, w = y.shape
    out = np.zeros((h - 2, w - 2))
    for i in range(3):
        for j in range(3):
            if kernel[i, j] != 0.0:
                out += kernel[i, j] * y[i : h - 2 + i, j : w - 2 + j]
    return out


def brightness(rgb: np.ndarray) -> float:
    """``mean(Y)``, BT.601 luma of RGB on [0, 1]; range [0, 1]."""
    return float(luma(rgb).mean())


def contrast(rgb: np.ndarray) -> float:
    """RMS contrast ``std(Y)`` (ddof 0), BT.601 luma of RGB on [0, 1]; range [0, 0.5]."""
    return float(luma(rgb).std())


def colorfulness(rgb: np.ndarray) -> float:
    """Hasler & Suesstrunk (2003) M^(3) on RGB in [0, 1]: ``rg = R - G``, ``yb = 0.5 (R + G) - B``,
    ``sqrt(sd_rg^2 + sd_yb^2) + 0.3 sqrt(mean_rg^2 + mean_yb^2)`` (population sd); range [0, ~1.84]."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    rg = r - g
    yb = 0.5 * (r + g) - b
    return float(math.hypot(rg.std(), yb.std()) + 0.3 * math.hypot(rg.mean(), yb.mean()))


def sharpness(rgb: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian of BT.601 luma (RGB on [0, 1]) over the interior; range [0, 16];
    0.0 for images under 3 x 3."""
    y = luma(rgb)
    if min(y.shape) < 3:
        return 0.0
    return float(_filter3(y, _LAPLACIAN).var())


def noisiness(rgb: np.ndarray) -> float:
    """Immerkaer (1996) noise sd of BT.601 luma (RGB on [0, 1]):
    ``sqrt(pi / 2) / (6 (W - 2) (H - 2)) * sum |Y * N|``, N = [[1, -2, 1], [-2, 4, -2], [1, -2, 1]];
    0.0 for images under 3 x 3."""
    y = luma(rgb)
    if min(y.shape) < 3:
        return 0.0
    response = np.abs(_filter3(y, _IMMERKAER))
    return float(math.sqrt(math.pi / 2.0) * response.sum() / (6.0 * response.size))


def check_overrides(overrides: Mapping[str, object], where: str = "overrides") -> dict[str, float]:
    """`overrides` as ``{hint name: float}``; an unknown name or a non-finite / non-numeric value raises
    ValueError naming `where` and the key."""
    out = {}
    for key, value in overrides.items():
        if key not in HINT_NAMES:
            raise ValueError(f"{where}: unknown hint {key!r}; expected one of {list(HINT_NAMES)}")
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ValueError(f"{where}[{key!r}]: expected a number, got {type(value).__name__} {value!r}")
        if not math.isfinite(float(value)):
            raise ValueError(f"{where}[{key!r}]: expected a finite number, got {value!r}")
        out[key] = float(value)
    return out


# Column spellings `overrides_from_metadata` accepts per hint (compared case-insensitively, spaces and
# underscores ignored). SPAQ's sheet names its attributes Brightness, Colorfulness, Contrast, Noisiness,
# Sharpness (docs/datasets.md; the exact header text is not confirmed); KonIQ's attribute columns are matched
# by the same plain names.
METADATA_ALIASES: dict[str, tuple[str, ...]] = {
    "brightness": ("brightness",),
    "contrast": ("contrast",),
    "colorfulness": ("colorfulness", "colourfulness"),
    "sharpness": ("sharpness",),
    "noisiness": ("noisiness", "noise"),
}


def _norm_key(key: str) -> str:
    return key.strip().lower().replace(" ", "").replace("_", "")


def overrides_from_metadata(row: Mapping[str, object], where: str = "metadata") -> dict[str, float]:
    """The hint values a dataset's label row carries, as ``{hint name: float}``.

    A column counts when its name matches one of `METADATA_ALIASES` (case-insensitive, spaces and underscores
    ignored); an empty value (None or "") is skipped; a numeric string is read as a float; anything else
    raises ValueError naming `where` and the column.
    """
    by_name = {_norm_key(str(k)): k for k in row}
    out: dict[str, object] = {}
    for hint, aliases in METADATA_ALIASES.items():
        for alias in aliases:
            column = by_name.get(alias)
            if column is None:
                continue
            value = row[column]
            if value is None or (isinstance(value, str) and not value.strip()):
                break
            if isinstance(value, str):
                try:
                    value = float(value)
                except ValueError:
                    raise ValueError(f"{where}[{column!r}]: expected a number, got {value!r}") from None
            out[hint] = value
            break
    return check_overrides(out, where)


def compute_hints(image: ImageLike, overrides: Mapping[str, object] | None = None) -> ImageHints:
    """The five hints of `image` (formulas in the module docstring); `overrides` (``{hint name: value}``, e.g.
    from `overrides_from_metadata`) replaces the computed value of each hint it names."""
    rgb = to_rgb_float(image)
    given = check_overrides(overrides or {})
    values = {
        "brightness": brightness(rgb),
        "contrast": contrast(rgb),
        "colorfulness": colorfulness(rgb),
        "sharpness": sharpness(rgb),
        "noisiness": noisiness(rgb),
    }
    values.update(given)
    return ImageHints(**values, from_metadata=frozenset(given))


def bin_word(name: str, value: float) -> str:
    """The `BINS` word for hint `name` at `value`: the first bin whose upper bound exceeds it."""
    if name not in BINS:
        raise ValueError(f"unknown hint {name!r}; expected one of {list(HINT_NAMES)}")
    for bound, word in BINS[name]:
        if value < bound:
            return word
    return BINS[name][-1][1]


def _number(value: float) -> str:
    """4 decimals from 0.01 up, 4 significant digits below; under 1e-9 (float rounding of a zero) "0.0000"."""
    if abs(value) < 1e-9:
        return "0.0000"
    return f"{value:.4f}" if abs(value) >= 0.01 else f"{value:.4g}"


def render_hints(hints: ImageHints) -> str:
    """The hint block for a rater prompt, one line per hint: ``- brightness: 0.4200 (balanced)`` (numbers as
    `_number` writes them, words from `BINS`); a value taken from the dataset's metadata reads
    ``- brightness: 61.2000 (dataset)``. A first line names the scales."""
    lines = ["Low-level hints (computed: luma BT.601 on [0, 1]; higher = more of the property):"]
    for name in HINT_NAMES:
        value = getattr(hints, name)
        tag = "dataset" if name in hints.from_metadata else bin_word(name, value)
        lines.append(f"- {name}: {_number(value)} ({tag})")
    return "\n".join(lines)
