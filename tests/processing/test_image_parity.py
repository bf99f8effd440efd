"""Parity of zoomiqa_jax.processing.image with transformers' Qwen2VLImageProcessorPil (torchvision-free).

Tolerance: pixel_values max-abs-diff <= 1e-6 (the issue's bound; the implementation is in fact bit-exact), and
image_grid_thw identical. Random content is uniform noise, the hardest case for bicubic resampling.
"""

import io
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from transformers import Qwen2VLImageProcessorPil
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as hf_smart_resize

from zoomiqa_jax.processing import (
    MAX_PIXELS,
    ImageLoadError,
    load_image,
    num_image_tokens,
    preprocess_images,
    smart_resize,
)

ATOL = 1e-6  # max-abs-diff allowed between our pixel_values and HF's
_HF_CACHE: dict[tuple, Qwen2VLImageProcessorPil] = {}


def hf_preprocess(images, **kwargs):
    """HF's pixel_values and image_grid_thw as NumPy arrays; processors are cached per kwargs."""
    key = tuple(sorted(kwargs.items()))
    if key not in _HF_CACHE:
        _HF_CACHE[key] = Qwen2VLImageProcessorPil(**kwargs)
    out = _HF_CACHE[key](images=images, return_tensors="np")
    return np.asarray(out["pixel_values"]), np.asarray(out["image_grid_thw"])


def assert_parity(ours_input, hf_input, **kwargs):
    """Our output on `ours_input` equals HF's on `hf_input`: same shapes/grid, max-abs-diff <= ATOL."""
    pv, grid = preprocess_images(ours_input, **kwargs)
    ref_pv, ref_grid = hf_preprocess(hf_input, **kwargs)
    assert pv.dtype == np.float32 and grid.dtype == np.int64
    np.testing.assert_array_equal(grid, ref_grid)
    assert pv.shape == ref_pv.shape, (pv.shape, ref_pv.shape)
    diff = float(np.max(np.abs(pv - ref_pv)))
    assert diff <= ATOL, f"pixel_values max-abs-diff {diff} > {ATOL} for grid {grid.tolist()}"
    return pv, grid


def noise(rng, height, width, channels=3, dtype=np.uint8):
    shape = (height, width) if channels is None else (height, width, channels)
    return rng.integers(0, 256, shape, dtype=np.uint8).astype(dtype)


def _sweep_sizes(count=28, seed=0):
    """Seeded (height, width) pairs: short side >= 28 px, area <= max_pixels, aspect ratio 1 .. 200."""
    rng = np.random.default_rng(seed)
    sizes = []
    for _ in range(count):
        ratio = math.exp(rng.uniform(0.0, math.log(200.0)))
        short_max = math.sqrt(MAX_PIXELS / ratio)
        short = int(math.exp(rng.uniform(math.log(28), math.log(short_max))))
        long = min(int(short * ratio), 200 * short)
        sizes.append((short, long) if rng.random() < 0.5 else (long, short))
    return sizes


# The sweep plus edge cases: HF's exact limit (200), tiny images (upscaled by min_pixels), over max_pixels.
EDGE_SIZES = [(28, 5600), (5600, 28), (3, 600), (1, 1), (2, 3), (27, 29), (1500, 2000), (1001, 1003)]
SIZES = _sweep_sizes() + EDGE_SIZES


@pytest.mark.parametrize("size", SIZES, ids=[f"{h}x{w}" for h, w in SIZES])
def test_pixel_values_match_hf_on_random_sizes(size):
    rng = np.random.default_rng(size[0] * 7919 + size[1])
    image = Image.fromarray(noise(rng, *size))
    pv, grid = assert_parity(image, image)
    assert pv.shape == (int(grid[0, 1] * grid[0, 2]), 3 * 2 * 14 * 14)


PIXEL_BOUNDS = [
    dict(min_pixels=256 * 28 * 28, max_pixels=1280 * 28 * 28),
    dict(min_pixels=4 * 28 * 28, max_pixels=64 * 28 * 28),
    dict(min_pixels=100 * 100, max_pixels=300 * 300),  # bounds that are not multiples of 28**2
    dict(min_pixels=56 * 56, max_pixels=28 * 28 * 1280, patch_size=16),  # factor 32
]


