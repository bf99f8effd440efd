"""Synthetic degradations for Q-Insight's degradation-perception task (arXiv:2503.22679 Sec. 3.4, Table 3).

Four distortion classes at five severities plus "null" (arXiv:2503.22679 Sec. 3.4):

    classes:    noise, blur, jpeg, darken, null
    severities: slight, moderate, obvious, serious, catastrophic  (levels 1..5)

Q-Insight draws its images from DQ-495K (DepictQA-Wild) and gives no parameters itself. We use, per class,
one of DepictQA's single-distortion generators with its published per-severity parameters (the numbers
only; the code is ours):

    noise   additive Gaussian noise in RGB, sigma (on [0, 1] intensities) = 0.05, 0.10, 0.15, 0.20, 0.25
    blur    Gaussian blur, sigma (pixels)                                  = 1, 2, 3, 4, 5
    jpeg    JPEG re-encoding (PIL, 4:2:0), quality                         = 25, 18, 12, 8, 5
    darken  gamma curve on RGB, out = in ** gamma, gamma                   = 1.4, 1.7, 2.1, 2.6, 3.2

The labels use the vocabulary of the Q-Insight prompt: `distortion_class` is "noise", "blur", "compression"
(for jpeg), "darken" or "null"; `severity` is a level name, or "null" for the undistorted image.

Local flaws (`local_fraction` > 0, the demo's zooming data): a distortion confined to one square-ish patch of known
position and size (`degrade_region`). The patch side, as a fraction of each image side, is drawn from LOCAL_SIDES
(small to large), its centre from the quadrant centres LOCAL_CENTRES (so that where it sits is a small, learnable
choice) and its severity from LOCAL_LEVELS; the label then carries `scope` ("local", "global" or "none") and
`flaw_box`, the patch as a normalized [x1, y1, x2, y2] (two decimals; [0, 0, 1, 1] for a global flaw, null for a
clean image).
"""

from __future__ import annotations

import dataclasses
import io
import json
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from tqdm import tqdm

KINDS = ("noise", "blur", "jpeg", "darken")
NULL = "null"
LEVELS = ("slight", "moderate", "obvious", "serious", "catastrophic")
CLASS_LABELS = {"noise": "noise", "blur": "blur", "jpeg": "compression", "darken": "darken", NULL: NULL}

NOISE_SIGMA = (0.05, 0.10, 0.15, 0.20, 0.25)
BLUR_SIGMA = (1.0, 2.0, 3.0, 4.0, 5.0)
JPEG_QUALITY = (25, 18, 12, 8, 5)
DARKEN_GAMMA = (1.4, 1.7, 2.1, 2.6, 3.2)

# Local flaws: patch sides (fraction of the image side), patch centres (fraction of the image size: the four
# quadrants) and severities (the visible ones: a slight patch is hard to find even for a person at full view).
LOCAL_SIDES = (0.35, 0.45, 0.8)
LOCAL_CENTRES = (0.25, 0.75)
LOCAL_LEVELS = ("obvious", "serious", "catastrophic")
SCOPES = ("local", "global", "none")

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


def level_index(level: str | int) -> int:
    """Severity as 1..5 from a name ("slight".."catastrophic") or an int."""
    if isinstance(level, str):
        name = level.strip().lower()
        if name not in LEVELS:
            raise ValueError(f"unknown severity {level!r}; expected one of {LEVELS} or 1..5")
        return LEVELS.index(name) + 1
    if isinstance(level, int | np.integer) and 1 <= level <= len(LEVELS):
        return int(level)
    raise ValueError(f"severity must be one of {LEVELS} or an int in 1..5, got {level!r}")


def synthetic_mos(kind: str, level: str | int | None) -> float:
    """A stand-in MOS on [1, 5] that falls with severity: null -> 5.0, level k -> 5 - 0.8 k (4.2 .. 1.0).

    It is a label for demos and smoke tests, not a human opinion; it ignores the distortion class.
    """
    if kind == NULL:
        return 5.0
    return 5.0 - 0.8 * level_index(level)  # type: ignore[arg-type]


