"""Zoom-IQA multi-round inference: reason on the image, maybe crop and zoom, rate (issue 3, published protocol).

The protocol object (`inference.protocol`, `official` or `strict`) decides the prompts, the question, how a
reply is parsed and routed and how the crop is cut; the layout below is `strict`'s, `official` differs point by
point as docs/inference.md tables.

    stage 1   user: question + stage-1 instructions, then the image          -> <think>...</think><answer>{...}
              parse; route (`processing.answers.route_stage1`):
                crop    tool "crop" with four numbers, not all zero -> cut the box from the ORIGINAL image
                        (its file pixel size; `processing.crop`), upscale with LANCZOS, go to stage 2
                final   keep the stage-1 rating (with a routing warning when the box / tool was unusable)
                invalid no usable rating and no crop: counted, excluded, never given a random score
    stage 2   history: user question WITHOUT the image, the stage-1 reply as the assistant turn;
              user: stage-2 instructions, "Original image: " + image, "Cropped image: " + crop
              -> the stage-2 rating is final (at most `max_turns` = 2 rounds)

`max_turns=1` (the CLI's `--no-zoom`) stops after stage 1: a requested crop is not run, the stage-1 rating
is kept and the routing warning `zoom_disabled` is recorded.

A batch runs in two sampler calls: stage 1 for every image, stage 2 for the rows that crop. The sampler
is pluggable: `generate_fn` (default `engine.generate`) runs every round and `stage1_generate_fn`, when
given, replaces it for stage 1 only. That is the documented test hook: a scripted stage 1 (fixed texts)
with the real model in stage 2 forces a crop on a random model.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image

from zoomiqa_jax.inference import engine
from zoomiqa_jax.inference.protocol import Protocol
from zoomiqa_jax.inference.rounds import (
    DEFAULT_SETTINGS,
    EncodedImages,
    GenerateFn,
    ImageItem,
    RowOutput,
    RowPrompt,
    SamplingSettings,
    decode_output,
    encode_images,
    render_prompt,
    sample_round,
)
from zoomiqa_jax.inference.trajectory import (
    SPLICE_MARK,
    SplicedPrompt,
    Trajectory,
    answer_dict,
    final_sequence,
    make_round,
    splice_assistant_turn,
)
from zoomiqa_jax.processing.prompts import DEFAULT_PROMPTS, PromptSet, choose_question

MAX_TURNS = 2


@dataclass
class _Row:
    """Book-keeping for one image while its rounds run."""

    item: ImageItem
    traj: Trajectory
    original: EncodedImages | None = None
    stage1: RowOutput | None = None
    answer1: Any = None  # the protocol's parsed stage-1 answer
    crop: Image.Image | None = None


def question_for(item: ImageItem, seed: int, prompts: PromptSet = DEFAULT_PROMPTS) -> str:
    """The item's own question, else a paraphrase drawn with `Random(f"{seed}/{index}")` (batch independent)."""
    return choose_question(random.Random(f"{seed}/{item.index}"), item.question, prompts)


def run_zoomiqa(
    model: Any,
    tokenizer: Any,
    items: Sequence[ImageItem],
    settings: SamplingSettings = DEFAULT_SETTINGS,
    *,
    max_turns: int = MAX_TURNS,
    prompts: PromptSet = DEFAULT_PROMPTS,
    generate_fn: GenerateFn | None = None,
    stage1_generate_fn: GenerateFn | None = None,
    protocol: Protocol | None = None,
) -> list[Trajectory]:
    """Score a batch of images with Zoom-IQA (module docstring); one Trajectory per item, in order.

    `protocol` (`inference.protocol`) decides the prompts, question draw, parsing, routing and crop; None is
    the `strict` protocol with `prompts`. A given protocol brings its own prompts (`prompts` is then unused).

    Never raises for a model output; an image the processor rejects (aspect ratio over 200) becomes an
    invalid trajectory with class `image_error`.
    """
    if not 1 <= max_turns <= MAX_TURNS:
        raise ValueError(f"max_turns: expected 1 or 2 (the protocol allows at most 2 rounds), found {max_turns}")
    gen = generate_fn or engine.generate
    protocol = protocol or Protocol("strict", prompts)
    merge = model.config.vision.spatial_merge_size
    pad_id = model.config.bos_token_id
    rows = [_start_row(item, settings, protocol, merge) for item in items]

    live = [r for r in rows if r.original is not None]
    stage1_ids = [render_prompt(tokenizer, protocol.stage1_messages(r.traj.question), r.original, merge)
                  for r in live]
    outs = sample_round(model, [RowPrompt(ids, r.original, r.item.index) for ids, r in zip(stage1_ids, live)],
                        settings, round_index=0, pad_token_id=pad_id, generate_fn=stage1_generate_fn or gen)
    cropping: list[_Row] = []
    stage2_prompts: list[tuple[RowPrompt, SplicedPrompt]] = []
    for row, ids, out in zip(live, stage1_ids, outs):
        row.stage1 = out
        row.answer1 = protocol.parse(decode_output(tokenizer, out.ids))
        row.traj.rounds.append(make_round(tokenizer, 1, ids, out, row.answer1, row.original))
        stage2 = _route_stage1(row, tokenizer, settings, protocol, max_turns, merge)
        if stage2 is not None:
            cropping.append(row)
            stage2_prompts.append(stage2)
        else:
            _finish(row.traj, None, None)

    outs2 = sample_round(model, [p for p, _ in stage2_prompts], settings, round_index=1, pad_token_id=pad_id,
                         generate_fn=gen) if stage2_prompts else []
    for row, (prompt, spliced), out in zip(cropping, stage2_prompts, outs2):
        answer = protocol.parse(decode_output(tokenizer, out.ids))
        row.traj.rounds.append(make_round(tokenizer, 2, prompt.ids, out, answer, prompt.images))
        _route_stage2(row.traj, answer, protocol)
        _finish(row.traj, spliced.mask, spliced.logprobs)
    return [r.traj for r in rows]


