"""`zoomiqa eval` end to end on a tiny random model: all files, resume recomputes only what is missing,
a changed config refuses to mix, and the report renders metrics beside the published rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from zoomiqa_jax.eval import runner
from zoomiqa_jax.eval.report import PUBLISHED, column_of, set_metrics, write_report

N_IMAGES = 6


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny random HF checkpoint and a synthetic labelled set of 6 small images, one of them corrupt."""
    from zoomiqa_jax.data.degrade import generate_degradation_set
    from zoomiqa_jax.data.synthetic import write_scenes
    from zoomiqa_jax.demo import make_random_checkpoint

    root = tmp_path_factory.mktemp("eval")
    write_scenes(root / "scenes", N_IMAGES, seed=0)
    generate_degradation_set(root / "scenes", root / "images", 0, resize_short=32, progress=False)
    labels = root / "images" / "labels.jsonl"
    first = json.loads(labels.read_text().splitlines()[0])
    (root / "images" / first["image"]).write_bytes(b"\x89PNG truncated")  # counted, never fatal
    return {"root": root, "checkpoint": make_random_checkpoint(root / "ckpt", 0), "labels": labels}


def _argv(ws: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return ["--checkpoint", str(ws["checkpoint"]), "--labels", str(ws["labels"]), "--out", str(out),
            "--max-new-tokens", "6", "--batch-size", "4", "--dtype", "float32", "--min-pixels", "784",
            "--max-pixels", "3136", "--no-progress", *extra]


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the images the model is run on (the real run_zoomiqa, wrapped)."""
    from zoomiqa_jax.inference import zoom  # the runner imports it when it runs

    seen: list[str] = []
    real = zoom.run_zoomiqa

    def wrapper(model, tokenizer, items, *args, **kwargs):  # noqa: ANN001, ANN202
        seen.extend(item.name for item in items)
        return real(model, tokenizer, items, *args, **kwargs)

    monkeypatch.setattr(zoom, "run_zoomiqa", wrapper)
    return seen


def _predictions(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]


def test_eval_writes_all_files_and_resumes_only_missing_items(
    workspace: dict[str, Path], counted: list[str], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    assert runner.eval_main(_argv(workspace, out)) == 0
    for name in ("run_config.json", "environment.json", "predictions.jsonl", "metrics.json", "report.md",
                 "plots/degradation_scatter.png", "plots/degradation_hist.png"):
        assert (out / name).is_file(), name
    rows = _predictions(out)
    assert len(rows) == N_IMAGES and len(counted) == N_IMAGES - 1  # the corrupt image never reaches the model
    assert sum(r["invalid"] == runner.UNREADABLE for r in rows) == 1
    assert len({r["config_hash"] for r in rows}) == 1
    metrics = json.loads((out / "metrics.json").read_text())["datasets"]["degradation"]
    assert metrics["n"] == N_IMAGES and sum(metrics["invalid_by_class"].values()) == N_IMAGES - metrics["n_valid"]
    assert metrics["invalid_by_class"][runner.UNREADABLE] == 1
    env = json.loads((out / "environment.json").read_text())
    assert env["jax"] and env["flax"] and env["devices"]
    assert "Zoom-IQA | arXiv:2601.02918 Table 1" in (out / "report.md").read_text()

    # delete half of the predictions (a partial last line too): the rerun recomputes exactly that half
    kept, dropped = rows[: N_IMAGES // 2], rows[N_IMAGES // 2:]
    text = "".join(json.dumps(r) + "\n" for r in kept) + '{"config_hash": "trunc'
    (out / "predictions.jsonl").write_text(text)
    counted.clear()
    assert runner.eval_main(_argv(workspace, out)) == 0
    assert sorted(counted) == sorted(r["image"] for r in dropped if r["invalid"] != runner.UNREADABLE)
    again = _predictions(out)
    assert sorted(r["key"] for r in again) == sorted(r["key"] for r in rows)
    assert json.loads((out / "metrics.json").read_text())["datasets"]["degradation"]["n_run_now"] == len(dropped)

    # a changed config refuses to mix and leaves the predictions alone
    counted.clear()
    before = (out / "predictions.jsonl").read_text()
    assert runner.eval_main(_argv(workspace, out, "--temperature", "0.5")) == 2
    assert counted == [] and (out / "predictions.jsonl").read_text() == before


def test_shards_split_the_items_and_metrics_cover_every_shard(
    workspace: dict[str, Path], counted: list[str], tmp_path: Path
) -> None:
    out = tmp_path / "sharded"
    runs = []
    for index in (0, 1):
        counted.clear()
        assert runner.eval_main(_argv(workspace, out, "--shard-index", str(index), "--shard-count", "2")) == 0
        runs.append(list(counted))
        assert (out / f"predictions-{index:05d}-of-00002.jsonl").is_file()
        metrics = json.loads((out / "metrics.json").read_text())["datasets"]["degradation"]
        assert metrics["n"] + metrics["n_missing"] == N_IMAGES
        assert metrics["n_missing"] == (N_IMAGES // 2 if index == 0 else 0)
    assert not set(runs[0]) & set(runs[1])
    assert len(runs[0]) + len(runs[1]) == N_IMAGES - 1  # the corrupt image never reaches the model


def test_progress_bar_label_is_the_callers(
    workspace: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    monkeypatch.setattr(runner, "_infer", lambda *args, **kwargs: [])  # the bar, not the model, is under test
    (eval_set,) = runner.load_label_sets([str(workspace["labels"])])
    kwargs = dict(model=None, tokenizer=None, task="zoomiqa", settings=None, max_turns=1, prompts=None, done={},
                  digest="0" * 16, batch_size=4)
    with open(tmp_path / "p.jsonl", "w") as sink:
        runner.evaluate_set(eval_set, sink=sink, progress_label="held-out eval", **kwargs)
        assert "held-out eval: 100%" in capsys.readouterr().err
        runner.evaluate_set(eval_set, sink=sink, **kwargs)  # the default: the dataset's name
        assert f"{eval_set.name}: 100%" in capsys.readouterr().err


def test_store_refuses_lines_of_another_config(tmp_path: Path) -> None:
    digest, done = runner.open_store(tmp_path, {"a": 1})
    assert done == {}
    line = {"config_hash": "0" * 16, "dataset": "d", "key": "k"}
    (tmp_path / "predictions.jsonl").write_text(json.dumps(line) + "\n" + json.dumps(line) + "\n")
    with pytest.raises(runner.ResumeError, match=r"predictions.jsonl:1: written under config 0{16}"):
        runner.open_store(tmp_path, {"a": 1})
    with pytest.raises(runner.ResumeError, match=r"a: 1 -> 2"):
        runner.open_store(tmp_path, {"a": 2})


def test_metrics_and_report_of_valid_predictions(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    mos = rng.uniform(1, 5, 40)
    rows = [{"dataset": "KonIQ-10k", "key": str(i), "mos": float(m), "pred": float(m + rng.normal(0, 0.3)),
             "invalid": None, "rounds": 1 + (i % 4 == 0), "zoomed": i % 4 == 0, "hit_token_limit": False}
            for i, m in enumerate(mos)]
    rows[0].update(pred=None, invalid="malformed_json")
    m = set_metrics(rows, "zoomiqa")
    assert m["n_valid"] == 39 and m["invalid_by_class"] == {"malformed_json": 1}
    assert m["crop_rate"] == pytest.approx(10 / 40) and m["mean_extra_rounds"] == pytest.approx(0.25)
    assert m["scores"]["n_used"] == 39 and m["scores"]["plcc"] > 0.9
    summary = {"config_hash": "h", "task": "zoomiqa", "datasets": {"KonIQ-10k": {**m, "n_run_now": 40}}}
    report = write_report(tmp_path, summary, {"KonIQ-10k": rows},
                          {"checkpoint": "ckpt", "task": "zoomiqa", "sampling": {}}).read_text()
    assert column_of("KonIQ-10k") == "koniq"
    ours = next(line for line in report.splitlines() if line.startswith("| this run (raw)"))
    assert f"{m['scores']['plcc']:.3f} / {m['scores']['srcc']:.3f}" in ours.split("|")[3]
    zoom = PUBLISHED[("Zoom-IQA", "arXiv:2601.02918 Table 1")]["koniq"]
    assert f"{zoom[0]:.3f} / {zoom[1]:.3f}" in report
    assert (tmp_path / "plots" / "KonIQ-10k_scatter.png").is_file()


def test_degradation_task_metrics() -> None:
    rows = [{"invalid": None, "rounds": 1, "zoomed": False, "hit_token_limit": False, "pred": None, "mos": 1.0,
             "distortion_class": gc, "severity": gl, "pred_class": pc, "pred_level": pl}
            for gc, gl, pc, pl in [("noise", "slight", "noise", "slight"), ("blur", "serious", "noise", "serious"),
                                   ("null", "null", "null", "null")]]
    d = set_metrics(rows, "qinsight_degradation")["degradation"]
    assert d["per_class"]["noise"]["class_acc"] == 1.0 and d["per_class"]["blur"]["class_acc"] == 0.0


def test_degradation_report_has_table3_layout_beside_published_rows(tmp_path: Path) -> None:
    from zoomiqa_jax.eval.report import PUBLISHED_DEGRADATION

    cases = [("noise", "slight", "noise", "slight"), ("noise", "serious", "noise", "slight"),
             ("compression", "obvious", "jpeg", "obvious"), ("blur", "moderate", None, None),
             ("null", "null", "null", None)]
    rows = [{"dataset": "degradation", "key": str(i), "invalid": None if pc else "missing_answer", "rounds": 1,
             "zoomed": False, "hit_token_limit": False, "pred": None, "mos": 1.0, "distortion_class": gc,
             "severity": gl, "pred_class": pc, "pred_level": pl} for i, (gc, gl, pc, pl) in enumerate(cases)]
    m = set_metrics(rows, "qinsight_degradation")
    summary = {"config_hash": "h", "task": "qinsight_degradation", "datasets": {"degradation": m}}
    report = write_report(tmp_path, summary, {"degradation": rows},
                          {"checkpoint": "ckpt", "task": "qinsight_degradation", "sampling": {}}).read_text()
    assert "## Degradation perception (arXiv:2503.22679 Table 3)" in report
    assert "| model | source | metric | Noise | Blur | JPEG | Darken | Null | Average |" in report
    ours_class = next(x for x in report.splitlines() if x.startswith("| this run: degradation (n=5)") and "Deg." in x)
    ours_level = next(x for x in report.splitlines() if x.startswith("| this run: degradation (n=5)") and "Lev." in x)
    # columns Noise, Blur, JPEG, Darken (absent: blank), Null, Average (macro over the classes present)
    assert [c.strip() for c in ours_class.split("|")[4:10]] == ["1.0000", "0.0000", "1.0000", "", "1.0000", "0.7500"]
    assert [c.strip() for c in ours_level.split("|")[4:10]] == ["0.5000", "0.0000", "1.0000", "", "-", "0.5000"]
    q = PUBLISHED_DEGRADATION[("Q-Insight", "arXiv:2503.22679 Table 3")]
    published = "| Q-Insight | arXiv:2503.22679 Table 3 | {} | " + " | ".join(["{}"] * 6) + " |"
    assert published.format("Deg. Acc.", "1.0000", "0.9756", "1.0000", "0.9027", "0.7603", "0.9277") in report
    assert published.format("Lev. Acc.", "0.5973", "0.4438", "0.5541", "0.3230", "-", "0.4796") in report
    assert q["class"][-1] == pytest.approx(np.mean(q["class"][:5]), abs=1e-4)  # the paper's Average is the macro mean
    assert q["level"][-1] == pytest.approx(np.mean(q["level"][:4]), abs=1e-4)


def test_sigterm_keeps_finished_predictions_and_writes_no_report(
    workspace: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """SIGTERM mid-run: exit 130, a message, every finished prediction on a complete line (a rerun resumes from
    them: test_eval_writes_all_files_and_resumes_only_missing_items), no metrics or report of a partial set."""
    import io
    import os
    import signal

    from zoomiqa_jax.inference import zoom

    real, calls = zoom.run_zoomiqa, []

    def terminated_on_second_batch(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls.append(len(args[2]))
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # a preempted VM, in the middle of the run
        return real(*args, **kwargs)

    monkeypatch.setattr(zoom, "run_zoomiqa", terminated_on_second_batch)
    out, err = tmp_path / "run", io.StringIO()
    assert runner.eval_main(_argv(workspace, out), err=err) == 130
    assert "interrupted (SIGTERM): 4 finished prediction(s) kept" in err.getvalue()
    assert len(_predictions(out)) == 4 and not (out / "metrics.json").exists()  # batch 1 (4 images), no report
    assert not (out / "report.md").exists() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_protocol_flag_draws_questions_and_is_part_of_the_config(
    workspace: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from zoomiqa_jax.inference import zoom
    from zoomiqa_jax.inference.protocol import make_protocol

    seen: dict[str, list] = {}
    real = zoom.run_zoomiqa

    def wrapper(model, tokenizer, items, *args, protocol=None, **kwargs):  # noqa: ANN001, ANN202
        seen.setdefault(protocol.name, []).extend((item.index, item.question) for item in items)
        return real(model, tokenizer, items, *args, protocol=protocol, **kwargs)

    monkeypatch.setattr(zoom, "run_zoomiqa", wrapper)
    hashes = {}
    for name in ("official", "strict"):
        out = tmp_path / name
        assert runner.eval_main(_argv(workspace, out, "--limit", "4", "--protocol", name)) == 0
        config = json.loads((out / "run_config.json").read_text())
        hashes[name] = config["hash"] if "hash" in config else json.dumps(config, sort_keys=True)
        assert name in json.dumps(config)
    official = make_protocol("official")
    # the records have no question of their own: official gives the authors' Random(42) draw by position,
    # strict leaves the question to its per-image draw inside the loop
    assert seen["official"] == [(i, official.question_for(i, 0)) for i, _ in seen["official"]]
    assert all(question is None for _, question in seen["strict"])
    assert hashes["official"] != hashes["strict"]
    assert runner.eval_main(_argv(workspace, tmp_path / "official", "--limit", "4", "--protocol", "strict")) == 2


def test_encoded_image_of_a_record() -> None:
    # the official protocol reads a tfds record's own file bytes (not the pipeline's RGB decode)
    assert runner._encoded_image({"image": b"\x89PNG..."}) == b"\x89PNG..."
    assert runner._encoded_image({"image": np.array(b"abc", dtype=object)}) == b"abc"
    assert runner._encoded_image({"image": "a/b.png"}) is None and runner._encoded_image({}) is None
    assert runner._text_field({"question": b"Q?"}, "question") == "Q?" and runner._text_field({}, "question") is None
