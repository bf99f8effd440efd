"""Each label-file format loads from a fixture written here, bad records counted, strict mode raising."""

import json
from pathlib import Path

import pytest

from zoomiqa_jax.data.labels import LabelError, LabelRecord, load_labels


def _write_json(path, items):
    path.write_text(json.dumps(items, indent=4))
    return path


def _write_jsonl(path, lines):
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


@pytest.fixture
def deqa_file(tmp_path):
    """Shaped like Data-DeQA-Score/KONIQ/metas/test_koniq_2k.json (DeQA-Score build_soft_labels output)."""
    items = [
        {"id": "1.jpg->77.38", "image": "KONIQ/images/1.jpg", "gt_score": 77.38, "gt_score_norm": 4.09,
         "std": 0.52, "std_norm": 0.02},
        {"id": "2.jpg->30.9", "image": "KONIQ/images/2.jpg", "gt_score": 30.9, "gt_score_norm": 2.21,
         "conversations": [{"from": "human", "value": "Rate the quality of this image.\n<|image|>"},
                           {"from": "gpt", "value": "The quality of the image is poor."}]},
        {"id": "3.jpg", "image": "KONIQ/images/3.jpg", "gt_score": 50.0},  # no gt_score_norm
        {"id": "4.jpg", "image": "KONIQ/images/4.jpg", "gt_score": 99.0, "gt_score_norm": 5.7},  # > 5
        {"id": "5.jpg", "image": "KONIQ/images/5.jpg", "gt_score": 60.0, "gt_score_norm": "good"},
    ]
    (tmp_path / "KONIQ" / "metas").mkdir(parents=True)
    return _write_json(tmp_path / "KONIQ" / "metas" / "test_koniq_2k.json", items)


def test_deqa_metas_load_with_bad_records_listed(deqa_file, tmp_path):
    out = load_labels(deqa_file, root=tmp_path)
    assert out.format == "deqa"
    assert [r.mos for r in out.records] == [4.09, 2.21]
    first, second = out.records
    assert first.image == tmp_path / "KONIQ/images/1.jpg"
    assert first.dataset == "test_koniq_2k" and first.question is None
    assert second.question == "Rate the quality of this image."
    assert second.source == f"{deqa_file}[1]"
    assert [b.source for b in out.bad] == [f"{deqa_file}[{i}]" for i in (2, 3, 4)]
    assert "gt_score_norm" in out.bad[0].reason
    assert "outside [1.0, 5.0]" in out.bad[1].reason
    assert "not a number" in out.bad[2].reason
    assert out.summary()["n_bad"] == 3


def test_own_question_kept_raw_for_the_official_protocol(deqa_file, tmp_path):
    """Issue 18 item 2: the authors' stage 1 removes only the image tag from conversations[0] (the newline
    stays), their stage-2 history turn is the raw string; our strict question is stripped."""
    from zoomiqa_jax.eval.runner import _text_field
    from zoomiqa_jax.inference.protocol import make_protocol

    first, second = load_labels(deqa_file, root=tmp_path).records
    assert first.question_raw is None
    assert second.question_raw == "Rate the quality of this image.\n<|image|>"
    assert second.to_dict()["question_raw"] == second.question_raw
    own = [_text_field(r, "question_raw") or _text_field(r, "question") for r in (first, second)]  # as eval reads
    drawn, kept = make_protocol("official").draw_questions(own)
    assert kept == ("Rate the quality of this image.\n", "Rate the quality of this image.\n<|image|>")
    assert drawn[0] == drawn[1] and drawn[0] in make_protocol("official").prompts.zoomiqa_questions


def test_deqa_raw_score_key_reads_gt_score(deqa_file, tmp_path):
    out = load_labels(deqa_file, "deqa", root=tmp_path, score_key="gt_score", valid_range=(1.0, 100.0))
    assert [r.mos for r in out.records] == [77.38, 30.9, 50.0, 99.0, 60.0]


def test_deqa_strict_raises_naming_file_and_index(deqa_file, tmp_path):
    with pytest.raises(LabelError, match=r"test_koniq_2k\.json\[2\].*gt_score_norm"):
        load_labels(deqa_file, root=tmp_path, strict=True)


@pytest.fixture
def vqr1_file(tmp_path):
    """Shaped like VisualQuality-R1 training JSONL: dataset_name, image list, gpt answer = MOS."""
    q = "What is your overall rating on the quality of this picture?"
    conv = lambda mos: [{"from": "human", "value": q}, {"from": "gpt", "value": mos}]  # noqa: E731
    lines = [
        {"id": 0, "dataset_name": "KADID-10K", "image": ["I01_01_01.png"], "conversations": conv(4.57)},
        {"id": 1, "dataset_name": "KADID-10K", "image": ["I01_01_02.png"], "conversations": conv("3.25")},
        "{not json",
        {"id": 3, "dataset_name": "KADID-10K", "image": ["a.png", "b.png"], "conversations": conv(3.0)},
        {"id": 4, "dataset_name": "KADID-10K", "image": ["c.png"], "conversations": conv(float("nan"))},
        {"id": 5, "dataset_name": "KADID-10K", "image": ["d.png"], "conversations": conv(1.0)[:1]},
        "",
        {"id": 6, "dataset_name": "KonIQ", "image": "e.jpg", "conversations": conv(True)},
    ]
    return _write_jsonl(tmp_path / "kadid_train.jsonl", lines)