def degrade(image: Image.Image, kind: str, level: str | int | None, seed: int) -> Image.Image:
    """Apply one distortion at one severity; the same (image, kind, level, seed) gives the same pixels.

    `image` is converted to RGB (alpha dropped). `kind` is one of KINDS or "null" (returns an RGB copy;
    `level` is ignored). `seed` drives the only random part, the noise field.
    """
    rgb = image.convert("RGB")
    if kind == NULL:
        return rgb.copy()
    if kind not in KINDS:
        raise ValueError(f"unknown degradation {kind!r}; expected one of {KINDS} or {NULL!r}")
    k = level_index(level) - 1  # type: ignore[arg-type]
    if kind == "jpeg":
        buf = io.BytesIO()
        rgb.save(buf, format="JPEG", quality=JPEG_QUALITY[k])
        buf.seek(0)
        with Image.open(buf) as decoded:
            return decoded.convert("RGB")
    x = np.asarray(rgb, dtype=np.float64) / 255.0  # [h, w, 3] in [0, 1]
    if kind == "noise":
        rng = np.random.default_rng(seed)
        x = x + rng.normal(0.0, NOISE_SIGMA[k], size=x.shape)
    elif kind == "blur":
        s = BLUR_SIGMA[k]
        x = ndimage.gaussian_filter(x, sigma=(s, s, 0.0), mode="reflect", truncate=4.0)
    else:  # darken
        x = x ** DARKEN_GAMMA[k]
    return Image.fromarray(np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8))  # [h, w, 3] -> RGB


def local_box(side: float, cx: float, cy: float) -> list[float]:
    """The normalized patch [x1, y1, x2, y2] of side `side` centred at (cx, cy), shifted inside [0, 1], two
    decimals."""
    if not 0.0 < side <= 1.0:
        raise ValueError(f"patch side must lie in (0, 1], got {side}")
    x1 = min(max(cx - side / 2, 0.0), 1.0 - side)
    y1 = min(max(cy - side / 2, 0.0), 1.0 - side)
    return [round(x1, 2), round(y1, 2), round(x1 + side, 2), round(y1 + side, 2)]


def box_pixels(box: Sequence[float], width: int, height: int) -> tuple[int, int, int, int]:
    """A normalized box as pixel edges (left, top, right, bottom), rounded, at least one pixel wide and high."""
    left, top = round(box[0] * width), round(box[1] * height)
    right, bottom = max(left + 1, round(box[2] * width)), max(top + 1, round(box[3] * height))
    return left, top, min(right, width), min(bottom, height)


def degrade_region(image: Image.Image, kind: str, level: str | int | None, seed: int,
                   box: Sequence[float]) -> Image.Image:
    """`degrade` applied inside the normalized `box` only; outside it the pixels are the RGB original. The
    distortion is computed on the whole image and the patch cut from it, so a blur near the patch edge sees
    the real neighbourhood and a JPEG patch keeps the encoder's 8 x 8 grid."""
    rgb = image.convert("RGB")
    patch = box_pixels(box, rgb.width, rgb.height)
    out = rgb.copy()
    out.paste(degrade(rgb, kind, level, seed).crop(patch), patch[:2])
    return out


def _resize_short(image: Image.Image, short: int | None) -> Image.Image:
    """Downscale (bicubic) so the short side is `short`; never upscales."""
    if short is None or min(image.size) <= short:
        return image
    ratio = short / min(image.size)
    size = (max(1, round(image.width * ratio)), max(1, round(image.height * ratio)))
    return image.resize(size, resample=Image.BICUBIC)


def _item_seed(seed: int, rel: str) -> int:
    """A per-image seed from the run seed and the image's relative path, independent of listing order."""
    return int(np.random.SeedSequence([seed, zlib.crc32(rel.encode("utf-8"))]).generate_state(1)[0])


@dataclasses.dataclass
class GenerationReport:
    """What `generate_degradation_set` did; also written to <out>/report.json."""

    n_sources: int
    n_written: int
    n_unreadable: int
    unreadable: list[dict[str, str]]
    labels_path: str
    seed: int

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def _plan(
    rng: np.random.Generator, mode: str, kinds: Sequence[str], levels: Sequence[str], null_fraction: float
) -> list[tuple[str, str | None]]:
    if mode == "all":
        return [(NULL, None)] + [(k, lv) for k in kinds for lv in levels]
    if rng.random() < null_fraction:
        return [(NULL, None)]
    return [(kinds[int(rng.integers(len(kinds)))], levels[int(rng.integers(len(levels)))])]


def _draw_flaw(rng: np.random.Generator, kind: str, local_fraction: float) -> dict[str, object]:
    """scope and flaw_box of one image (a patch for a local flaw, the whole image for a global one)."""
    if kind == NULL:
        return {"scope": "none", "flaw_box": None}
    if rng.random() >= local_fraction:
        return {"scope": "global", "flaw_box": [0.0, 0.0, 1.0, 1.0]}
    side = LOCAL_SIDES[int(rng.integers(len(LOCAL_SIDES)))]
    cx, cy = (LOCAL_CENTRES[int(i)] for i in rng.integers(len(LOCAL_CENTRES), size=2))
    return {"scope": "local", "flaw_box": local_box(side, cx, cy)}