@pytest.mark.parametrize("kwargs", PIXEL_BOUNDS, ids=lambda k: "-".join(f"{v}" for v in k.values()))
@pytest.mark.parametrize("size", [(37, 4000), (480, 640), (900, 333), (20, 20)])
def test_pixel_bound_and_patch_overrides_match_hf(size, kwargs):
    rng = np.random.default_rng(size[0] + size[1])
    image = Image.fromarray(noise(rng, *size))
    assert_parity(image, image, **kwargs)


def test_list_of_images_is_concatenated_like_hf():
    rng = np.random.default_rng(1)
    images = [
        Image.fromarray(noise(rng, 300, 500)),
        Image.fromarray(noise(rng, 90, 60, channels=None)),  # mode L
        Image.fromarray(noise(rng, 700, 120, channels=4)),  # mode RGBA
    ]
    pv, grid = assert_parity(images, images)
    assert grid.shape == (3, 3)
    assert pv.shape[0] == int(np.prod(grid, axis=1).sum())
    # A one-element list and the bare image give the same result.
    np.testing.assert_array_equal(preprocess_images(images[:1])[0], preprocess_images(images[0])[0])


# ---------------------------------------------------------------- odd modes, in memory


def _rgba(rng, h=120, w=200):
    array = noise(rng, h, w, channels=4)
    array[: h // 2, :, 3] = 0  # fully transparent band
    array[h // 2 :, : w // 2, 3] = 255  # fully opaque block; the rest keeps random alpha
    return Image.fromarray(array, mode="RGBA")


def _palette(rng, transparency):
    image = Image.fromarray(noise(rng, 150, 110)).quantize(colors=64)
    if transparency:
        image.info["transparency"] = int(np.asarray(image)[0, 0])
    return image


PIL_MODES = {
    "L": lambda rng: Image.fromarray(noise(rng, 130, 170, channels=None)),
    "1": lambda rng: Image.fromarray(noise(rng, 130, 170, channels=None)).convert("1"),
    "RGBA": _rgba,
    "LA": lambda rng: _rgba(rng).convert("LA"),
    "P": lambda rng: _palette(rng, transparency=False),
    "P+transparency": lambda rng: _palette(rng, transparency=True),
    "PA": lambda rng: _rgba(rng).convert("PA"),
    "I;16": lambda rng: Image.fromarray(rng.integers(0, 600, (90, 140), dtype=np.uint16)),
    "I": lambda rng: Image.fromarray(rng.integers(-50, 600, (90, 140), dtype=np.int32)),
    "CMYK": lambda rng: Image.fromarray(noise(rng, 100, 80)).convert("CMYK"),
}


@pytest.mark.parametrize("mode", sorted(PIL_MODES))
def test_pil_modes_match_hf(mode):
    image = PIL_MODES[mode](np.random.default_rng(3))
    assert image.mode == mode.split("+")[0]
    assert_parity(image, image)


def test_pil_rgba_is_composited_on_white():
    """HF's in-memory rule: a fully transparent pixel becomes white, (1 - mean) / std once normalized."""
    array = np.zeros((56, 56, 4), dtype=np.uint8)  # black, fully transparent; 56x56 is not resized
    pv, _ = preprocess_images(Image.fromarray(array, mode="RGBA"))
    expected = (np.float32(1.0) - np.float32(0.48145466)) / np.float32(0.26862954)  # red channel
    np.testing.assert_allclose(pv[:, : 2 * 14 * 14], expected, atol=ATOL)


def test_numpy_uint8_arrays_match_hf():
    rng = np.random.default_rng(4)
    rgb, rgba, gray = noise(rng, 77, 333), noise(rng, 150, 90, channels=4), noise(rng, 61, 45, channels=None)
    assert_parity(rgb, rgb)
    assert_parity(rgba, rgba)  # HF's NumPy blend: round(a * rgb + (1 - a) * 255)
    assert_parity(gray, gray[:, :, None])  # HF rejects [H, W] arrays but takes [H, W, 1]
    assert_parity(gray[:, :, None], gray[:, :, None])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numpy_float_arrays_equal_hf_on_the_uint8_image(dtype):
    """Floats in [0, 1] are read as x / 255 (HF would rescale them by 1/255 twice; that is not mirrored)."""
    rng = np.random.default_rng(5)
    u8 = noise(rng, 210, 95)
    assert_parity(u8.astype(dtype) / dtype(255), u8)
    # Off-grid values are truncated like HF's own float -> uint8 step: trunc(float32(x * 255)).
    x = rng.uniform(0, 1, (60, 80, 3)).astype(dtype)
    truncated = (x.astype(np.float64) * 255).astype(np.float32).astype(np.uint8)
    assert_parity(x, truncated)


def test_numpy_uint16_arrays_keep_the_high_byte():
    rng = np.random.default_rng(6)
    u16 = rng.integers(0, 65536, (64, 96, 3), dtype=np.uint16)
    assert_parity(u16, (u16 >> 8).astype(np.uint8))


def test_load_image_returns_rgb_for_every_input_kind(tmp_path):
    rng = np.random.default_rng(7)
    path = tmp_path / "img.png"
    Image.fromarray(noise(rng, 40, 50, channels=4), mode="RGBA").save(path)
    items = [str(path), path, PIL_MODES["LA"](rng), noise(rng, 40, 50), noise(rng, 40, 50, channels=None)]
    for item in items:
        image = load_image(item)
        assert isinstance(image, Image.Image) and image.mode == "RGB"


# ---------------------------------------------------------------- odd modes, from files


def _write_files(tmp_path, rng):
    """Files of each awkward kind; returns {name: path}."""
    files = {}
    files["rgba.png"] = tmp_path / "rgba.png"
    _rgba(rng).save(files["rgba.png"])  # HF's path route drops alpha (plain convert("RGB"))
    files["p_transparency.png"] = tmp_path / "p_transparency.png"
    _palette(rng, transparency=True).save(files["p_transparency.png"])
    files["gray16.png"] = tmp_path / "gray16.png"
    # 16-bit values partly above 255: PIL's I;16 -> RGB conversion saturates them, HF included.
    Image.fromarray(rng.integers(0, 600, (70, 90), dtype=np.uint16)).save(files["gray16.png"])
    files["la.png"] = tmp_path / "la.png"
    _rgba(rng).convert("LA").save(files["la.png"])
    files["cmyk.jpg"] = tmp_path / "cmyk.jpg"
    Image.fromarray(noise(rng, 100, 80)).convert("CMYK").save(files["cmyk.jpg"], quality=90)
    files["exif_rotated.jpg"] = tmp_path / "exif_rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise on display
    Image.fromarray(noise(rng, 60, 200)).save(files["exif_rotated.jpg"], exif=exif, quality=90)
    return files


def test_files_match_hf(tmp_path):
    files = _write_files(tmp_path, np.random.default_rng(8))
    assert Image.open(files["gray16.png"]).mode in ("I;16", "I")
    for name, path in files.items():
        try:
            assert_parity(str(path), str(path))
        except AssertionError as err:
            raise AssertionError(f"{name}: {err}") from err
    # Path objects are accepted (HF takes only str) and give the same result.
    np.testing.assert_array_equal(
        preprocess_images(files["rgba.png"])[0], preprocess_images(str(files["rgba.png"]))[0]
    )
    # The EXIF orientation is applied: the 60x200 JPEG is read as 200x60.
    assert load_image(files["exif_rotated.jpg"]).size == (60, 200)


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("size", [(1, 201), (3000, 14), (2, 401)])
def test_aspect_ratio_over_200_raises_hf_message(size):
    image = Image.fromarray(np.zeros(size, dtype=np.uint8))
    with pytest.raises(ValueError) as ours:
        preprocess_images(image)
    with pytest.raises(ValueError) as theirs:
        hf_preprocess(image)
    assert str(ours.value) == str(theirs.value)
    assert "absolute aspect ratio must be smaller than 200" in str(ours.value)


def test_missing_file_raises_naming_the_file(tmp_path):
    path = tmp_path / "does_not_exist.jpg"
    with pytest.raises(ImageLoadError, match="does_not_exist.jpg"):
        preprocess_images(str(path))
    with pytest.raises(ValueError, match="does_not_exist.jpg"):  # ImageLoadError is a ValueError
        load_image(path)


def test_corrupt_and_truncated_files_raise_naming_the_file(tmp_path):
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"definitely not an image" * 10)
    with pytest.raises(ImageLoadError, match="garbage.png"):
        preprocess_images([str(garbage)])
    buffer = io.BytesIO()
    Image.fromarray(noise(np.random.default_rng(9), 200, 200)).save(buffer, format="JPEG")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ImageLoadError, match="truncated.jpg"):
        load_image(truncated)


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((10, 10, 2), dtype=np.uint8), r"shape \(10, 10, 2\)"),
        (np.zeros((10, 10, 3), dtype=np.int32), "got int32"),
        (np.full((10, 10, 3), 2.0, dtype=np.float32), r"values in \[0, 1\]"),
        (12345, "got int"),
    ],
    ids=["two-channels", "int32", "float-out-of-range", "not-an-image"],
)
def test_unsupported_inputs_raise_clear_errors(bad, message):
    with pytest.raises(ImageLoadError, match=message):
        load_image(bad)


