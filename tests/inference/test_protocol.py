"""The protocol object (issue 18): `official` and `strict` through `run_zoomiqa` with a scripted sampler (routing,
fallback crop, labels, warnings), and must-show 3: the GRPO format reward and `zoomiqa eval` read every reply
of the parser fuzz corpus with one parser and agree on its validity."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from tests.inference.replies import CROP, PAYLOADS, STAGE2, corpus, reply
from tests.inference.test_zoom import CFG, SETTINGS, Scripted, image
from zoomiqa_jax.eval.runner import _prediction
from zoomiqa_jax.inference.protocol import PROTOCOLS, Protocol, make_protocol
from zoomiqa_jax.inference.rounds import ImageItem, encode_images
from zoomiqa_jax.inference.zoom import run_zoomiqa
from zoomiqa_jax.processing.answers import STAGE1_SECTIONS, STAGE2_SECTIONS, round_layout_problem
from zoomiqa_jax.processing.crop import crop_and_zoom, crop_box
from zoomiqa_jax.processing.official import OFFICIAL_CROP_LABEL, central_fallback_box, stage2_crop
from zoomiqa_jax.processing.prompts import DEFAULT_PROMPTS
from zoomiqa_jax.processing.tokenizer import TINY_TOKENIZER_DIR, load_tokenizer
from zoomiqa_jax.score import PROTOCOL_CHOICES
from zoomiqa_jax.train.grpo_config import load_grpo_config
from zoomiqa_jax.train.grpo_loop import compute_rewards

META = {"mos": 3.0, "distortion_class": None, "severity": None}
TINY_GRPO = Path(__file__).resolve().parents[2] / "configs" / "grpo_tiny.yaml"


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(TINY_TOKENIZER_DIR)


@pytest.fixture(scope="module")
def stub():
    return SimpleNamespace(config=CFG)


def run(stub, tok, protocol, stage1, stage2=None, *, max_turns=2, size=(84, 56)):
    items = [ImageItem(f"img{i}.png", image(*size, seed=i % 3), index=i) for i in range(len(stage1))]
    return run_zoomiqa(stub, tok, items, SETTINGS, max_turns=max_turns, protocol=protocol,
                       stage1_generate_fn=Scripted(tok, stage1), generate_fn=Scripted(tok, stage2 or []))


def test_protocols_by_name():
    assert PROTOCOLS == PROTOCOL_CHOICES == ("official", "strict")
    assert make_protocol("strict").prompts == DEFAULT_PROMPTS
    official = make_protocol("official").prompts
    assert (official.zoomiqa_original_label, official.zoomiqa_crop_label) == ("Original image: ", "Cropped Image: ")
    assert official.zoomiqa_stage1 == DEFAULT_PROMPTS.zoomiqa_stage1
    with pytest.raises(ValueError, match="protocol: expected one of \\['official', 'strict'\\], found 'authors'"):
        make_protocol("authors")


def test_prompt_file_overrides_the_official_labels(tmp_path):
    file = tmp_path / "p.yaml"
    file.write_text('zoomiqa_crop_label: "Zoomed: "\n')
    prompts = make_protocol("official", file).prompts
    assert (prompts.zoomiqa_original_label, prompts.zoomiqa_crop_label) == ("Original image: ", "Zoomed: ")


def test_official_all_zero_strings_crop_the_central_fallback_without_upscaling(tok, stub):
    # routing: ["0", "0", "0", "0"] is not == 0, so a crop runs; stage2_box: float() makes them all zero -> fallback
    stage1 = reply(STAGE1_SECTIONS, '{"bbox_2d": ["0", "0", "0", "0"], "rating": 3.0, "tool": "crop"}')
    official, strict = (run(stub, tok, make_protocol(n), [stage1], [STAGE2])[0] for n in ("official", "strict"))
    assert len(official.rounds) == 2 and official.rating == 1.5
    assert official.rounds[0].bbox_pixels == list(central_fallback_box(84, 56)) == [21, 14, 63, 42]
    assert official.rounds[0].crop_adjustments == ["central fallback"]
    # the crop is 42 x 28 (not upscaled to 84 x 56): its grid is that of the bare region
    region = image(84, 56, seed=0).crop((21, 14, 63, 42))
    assert official.rounds[1].image_grids[1] == [int(v) for v in encode_images([region], SETTINGS).grids[0]]
    assert OFFICIAL_CROP_LABEL in official.rounds[1].prompt_text
    # strict: a zero box asks for no crop, the stage-1 rating stays
    assert len(strict.rounds) == 1 and strict.rating == 3.0 and strict.routing_warnings == ["crop_with_zero_box"]
    assert "Cropped image: " not in official.rounds[1].prompt_text


@pytest.mark.parametrize(
    "payload, rounds, rating, invalid, warning",
    [
        ('{"rating": 3.0, "tool": "crop"}', 1, 3.0, None, "invalid_bbox"),  # no box: one round, still rated
        ('{"bbox_2d": [0.1, 0.2, 0.5, 0.6], "tool": "crop"}', 1, None, "invalid_rating", "invalid_rating"),
        ('{"bbox_2d": [0.1, 0.2, 0.5, 0.6], "rating": 3.0, "tool": "Final"}', 2, 1.5, None, None),
        ('{"bbox_2d": [0.1, 0.2, 0.5, 0.6], "rating": 3.0, "tool": "final"}', 1, 3.0, None, None),
        ('{"bbox_2d": [0, 0, 0, 0], "rating": true, "tool": "final"}', 1, 1.0, None, None),
        ('{"bbox_2d": [0, 0, 0, 0], "rating": "1_0", "tool": "final"}', 1, 5.0, None, None),
        ('```json\n{"bbox_2d": [0, 0, 0, 0], "rating": 3.0, "tool": "final"}\n```', 1, None, "missing_answer",
         "missing_answer"),
    ],
)
def test_official_routing_in_the_loop(tok, stub, payload, rounds, rating, invalid, warning):
    traj = run(stub, tok, make_protocol("official"), [reply(STAGE1_SECTIONS, payload)], [STAGE2])[0]
    assert (len(traj.rounds), traj.rating, traj.invalid) == (rounds, rating, invalid)
    assert traj.routing_warnings == ([warning] if warning else [])


def test_official_crop_is_its_geometry_and_the_rollout_re_renders_it(tok, stub):
    # a thin image where the two geometries differ (tests/processing/test_official.py pins the pixels)
    traj = run(stub, tok, make_protocol("official"), [CROP], [STAGE2], size=(3000, 40))[0]
    box = [0.1, 0.1, 0.5, 0.6]
    crop, placed = stage2_crop(image(3000, 40, seed=0), box)
    assert traj.rounds[0].bbox_pixels == list(placed.pixel)
    protocol = Protocol("official")
    cut = protocol.cut(image(3000, 40, seed=0), protocol.requested_box(traj.rounds[0].answer))
    assert list(cut.pixel) == list(placed.pixel) and cut.image.size == crop.size
    assert np.array_equal(np.asarray(cut.image), np.asarray(crop))
    strict = Protocol("strict").cut(image(3000, 40, seed=0), box)
    assert strict.pixel == crop_box(box, 3000, 40).pixel
    assert strict.image.size == crop_and_zoom(image(3000, 40, seed=0), crop_box(box, 3000, 40)).size


def test_strict_protocol_is_the_default_of_the_library_loop(tok, stub):
    default = run_zoomiqa(stub, tok, [ImageItem("img0.png", image(), index=0)], SETTINGS,
                          stage1_generate_fn=Scripted(tok, [CROP]), generate_fn=Scripted(tok, [STAGE2]))[0]
    strict = run(stub, tok, Protocol("strict"), [CROP], [STAGE2])[0]
    assert default.to_dict() == strict.to_dict()


# ---- must-show 3: one parser for the GRPO format reward and zoomiqa eval ----

def _agreement(stub, tok, name):
    protocol = make_protocol(name)
    cfg = load_grpo_config(TINY_GRPO, [f"rollout.protocol={name}"])
    first = corpus(STAGE1_SECTIONS)
    second = corpus(STAGE2_SECTIONS)
    # A: each reply as the only round (eval --max-turns 1); B: a crop request, then each reply as stage 2
    one = run(stub, tok, protocol, [r for _, r in first], max_turns=1)
    two = run(stub, tok, protocol, [CROP] * len(second), [r for _, r in second])
    assert all(len(t.rounds) == 2 for t in two)
    rows = []
    for (name_, text), traj in [*zip(first, one), *zip(second, two)]:
        fmt = compute_rewards(cfg, [traj], [SimpleNamespace(mos=3.0)], ["score"], 1)["format"][0, 0]
        valid = _prediction(traj, "d", name_, 0, META, "h")["pred"] is not None  # what eval counts
        reward_valid = protocol.answer_valid(protocol.parse(text))  # what the format reward reads
        layout_ok = round_layout_problem(text, STAGE1_SECTIONS if len(traj.rounds) == 1 else STAGE2_SECTIONS) is None
        rows.append((name_, text, traj, fmt, valid, reward_valid, layout_ok))
    return protocol, rows


def test_format_reward_and_eval_agree_on_validity_official(stub, tok):
    protocol, rows = _agreement(stub, tok, "official")
    assert len(rows) == 2 * 7 * len(PAYLOADS)
    for name, text, traj, fmt, valid, reward_valid, layout_ok in rows:
        assert reward_valid == valid, f"{name}: reward reads {reward_valid}, eval counts {valid}: {text!r}"
        assert fmt <= valid, f"{name}: format reward 1 for a reply eval counts invalid"
        routed = len(traj.rounds) == 2 or not protocol.parse(text).requests_crop
        if layout_ok and routed:
            assert fmt == valid, f"{name}: well laid out and routed, format {fmt} but eval valid {valid}"
    # the corpus reaches both sides of the rule
    assert {(bool(r[3]), r[4]) for r in rows} == {(True, True), (False, True), (False, False)}


def test_format_reward_implies_validity_strict(stub, tok):
    # strict keeps today's format rule: stricter than its eval (lenient JSON, an out-of-range rating and
    # a zero crop box get format 0 but a rating), never looser
    protocol, rows = _agreement(stub, tok, "strict")
    for name, text, _traj, fmt, valid, reward_valid, _ in rows:
        assert reward_valid == valid, f"{name}: {text!r}"
        assert fmt <= valid, f"{name}: format reward 1 for a reply eval counts invalid"
    assert np.mean([r[3] for r in rows]) < np.mean([r[4] for r in rows])


# ---- issue 18 items 2, 8, 9 through the protocol (processing/official_inputs.py) ----

def test_official_question_draw_is_the_authors_sequence():
    from zoomiqa_jax.processing.official_inputs import draw_questions

    official, strict = make_protocol("official"), make_protocol("strict")
    pool = official.prompts.zoomiqa_questions
    theirs = [q.stage1 for q in draw_questions([{}] * 40, pool)]
    assert [official.question_for(i, seed=7) for i in range(40)] == theirs  # the seed flag does not enter
    assert official.question_for(3, 0, "own?") == "own?"
    # a record with its own question draws nothing: the next record takes the draw it would have taken
    drawn = official.draw_questions([None, "Is it sharp?", None])
    assert drawn == [(theirs[0], theirs[0]), ("Is it sharp?", "Is it sharp?"), (theirs[1], theirs[1])]
    with pytest.raises(ValueError, match="only the official protocol"):
        strict.draw_questions([None])


def test_official_loads_the_file_as_it_is(tmp_path):
    from PIL import Image

    path = tmp_path / "p.png"
    Image.new("P", (30, 20), 3).save(path)
    rotated = tmp_path / "r.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    Image.new("RGB", (40, 20), (200, 10, 10)).save(rotated, exif=exif)
    official, strict = make_protocol("official"), make_protocol("strict")
    assert official.load_image(path).mode == "P" and strict.load_image(path).mode == "RGB"
    assert official.load_image(rotated).size == (40, 20) and strict.load_image(rotated).size == (20, 40)
    # encoded bytes (a tfds record): official as the file; strict as the data pipeline decodes record bytes
    from zoomiqa_jax.data.pipeline import decode_image

    data = rotated.read_bytes()
    assert official.load_image(data).size == (40, 20) == strict.load_image(data).size == decode_image(data).size
    assert official.load_image(path.read_bytes()).mode == "P" and strict.load_image(path.read_bytes()).mode == "RGB"
    from zoomiqa_jax.processing.image import ImageLoadError

    with pytest.raises(ImageLoadError, match="cannot decode image bytes"):
        official.load_image(b"not an image")


def test_official_stage1_is_resized_twice_and_stage2_uses_the_history_question(tok, stub):
    # 1630 x 637: fetch_image gives 1624 x 644, the processor then 1568 x 616; the processor alone 1596 x 616
    item = ImageItem("wide.png", image(1630, 637), index=0, question="Q1", history_question="<|image|>Q1 raw")
    official = run_zoomiqa(stub, tok, [item], SETTINGS, protocol=make_protocol("official"),
                           stage1_generate_fn=Scripted(tok, [CROP]), generate_fn=Scripted(tok, [STAGE2]))[0]
    strict = run_zoomiqa(stub, tok, [item], SETTINGS, protocol=make_protocol("strict"),
                         stage1_generate_fn=Scripted(tok, [CROP]), generate_fn=Scripted(tok, [STAGE2]))[0]
    assert official.rounds[0].image_grids == [[1, 616 // 14, 1568 // 14]]
    assert strict.rounds[0].image_grids == [[1, 616 // 14, 1596 // 14]]
    # stage 2: the ORIGINAL file image (not the stage-1 resize) and the crop; the history turn is the raw question
    assert official.rounds[1].image_grids[0] == strict.rounds[1].image_grids[0]
    assert "<|image|>Q1 raw" in official.rounds[1].prompt_text and official.question == "Q1"
    assert "Q1\n" in official.rounds[0].prompt_text and "<|image|>Q1 raw" not in official.rounds[0].prompt_text


def test_official_sends_a_blank_own_question_as_it_is():
    # a record whose question is a bare "<|image|>" has stage-1 question "" in their evaluation
    assert make_protocol("official").question_for(0, 0, "") == ""
    with pytest.raises(ValueError, match="non-blank"):
        make_protocol("strict").question_for(0, 0, "")


def test_grpo_protocol_is_for_the_zoomiqa_recipe_only():
    from zoomiqa_jax.train.grpo_loop import rollout_prompts, zoomiqa_protocol

    for name in PROTOCOLS:
        cfg = load_grpo_config(TINY_GRPO, [f"rollout.protocol={name}"])
        assert zoomiqa_protocol(cfg).name == name
        assert zoomiqa_protocol(cfg, rollout_prompts(cfg)).prompts == rollout_prompts(cfg)
        # the single-turn recipes keep their own prompts, parsers and the processor's plain image re-render
        assert zoomiqa_protocol(load_grpo_config(TINY_GRPO, ["grpo.recipe=qinsight",
                                                             f"rollout.protocol={name}"])) is None
    # without a prompt file (grpo_tiny's demo prompts set the label themselves), each protocol's own label
    assert rollout_prompts(load_grpo_config(TINY_GRPO, ["data.prompt_file="])).zoomiqa_crop_label == "Cropped Image: "
    strict = load_grpo_config(TINY_GRPO, ["data.prompt_file=", "rollout.protocol=strict"])
    assert rollout_prompts(strict).zoomiqa_crop_label == "Cropped image: "
