"""Bad training data (issue 13, item 5): an undecodable image, a missing image and an out-of-range score are
skipped, counted by category and named with file:line in the run's log and in metrics.jsonl; SFT trains on the
rest; more than `data.max_bad_fraction` of bad records stops the run with exit status 2 naming count, share and
key. GRPO's data goes through the same checks (tested at the loading level)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.train.kill_resume import REPO, cpu_env
from tests.train.test_sft_resume import SHORT_PROMPTS
from zoomiqa_jax.config import ConfigError
from zoomiqa_jax.data.trajectories import build_demo_set
from zoomiqa_jax.train.data_checks import (
    BAD_LABEL,
    CACHE_NAME,
    MISSING_IMAGE,
    UNREADABLE_IMAGE,
    BadDataError,
    BadRecords,
    check_images,
)

N_GOOD = 8


def _truncated_jpeg(src: Path, dst: Path) -> None:
    """`src` re-encoded as JPEG, cut to half its bytes: PIL opens the header but cannot decode it."""
    Image.open(src).convert("RGB").save(dst, "JPEG", quality=95)
    data = dst.read_bytes()
    dst.write_bytes(data[: len(data) // 2])


def _with_bad_lines(src: Path, dst: Path, image_key: str, score_key: str, image_dir: str) -> dict[str, int]:
    """`src`'s lines, then three bad ones built from its first record: {category: 1-based line number}."""
    lines = [ln for ln in src.read_text().splitlines() if ln.strip()]
    first = json.loads(lines[0])
    broken = dict(first, **{image_key: f"{image_dir}broken.jpg"})
    missing = dict(first, **{image_key: f"{image_dir}no_such_image.png"})
    out_of_range = dict(first, **{score_key: 42})
    for record in (broken, missing, out_of_range):
        record.pop("id", None)
    lines += [json.dumps(broken), json.dumps(missing), json.dumps(out_of_range)]
    dst.write_text("\n".join(lines) + "\n")
    n = len(lines)
    return {UNREADABLE_IMAGE: n - 2, MISSING_IMAGE: n - 1, BAD_LABEL: n}


@pytest.fixture(scope="module")
def bad_set(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("bad_data")
    build_demo_set(root / "set", N_GOOD, seed=3, crop_fraction=0.0, image_size=56)
    (root / "prompts.yaml").write_text(SHORT_PROMPTS)
    degraded = root / "set" / "degraded"
    _truncated_jpeg(next(degraded.glob("*.png")), degraded / "broken.jpg")
    sft = root / "set" / "bad_trajectories.jsonl"
    sft_lines = _with_bad_lines(root / "set" / "trajectories.jsonl", sft, "image", "mos", "degraded/")
    labels = degraded / "bad_labels.jsonl"
    label_lines = _with_bad_lines(degraded / "labels.jsonl", labels, "image", "mos", "")
    return {"root": root, "sft": sft, "sft_lines": sft_lines, "labels": labels, "label_lines": label_lines}


def _located(bad: BadRecords, path: Path) -> dict[str, str]:
    return {item.category: item.where for item in bad.items if item.where.startswith(f"{path}:")}


# ------------------------------------------------------------------------------------------ loading level
def test_sft_loading_skips_each_bad_record_with_its_category_and_line(bad_set: dict, tmp_path: Path) -> None:
    from zoomiqa_jax.train.sft_data import load_checked_sft

    records, bad = load_checked_sft(bad_set["sft"], cache_dir=tmp_path)
    assert len(records) == N_GOOD and bad.n_records == N_GOOD + 3
    assert _located(bad, bad_set["sft"]) == {c: f"{bad_set['sft']}:{n}" for c, n in bad_set["sft_lines"].items()}
    assert bad.counts() == {MISSING_IMAGE: 1, UNREADABLE_IMAGE: 1, BAD_LABEL: 1}
    in_line_order = [f"{bad_set['sft']}:{n}" for n in sorted(bad_set["sft_lines"].values())]
    assert [item.where for item in bad.items] == in_line_order
    reasons = {item.category: item.reason for item in bad.items}
    assert "42" in reasons[BAD_LABEL] and "[1.0, 5.0]" in reasons[BAD_LABEL]
    assert "broken.jpg" in reasons[UNREADABLE_IMAGE] and "truncated" in reasons[UNREADABLE_IMAGE]
    assert "no_such_image.png" in reasons[MISSING_IMAGE]


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_sft_non_finite_score_is_a_bad_label(bad_set: dict, tmp_path: Path, value: float) -> None:
    from zoomiqa_jax.train.sft_data import load_checked_sft

    first = json.loads(bad_set["sft"].read_text().splitlines()[0])
    first["image"] = str(bad_set["sft"].parent / first["image"])
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(first) + "\n" + json.dumps(dict(first, mos=value)) + "\n")  # NaN / Infinity
    records, bad = load_checked_sft(path)
    assert len(records) == 1 and [(i.where, i.category) for i in bad.items] == [(f"{path}:2", BAD_LABEL)]