def test_empty_list_raises():
    with pytest.raises(ValueError, match="at least one image"):
        preprocess_images([])


# ---------------------------------------------------------------- smart_resize and token counts


def test_smart_resize_equals_hf_on_a_grid_of_sizes():
    sides = [1, 2, 13, 14, 27, 28, 29, 41, 42, 43, 55, 56, 70, 97, 333, 1000, 1001, 4096]
    bounds = [(56 * 56, 28 * 28 * 1280), (256 * 28 * 28, 1280 * 28 * 28), (1000, 5000)]
    for min_pixels, max_pixels in bounds:
        for h in sides:
            for w in sides:
                if max(h, w) / min(h, w) > 200:
                    continue
                case = (h, w, min_pixels, max_pixels)
                expected = hf_smart_resize(h, w, factor=28, min_pixels=min_pixels, max_pixels=max_pixels)
                assert smart_resize(h, w, 28, min_pixels, max_pixels) == expected, case


@pytest.mark.parametrize(
    "size, expected",
    [
        ((28, 28), (56, 56)),  # below min_pixels: scaled up, ceil to multiples of 28
        ((1000, 1000), (980, 980)),  # 1008**2 > max_pixels: scaled down, floor to multiples of 28
        ((70, 112), (56, 112)),  # 70 / 28 = 2.5 rounds half to even -> 2 (floor(x + 0.5) would give 84)
        ((42, 168), (56, 168)),  # 1.5 -> 2
        ((28, 5600), (28, 5600)),  # aspect ratio exactly 200 is allowed
    ],
)
def test_smart_resize_known_values(size, expected):
    assert smart_resize(*size) == expected


