"""Crop-and-zoom geometry of the Zoom-IQA crop tool (issue 3): golden cases, rounding, edges, bad boxes."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from zoomiqa_jax.processing.crop import (
    MAX_AREA_RATIO,
    MIN_AREA_RATIO,
    MIN_SIDE,
    CropBox,
    adjust_bbox,
    central_box,
    coerce_box,
    crop_and_zoom,
    crop_box,
    zoom_size,
)


def test_golden_cases_from_issue_3():
    assert adjust_bbox([40, 40, 50, 50], 100, 100) == [20, 20, 70, 70]
    assert adjust_bbox([0, 0, 100, 100], 100, 100) == [6, 6, 93, 93]


def test_golden_cases_from_the_authors_release():
    # Further cases from the released protocol tests: a degenerate box across the frame, a normalized box on
    # the right border of a non-square image, and the two fallbacks.
    assert adjust_bbox([-10, 90, 200, 90], 100, 100) == [0, 72, 100, 100]
    assert crop_box([1, 0.5, 1, 0.5], 100, 80).pixel == (72, 18, 100, 62)
    assert crop_box([0, 0, 0, 0], 100, 80) == crop_box([1, 2], 100, 80)
    assert crop_box([1, 2], 100, 80).pixel == (25, 20, 75, 60)
    assert crop_box([1, 2], 100, 80).fallback


def test_rounding_is_truncation_not_round():
    # The oversized full-frame box is scaled by sqrt(0.75) about (50, 50): 50 -+ 43.30 = 6.70 and 93.30.
    half = 100 * math.sqrt(MAX_AREA_RATIO) / 2
    unrounded = np.array([50 - half, 50 + half])
    assert list(np.trunc(unrounded).astype(int)) == [6, 93]
    assert list(np.round(unrounded).astype(int)) == [7, 93]  # what rounding would give instead
    assert adjust_bbox([0, 0, 100, 100], 100, 100)[:2] == [6, 6]


def test_request_is_truncated_to_the_pixel_grid_before_rescaling():
    # Normalized 0.4175 x 100 = 41.75 snaps to 41 (rounding would give 42 and [21, 21, 71, 71]).
    assert adjust_bbox([0.4175, 0.4175, 0.5, 0.5], 100, 100) == [20, 20, 70, 70]
    assert adjust_bbox([42, 42, 50, 50], 100, 100) == [21, 21, 71, 71]


@pytest.mark.parametrize("width,height", [(101, 57), (333, 211), (640, 481), (99, 1003)])
def test_small_centred_box_matches_direct_formula(width, height):
    cx, cy, w, h = width // 2, height // 2, 4, 3
    box = [cx - w // 2, cy - 1, cx - w // 2 + w, cy - 1 + h]
    scale = np.sqrt(MIN_AREA_RATIO * width * height / (w * h))
    mid = np.array([box[0] + box[2], box[1] + box[3]]) / 2
    half = np.array([w, h]) * scale / 2
    lo = np.maximum(mid - half, 0)
    hi = np.minimum(mid + half, [width, height])
    expected = [int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1])]
    assert adjust_bbox(box, width, height) == expected


def test_normalized_box_is_scaled_by_width_and_height():
    result = crop_box([0.25, 0.25, 0.75, 0.75], 200, 100)  # area exactly 0.25 W H: left as is
    assert result.pixel == (50, 25, 150, 75)
    assert result.normalized == (0.25, 0.25, 0.75, 0.75)
    assert not result.fallback


def test_box_with_a_value_above_one_is_read_as_pixels():
    assert crop_box([0.5, 0.5, 60, 60], 100, 100).pixel == crop_box([0, 0, 60, 60], 100, 100).pixel


def test_reversed_corners_are_swapped():
    assert adjust_bbox([70, 70, 20, 20], 100, 100) == [20, 20, 70, 70]
    assert adjust_bbox([20, 70, 70, 20], 100, 100) == [20, 20, 70, 70]


def test_numeric_strings_count_as_numbers():
    assert crop_box(["0.1", " 0.2", "0.6 ", "0.7"], 300, 200) == crop_box([0.1, 0.2, 0.6, 0.7], 300, 200)


def test_corner_box_is_clipped_not_shifted():
    # Scaled by 5 about (5, 5) to [-20, 30], then clipped: the area stays under 0.25 W H (as published).
    assert adjust_bbox([0, 0, 10, 10], 100, 100) == [0, 0, 30, 30]


def test_degenerate_box_widens_by_one_pixel_inward_at_the_far_border():
    assert crop_box([50, 10, 50, 90], 100, 100).pixel == crop_box([50, 10, 51, 90], 100, 100).pixel
    assert crop_box([100, 0, 100, 100], 100, 100).pixel == crop_box([99, 0, 100, 100], 100, 100).pixel
    assert crop_box([100, 0, 100, 100], 100, 100).adjustments[0] == "widened degenerate"


def test_thin_box_grows_to_minimum_side_about_its_centre():
    # 1 px wide: area rule scales the width to 15.8 px about x = 50.5, then the 28 px rule grows it to
    # [36.59, 64.59], truncated to [36, 64].
    assert adjust_bbox([50, 0, 51, 1000], 1000, 1000) == [36, 0, 64, 1000]


def test_short_side_grows_floor_half_before_and_the_rest_after():
    # Area rule: [5.19, 25.81] (20.62 px). delta = 7.38: 3 px before, 4.38 after -> [2.19, 30.19] -> [2, 30];
    # growing symmetrically (3.69 each side) would give [1, 29].
    assert adjust_bbox([7, 0, 24, 100], 100, 100) == [2, 0, 30, 100]


@pytest.mark.parametrize(
    "box",
    [None, "0 0 1 1", [1, 2, 3], [1, 2, 3, 4, 5], [1, 2, 3, "x"], [float("nan"), 0, 1, 1],
     [0, 0, float("inf"), 1], [True, 0, 1, 1], {"x1": 1}, [[0, 0, 1, 1]], [10**400, 0, 1, 1], [0, 0, 0, 0],
     ["", 1, 2, 3]],
)
def test_unusable_box_falls_back_to_central_crop(box):
    result = crop_box(box, 120, 80)
    assert result.fallback
    assert result.pixel == (30, 20, 90, 60) == central_box(120, 80)


def test_numpy_boxes_are_numbers():
    assert coerce_box(np.array([0.1, 0.2, 0.5, 0.6])) == (0.1, 0.2, 0.5, 0.6)
    assert coerce_box([np.int64(3), np.float32(0.5), 1, 2]) == (3.0, 0.5, 1.0, 2.0)
    assert coerce_box(np.array([[0.1, 0.2, 0.5, 0.6]])) is None
    assert coerce_box([np.bool_(True), 0, 1, 1]) is None


def test_coerce_box_rejects_non_numbers():
    assert coerce_box([1, "2.5", 3.0, "-4e1"]) == (1.0, 2.5, 3.0, -40.0)
    assert coerce_box([1, "2_5", 3, 4]) is None  # float() would accept "2_5"; the protocol does not


@pytest.mark.parametrize("size", [1, 2, 3, 5, 13, 27, 28, 29])
def test_tiny_images_give_a_non_empty_crop_inside(size):
    for box in ([0.5, 0.5, 0.5, 0.5], [0, 0, 1, 1], [0.9, 0.1, 1.0, 0.2], "bad"):
        x1, y1, x2, y2 = crop_box(box, size, size + 3).pixel
        assert 0 <= x1 < x2 <= size and 0 <= y1 < y2 <= size + 3
        if box != "bad":
            assert x2 - x1 >= min(MIN_SIDE, size) and y2 - y1 >= min(MIN_SIDE, size + 3)
    assert crop_box([0.5, 0.5, 0.5, 0.5], 1, 1).pixel == (0, 0, 1, 1)
    assert central_box(1, 1) == (0, 0, 1, 1)


def test_bad_image_size_is_an_error():
    with pytest.raises(ValueError, match="positive int width"):
        crop_box([0, 0, 1, 1], 0, 10)
    with pytest.raises(ValueError, match="height"):
        crop_box([0, 0, 1, 1], 10, 2.5)


_value = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-0.2, max_value=1.2),
    st.integers(min_value=-50, max_value=3000),
    st.text(max_size=4),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_value, min_size=0, max_size=5), st.integers(1, 700), st.integers(1, 700))
def test_any_box_gives_a_valid_crop(box, width, height):
    result = crop_box(box, width, height)
    x1, y1, x2, y2 = result.pixel
    assert all(isinstance(v, int) for v in result.pixel)
    assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
    assert result.normalized == (x1 / width, y1 / height, x2 / width, y2 / height)
    if not result.fallback:
        assert x2 - x1 >= min(MIN_SIDE, width) and y2 - y1 >= min(MIN_SIDE, height)


@settings(max_examples=200, deadline=None)
@given(st.integers(112, 2000), st.integers(112, 2000), st.floats(0.02, 1.0))
def test_centred_box_with_image_aspect_gets_area_in_range(width, height, fraction):
    # A centred box with the image's aspect ratio never touches the border after rescaling, so its area lands
    # in [0.25, 0.75] W H up to the 1 px truncation of each side (and of the request).
    half_w, half_h = fraction * width / 2, fraction * height / 2
    box = [width / 2 - half_w, height / 2 - half_h, width / 2 + half_w, height / 2 + half_h]
    w, h = crop_box(box, width, height).size
    full = width * height
    slack = 2 * (width + height) + 4
    assert MIN_AREA_RATIO * full - slack <= w * h <= MAX_AREA_RATIO * full + slack


def test_zoom_size_fills_one_side_and_keeps_aspect():
    assert zoom_size(50, 50, 100, 80) == (80, 80)
    assert zoom_size(60, 20, 100, 80) == (100, 33)
    assert zoom_size(20, 60, 100, 80) == (26, 80)
    assert zoom_size(50, 40, 100, 80) == (100, 80)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 3000), st.integers(1, 3000), st.integers(1, 3000), st.integers(1, 3000))
def test_zoom_size_property(cw, ch, width, height):
    zw, zh = zoom_size(cw, ch, width, height)
    assert 1 <= zw <= width and 1 <= zh <= height
    assert zw == width or zh == height
    assert abs(zw * ch - zh * cw) <= max(cw, ch)  # aspect kept up to the 1 px floor of the shorter side


def test_crop_and_zoom_keeps_aspect_and_content():
    array = np.zeros((90, 160, 3), np.uint8)
    array[:, 80:] = 255  # left half black, right half white
    image = Image.fromarray(array)
    box = [0.55, 0.1, 0.95, 0.9]  # inside the white half
    crop = crop_box(box, *image.size)
    zoomed = crop_and_zoom(image, box)
    cw, ch = crop.size
    assert zoomed.size == zoom_size(cw, ch, 160, 90)
    assert zoomed.size[0] == 160 or zoomed.size[1] == 90
    assert abs(zoomed.size[0] / zoomed.size[1] - cw / ch) < 2 / min(zoomed.size)
    assert np.asarray(zoomed).min() == 255
    assert crop_and_zoom(image, crop).tobytes() == zoomed.tobytes()


def test_crop_and_zoom_on_a_tiny_image():
    image = Image.new("RGB", (5, 3), (10, 20, 30))
    zoomed = crop_and_zoom(image, [0.2, 0.2, 0.4, 0.4])
    assert zoomed.size[0] <= 5 and zoomed.size[1] <= 3
    assert np.asarray(zoomed).reshape(-1, 3).tolist()[0] == [10, 20, 30]


def test_crop_and_zoom_rejects_a_cropbox_for_another_size():
    crop = crop_box([0, 0, 50, 50], 100, 100)
    assert isinstance(crop, CropBox)
    with pytest.raises(ValueError, match=r"\(100, 100\).*\(60, 60\)"):
        crop_and_zoom(Image.new("RGB", (60, 60)), crop)