def test_grpo_loading_skips_reports_and_stops_past_the_share(bad_set: dict, tmp_path: Path) -> None:
    from zoomiqa_jax.train.grpo_config import load_grpo_config
    from zoomiqa_jax.train.grpo_loop import load_datasets

    labels = bad_set["labels"]
    cfg = load_grpo_config("configs/grpo_tiny.yaml", [f"grpo.datasets=[{labels}]", "data.max_bad_fraction=0.3"])
    logged: list[str] = []
    datasets = load_datasets(cfg, tmp_path, logged.append)
    assert sum(len(d.records) for d in datasets) == N_GOOD
    text = "\n".join(logged)
    assert "3 of 11 records bad" in text
    for category, line in bad_set["label_lines"].items():
        assert f"{labels}:{line}: {category}:" in text
    (event,) = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert event["event"] == "bad_data" and event["n_bad"] == 3 and event["n_records"] == 11
    assert {b["category"]: b["where"] for b in event["bad"]} == {
        c: f"{labels}:{n}" for c, n in bad_set["label_lines"].items()}

    strict = load_grpo_config("configs/grpo_tiny.yaml", [f"grpo.datasets=[{labels}]", "data.max_bad_fraction=0.2"])
    with pytest.raises(BadDataError, match=r"3 of 11 records are bad \(27\.3%\), more than data\.max_bad_fraction"):
        load_datasets(strict, tmp_path / "strict", logged.append)


def test_the_check_refuses_more_than_the_share_and_an_empty_set() -> None:
    bad = BadRecords("f.jsonl", n_records=200)
    bad.add("f.jsonl:7", MISSING_IMAGE, "image file 'x.png' does not exist")
    bad.add("f.jsonl:9", BAD_LABEL, "field 'mos': 42 is outside the score range [1.0, 5.0]")
    bad.check(0.01)  # 2 / 200 = 1%: not more than the share
    with pytest.raises(BadDataError, match=r"2 of 200 records are bad \(1\.0%\), more than data\.max_bad_fraction = "
                                           r"0\.005 allows \(missing_image 1, bad_label 1; e\.g\. f\.jsonl:7"):
        bad.check(0.005)
    empty = BadRecords("g.jsonl", n_records=1)
    empty.add("g.jsonl:1", BAD_LABEL, "x")
    with pytest.raises(BadDataError, match="no usable records"):
        empty.check(1.0)
    with pytest.raises(ValueError, match="category"):
        bad.add("f.jsonl:1", "odd", "x")


def test_image_verdicts_are_cached_until_the_file_changes(bad_set: dict, tmp_path: Path) -> None:
    broken = tmp_path / "b.jpg"
    broken.write_bytes((bad_set["sft"].parent / "degraded" / "broken.jpg").read_bytes())
    good = next((bad_set["sft"].parent / "degraded").glob("*.png"))
    logged: list[str] = []
    first = check_images([broken, good, broken], cache_dir=tmp_path, log=logged.append)
    assert first[str(good)] is None and first[str(broken)][0] == UNREADABLE_IMAGE
    assert (tmp_path / CACHE_NAME).is_file() and "checked 2 image(s)" in logged[-1]
    logged.clear()
    assert check_images([broken, good], cache_dir=tmp_path, log=logged.append) == first
    assert logged == []  # nothing decoded again
    Image.open(good).save(broken, "JPEG")  # the file is fixed: its size and mtime change
    assert check_images([broken], cache_dir=tmp_path, log=logged.append)[str(broken)] is None
    assert "checked 1 image(s) by decoding (0 unchanged" in logged[-1]


def test_an_image_past_the_processors_aspect_ratio_is_unreadable(tmp_path: Path) -> None:
    from zoomiqa_jax.train.data_checks import image_problem

    Image.new("RGB", (402, 2)).save(tmp_path / "strip.png")  # 201:1, over the processor's 200
    Image.new("RGB", (400, 2)).save(tmp_path / "ok.png")
    expected = f"image file {str(tmp_path / 'strip.png')!r} (402x2): absolute aspect ratio must be smaller than 200"
    assert image_problem(tmp_path / "strip.png") == (UNREADABLE_IMAGE, f"{expected}, got 201.0")
    assert image_problem(tmp_path / "ok.png") is None


@pytest.mark.parametrize("value", ["-0.1", "1.5", ".nan"])
def test_max_bad_fraction_must_lie_in_0_1(value: str) -> None:
    from zoomiqa_jax.train.config import load_train_config

    with pytest.raises(ConfigError, match="data.max_bad_fraction"):
        load_train_config("configs/sft_tiny.yaml", [f"data.max_bad_fraction={value}"])
    assert math.isclose(load_train_config("configs/sft_tiny.yaml").data.max_bad_fraction, 0.01)


