"""`zoomiqa demo` runs end to end on a fresh folder and writes every file it promises."""

import json

import pytest

from zoomiqa_jax.cli import main


@pytest.mark.slow  # ~40 s: two demo runs
def test_demo_writes_all_outputs(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--num-images", "5", "--seed", "1"]) == 0
    for name in ("predictions.jsonl", "metrics.json", "report.md", "checkpoint/config.json",
                 "checkpoint/tokenizer.json", "images/labels.jsonl"):
        assert (out / name).is_file(), name
    rows = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 5
    assert all(1.0 <= r["pred"] <= 5.0 for r in rows)
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["images"] == 5 and summary["bad_labels"] == 0
    assert "SRCC" in capsys.readouterr().out
    # a second run over the same folder replaces the demo's own outputs
    assert main(["demo", "--out", str(out), "--num-images", "3"]) == 0
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 3


def test_cli_help_and_unknown_subcommand(capsys):
    assert main(["--help"]) == 0
    assert "demo" in capsys.readouterr().out
    assert main(["nope"]) == 2