def generate_degradation_set(
    src_folder: str | Path,
    out_folder: str | Path,
    seed: int,
    *,
    kinds: Sequence[str] = KINDS,
    levels: Sequence[str] = LEVELS,
    mode: str = "one",
    null_fraction: float = 0.2,
    local_fraction: float = 0.0,
    resize_short: int | None = 224,
    limit: int | None = None,
    progress: bool = True,
) -> GenerationReport:
    """Degrade every image under `src_folder` into `out_folder` and write `labels.jsonl` + `report.json`.

    Per source image, `mode="one"` draws "null" with probability `null_fraction`, else one (kind, level)
    uniformly; `mode="all"` writes "null" and every (kind, level) pair. Every output, "null" included, is
    first downscaled so its short side is `resize_short` (None keeps the size; DepictQA used 224), so the
    image size does not give the class away. Outputs are PNG (lossless, so JPEG artifacts stay exact) named
    "<relative path with '/' -> '__' and '.' -> '_'>__<kind>_<level>.png". Draws and noise depend only on
    `seed` and the relative path.
    The labels are plain JSONL (`data.labels`, fmt="plain"): image (relative to `out_folder`), mos
    (`synthetic_mos`), distortion_class, severity, dataset="degradation", source. Unreadable sources are
    skipped, counted and listed in the report, never fatal.

    `local_fraction` > 0 (mode "one" only): a distorted image is a local flaw with that probability (a patch,
    `degrade_region`; side from LOCAL_SIDES, centre from LOCAL_CENTRES, severity redrawn from LOCAL_LEVELS,
    named "..._local.png"), else global.
    Every label then carries `scope` and `flaw_box` (module docstring); the MOS is that of the severity either
    way, so that the size of a small flaw's damage is only visible up close. With 0 (the default) the draws,
    files and labels are exactly those of the global-only set.
    """
    src, out = Path(src_folder), Path(out_folder)
    if not src.is_dir():
        raise NotADirectoryError(f"source folder not found: {src}")
    if mode not in ("one", "all"):
        raise ValueError(f"mode must be 'one' or 'all', got {mode!r}")
    for k in kinds:
        if k not in KINDS:
            raise ValueError(f"unknown degradation {k!r} in kinds; expected a subset of {KINDS}")
    levels = [LEVELS[level_index(lv) - 1] for lv in levels]
    if not kinds or not levels:
        raise ValueError("kinds and levels must not be empty")
    if not 0.0 <= null_fraction <= 1.0:
        raise ValueError(f"null_fraction must lie in [0, 1], got {null_fraction}")
    if not 0.0 <= local_fraction <= 1.0:
        raise ValueError(f"local_fraction must lie in [0, 1], got {local_fraction}")
    if local_fraction and mode != "one":
        raise ValueError("local_fraction needs mode='one' (mode='all' writes every global distortion)")

    sources = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if limit is not None:
        sources = sources[:limit]
    out.mkdir(parents=True, exist_ok=True)
    labels_path = out / "labels.jsonl"
    unreadable: list[dict[str, str]] = []
    written = 0
    with labels_path.open("w", encoding="utf-8") as labels:
        for path in tqdm(sources, desc="degrading", unit="img", disable=not progress):
            rel = path.relative_to(src).as_posix()
            try:
                with Image.open(path) as im:
                    im.load()
                    base = _resize_short(im.convert("RGB"), resize_short)
            except Exception as err:  # PIL raises many types for bad files; each is counted, none is fatal
                unreadable.append({"path": str(path), "error": f"{type(err).__name__}: {err}"})
                continue
            item_seed = _item_seed(seed, rel)
            rng = np.random.default_rng(item_seed)
            for kind, level in _plan(rng, mode, list(kinds), levels, null_fraction):
                stem = rel.replace("/", "__").replace(".", "_")  # a.png and a.jpg must not collide
                name = f"{stem}__{kind}.png" if kind == NULL else f"{stem}__{kind}_{level}.png"
                flaw: dict[str, object] = {}
                if local_fraction:
                    flaw = _draw_flaw(rng, kind, local_fraction)
                if flaw.get("scope") == "local":
                    level = LOCAL_LEVELS[int(rng.integers(len(LOCAL_LEVELS)))]
                    name = f"{stem}__{kind}_{level}_local.png"
                    degrade_region(base, kind, level, item_seed, flaw["flaw_box"]).save(out / name, format="PNG")
                else:
                    degrade(base, kind, level, seed=item_seed).save(out / name, format="PNG")
                record = {
                    "image": name,
                    "mos": round(synthetic_mos(kind, level), 4),
                    "distortion_class": CLASS_LABELS[kind],
                    "severity": NULL if level is None else level,
                    "dataset": "degradation",
                    "source": rel,
                    **flaw,
                }
                labels.write(json.dumps(record) + "\n")
                written += 1
    report = GenerationReport(
        n_sources=len(sources),
        n_written=written,
        n_unreadable=len(unreadable),
        unreadable=unreadable,
        labels_path=str(labels_path),
        seed=seed,
    )
    (out / "report.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    return report
