"""Procedural source images for the built-in demo: no downloads, deterministic by seed.

Each scene is a smooth two-colour gradient with a few filled shapes, a striped patch and fine texture, so
that noise, blur, compression and darkening all visibly change it.

`light=True` (the zooming demo's scenes) keeps every colour of the scene light (background and shapes in
LIGHT_RANGE, grey outlines), so that a darkened patch is the only dark region and a small model can find it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

LIGHT_RANGE = (120, 235)  # channel values of the light scenes' background and shapes


def make_scene(seed: int, width: int = 256, height: int = 192, *, light: bool = False) -> Image.Image:
    """One RGB scene; the same seed and size always give the same pixels (`light`: module docstring)."""
    lo, hi = LIGHT_RANGE if light else (30, 225)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    t = (np.cos(angle) * xx / width + np.sin(angle) * yy / height + 1) / 2
    c0, c1 = rng.uniform(lo, hi, size=(2, 3))
    base = c0[None, None] * (1 - t[..., None]) + c1[None, None] * t[..., None]
    freq = rng.uniform(0.15, 0.45)
    base += 12 * np.sin(freq * xx + rng.uniform(0, 6))[..., None] * np.cos(freq * yy)[..., None]
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 7))):
        x0, y0 = rng.uniform(0, width * 0.8), rng.uniform(0, height * 0.8)
        w, h = rng.uniform(width * 0.08, width * 0.35), rng.uniform(height * 0.08, height * 0.35)
        colour = tuple(int(v) for v in rng.integers(*((lo, hi + 1) if light else (0, 256)), size=3))
        box = [x0, y0, min(width - 1, x0 + w), min(height - 1, y0 + h)]
        outline = (110, 110, 110) if light else (0, 0, 0)
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour, outline=outline, width=2)
    sx, sy = int(rng.integers(0, width // 2)), int(rng.integers(0, height // 2))
    for k in range(0, width // 3, 4):  # a striped patch: fine detail that blur and JPEG destroy
        draw.line([(sx + k, sy), (sx + k, sy + height // 4)], fill=(250, 250, 250), width=1)
    return img


def write_scenes(out_dir: str | Path, count: int, seed: int = 0, *, light: bool = False) -> list[Path]:
    """Write `count` scenes of a few sizes as PNG files (`light`: module docstring); returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sizes = [(256, 192), (224, 224), (192, 256)]
    paths = []
    for i in range(count):
        w, h = sizes[i % len(sizes)]
        path = out / f"scene_{i:03d}.png"
        make_scene(seed * 100003 + i, w, h, light=light).save(path)
        paths.append(path)
    return paths
