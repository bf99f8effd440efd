"""`zoomiqa curate` end to end on the demo's synthetic images with the tiny random model (issue 19, must-show 2
and 3): the counts add up and every recorded decision follows its rule; a rerun finds everything done; a run
SIGKILLed while waiting on the rater resumes to the same files as a straight run; `zoomiqa train sft` trains on
curated.jsonl as written; an interrupt exits 130 keeping the finished candidates; the local-checkpoint teacher runs
through the same command; --help imports no jax."""

from __future__ import annotations

import io
import json
import re
import signal
import subprocess
import sys
import threading

import pytest

from tests.curate.chat_stub import ChatStub, text_of
from tests.test_cli_startup import _probe
from tests.train.kill_resume import REPO, cpu_env
from zoomiqa_jax.curate.cli import curate_main
from zoomiqa_jax.curate.filters import AnswerReadout, vrf_decision
from zoomiqa_jax.data.trajectories import build_demo_set
from zoomiqa_jax.train.sft_data import load_sft_jsonl

PROMPTS = REPO / "zoomiqa_jax" / "assets" / "demo_prompts.yaml"
N = 6
OUTPUTS = ("predictions.jsonl", "curated.jsonl", "rejects.jsonl", "counts.json", "report.md")


def rater_rule(body: dict) -> str:
    """The stub rater: Fail for a rationale that says 'catastrophic', else Pass."""
    assessment = text_of(body).split("Assessment:", 1)[1]
    return "Fail: overstated." if "catastrophic" in assessment else "Pass"


