"""Local flaws for the zooming demo (issue 20): patches of known position and size, trajectories that crop exactly
when the patch is small, with a box that covers it, and the zoom metrics of eval predictions."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from zoomiqa_jax.data.degrade import (
    LOCAL_CENTRES,
    LOCAL_SIDES,
    box_pixels,
    degrade,
    degrade_region,
    generate_degradation_set,
    local_box,
)
from zoomiqa_jax.data.synthetic import make_scene, write_scenes
from zoomiqa_jax.data.trajectories import CROP_MAX_SIDE, build_demo_set, flaw_crop_box
from zoomiqa_jax.eval.zoom_metrics import zoom_metrics
from zoomiqa_jax.processing.answers import parse_zoomiqa_answer
from zoomiqa_jax.train.sft_data import load_sft_jsonl


def test_local_box_is_inside_the_image_with_the_given_side():
    assert local_box(0.3, 0.5, 0.5) == [0.35, 0.35, 0.65, 0.65]
    assert local_box(0.45, 0.25, 0.25) == [0.02, 0.02, 0.47, 0.47]  # float 0.025 rounds down
    assert local_box(0.7, 0.25, 0.75) == [0.0, 0.3, 0.7, 1.0]  # shifted inside on both axes
    for side in LOCAL_SIDES:
        for cx in LOCAL_CENTRES:
            x1, y1, x2, y2 = local_box(side, cx, 0.75)
            assert 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1
            assert x2 - x1 == pytest.approx(side, abs=0.011) and y2 - y1 == pytest.approx(side, abs=0.011)
    with pytest.raises(ValueError, match="side"):
        local_box(0.0, 0.5, 0.5)


def test_degrade_region_changes_exactly_the_patch():
    scene = make_scene(3, 120, 80)
    box = [0.25, 0.5, 0.75, 1.0]
    out = np.asarray(degrade_region(scene, "darken", "serious", 0, box), np.int32)
    full = np.asarray(degrade(scene, "darken", "serious", 0), np.int32)
    ref = np.asarray(scene, np.int32)
    left, top, right, bottom = box_pixels(box, 120, 80)
    assert (left, top, right, bottom) == (30, 40, 90, 80)
    inside = np.zeros(ref.shape[:2], bool)
    inside[top:bottom, left:right] = True
    np.testing.assert_array_equal(out[inside], full[inside])
    np.testing.assert_array_equal(out[~inside], ref[~inside])
    assert out[inside].mean() < ref[inside].mean() - 10  # the patch is visibly darker


def test_generated_labels_carry_scope_and_flaw_box(tmp_path):
    write_scenes(tmp_path / "src", 40, seed=1)
    report = generate_degradation_set(tmp_path / "src", tmp_path / "out", 5, kinds=("darken",), local_fraction=0.6,
                                      resize_short=64, progress=False)
    labels = [json.loads(line) for line in (tmp_path / "out" / "labels.jsonl").read_text().splitlines()]
    assert report.n_written == 40
    scopes = {lab["scope"] for lab in labels}
    assert scopes == {"local", "global", "none"}
    for lab in labels:
        if lab["scope"] == "none":
            assert lab["distortion_class"] == "null" and lab["flaw_box"] is None
        elif lab["scope"] == "global":
            assert lab["flaw_box"] == [0.0, 0.0, 1.0, 1.0] and not lab["image"].endswith("_local.png")
        else:
            assert lab["image"].endswith("_local.png") and lab["distortion_class"] == "darken"
            x1, y1, x2, y2 = lab["flaw_box"]
            assert round(x2 - x1, 2) in LOCAL_SIDES or round(x2 - x1, 2) == pytest.approx(round(y2 - y1, 2), abs=.011)
            # the image really is darker inside the patch than the clean source is there
            with Image.open(tmp_path / "out" / lab["image"]) as im:
                img = np.asarray(im.convert("L"), np.float32)
            with Image.open(tmp_path / "src" / lab["source"]) as im:
                src = np.asarray(im.convert("L").resize((img.shape[1], img.shape[0]), Image.BICUBIC), np.float32)
            left, top, right, bottom = box_pixels(lab["flaw_box"], img.shape[1], img.shape[0])
            assert img[top:bottom, left:right].mean() < src[top:bottom, left:right].mean()


def test_without_local_fraction_the_set_is_unchanged(tmp_path):
    write_scenes(tmp_path / "src", 6, seed=2)
    generate_degradation_set(tmp_path / "src", tmp_path / "a", 5, resize_short=48, progress=False)
    labels = (tmp_path / "a" / "labels.jsonl").read_text()
    assert "scope" not in labels and "flaw_box" not in labels
    with pytest.raises(ValueError, match="local_fraction"):
        generate_degradation_set(tmp_path / "src", tmp_path / "b", 5, local_fraction=1.5, progress=False)
    with pytest.raises(ValueError, match="mode='one'"):
        generate_degradation_set(tmp_path / "src", tmp_path / "b", 5, mode="all", local_fraction=0.5, progress=False)


@pytest.mark.parametrize(("label", "expected"), [
    ({"scope": "local", "flaw_box": [0.35, 0.35, 0.65, 0.65]}, [0.3, 0.3, 0.7, 0.7]),
    ({"scope": "local", "flaw_box": [0.0, 0.5, 0.5, 1.0]}, [0.0, 0.45, 0.55, 1.0]),  # side 0.5: at the threshold
    ({"scope": "local", "flaw_box": [0.0, 0.3, 0.7, 1.0]}, None),  # too large to need a crop
    ({"scope": "global", "flaw_box": [0.0, 0.0, 1.0, 1.0]}, None),
    ({"scope": "none", "flaw_box": None}, None),
])
def test_flaw_crop_box(label, expected):
    assert CROP_MAX_SIDE == 0.5
    assert flaw_crop_box(label) == expected


def test_demo_trajectories_crop_exactly_the_small_local_flaws(tmp_path):
    report = build_demo_set(tmp_path, 30, seed=4, image_size=64, style="compact", kinds=("darken",),
                            local_fraction=0.6)
    records = [json.loads(line) for line in (tmp_path / "trajectories.jsonl").read_text().splitlines()]
    assert len(load_sft_jsonl(report.path, strict=True).records) == 30  # the SFT loader takes every record
    n_crop = 0
    for rec in records:
        meta = rec["meta"]
        box = flaw_crop_box(meta)
        assert (len(rec["turns"]) == 2) == (box is not None), rec["id"]
        if box is None:
            continue
        n_crop += 1
        first = parse_zoomiqa_answer(rec["turns"][0]["text"])
        final = parse_zoomiqa_answer(rec["turns"][1]["text"])
        assert first.tool == "crop" and list(first.bbox) == rec["turns"][0]["bbox"] == box
        x1, y1, x2, y2 = meta["flaw_box"]
        assert box[0] <= x1 and box[1] <= y1 and box[2] >= x2 and box[3] >= y2  # the crop covers the flaw
        assert "unclear" in rec["turns"][0]["text"] and meta["severity"] in rec["turns"][1]["text"]
        # round 1 is provisional (pulled towards 3), round 2 is the severity's rating
        assert final.rating == meta["rating"] and abs(first.rating - rec["mos"]) > abs(final.rating - rec["mos"])
    assert n_crop == report.n_crop > 0


def _pred(image, mos, rating, rounds):
    return {"image": f"/x/{image}", "mos": mos, "pred": rating, "trajectory": {"rounds": rounds}}


def test_zoom_metrics_by_scope_iou_and_round_errors():
    labels = [{"image": "a.png", "scope": "local", "flaw_box": [0.0, 0.0, 0.5, 0.5]},
              {"image": "b.png", "scope": "local", "flaw_box": [0.5, 0.5, 1.0, 1.0]},
              {"image": "c.png", "scope": "global", "flaw_box": [0, 0, 1, 1]},
              {"image": "d.png", "scope": "none", "flaw_box": None}]
    preds = [
        _pred("a.png", 2.0, 2.1, [{"answer": {"rating": 2.8}, "bbox_requested": [0.0, 0.0, 0.5, 0.5]}, {}]),
        _pred("b.png", 3.0, 3.5, [{"answer": {"rating": 3.0}, "bbox_requested": [0.5, 0.5, 1.0, 0.75]}, {}]),
        _pred("c.png", 1.0, 1.2, [{"answer": {"rating": 1.2}}]),
        _pred("d.png", 5.0, None, [{"answer": None}, {}]),  # cropped, then invalid: no rating pair
    ]
    z = zoom_metrics(preds, labels)
    assert z["n"] == {"local": 2, "global": 1, "none": 1}
    assert z["crop_rate"] == {"local": 1.0, "global": 0.0, "none": 1.0}
    assert (z["n_iou"], z["iou_median"], z["iou_mean"]) == (2, 0.75, 0.75)  # IoU 1.0 and 0.5
    assert z["n_rounds_compared"] == 2
    assert z["round1_abs_error"] == pytest.approx((0.8 + 0.0) / 2)
    assert z["round2_abs_error"] == pytest.approx((0.1 + 0.5) / 2)
    with pytest.raises(ValueError, match="no label"):
        zoom_metrics([_pred("e.png", 1, 1, [])], labels)