def _start_row(item: ImageItem, settings: SamplingSettings, protocol: Protocol, merge: int) -> _Row:
    traj = Trajectory(image=item.name, task="zoomiqa", image_size=list(item.image.size),
                      question=protocol.question_for(item.index, settings.seed, item.question))
    row = _Row(item, traj)
    try:
        row.original = encode_images(protocol.stage1_images(item.image), settings, merge)
    except ValueError as err:  # the processor's (or fetch_image's) aspect-ratio limit
        traj.invalid, traj.invalid_round = "image_error", 0
        traj.routing_warnings.append(f"image_error: {item.name}: {err}")
    return row


def _route_stage1(
    row: _Row, tokenizer: Any, settings: SamplingSettings, protocol: Protocol, max_turns: int, merge: int
) -> tuple[RowPrompt, SplicedPrompt] | None:
    """Apply the protocol's stage-1 routing; return the stage-2 prompt (and its splice) when a crop runs."""
    traj, answer = row.traj, row.answer1
    route = protocol.route_stage1(answer)
    if route.warning:
        traj.routing_warnings.append(route.warning)
    if route.action == "crop" and max_turns < 2:
        traj.routing_warnings.append("zoom_disabled")
    elif route.action == "crop":
        first = traj.rounds[0]
        try:
            pair, cut = protocol.stage2_images(row.item.image, route.box)
            first.bbox_pixels, first.bbox_normalized = list(cut.pixel), list(cut.normalized)
            first.crop_adjustments = list(cut.adjustments)
            row.crop = cut.image
            images = encode_images(pair, settings, merge)
        except (ValueError, OverflowError) as err:  # a crop whose aspect ratio the processor rejects; an official
            # box value too large for float() (the authors' batch fails with runtime_error there)
            traj.routing_warnings.append(f"crop_error: {err}")
            first.bbox_pixels = first.bbox_normalized = None
        else:
            messages = protocol.stage2_messages(row.item.history_question or traj.question, SPLICE_MARK)
            out = row.stage1
            spliced = splice_assistant_turn(tokenizer, messages, out.ids, out.logprobs, out.stop_token,
                                            [list(g) for g in images.grids], merge)
            if spliced.dropped_special:
                traj.routing_warnings.append(f"history_special_tokens_dropped: {spliced.dropped_special}")
            return RowPrompt(spliced.ids, images, row.item.index), spliced
    if route.rating is not None:
        traj.rating = route.rating
    else:
        traj.invalid = route.error or answer.error or "invalid_rating"
        traj.invalid_round = 1
    traj.final_answer = answer_dict(answer)
    return None


def _route_stage2(traj: Trajectory, answer: Any, protocol: Protocol) -> None:
    """The stage-2 rating is final; the protocol says which other problems are routing warnings."""
    traj.final_answer = answer_dict(answer)
    result = protocol.stage2_result(answer)
    if result.rating is None:
        traj.invalid, traj.invalid_round = result.error, 2
        return
    traj.rating = result.rating
    traj.routing_warnings.extend(result.warnings)


def _finish(traj: Trajectory, prompt_mask: list[int] | None, prompt_logprobs: list[float] | None) -> None:
    """Fill the final token sequence, the token-limit flag and the restoration prompts."""
    last = traj.rounds[-1]
    traj.token_ids, traj.token_mask, traj.token_logprobs = final_sequence(
        last.prompt_ids, prompt_mask, prompt_logprobs, last.output_ids, last.output_logprobs
    )
    traj.hit_token_limit = any(r.hit_token_limit for r in traj.rounds)
    for r in reversed(traj.rounds):
        if any(r.restoration.values()):
            traj.restoration_prompts = dict(r.restoration)
            break
    else:
        traj.restoration_prompts = {"positive": None, "negative": None}