def test_vqr1_jsonl_loads_with_bad_lines_listed(vqr1_file, tmp_path):
    out = load_labels(vqr1_file, root=tmp_path / "imgs")
    assert out.format == "vqr1"
    assert [(r.image.name, r.mos, r.dataset) for r in out.records] == [
        ("I01_01_01.png", 4.57, "KADID-10K"),
        ("I01_01_02.png", 3.25, "KADID-10K"),
    ]
    assert out.records[0].image == tmp_path / "imgs" / "I01_01_01.png"
    assert out.records[0].question.startswith("What is your overall rating")
    assert out.records[1].source == f"{vqr1_file}:2"
    lines = [int(b.source.rsplit(":", 1)[1]) for b in out.bad]
    assert lines == [3, 4, 5, 6, 8]  # blank line 7 is not a record
    reasons = " | ".join(b.reason for b in out.bad)
    for expected in ("invalid JSON", "exactly one image", "not finite", "no turn from 'gpt'", "boolean"):
        assert expected in reasons


def test_vqr1_strict_raises_naming_file_and_line(vqr1_file):
    with pytest.raises(LabelError, match=r"kadid_train\.jsonl:3: invalid JSON"):
        load_labels(vqr1_file, "vqr1", strict=True)


@pytest.fixture
def zoomiqa_file(tmp_path):
    """Zoom-IQA evaluation JSON: `image` or `img_path`, `gt_score`, optional conversations."""
    items = [
        {"image": "spaq/00001.jpg", "gt_score": 61.3},
        {"img_path": "/abs/spaq/00002.jpg", "gt_score": 42.0,
         "conversations": [{"from": "human", "value": "<image>How is the quality?"}]},
        {"img_path": "spaq/00003.jpg"},
        {"gt_score": 10.0},
        ["not", "an", "object"],
    ]
    return _write_json(tmp_path / "spaq_test.json", items)


def test_zoomiqa_json_loads_image_or_img_path(zoomiqa_file, tmp_path):
    out = load_labels(zoomiqa_file, dataset="SPAQ")
    assert out.format == "zoomiqa"
    assert [r.image for r in out.records] == [tmp_path / "spaq/00001.jpg", Path("/abs/spaq/00002.jpg")]
    assert [r.mos for r in out.records] == [61.3, 42.0]  # raw scale: no default range for this format
    assert out.records[1].question == "How is the quality?"
    assert {r.dataset for r in out.records} == {"SPAQ"}
    assert [b.source for b in out.bad] == [f"{zoomiqa_file}[{i}]" for i in (2, 3, 4)]
    assert "gt_score" in out.bad[0].reason and "img_path" in out.bad[1].reason
    assert "expected a JSON object" in out.bad[2].reason


def test_zoomiqa_range_check_on_request(zoomiqa_file):
    out = load_labels(zoomiqa_file, "zoomiqa", valid_range=(0.0, 50.0))
    assert [r.mos for r in out.records] == [42.0]


@pytest.fixture
def plain_file(tmp_path):
    lines = [
        {"image": "x__noise_slight.png", "mos": 4.2, "distortion_class": "noise", "severity": "slight",
         "dataset": "degradation"},
        {"image": "y.png", "mos": 3.0},
        {"image": "z.png", "mos": 0.5},
        {"image": "w.png", "mos": 3.0, "severity": 3},
        {"mos": 2.0},
        {"image": "v.png", "mos": "inf"},
    ]
    return _write_jsonl(tmp_path / "new.jsonl", lines)


def test_plain_jsonl_loads_distortion_labels(plain_file, tmp_path):
    out = load_labels(plain_file)
    assert out.format == "plain"
    assert out.records[0] == LabelRecord(
        image=tmp_path / "x__noise_slight.png", mos=4.2, dataset="degradation", source=f"{plain_file}:1",
        distortion_class="noise", severity="slight",
    )
    assert out.records[1].dataset == "new" and out.records[1].distortion_class is None
    assert [int(b.source.rsplit(":", 1)[1]) for b in out.bad] == [3, 4, 5, 6]
    assert "outside" in out.bad[0].reason and "severity" in out.bad[1].reason
    assert "'image'" in out.bad[2].reason and "not finite" in out.bad[3].reason


def test_check_files_counts_missing_images(plain_file, tmp_path):
    (tmp_path / "y.png").write_bytes(b"")
    out = load_labels(plain_file, check_files=True)
    assert [r.image.name for r in out.records] == ["y.png"]
    assert any("image file not found" in b.reason for b in out.bad)


def test_unknown_format_and_undetectable_records(tmp_path):
    path = _write_jsonl(tmp_path / "odd.jsonl", [{"path": "a.png", "score": 3}, {"image": "b.png", "mos": 3}])
    out = load_labels(path)
    assert out.format == "plain" and len(out.records) == 1
    assert "cannot tell the label format" in out.bad[0].reason
    with pytest.raises(ValueError, match="unknown label format"):
        load_labels(path, "csv")  # type: ignore[arg-type]
