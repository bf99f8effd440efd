"""`zoomiqa demo` runs the eval end to end on a fresh folder, writes every file it promises, reports a random
model's invalid answers honestly, and a rerun replaces its own outputs."""

import json

import pytest

from zoomiqa_jax.cli import main


@pytest.mark.slow  # ~45 s: two small demo runs
def test_demo_writes_eval_report_and_readout(tmp_path, capsys):
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--max-turns", "1", "--max-new-tokens", "16", "--no-progress"]
    assert main([*argv, "--num-images", "4", "--seed", "1"]) == 0
    for name in ("predictions.jsonl", "metrics.json", "report.md", "run_config.json", "environment.json",
                 "plots/degradation_scatter.png", "plots/degradation_hist.png", "readout/predictions.jsonl",
                 "readout/metrics.json", "checkpoint/config.json", "checkpoint/tokenizer.json", "images/labels.jsonl"):
        assert (out / name).is_file(), name
    rows = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 4
    # a random model's answers are invalid: counted by class, never given a rating
    assert all(r["pred"] is None and r["invalid"] for r in rows)
    metrics = json.loads((out / "metrics.json").read_text())["datasets"]["degradation"]
    assert metrics["n"] == 4 and metrics["n_valid"] == 0 and sum(metrics["invalid_by_class"].values()) == 4
    assert metrics["scores"]["srcc"] is None
    readout = [json.loads(x) for x in (out / "readout" / "predictions.jsonl").read_text().splitlines()]
    assert len(readout) == 4 and all(1.0 <= r["pred"] <= 5.0 for r in readout)
    report = (out / "report.md").read_text()
    assert "valid format: 0.00% (0 of 4)" in report and "## Digit read-out scores" in report
    printed = capsys.readouterr().out
    assert "valid format 0/4" in printed and "digit read-out: PLCC" in printed and "SRCC" in printed
    # a second run over the same folder replaces the demo's own outputs (never resumes the old eval)
    assert main([*argv, "--num-images", "3"]) == 0
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 3
    assert len((out / "readout" / "predictions.jsonl").read_text().splitlines()) == 3


def test_demo_help_lists_every_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--out", "--num-images", "--seed", "--max-new-tokens", "--max-turns", "--batch-size",
                 "--no-progress", "readout/predictions.jsonl", "valid-format rate"):
        assert flag in text, flag


def test_cli_help_and_unknown_subcommand(capsys):
    assert main(["--help"]) == 0
    assert "demo" in capsys.readouterr().out
    assert main(["nope"]) == 2