@pytest.fixture(scope="module")
def demo(tmp_path_factory, tiny_checkpoint):
    root = tmp_path_factory.mktemp("curate")
    build_demo_set(root / "set", N, seed=5, crop_fraction=0.5, image_size=56, style="compact")
    lines = (root / "set" / "trajectories.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    crops = [i for i, r in enumerate(records) if len(r["turns"]) == 2]
    records[crops[0]]["turns"][0]["text"] = "<think>no answer here</think>"  # -> a format reject
    missing = records.pop(crops[1])["id"]  # -> a teacher reject (no reply for this label)
    (root / "teacher.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    ckpt = tiny_checkpoint
    return {"root": root, "labels": root / "set" / "degraded" / "labels.jsonl", "teacher": root / "teacher.jsonl",
            "ckpt": ckpt, "missing": missing}


def argv(demo, out, rater_url):
    return ["--labels", str(demo["labels"]), "--out", str(out), "--teacher-file", str(demo["teacher"]),
            "--reader-checkpoint", str(demo["ckpt"]), "--rater-endpoint", rater_url, "--rater-model", "stub",
            "--vrf-rating", "0", "--vrf-entropy", "0", "--prompt-file", str(PROMPTS), "--max-pixels", "3136",
            "--batch-size", "1", "--no-progress"]


@pytest.fixture(scope="module")
def rater():
    """One stub rater for the module (its URL is part of the run config, so runs compared byte for byte share
    it); `rater.rule` answers each request."""
    holder = {}
    with ChatStub(lambda body: holder["stub"].rule(body)) as stub:
        holder["stub"] = stub
        stub.rule = rater_rule
        yield stub


@pytest.fixture(scope="module")
def curated(demo, rater):
    out = demo["root"] / "run"
    calls = len(rater.requests)
    stdout = io.StringIO()
    assert curate_main(argv(demo, out, rater.url), out=stdout, err=io.StringIO()) == 0
    calls = len(rater.requests) - calls
    again = io.StringIO()
    before = {name: (out / name).read_bytes() for name in OUTPUTS}
    assert curate_main(argv(demo, out, rater.url), out=again, err=io.StringIO()) == 0
    assert f"resuming: {N} of {N} labels already curated" in again.getvalue()
    assert {name: (out / name).read_bytes() for name in OUTPUTS} == before
    return out, stdout.getvalue(), calls


def test_counts_add_up_and_each_decision_follows_its_rule(curated, demo):
    out, stdout, rater_calls = curated
    summary = json.loads((out / "counts.json").read_text())
    c = summary["counts"]
    assert c["total"] == N == c["kept"] + sum(c["rejected"].values())
    assert c["rejected"]["teacher"] == 1 and c["rejected"]["format"] == 1 and c["rejected"]["unreadable"] == 0
    assert f"curated {N} labels: {c['kept']} kept" in stdout
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [r["key"] for r in rows] == [json.loads(x)["image"][:-4] for x in demo["labels"].read_text().splitlines()]
    for row in rows:
        if "vrf" in row:
            v = row["vrf"]
            decision = vrf_decision(AnswerReadout(**v["with_image"]), AnswerReadout(**v["text_only"]), 0.0, 0.5, 0.0)
            assert decision.keep == (row["stage"] != "vrf") and list(decision.reasons) == v["reasons"]
        if "hacf" in row:
            rationale = "catastrophic" in " ".join(row["teacher"]["texts"])
            assert row["stage"] == ("hacf" if rationale else "kept") and row["hacf"]["verdict"] in ("pass", "fail")
    assert rater_calls == sum("hacf" in r for r in rows) and c["kept"] >= 1
    assert next(r for r in rows if r["key"] == demo["missing"])["stage"] == "teacher"
    loaded = load_sft_jsonl(out / "curated.jsonl", strict=True)
    assert len(loaded.records) == c["kept"]
    report = (out / "report.md").read_text()
    assert "## Before and after filtering" in report and "### format" in report and "### teacher" in report


@pytest.mark.slow
def test_sigkill_while_rating_then_resume_gives_the_same_files(demo, rater, curated, tmp_path):
    """The killed and resumed run (subprocesses) ends with the files of the straight run (`curated`, in this
    process: the same program, so the same numbers)."""
    straight, _, _ = curated
    env = cpu_env(compile_cache=tmp_path / "jax_cache")
    gate, waiting = threading.Event(), threading.Event()
    start = len(rater.requests)

    def blocking_rule(body):
        if len(rater.requests) - start == 2 and not gate.is_set():  # the killed run's second rater call hangs
            waiting.set()
            gate.wait(120)
        return rater_rule(body)

    cmd = [sys.executable, "-m", "zoomiqa_jax.cli", "curate"]
    killed = demo["root"] / "killed"  # beside `straight`: the records' relative image paths are the same
    rater.rule = blocking_rule
    try:
        proc = subprocess.Popen(cmd + argv(demo, killed, rater.url), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            assert waiting.wait(300), "the run never reached its second rater call"
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.wait()
            gate.set()
        assert proc.returncode == -signal.SIGKILL
        lines = (killed / "predictions.jsonl").read_text().splitlines()
        assert 0 < len(lines) < N and not (killed / "curated.jsonl").exists()
        with open(killed / "predictions.jsonl", "a") as f:  # what a kill in the middle of a write leaves
            f.write(lines[-1][: len(lines[-1]) // 2])
        resumed = subprocess.run(cmd + argv(demo, killed, rater.url), cwd=REPO, env=env, check=True,
                                 capture_output=True, text=True)
    finally:
        rater.rule = rater_rule
    assert re.search(rf"resuming: {len(lines)} of {N} labels already curated", resumed.stdout), resumed.stdout
    for name in OUTPUTS:
        assert (killed / name).read_bytes() == (straight / name).read_bytes(), name


@pytest.mark.slow
def test_train_sft_runs_on_the_curated_file(curated, tmp_path):
    out, _, _ = curated
    run = tmp_path / "sft"
    res = subprocess.run(
        [sys.executable, "-m", "zoomiqa_jax.cli", "train", "sft", "--config", "configs/sft_tiny.yaml",
         f"data.train={out / 'curated.jsonl'}", f"data.prompt_file={PROMPTS}", "data.batch_size=2",
         "data.seq_buckets=[512,1024]", "data.max_pixels=3136", "run.steps=2", "run.log_every=1",
         "checkpoint.save_every=2", "run.export_hf=false", f"run.out_dir={run}", "--no-progress"],
        cwd=REPO, env=cpu_env(), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    steps = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps if "event" not in s] == [1, 2]
    assert (run / "checkpoints" / "2").is_dir()


def test_interrupt_keeps_the_finished_exits_130_and_resumes(demo, rater, tmp_path, monkeypatch):
    from zoomiqa_jax.curate import pipeline

    real, calls = pipeline.Curator.run, []

    def run_then_interrupt(self, items):  # SIGTERM arrives (as KeyboardInterrupt) during the second batch
        if calls:
            raise KeyboardInterrupt("SIGTERM")
        calls.append(len(items))
        return real(self, items)

    monkeypatch.setattr(pipeline.Curator, "run", run_then_interrupt)
    out, err = tmp_path / "interrupted", io.StringIO()
    assert curate_main(argv(demo, out, rater.url), out=io.StringIO(), err=err) == 130
    assert f"interrupted (SIGTERM): 1 curated label(s) kept in {out}; the same command resumes" in err.getvalue()
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 1 and not (out / "curated.jsonl").exists()
    monkeypatch.undo()
    again = io.StringIO()
    assert curate_main(argv(demo, out, rater.url), out=again, err=io.StringIO()) == 0
    assert f"resuming: 1 of {N} labels already curated" in again.getvalue()
    assert len((out / "predictions.jsonl").read_text().splitlines()) == N


def test_another_config_is_refused_before_any_model_loads(curated, demo, rater, monkeypatch):
    out, _, _ = curated
    from zoomiqa_jax.curate import cli

    monkeypatch.setattr(cli, "build_curator", lambda *a: pytest.fail("a model loaded for a refused run"))
    err = io.StringIO()
    args = argv(demo, out, rater.url)
    args[args.index("--vrf-entropy") + 1] = "0.02"
    assert curate_main(args, out=io.StringIO(), err=err) == 2
    assert "refusing to mix them" in err.getvalue() and "thresholds" in err.getvalue()


def test_bad_labels_name_the_line_and_field(tmp_path):
    from zoomiqa_jax.curate.pipeline import read_labels

    cases = {'{"image": "a.png"}': "labels.jsonl:1: field 'mos'", '{"mos": 3}': "labels.jsonl:1: field 'image'",
             '{"image": "a.png", "mos": 3}\n{"image": "b/a.png", "mos": 2}': "labels.jsonl:2: id 'a' repeats",
             "not json": "labels.jsonl:1: not valid JSON"}
    for text, message in cases.items():
        (tmp_path / "labels.jsonl").write_text(text + "\n")
        with pytest.raises(ValueError, match=re.escape(message)):
            read_labels(tmp_path / "labels.jsonl")


def test_local_checkpoint_teacher_runs_through_the_command(demo, tmp_path):
    out = tmp_path / "local"
    stdout = io.StringIO()
    code = curate_main(["--labels", str(demo["labels"]), "--out", str(out), "--teacher-checkpoint",
                        str(demo["ckpt"]), "--max-new-tokens", "8", "--no-hacf", "--max-pixels", "3136",
                        "--prompt-file", str(PROMPTS), "--limit", "2", "--no-progress"], out=stdout, err=io.StringIO())
    assert code == 0
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(len(r["teacher"]["texts"]) >= 1 for r in rows)
    c = json.loads((out / "counts.json").read_text())["counts"]
    assert c["total"] == 2 == c["kept"] + sum(c["rejected"].values())
    # 8 random tokens are no Zoom-IQA trajectory: the format check stops them before VRF
    assert c["rejected"]["format"] == 2


def test_help_imports_no_heavy_library_and_bad_flags_exit_2(tmp_path):
    last, output = _probe("zoomiqa_jax.cli", ["curate", "--help"])
    assert last == "RC 0 HEAVY []", last
    for flag in ("--teacher-file", "--vrf-entropy", "--rater-endpoint", "--no-hacf", "--limit"):
        assert flag in output
    err = io.StringIO()
    code = curate_main(["--labels", str(tmp_path / "no.jsonl"), "--out", str(tmp_path / "o"), "--teacher-endpoint",
                        "http://x/v1"], out=io.StringIO(), err=err)
    assert code == 2
    text = err.getvalue()
    assert "--labels" in text and "needs --teacher-model" in text and "--reader-checkpoint" in text

