"""Teacher generation for GR-IQA curation (Zoom-IQA (Liang et al.), Sec. 3.1.1 "Data Generation"; issue 19).

The teacher writes, per image, the four-part rationale (Image Quality Summary, Directions for Improvement,
Issues to Avoid, Decision & Rationale) in `<think>` and the JSON answer (`bbox_2d`, `rating`, `tool`) in
`<answer>`, in the protocol's own format: it is asked with the Zoom-IQA stage-1 prompt
(`processing.prompts.zoomiqa_stage1_messages`), and when it asks for a crop the crop is cut by the inference
code (`processing.crop.crop_box` + `crop_and_zoom`, from the ORIGINAL image) and the stage-2 prompt follows.
So a reply that passes the format check is an SFT trajectory as `train.sft_data` reads it.

Teachers (all give `TeacherReply` per `ImageItem`):

* `LocalTeacher` (the default): any checkpoint `zoomiqa score` loads, run through `inference.zoom.run_zoomiqa`,
  the same two-round loop as `zoomiqa score`;
* `EndpointTeacher`: an OpenAI-compatible chat endpoint (`curate.endpoint`), the same prompts and crop code;
* `ReplayTeacher`: replies written earlier (an SFT-format JSONL, e.g. a batch job's output or
  `data.trajectories`' synthetic set), matched by record id, to filter them here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from zoomiqa_jax.curate.endpoint import ChatEndpoint, EndpointError
from zoomiqa_jax.inference.rounds import GenerateFn, ImageItem, SamplingSettings
from zoomiqa_jax.processing.answers import parse_zoomiqa_answer, route_stage1
from zoomiqa_jax.processing.crop import crop_and_zoom, crop_box
from zoomiqa_jax.processing.prompts import (
    DEFAULT_PROMPTS,
    PromptSet,
    zoomiqa_stage1_messages,
    zoomiqa_stage2_messages,
)
from zoomiqa_jax.train.sft_data import SFTDataError, parse_record


@dataclass(frozen=True)
class TeacherReply:
    """The teacher's turns for one image (1, or 2 after a crop) and the question it was asked; `error` says
    why there are no turns (an endpoint failure, an image the processor rejects, an id missing from a replay)."""

    question: str | None
    texts: tuple[str, ...]
    error: str | None = None


class Teacher(Protocol):
    """Writes one `TeacherReply` per item, in order."""

    def write(self, items: Sequence[ImageItem]) -> list[TeacherReply]: ...


@dataclass
class LocalTeacher:
    """A checkpoint served by our engine: `run_zoomiqa` (stage 1, crop, stage 2) with `settings`.
    `generate_fn` replaces the sampler (the engine's test hook)."""

    model: Any
    tokenizer: Any
    settings: SamplingSettings
    prompts: PromptSet = DEFAULT_PROMPTS
    generate_fn: GenerateFn | None = None

    def write(self, items: Sequence[ImageItem]) -> list[TeacherReply]:
        from zoomiqa_jax.inference.zoom import run_zoomiqa

        trajectories = run_zoomiqa(self.model, self.tokenizer, items, self.settings, prompts=self.prompts,
                                   generate_fn=self.generate_fn)
        replies = []
        for traj in trajectories:
            if traj.invalid == "image_error":
                replies.append(TeacherReply(traj.question, (), "; ".join(traj.routing_warnings)))
            else:
                replies.append(TeacherReply(traj.question, tuple(r.output_text for r in traj.rounds)))
        return replies


@dataclass
class EndpointTeacher:
    """An OpenAI-compatible chat endpoint asked the Zoom-IQA prompts; a crop request is cut by our crop code
    and answered in a second request (the stage-2 messages, original then crop)."""

    endpoint: ChatEndpoint
    seed: int = 0
    prompts: PromptSet = DEFAULT_PROMPTS

    def write(self, items: Sequence[ImageItem]) -> list[TeacherReply]:
        from zoomiqa_jax.inference.zoom import question_for

        replies = []
        for item in items:
            question = question_for(item, self.seed, self.prompts)
            try:
                first = self.endpoint.chat(zoomiqa_stage1_messages(question, self.prompts), [item.image])
                route = route_stage1(parse_zoomiqa_answer(first))
                if route.action != "crop":
                    replies.append(TeacherReply(question, (first,)))
                    continue
                width, height = item.image.size
                box = crop_box(parse_zoomiqa_answer(first).bbox, width, height)
                crop = crop_and_zoom(item.image, box)
                second = self.endpoint.chat(zoomiqa_stage2_messages(question, first, self.prompts),
                                            [item.image, crop])
                replies.append(TeacherReply(question, (first, second)))
            except (EndpointError, ValueError) as err:
                replies.append(TeacherReply(question, (), f"teacher endpoint: {err}"))
        return replies


@dataclass
class ReplayTeacher:
    """Replies read from an SFT-format JSONL (`train.sft_data`), matched to items by id (the record's "id",
    else its image file stem; an item's id is its label's image stem)."""

    path: str | Path

    def __post_init__(self) -> None:
        self.by_id: dict[str, dict[str, Any]] = {}
        with Path(self.path).open(encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    key = str(row.get("id") or Path(row["image"]).stem)
                    texts = tuple(turn["text"] for turn in row["turns"])
                except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
                    raise ValueError(f"{self.path}:{number}: expected an SFT trajectory record with 'image' and "
                                     f"'turns' ({err})") from err
                self.by_id[key] = {"question": row.get("question"), "texts": texts}

    def write(self, items: Sequence[ImageItem]) -> list[TeacherReply]:
        out = []
        for item in items:
            key = Path(item.name).stem
            row = self.by_id.get(key)
            if row is None:
                out.append(TeacherReply(None, (), f"teacher file {self.path}: no record with id {key!r}"))
            else:
                out.append(TeacherReply(row["question"], row["texts"]))
        return out


def sft_record(
    reply: TeacherReply, *, record_id: str, image: str | Path, mos: float, out_dir: str | Path,
    meta: dict[str, Any] | None = None,
) -> tuple[dict[str, Any] | None, str | None]:
    """The teacher's reply as an SFT trajectory record (`train.sft_data` format), or (None, why not).

    `image` is written relative to `out_dir` (where the curated JSONL lives; it must exist); a two-turn reply's
    first turn carries its answer's `bbox_2d` as the record's `bbox`. The record is validated by `sft_data.parse_record`
    (format of every turn, box, MOS range, image exists), so what is returned trains without conversion.
    """
    if reply.error is not None:
        return None, reply.error
    if not reply.texts:
        return None, "the teacher wrote no turn"
    turns: list[dict[str, Any]] = [{"text": text} for text in reply.texts]
    if len(turns) == 2:
        bbox = parse_zoomiqa_answer(reply.texts[0]).bbox
        if bbox is not None:
            turns[0]["bbox"] = list(bbox)
    rel = Path(os.path.relpath(Path(image).resolve(), Path(out_dir).resolve())).as_posix()
    record: dict[str, Any] = {"id": record_id, "image": rel, "mos": mos, "turns": turns, "meta": dict(meta or {})}
    if reply.question is not None:
        record["question"] = reply.question
    try:
        parse_record(record, where=record_id, base_dir=out_dir)
    except SFTDataError as err:
        return None, str(err)
    return record, None
