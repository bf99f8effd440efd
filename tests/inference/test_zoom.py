"""Zoom-IQA multi-round inference (issue 3): a forced crop runs both rounds end to end on a tiny random model
with a mask that is 1 exactly on generated tokens; routing (no crop for final / unparseable / zero box /
--no-zoom); invalid outputs counted by class and never rated; single-turn Q-Insight and VisualQuality-R1."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
from flax import nnx
from PIL import Image

from tests.inference.replies import CROP, FINAL, STAGE2, ZERO_BOX
from zoomiqa_jax.config import ModelConfig
from zoomiqa_jax.inference.engine import Buckets, GenerateOutput
from zoomiqa_jax.inference.rounds import ImageItem, SamplingSettings, encode_images
from zoomiqa_jax.inference.single_turn import run_comparisons, run_single_turn
from zoomiqa_jax.inference.trajectory import SPLICE_MARK, Trajectory, count_invalid, splice_assistant_turn
from zoomiqa_jax.inference.zoom import question_for, run_zoomiqa
from zoomiqa_jax.model import Qwen25VL
from zoomiqa_jax.processing.crop import crop_and_zoom, crop_box
from zoomiqa_jax.processing.prompts import zoomiqa_stage1_messages, zoomiqa_stage2_messages
from zoomiqa_jax.processing.tokenizer import TINY_TOKENIZER_DIR, load_tokenizer, render_chat

CFG = ModelConfig.tiny()
SETTINGS = SamplingSettings(max_new_tokens=8, buckets=Buckets((2048,), (64,), (8,)))


class Scripted:
    """A fake sampler (the `generate_fn` test hook): row r answers `texts[r]` (or `pick(prompt text)`), then
    `<|im_end|>` (unless `stop` is False); token k gets log-prob -(k + 1) / 100. A script may be longer than
    `max_new_tokens` (so stage 1 is complete while stage 2 stays short). Checks images against image tokens."""

    def __init__(self, tok, texts=None, pick=None, stop=True):
        self.tok, self.texts, self.pick, self.stop, self.calls = tok, texts, pick, stop, []

    def __call__(self, model, ids, mask, pixels, grids, *, max_new_tokens, eos_token_ids, row_keys, **kw):
        self.calls.append(len(ids))
        n_img = int((ids == CFG.image_token_id).sum())
        assert n_img == (0 if grids is None else int(np.prod(grids, axis=1).sum()) // 4)
        assert pixels is None or len(pixels) == int(np.prod(grids, axis=1).sum())
        assert len(row_keys) == len(ids)
        rows = []
        for r in range(len(ids)):
            valid = [int(t) for t in ids[r][mask[r] == 1]]
            if self.pick is not None:
                text = self.pick(self.tok.decode(valid))
            else:
                text = self.texts[r] if r < len(self.texts) else ""
            rows.append(self.tok(text, add_special_tokens=False)["input_ids"] + [eos_token_ids[0]] * self.stop)
        width = max(max_new_tokens, *(len(g) for g in rows))
        tokens = np.full((len(ids), width), eos_token_ids[0], np.int32)
        logps = np.zeros(tokens.shape, np.float32)
        lengths = np.zeros(len(ids), np.int32)
        for r, gen in enumerate(rows):
            tokens[r, : len(gen)], lengths[r] = gen, len(gen)
            logps[r, : len(gen)] = -(np.arange(len(gen)) + 1) / 100
        return GenerateOutput(tokens, logps, lengths)


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(TINY_TOKENIZER_DIR)


@pytest.fixture(scope="module")
def stub():
    """Everything run_zoomiqa reads from a model when the sampler is scripted."""
    return SimpleNamespace(config=CFG)


def image(w=84, h=56, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))


def items(n):
    return [ImageItem(f"img{i}.png", image(84 + 28 * (i % 2), 56, seed=i), index=i) for i in range(n)]


# ---- (a) a forced crop, real model in stage 2 ----

def test_forced_crop_runs_two_rounds_with_exact_generated_mask(tok):
    model = Qwen25VL(CFG, rngs=nnx.Rngs(0))
    item = ImageItem("a.png", image(), index=3)
    stage1 = Scripted(tok, [CROP])
    traj = run_zoomiqa(model, tok, [item], SETTINGS, stage1_generate_fn=stage1)[0]
    assert stage1.calls == [1] and len(traj.rounds) == 2 and traj.zoomed

    # round 1: the crop on the ORIGINAL pixel size, boxes in both frames
    r1, r2 = traj.rounds
    box = crop_box([0.1, 0.1, 0.5, 0.6], 84, 56)
    assert r1.bbox_requested == [0.1, 0.1, 0.5, 0.6]
    assert r1.bbox_pixels == list(box.pixel) and r1.bbox_normalized == list(box.normalized)
    assert traj.boxes == [{"round": 1, "requested": r1.bbox_requested, "pixels": list(box.pixel),
                           "normalized": list(box.normalized)}]

    # stage-2 prompt == the published rendering: question without image, stage-1 reply, original + crop
    question = question_for(item, SETTINGS.seed)
    crop = crop_and_zoom(item.image, box)
    grids = [list(g) for g in encode_images([item.image, crop], SETTINGS).grids]
    assert r2.image_grids == grids
    rendered = render_chat(tok, zoomiqa_stage2_messages(question, CROP), grids)
    assert r2.prompt_ids == rendered
    assert r1.prompt_ids == render_chat(tok, zoomiqa_stage1_messages(question), grids[:1])

    # the final sequence and its mask, token by token
    prefix = render_chat(tok, [{"role": "user", "content": [{"type": "text", "text": question}]}], [])
    reply_ids = tok(CROP, add_special_tokens=False)["input_ids"] + [CFG.eos_token_id]
    assert r1.output_ids == reply_ids
    assert traj.token_ids == rendered + r2.output_ids
    assert 1 <= len(r2.output_ids) <= SETTINGS.max_new_tokens
    start, end = len(prefix), len(prefix) + len(reply_ids)
    assert rendered[:start] == prefix and rendered[start:end] == reply_ids
    expected = [0] * start + [1] * len(reply_ids) + [0] * (len(rendered) - end) + [1] * len(r2.output_ids)
    for i, (got, want) in enumerate(zip(traj.token_mask, expected, strict=True)):
        assert got == want, f"mask at token {i} ({tok.decode([traj.token_ids[i]])!r}): {got} != {want}"
    assert rendered[end - 1] == CFG.eos_token_id and rendered[end:end + 2] == tok("\n<|im_start|>")["input_ids"]
    ids, mask = np.array(traj.token_ids), np.array(traj.token_mask)
    assert not mask[ids == CFG.image_token_id].any() and (ids == CFG.image_token_id).sum() > 0
    lps = np.array(traj.token_logprobs)
    np.testing.assert_allclose(lps[start:end], r1.output_logprobs)
    np.testing.assert_allclose(lps[len(rendered):], r2.output_logprobs)
    assert not lps[mask == 0].any() and (lps[len(rendered):] < 0).all()

    # the stage-2 answer of a random model decides: a rating, or an invalid stage 2, never stage 1's 3.25
    assert (traj.rating is None) == (traj.invalid is not None)
    assert traj.invalid is None or traj.invalid_round == 2
    assert traj.rating != 3.25 or traj.invalid is None


@pytest.mark.parametrize("ending", ["im_end", "endoftext", "limit"])
def test_splice_marks_exactly_the_generated_tokens(tok, ending):
    body = tok("<think>ok</think>", add_special_tokens=False)["input_ids"]
    stray = CFG.image_token_id  # a vision token inside a reply is left out of the history
    stop = {"im_end": CFG.eos_token_id, "endoftext": CFG.bos_token_id, "limit": None}[ending]
    gen = body[:2] + [stray] + body[2:] + ([stop] if stop is not None else [])
    lps = [-(k + 1) / 10 for k in range(len(gen))]
    messages = zoomiqa_stage2_messages("Q?", SPLICE_MARK)
    out = splice_assistant_turn(tok, messages, gen, lps, stop, [[1, 4, 4], [1, 4, 4]])
    rendered = render_chat(tok, zoomiqa_stage2_messages("Q?", "<think>ok</think>"), [[1, 4, 4], [1, 4, 4]])
    assert out.ids == rendered and out.dropped_special == 1
    start = len(render_chat(tok, [{"role": "user", "content": [{"type": "text", "text": "Q?"}]}], []))
    closes = int(ending == "im_end")
    assert out.mask == [0] * start + [1] * (len(body) + closes) + [0] * (len(rendered) - start - len(body) - closes)
    kept = lps[:2] + lps[3:3 + len(body) - 2] + (lps[-1:] if closes else [])
    assert out.logprobs[start:start + len(kept)] == kept and not any(out.logprobs[start + len(kept):])


# ---- (b) routing without a crop ----

@pytest.mark.parametrize("max_turns", [1, 2])
def test_no_crop_for_final_unparseable_zero_box_and_no_zoom(tok, stub, max_turns):
    texts = [FINAL, "no answer here", ZERO_BOX, CROP]
    stage2 = Scripted(tok, [STAGE2])
    trajs = run_zoomiqa(stub, tok, items(4), SETTINGS, max_turns=max_turns,
                        stage1_generate_fn=Scripted(tok, texts), generate_fn=stage2)
    final, bad, zero, crop = trajs
    assert [len(t.rounds) for t in trajs[:3]] == [1, 1, 1]
    assert (final.rating, final.routing_warnings, final.invalid) == (2.75, [], None)
    assert (bad.rating, bad.invalid, bad.invalid_round) == (None, "missing_answer", 1)
    assert (zero.rating, zero.routing_warnings) == (4.5, ["crop_with_zero_box"])
    assert all(r.bbox_pixels is None for t in trajs[:3] for r in t.rounds)
    if max_turns == 1:  # --no-zoom: the crop is not run, the stage-1 rating stays
        assert stage2.calls == [] and len(crop.rounds) == 1
        assert (crop.rating, crop.routing_warnings) == (3.25, ["zoom_disabled"])
    else:  # only the cropping row reaches stage 2
        assert stage2.calls == [1] and len(crop.rounds) == 2 and crop.rating == 1.5
    for t in trajs:
        if len(t.rounds) == 1:
            r = t.rounds[0]
            assert t.token_ids == r.prompt_ids + r.output_ids
            assert t.token_mask == [0] * len(r.prompt_ids) + [1] * len(r.output_ids)


def test_scripted_two_rounds_record_and_json_round_trip(tok, stub):
    pick = lambda prompt: STAGE2 if "Cropped image" in prompt else CROP
    traj = run_zoomiqa(stub, tok, items(1), SETTINGS, generate_fn=Scripted(tok, pick=pick))[0]
    assert traj.rating == 1.5 and traj.final_answer["tool"] == "final" and not traj.hit_token_limit
    assert traj.restoration_prompts == {"positive": "the sky is 1 noisy.", "negative": "the sky is 2 noisy."}
    assert traj.rounds[1].prompt_text.count("<|image_pad|>") == 2
    back = Trajectory.from_dict(json.loads(json.dumps(traj.to_dict())))
    assert back == traj
    short = traj.to_dict(tokens=False)
    assert "token_ids" not in short and "prompt_ids" not in short["rounds"][0] and short["boxes"]


# ---- (c) invalid outputs: counted by class, never rated ----

def test_invalid_outputs_counted_by_class_and_never_rated(tok, stub):
    texts = [
        "<think>x</think>",  # missing_answer
        "<answer>not json at all</answer>",  # malformed_json
        '<answer>{"bbox_2d": [0, 0, 0, 0], "rating": "high", "tool": "final"}</answer>',  # invalid_rating
        '<answer>{"bbox_2d": [0, 0, 0, 0], "rating": NaN, "tool": "final"}</answer>',  # invalid_rating
        CROP,  # crops, then stage 2 is unparseable: invalid, NOT stage 1's 3.25
        FINAL,
    ]
    trajs = run_zoomiqa(stub, tok, items(6), SETTINGS, stage1_generate_fn=Scripted(tok, texts),
                        generate_fn=Scripted(tok, ["<answer>{</answer>"]))
    assert count_invalid(trajs) == {"missing_answer": 1, "malformed_json": 2, "invalid_rating": 2}
    assert [t.rating for t in trajs] == [None] * 5 + [2.75]
    assert trajs[4].invalid_round == 2 and trajs[4].invalid == "malformed_json"


def test_token_limit_is_recorded(tok, stub):
    traj = run_zoomiqa(stub, tok, items(1), SETTINGS, generate_fn=Scripted(tok, [FINAL[:-12]], stop=False))[0]
    assert traj.hit_token_limit and traj.rounds[0].hit_token_limit and traj.invalid == "missing_answer"


def test_batch_rows_are_padded_to_a_power_of_two(tok, stub):
    fake = Scripted(tok, [FINAL] * 3)
    run_zoomiqa(stub, tok, items(3), SETTINGS, generate_fn=fake)
    assert fake.calls == [4]


# ---- single-turn Q-Insight / VisualQuality-R1 through the same rounds ----

def test_single_turn_tasks(tok, stub):
    score = run_single_turn(stub, tok, items(2), "qinsight_score", SETTINGS, generate_fn=Scripted(
        tok, ['<think>ok</think><answer>{"rating": 3.40}</answer>', "nothing"]))
    assert [t.rating for t in score] == [3.4, None] and score[1].invalid == "missing_answer"
    vq = run_single_turn(stub, tok, items(1), "vqr1_score", SETTINGS,
                         generate_fn=Scripted(tok, ["<answer>4.25</answer>"]))[0]
    assert vq.rating == 4.25 and vq.task == "vqr1_score" and vq.token_mask.count(1) == len(vq.rounds[0].output_ids)
    deg = run_single_turn(stub, tok, items(1), "qinsight_degradation", SETTINGS, generate_fn=Scripted(
        tok, ['<answer>{"distortion_class": "blur", "severity": "slight"}</answer>']))[0]
    assert deg.final_answer["distortion_class"] == "blur" and deg.invalid is None
    a, b, ref = items(3)
    cmp = run_comparisons(stub, tok, [(ref, a, b)], SETTINGS, generate_fn=Scripted(tok, ["<answer>Image B</answer>"]))
    assert cmp[0].final_answer["choice"] == "B" and cmp[0].inputs == {"reference": ref.name, "A": a.name, "B": b.name}
    assert cmp[0].rounds[0].image_grids and len(cmp[0].rounds[0].image_grids) == 3
