"""Low-level hints on synthetic images whose properties are known by construction (issue 19, "Must show" 1)."""

import math

import numpy as np
import pytest
from PIL import Image

from zoomiqa_jax.curate import hints as H


def _grey(level: float, size: int = 32) -> np.ndarray:
    return np.full((size, size, 3), level, dtype=np.float64)


def _checkerboard(size: int = 64, square: int = 8) -> np.ndarray:
    ys, xs = np.mgrid[0:size, 0:size]
    board = (((ys // square) + (xs // square)) % 2).astype(np.float64)
    return np.repeat(board[:, :, None], 3, axis=-1)


def _box_blur(image: np.ndarray, radius: int) -> np.ndarray:
    """Separable mean filter of width 2 r + 1 with edge padding (keeps the shape)."""
    out = image
    kernel = np.ones(2 * radius + 1) / (2 * radius + 1)
    for axis in (0, 1):
        pad = [(0, 0)] * out.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="edge")
        out = np.apply_along_axis(lambda v: np.convolve(v, kernel, mode="valid"), axis, padded)
    return out


def test_constant_grey_has_exact_brightness_and_zero_everything_else():
    hints = H.compute_hints(_grey(0.3))
    assert hints.brightness == pytest.approx(0.3, abs=1e-15)
    assert hints.contrast == pytest.approx(0.0, abs=1e-15)
    assert hints.colorfulness == pytest.approx(0.0, abs=1e-15)
    assert hints.sharpness == pytest.approx(0.0, abs=1e-15)
    assert hints.noisiness == pytest.approx(0.0, abs=1e-15)
    assert hints.from_metadata == frozenset()


def test_uint8_grey_level_reads_as_level_over_255():
    hints = H.compute_hints(np.full((16, 16, 3), 128, dtype=np.uint8))
    assert hints.brightness == pytest.approx(128 / 255, abs=1e-12)
    assert hints.contrast == 0.0 and hints.sharpness == 0.0 and hints.noisiness == 0.0


def test_two_level_image_has_rms_contrast_half_the_step():
    image = _grey(0.2)
    image[:, 16:] = 0.6  # half the pixels at 0.2, half at 0.6: mean 0.4, population sd 0.2
    hints = H.compute_hints(image)
    assert hints.brightness == pytest.approx(0.4, abs=1e-12)
    assert hints.contrast == pytest.approx(0.2, abs=1e-12)
    black_white = _grey(0.0)
    black_white[:, 16:] = 1.0
    assert H.compute_hints(black_white).contrast == pytest.approx(0.5, abs=1e-12)  # the documented maximum


def test_saturated_red_patch_colorfulness_by_hand():
    red = np.zeros((8, 8, 3))
    red[..., 0] = 1.0
    # rg = 1, yb = 0.5 everywhere: sds 0, C = 0.3 * sqrt(1 + 0.25)
    assert H.colorfulness(red) == pytest.approx(0.3 * math.sqrt(1.25), abs=1e-12)
    assert H.compute_hints(red).colorfulness > H.compute_hints(_grey(0.5)).colorfulness == 0.0


def test_red_green_halves_colorfulness_by_hand():
    image = np.zeros((8, 8, 3))
    image[:, :4, 0] = 1.0  # red: rg = +1, yb = 0.5
    image[:, 4:, 1] = 1.0  # green: rg = -1, yb = 0.5
    # sd_rg = 1, sd_yb = 0, mean_rg = 0, mean_yb = 0.5: C = 1 + 0.3 * 0.5
    assert H.colorfulness(image) == pytest.approx(1.15, abs=1e-12)


def test_colorfulness_orders_grey_pastel_saturated():
    grey, pastel, saturated = _grey(0.5), _grey(0.5), np.zeros((8, 8, 3))
    pastel[..., 0] = 0.7
    saturated[..., 2] = 1.0
    values = [H.colorfulness(x) for x in (grey, pastel, saturated)]
    assert values[0] < values[1] < values[2]


def test_blur_lowers_sharpness_monotonically_in_radius():
    board = _checkerboard()
    values = [H.sharpness(board)] + [H.sharpness(_box_blur(board, r)) for r in (1, 2, 3, 4)]
    assert all(a > b for a, b in zip(values, values[1:])), values
    assert values[-1] > 0.0


@pytest.mark.parametrize("sigma", [0.01, 0.05])
def test_immerkaer_estimates_known_gaussian_noise_sigma_on_smooth_image(sigma):
    rng = np.random.default_rng(0)
    size = 256
    ys, xs = np.mgrid[0:size, 0:size] / (size - 1)
    smooth = 0.3 + 0.2 * xs + 0.2 * ys  # a ramp: the Immerkaer mask cancels it exactly
    noisy = np.clip(smooth + rng.normal(0.0, sigma, smooth.shape), 0.0, 1.0)
    assert H.noisiness(np.repeat(smooth[:, :, None], 3, -1)) == pytest.approx(0.0, abs=1e-12)
    estimate = H.noisiness(np.repeat(noisy[:, :, None], 3, -1))
    assert abs(estimate - sigma) < 0.1 * sigma, estimate


def test_modes_convert_as_documented():
    grey = H.compute_hints(Image.new("L", (8, 8), 100))
    assert grey.brightness == pytest.approx(100 / 255, abs=1e-12) and grey.colorfulness == 0.0
    transparent = H.compute_hints(Image.new("RGBA", (8, 8), (255, 0, 0, 0)))  # alpha 0: onto white
    assert transparent.brightness == pytest.approx(1.0, abs=1e-12) and transparent.colorfulness == 0.0
    opaque = H.compute_hints(Image.new("RGBA", (8, 8), (255, 0, 0, 255)))
    assert opaque.colorfulness == pytest.approx(0.3 * math.sqrt(1.25), abs=1e-12)
    palette = Image.new("P", (8, 8), 1)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * (256 * 3 - 6))
    assert H.compute_hints(palette).colorfulness == pytest.approx(0.3 * math.sqrt(1.25), abs=1e-12)
    half_black = np.zeros((4, 4, 4))
    half_black[..., 3] = 0.5  # black at alpha 0.5 onto white: 0.5 grey
    assert H.compute_hints(half_black).brightness == pytest.approx(0.5, abs=1e-12)
    assert H.compute_hints(np.full((4, 4), 0.25)).brightness == pytest.approx(0.25, abs=1e-12)


def test_bad_arrays_are_rejected():
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        H.compute_hints(np.full((4, 4, 3), 1.5))
    with pytest.raises(ValueError, match="C in"):
        H.compute_hints(np.zeros((4, 4, 2)))


def test_tiny_images_have_no_interior_and_give_zero():
    hints = H.compute_hints(np.random.default_rng(1).random((2, 5, 3)))
    assert hints.sharpness == 0.0 and hints.noisiness == 0.0


def test_overrides_replace_computed_values_and_are_marked():
    hints = H.compute_hints(_grey(0.3), overrides={"brightness": 61.2, "noisiness": 3})
    assert hints.brightness == 61.2 and hints.noisiness == 3.0
    assert hints.contrast == pytest.approx(0.0, abs=1e-15)
    assert hints.from_metadata == frozenset({"brightness", "noisiness"})
    text = H.render_hints(hints)
    assert "- brightness: 61.2000 (dataset)" in text
    assert "- contrast: 0.0000 (low)" in text
    with pytest.raises(ValueError, match="unknown hint 'mos'"):
        H.compute_hints(_grey(0.3), overrides={"mos": 3.0})
    with pytest.raises(ValueError, match="finite"):
        H.compute_hints(_grey(0.3), overrides={"sharpness": float("nan")})


def test_overrides_from_spaq_like_metadata_row():
    row = {
        "Image name": "00001.jpg",
        "MOS": 50.0,
        "Brightness": "61.2",
        "Colorfulness": 40,
        "Noisiness": "",
        "Sharp_ness": 70.5,
    }
    assert H.overrides_from_metadata(row) == {"brightness": 61.2, "colorfulness": 40.0, "sharpness": 70.5}
    with pytest.raises(ValueError, match=r"spaq.xlsx:3\['Contrast'\]"):
        H.overrides_from_metadata({"Contrast": "high"}, where="spaq.xlsx:3")


def test_bin_words_at_their_bounds():
    assert H.bin_word("brightness", 0.2499) == "dark"
    assert H.bin_word("brightness", 0.25) == "dim"
    assert H.bin_word("brightness", 0.99) == "very bright"
    assert H.bin_word("noisiness", 3 / 255) == "noticeable noise"
    with pytest.raises(ValueError, match="unknown hint"):
        H.bin_word("mos", 1.0)


def test_render_lists_every_hint_with_value_and_bin():
    text = H.render_hints(H.ImageHints(0.42, 0.2, 0.05, 0.002, 0.0, frozenset()))
    lines = text.splitlines()
    assert lines[1:] == [
        "- brightness: 0.4200 (balanced)",
        "- contrast: 0.2000 (high)",
        "- colorfulness: 0.0500 (not colourful)",
        "- sharpness: 0.002 (sharp)",
        "- noisiness: 0.0000 (clean)",
    ]
