"""Synthetic SFT trajectories (data/trajectories.py): determinism, format, crop fraction, rating vs severity."""

import json

import pytest

from zoomiqa_jax.data.degrade import LEVELS
from zoomiqa_jax.data.trajectories import build_demo_set, severity_level, write_trajectories
from zoomiqa_jax.processing.answers import check_zoomiqa_format, parse_zoomiqa_answer
from zoomiqa_jax.train.sft_data import load_sft_jsonl

CLASS_WORDS = {"noise": "noise", "blur": "blur", "compression": "compression", "darken": "darkening"}


@pytest.fixture(scope="module")
def labels_path(tmp_path_factory):
    """Degradation labels: every class x severity three times, plus undistorted images (no image files)."""
    path = tmp_path_factory.mktemp("labels") / "labels.jsonl"
    rows = [{"image": f"img{i}__null.png", "mos": 5.0, "distortion_class": "null", "severity": "null"}
            for i in range(6)]
    for rep in range(3):
        for kind in CLASS_WORDS:
            for k, level in enumerate(LEVELS, start=1):
                rows.append({"image": f"img{rep}__{kind}_{level}.png", "mos": 5 - 0.8 * k,
                             "distortion_class": kind, "severity": level})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_same_seed_same_bytes_other_seed_differs(labels_path, tmp_path):
    a, b, c = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    write_trajectories(labels_path, a, seed=3)
    write_trajectories(labels_path, b, seed=3)
    write_trajectories(labels_path, c, seed=4)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_every_text_passes_the_format_and_the_loader(labels_path, tmp_path):
    out = tmp_path / "t.jsonl"
    write_trajectories(labels_path, out, seed=0, crop_fraction=0.5)
    for rec in _records(out):
        texts = [t["text"] for t in rec["turns"]]
        assert check_zoomiqa_format(texts), rec["id"]
        if len(texts) == 2:
            answer = parse_zoomiqa_answer(texts[0])
            assert answer.tool == "crop" and list(answer.bbox) == rec["turns"][0]["bbox"]
    loaded = load_sft_jsonl(out, strict=True, check_image=False)
    assert len(loaded.records) == len(_records(out)) and loaded.n_bad == 0


def test_reasoning_names_distortion_and_severity(labels_path, tmp_path):
    out = tmp_path / "t.jsonl"
    write_trajectories(labels_path, out, seed=1, crop_fraction=0.5)
    for rec in _records(out):
        kind, severity = rec["meta"]["distortion_class"], rec["meta"]["severity"]
        for turn in rec["turns"]:
            text = turn["text"]
            if kind == "null":
                assert "no visible distortion" in text
            else:
                assert CLASS_WORDS[kind] in text and severity in text, (rec["id"], text)


@pytest.mark.parametrize("fraction", [0.0, 0.3, 1.0])
def test_crop_fraction_is_exact(labels_path, tmp_path, fraction):
    out = tmp_path / "t.jsonl"
    report = write_trajectories(labels_path, out, seed=2, crop_fraction=fraction)
    records = _records(out)
    n_crop = sum(len(r["turns"]) == 2 for r in records)
    assert n_crop == report.n_crop == round(fraction * len(records))


def test_final_rating_strictly_decreases_with_severity(labels_path, tmp_path):
    out = tmp_path / "t.jsonl"
    write_trajectories(labels_path, out, seed=5, crop_fraction=0.5)
    by_level: dict[int, list[float]] = {}
    for rec in _records(out):
        final = parse_zoomiqa_answer(rec["turns"][-1]["text"])
        assert final.rating == rec["meta"]["rating"] and round(final.rating, 2) == final.rating
        assert f'"rating": {final.rating:.2f}' in rec["turns"][-1]["text"]  # two decimals as written
        by_level.setdefault(severity_level(rec["meta"]["severity"]), []).append(final.rating)
    assert sorted(by_level) == [0, 1, 2, 3, 4, 5]
    for k in range(5):
        assert min(by_level[k]) > max(by_level[k + 1]), (k, by_level[k], by_level[k + 1])
    # the severity fixes the rating up to its hundredths: 4.9x, 4.2x, 3.4x, 2.6x, 1.8x, 1.0x
    for k, tenth in enumerate(("4.9", "4.2", "3.4", "2.6", "1.8", "1.0")):
        assert {f"{r:.2f}"[:3] for r in by_level[k]} == {tenth}, (k, by_level[k])
    assert len({f"{r:.2f}"[3] for k in by_level for r in by_level[k]}) > 5  # the hundredths do vary


def test_demo_set_images_exist_and_load(tmp_path):
    report = build_demo_set(tmp_path, 3, seed=0, crop_fraction=1.0, image_size=56)
    loaded = load_sft_jsonl(report.path, strict=True)
    assert len(loaded.records) == 3 and all(r.crops for r in loaded.records)