# ------------------------------------------------------------------------------------------ through the CLI
def _sft_overrides(bad_set: dict, out: Path, share: float) -> list[str]:
    return ["--config", "configs/sft_tiny.yaml", f"data.train={bad_set['sft']}",
            f"data.prompt_file={bad_set['root'] / 'prompts.yaml'}", "data.batch_size=2", "data.seq_buckets=[512,1024]",
            f"data.max_bad_fraction={share}", "run.steps=2", "run.log_every=1", "checkpoint.save_every=2",
            "run.export_hf=false", f"run.out_dir={out}", "--no-progress"]


def test_more_bad_data_than_the_share_exits_2_naming_count_share_and_key(
        bad_set: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from zoomiqa_jax.train.cli import main

    # The data is read before the model loads, so these runs stop within a second.
    assert main(["sft", *_sft_overrides(bad_set, tmp_path / "sft", 0.2)]) == 2
    err = capsys.readouterr().err
    assert (f"zoomiqa train sft: {bad_set['sft']}: 3 of 11 records are bad (27.3%), more than data.max_bad_fraction"
            " = 0.2 allows (missing_image 1, unreadable_image 1, bad_label 1; e.g. ") in err
    assert not (tmp_path / "sft" / "checkpoints").exists()
    (event,) = [json.loads(s) for s in (tmp_path / "sft" / "metrics.jsonl").read_text().splitlines()]
    assert event["n_bad"] == 3 and event["max_bad_fraction"] == 0.2  # the report is written before the stop

    labels = bad_set["labels"]
    assert main(["grpo", "--config", "configs/grpo_tiny.yaml", f"grpo.datasets=[{labels}]",
                 f"run.out_dir={tmp_path / 'grpo'}", "--no-progress"]) == 2  # the default share, 1%
    err = capsys.readouterr().err
    assert f"zoomiqa train grpo: {labels}: 3 of 11 records are bad (27.3%), more than data.max_bad_fraction = 0.01" \
        in err


def test_a_missing_data_file_exits_2_naming_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from zoomiqa_jax.train.cli import main

    missing = tmp_path / "nope.jsonl"
    assert main(["sft", "--config", "configs/sft_tiny.yaml", f"data.train={missing}",
                 f"run.out_dir={tmp_path / 'sft'}"]) == 2
    assert f"data.train: the trajectory file {str(missing)!r} does not exist" in capsys.readouterr().err
    assert main(["grpo", "--config", "configs/grpo_tiny.yaml", f"grpo.datasets=[{missing}]",
                 f"run.out_dir={tmp_path / 'grpo'}"]) == 2
    assert f"grpo.datasets: label file(s) [{str(missing)!r}] do not exist" in capsys.readouterr().err


def test_an_image_that_breaks_after_the_check_stops_with_exit_2_naming_it(
        bad_set: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import zoomiqa_jax.train.sft_loop as sft_loop
    from zoomiqa_jax.processing.image import load_image
    from zoomiqa_jax.train.cli import main

    def run_sft(cfg: object, **kwargs: object) -> None:  # the file broke after the start-up check: the loader fails
        load_image(bad_set["sft"].parent / "degraded" / "broken.jpg")

    monkeypatch.setattr(sft_loop, "run_sft", run_sft)
    assert main(["sft", *_sft_overrides(bad_set, tmp_path / "sft", 0.3)]) == 2
    err = capsys.readouterr().err
    assert "broken.jpg" in err and "changed after the data check" in err and "resumes from the last checkpoint" in err


@pytest.mark.slow
def test_sft_trains_on_the_rest_and_reports_the_bad_records(bad_set: dict, tmp_path: Path) -> None:
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "zoomiqa_jax.cli", "train", "sft", *_sft_overrides(bad_set, out, 0.3)]
    done = subprocess.run(argv, cwd=REPO, env=cpu_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    path = bad_set["sft"]
    summary = f"{path}: 3 of 11 records bad (27.3%: missing_image 1, unreadable_image 1, bad_label 1) skipped:"
    assert summary in done.stdout
    for category, line in bad_set["sft_lines"].items():
        assert f"  {path}:{line}: {category}: " in done.stdout
    assert "SFT: 8 records" in done.stdout
    lines = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    (event,) = [ln for ln in lines if ln.get("event") == "bad_data"]
    assert {b["category"]: b["where"] for b in event["bad"]} == {
        c: f"{path}:{n}" for c, n in bad_set["sft_lines"].items()}
    trained = [ln for ln in lines if "loss" in ln]
    assert [ln["step"] for ln in trained] == [1, 2] and all(math.isfinite(ln["loss"]) for ln in trained)
    assert (out / "checkpoints" / "2").is_dir()