def test_smart_resize_gives_factor_multiples_within_bounds():
    rng = np.random.default_rng(10)
    for _ in range(500):
        h, w = (int(v) for v in rng.integers(28, 8000, 2))
        if max(h, w) / min(h, w) > 50:  # extreme ratios may cross a bound by one factor row; HF does the same
            continue
        for factor in (28, 32):
            rh, rw = smart_resize(h, w, factor=factor)
            assert rh % factor == 0 and rw % factor == 0, (h, w, factor)
            assert 56 * 56 <= rh * rw <= 28 * 28 * 1280, (h, w, factor, rh, rw)


def test_smart_resize_rejects_aspect_ratio_over_200_like_hf():
    with pytest.raises(ValueError) as ours:
        smart_resize(10, 2001)
    with pytest.raises(ValueError) as theirs:
        hf_smart_resize(10, 2001)
    assert str(ours.value) == str(theirs.value)


def test_num_image_tokens_matches_patch_count():
    rng = np.random.default_rng(11)
    pv, grid = preprocess_images(Image.fromarray(noise(rng, 333, 517)))
    assert num_image_tokens(grid[0]) * 4 == pv.shape[0]
    assert num_image_tokens([1, 36, 52]) == 468
    assert num_image_tokens((2, 4, 6), merge_size=1) == 48
    with pytest.raises(ValueError, match=r"got shape \(2, 3\)"):
        num_image_tokens(np.ones((2, 3), dtype=np.int64))


def test_library_does_not_import_torch():
    code = (
        "import sys, numpy as np; import zoomiqa_jax.processing as p; "
        "p.preprocess_images(np.zeros((40, 40, 3), np.uint8)); "
        "bad = [m for m in ('torch', 'transformers') if m in sys.modules]; "
        "assert not bad, bad"
    )
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
