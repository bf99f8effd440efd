"""The curation stages with a scripted teacher, scripted VRF read-outs and a scripted rater (issue 19, must-show
2): each VRF threshold at, below and above its value decides through `Curator` as `filters.vrf_decision` says;
the rater's Pass / Fail / unparsed reply decides HACF; unreadable images, teacher errors and format failures stop
a candidate first; the stage counts add up; the kept records load as SFT data; the report shows each kind."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from tests.inference.test_zoom import CFG, Scripted
from zoomiqa_jax.curate import vrf_readout
from zoomiqa_jax.curate.cli import write_outputs
from zoomiqa_jax.curate.filters import AnswerReadout
from zoomiqa_jax.curate.pipeline import Curator, Reader, read_labels
from zoomiqa_jax.curate.rater import RATER_PROMPT, LocalRater
from zoomiqa_jax.curate.report import counts
from zoomiqa_jax.curate.teacher import TeacherReply
from zoomiqa_jax.inference.rounds import SamplingSettings
from zoomiqa_jax.processing.answers import STAGE1_SECTIONS
from zoomiqa_jax.train.sft_data import load_sft_jsonl


def reply(marker: str, rating: float = 3.25) -> str:
    body = "\n".join(f"{i + 1}) {label}: {marker} region {i} is soft." for i, label in enumerate(STAGE1_SECTIONS))
    answer = f'{{"bbox_2d": [0, 0, 0, 0], "rating": {rating:.2f}, "tool": "final"}}'
    return f"<think>\n{body}\n</think>\n<answer>{answer}</answer>"


R = AnswerReadout
# id -> (with image, text only, expected stage, expected reasons); rating and entropy far apart unless under test
CASES = {
    "rating_at": (R(3.45, None, 1.0), R(3.40, None, 1.5), "kept", []),
    "rating_below": (R(3.44, None, 1.0), R(3.40, None, 1.5), "vrf", ["rating_difference"]),
    "rating_above": (R(3.46, None, 1.0), R(3.40, None, 1.5), "kept", []),
    "iou_at": (R(3.0, (0, 0, 1, 1), 1.0), R(4.0, (0, 0, 1, 0.5), 1.5), "kept", []),
    "iou_above": (R(3.0, (0, 0, 1, 1), 1.0), R(4.0, (0, 0, 1, 0.6), 1.5), "vrf", ["bbox_iou"]),
    "iou_below": (R(3.0, (0, 0, 1, 1), 1.0), R(4.0, (0, 0, 1, 0.4), 1.5), "kept", []),
    "entropy_at": (R(3.0, None, 1.00), R(4.0, None, 1.01), "kept", []),
    "entropy_below": (R(3.0, None, 1.000), R(4.0, None, 1.009), "vrf", ["entropy_difference"]),
    "entropy_above": (R(3.0, None, 1.000), R(4.0, None, 1.011), "kept", []),
    "all_three": (R(3.0, (0, 0, 1, 1), 1.0), R(3.0, (0, 0, 1, 1), 1.0), "vrf",
                  ["rating_difference", "bbox_iou", "entropy_difference"]),
    "rater_fail": (R(3.0, None, 1.0), R(4.0, None, 1.5), "hacf", ["fail"]),
    "rater_unsure": (R(3.0, None, 1.0), R(4.0, None, 1.5), "hacf", ["unparsed"]),
}
RATER_SAYS = {"rater_fail": "Fail: the image is sharp.", "rater_unsure": "I cannot tell from this image."}


class ScriptedTeacher:
    def __init__(self, replies):
        self.replies, self.calls = replies, []

    def write(self, items):
        self.calls.append([i.name for i in items])
        return [self.replies[i.name.rsplit("/", 1)[-1].removesuffix(".png")] for i in items]


@pytest.fixture()
def setup(tmp_path, monkeypatch, tiny_tokenizer):
    rng = np.random.default_rng(0)
    names = [*CASES, "broken_format", "teacher_error", "unreadable"]
    with open(tmp_path / "labels.jsonl", "w") as f:
        for name in names:
            if name == "unreadable":
                (tmp_path / f"{name}.png").write_bytes(b"not a png")
            else:
                Image.fromarray(rng.integers(0, 255, (56, 56, 3), dtype=np.uint8)).save(tmp_path / f"{name}.png")
            f.write(json.dumps({"image": f"{name}.png", "mos": 3.5, "brightness": 0.4, "blurriness": 0.066}) + "\n")
    replies = {name: TeacherReply(f"question {name}?", (reply(f"marker_{name}"),)) for name in CASES}
    replies["broken_format"] = TeacherReply("q?", ("<think>just text, no answer</think>",))
    replies["teacher_error"] = TeacherReply(None, (), "teacher endpoint: HTTP 503")

    def scripted_readouts(model, tokenizer, image, question, turn_text, settings, prompts):
        name = question.removeprefix("question ").removesuffix("?")
        return CASES[name][0], CASES[name][1]

    monkeypatch.setattr(vrf_readout, "vrf_readouts", scripted_readouts)
    tok = tiny_tokenizer

    def rater_pick(prompt_text):
        if "<|im_start|>" not in prompt_text:  # a one-token filler row of a padded batch
            return ""
        assert RATER_PROMPT.split("\n")[0] in prompt_text and "MOS (human rating, 1-5): 3.50" in prompt_text
        assert "- brightness: 0.4000 (dataset)" in prompt_text  # the label's attribute replaces ours
        assert "- blurriness: 0.0660 (dataset)" in prompt_text and "qmos" not in prompt_text  # hint_fields
        for name, says in RATER_SAYS.items():
            if f"marker_{name} " in prompt_text:
                return says
        return "Pass. Consistent with the hints."

    settings = SamplingSettings(max_new_tokens=16, temperature=0.0, max_pixels=56 * 56)
    stub = SimpleNamespace(config=CFG)
    rater = LocalRater(stub, tok, settings, generate_fn=Scripted(tok, pick=rater_pick))
    curator = Curator(ScriptedTeacher(replies), Reader(stub, tok, settings), rater, tmp_path,
                      hint_fields=("blurriness", "qmos"))  # no label has a qmos: left out
    return tmp_path, curator, read_labels(tmp_path / "labels.jsonl")


def test_each_threshold_and_verdict_decides_as_the_rule(setup):
    out, curator, items = setup
    rows = curator.run(items)
    got = {row["key"]: (row["stage"], row["reasons"]) for row in rows}
    for name, (_, _, stage, reasons) in CASES.items():
        assert got[name] == (stage, reasons), name
    assert got["broken_format"][0] == "format" and "not in the Zoom-IQA format" in got["broken_format"][1][0]
    assert got["teacher_error"] == ("teacher", ["teacher endpoint: HTTP 503"])
    assert got["unreadable"][0] == "unreadable"
    by_key = {row["key"]: row for row in rows}
    assert by_key["rating_at"]["vrf"]["rating_difference"] == 0.05
    assert by_key["rater_fail"]["hacf"]["verdict"] == "fail"
    assert "hacf" not in by_key["rating_below"]  # the rater sees only VRF keepers
    c = counts(rows)
    assert c["total"] == len(items) == c["kept"] + sum(c["rejected"].values())
    assert c["rejected"] == {"unreadable": 1, "teacher": 1, "format": 1, "vrf": 4, "hacf": 2}
    assert c["reasons"]["vrf"] == {"bbox_iou": 2, "entropy_difference": 2, "rating_difference": 2}

    summary = write_outputs(out, rows)
    assert summary["counts"] == c
    loaded = load_sft_jsonl(out / "curated.jsonl", strict=True)
    assert [r.id for r in loaded.records] == [n for n, case in CASES.items() if case[2] == "kept"]
    assert all(r.meta["curation"]["vrf"]["keep"] for r in loaded.records)
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert len(rejects) == c["total"] - c["kept"] and all(r["reasons"] for r in rejects)
    report = (out / "report.md").read_text()
    for heading in ("### vrf: rating_difference", "### vrf: bbox_iou", "### vrf: entropy_difference",
                    "### hacf: fail", "### hacf: unparsed", "### format", "### teacher", "### unreadable"):
        assert heading in report, heading
    assert "| crop rate | 0.000 | 0.000 |" in report


def test_skipped_filters_keep_everything_that_parses(setup):
    out, curator, items = setup
    curator.reader = curator.rater = None
    rows = curator.run(items)
    kept = [r["key"] for r in rows if r["stage"] == "kept"]
    assert kept == list(CASES) and all("vrf" not in r and "hacf" not in r for r in rows)


def test_local_teacher_crop_becomes_a_two_turn_sft_record(tmp_path, tiny_tokenizer):
    from tests.inference.test_zoom import CROP, STAGE2
    from zoomiqa_jax.curate.teacher import LocalTeacher, sft_record
    from zoomiqa_jax.inference.rounds import ImageItem
    from zoomiqa_jax.train.sft_data import parse_record

    image = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 255, (84, 112, 3), dtype=np.uint8)).save(image)
    pick = lambda p: "" if "<|im_start|>" not in p else STAGE2 if p.count("<|vision_start|>") == 2 else CROP  # noqa: E731
    settings = SamplingSettings(max_new_tokens=8, max_pixels=112 * 84)
    teacher = LocalTeacher(SimpleNamespace(config=CFG), tiny_tokenizer, settings,
                           generate_fn=Scripted(tiny_tokenizer, pick=pick))
    (reply,) = teacher.write([ImageItem(str(image), Image.open(image).convert("RGB"), index=0)])
    (tmp_path / "out").mkdir()
    assert reply.texts == (CROP, STAGE2) and reply.error is None and reply.question
    record, problem = sft_record(reply, record_id="a", image=image, mos=2.0, out_dir=tmp_path / "out")
    assert problem is None and record["image"] == "../a.png" and record["question"] == reply.question
    assert record["turns"][0]["bbox"] == [0.1, 0.1, 0.5, 0.6] and "bbox" not in record["turns"][1]
    assert parse_record(record, base_dir=tmp_path / "out").crops
    bad, why = sft_record(reply, record_id="a", image=image, mos=7.0, out_dir=tmp_path / "out")
    assert bad is None and "'mos'" in why
