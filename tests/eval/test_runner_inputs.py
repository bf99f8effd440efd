"""Eval inputs that would silently corrupt results are refused; the eval's own output does not change the config."""

import json

import pytest

from zoomiqa_jax.eval.runner import load_label_sets
from zoomiqa_jax.eval.runner_store import checkpoint_fingerprint


def test_two_label_files_with_one_dataset_name_are_refused(tmp_path):
    for sub in ("koniq", "spaq"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "test.jsonl").write_text(json.dumps({"image": "a.png", "mos": 3.0}) + "\n")
    files = [str(tmp_path / "koniq" / "test.jsonl"), str(tmp_path / "spaq" / "test.jsonl")]
    with pytest.raises(ValueError, match="both give dataset name 'test'"):
        load_label_sets(files, "plain")


def test_output_inside_the_checkpoint_does_not_change_its_fingerprint(tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text("{}")
    before = checkpoint_fingerprint(ckpt, exclude=ckpt / "eval")
    (ckpt / "eval").mkdir()
    (ckpt / "eval" / "predictions.jsonl").write_text("x\n" * 100)
    assert checkpoint_fingerprint(ckpt, exclude=ckpt / "eval") == before
    assert checkpoint_fingerprint(ckpt) != before  # without the exclusion the output would count
