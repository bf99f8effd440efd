"""The authors' `official` protocol pieces (issue 18 items 3-6): golden cases read from their protocol.py
(EthanLiang99/Zoom-IQA, commit f4dee23), computed by hand here; pixel differences from processing/crop.py."""

import math

import pytest

from zoomiqa_jax.processing import crop
from zoomiqa_jax.processing.official import (
    OFFICIAL_CROP_LABEL,
    OFFICIAL_ORIGINAL_LABEL,
    adjust_box,
    central_fallback_box,
    route_answer,
    stage2_box,
    upscale_size,
)


def test_stage2_labels_as_written_by_the_authors():
    assert (OFFICIAL_ORIGINAL_LABEL, OFFICIAL_CROP_LABEL) == ("Original image: ", "Cropped Image: ")


@pytest.mark.parametrize(
    "answer, rounds, warning",
    [
        ({"bbox_2d": [0.1, 0.2, 0.5, 0.6], "rating": 3, "tool": "crop"}, 2, None),
        ({"bbox_2d": [0.0, False, 0, -0.0], "rating": 3, "tool": "crop"}, 1, None),
        ({"bbox_2d": ["0", "0", "0", "0"], "rating": 3, "tool": "crop"}, 2, None),
        ({"bbox_2d": [0.1, 0.2, 0.5, 0.6], "rating": 3, "tool": "final"}, 1, None),
        ({"bbox_2d": [0.1, 0.2, 0.5, 0.6], "rating": 3, "tool": "Final"}, 2, None),
        ({"bbox_2d": [1, 2], "rating": "bad", "tool": "other"}, 2, None),
        ({"bbox_2d": [0.1, 0.2, 0.5, 0.6], "tool": "crop"}, 1, "invalid_rating"),
        ({"bbox_2d": 5, "tool": "crop"}, 1, "invalid_rating"),
        ({"tool": "crop"}, 1, "invalid_bbox"),
        ({"bbox_2d": True, "rating": 3, "tool": "crop"}, 1, "invalid_bbox"),
        ({"bbox_2d": [0.1, 0.2, 0.5, 0.6], "rating": 3}, 1, "invalid_tool"),
        ({"bbox_2d": "0.1,0.2,0.5,0.6", "rating": 3, "tool": "crop"}, 2, None),
        ({"bbox_2d": [math.nan, 0.1, 0.5, 0.5], "rating": 3, "tool": "crop"}, 2, None),
        ([1, 2], 1, "parse_error"),
    ],
)
def test_route_answer_follows_parse_answer(answer, rounds, warning):
    decision = route_answer(answer)
    assert (decision.rounds, decision.warning) == (rounds, warning)


@pytest.mark.parametrize(
    "box", ["0.1,0.2,0.5,0.6", [0.1, 0.2, 0.5], [1, 2], ["a", 0, 1, 1], [None, 0, 1, 1], ["0", "0", "0", "0"]]
)
def test_malformed_boxes_fall_back_to_the_central_crop(box):
    assert stage2_box(box, 100, 80).pixel == (25, 20, 75, 60)
    assert stage2_box(box, 100, 80).fallback


def test_booleans_and_nan_are_numbers_not_fallbacks():
    # float(True) == 1.0 -> [0, 0, 1, 1] normalized = the whole image -> the authors' golden [6, 6, 93, 93].
    assert stage2_box([False, False, True, True], 100, 100).pixel == (6, 6, 93, 93)
    # NaN clamps to 0 -> [0, 0, 1, 1] px -> x 50 about 0.5 -> [0, 25.5] -> +1/+1 -> shifted [0, 27.5] -> 28.
    assert stage2_box([math.nan] * 4, 100, 100).pixel == (0, 0, 28, 28)
    assert crop.crop_box([math.nan] * 4, 100, 100).fallback  # strict (crop.py) falls back instead
    with pytest.raises(OverflowError):
        stage2_box([10**400, 0, 1, 1], 100, 100)


def test_central_fallback_is_not_widened():
    assert central_fallback_box(1, 1) == (0, 0, 0, 0)
    assert crop.central_box(1, 1) == (0, 0, 1, 1)
    assert central_fallback_box(3000, 40) == (750, 10, 2250, 30)


def test_authors_golden_cases():
    assert adjust_box([0, 0, 100, 100], 100, 100)[0] == (6, 6, 93, 93)
    assert adjust_box([40, 40, 50, 50], 100, 100)[0] == (20, 20, 70, 70)
    assert adjust_box([-10, 90, 200, 90], 100, 100)[0] == (0, 72, 100, 100)
    assert stage2_box([1, 0.5, 1, 0.5], 100, 80).pixel == (72, 18, 100, 62)


def test_crop_geometry_pixel_differences_from_crop_py():
    # 3000x40, [1000, 13, 2000, 40]: area 27000 < 30000 -> scale sqrt(10/9); y1 = 26.5 - 27 s / 2 = 12.27.
    # Pass 1: delta 0.27, delta // 2 == (delta + 1) // 2 == 0. Pass 2: no room below, y1 = y1 - (28 - (40 - y1)),
    # exactly 12 but 11.999999999999998 in floats -> int 11 while y2 = y1 + 28 rounds to 40.0: 29 px high.
    y1 = 26.5 - 27 * math.sqrt(30000 / 27000) / 2
    assert y1 - (28 - (40 - y1)) < 12
    assert stage2_box([1000, 13, 2000, 40], 3000, 40).pixel == (972, 11, 2027, 40)
    assert crop.crop_box([1000, 13, 2000, 40], 3000, 40).pixel == (972, 12, 2027, 40)
    # 29x29, [13, 0, 16, 29]: the same float shortfall on x (0.9999999999999982 -> 0).
    assert stage2_box([13, 0, 16, 29], 29, 29).pixel == (0, 0, 29, 29)
    assert crop.crop_box([13, 0, 16, 29], 29, 29).pixel == (1, 0, 29, 29)


@pytest.mark.parametrize(
    "size, crop_size, official, strict",
    [
        ((100, 80), (25, 11), (100, 43), (100, 44)),  # 100 / (25 / 11) = 43.99999999999999
        ((29, 29), (29, 7), (29, 6), (29, 7)),  # 29 / (29 / 7) = 6.999999999999999
        ((4000, 29), (31, 29), (30, 29), (31, 29)),  # 29 * (31 / 29) = 30.999999999999996
        ((30, 22), (15, 11), (29, 22), (30, 22)),  # equal ratios: strict > takes int(22 * 15 / 11) = 29
        ((40, 3000), (5, 29), (40, 231), (40, 232)),  # 40 / (5 / 29) = 231.99999999999997
    ],
)
def test_upscale_size_float_truncation(size, crop_size, official, strict):
    assert upscale_size(*crop_size, *size) == official
    assert crop.zoom_size(*crop_size, *size) == strict
