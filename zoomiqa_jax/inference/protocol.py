"""The Zoom-IQA evaluation protocol as one object: prompts, question draw, answer parsing, routing, crop geometry.

Two protocols, picked by name (`--protocol` of `zoomiqa score` / `zoomiqa eval`, `rollout.protocol` of a GRPO
config):

* `official` (the default for Zoom-IQA checkpoints): what the authors' released evaluation does (issue 18;
  GitHub EthanLiang99/Zoom-IQA, commit f4dee23). Answers are read by `processing.official_answers` (their
  regex, json then dirtyjson, `float()` ratings clipped to [1, 5], their error classes), stage 1 is routed by
  `processing.official.route_answer` (a crop unless the box is all zero or the tool is exactly "final"), the
  crop is `processing.official.stage2_crop` (their geometry; the central fallback is not upscaled), and the
  stage-2 labels are theirs ("Original image: ", "Cropped Image: ").
  Images are loaded as their `_load_image` does (no EXIF transpose, the file's own mode), stage 1 goes through
  qwen-vl-utils' `fetch_image` resize before the processor's, and a record without a question gets the one
  their `Random(42)` draw gives (`processing.official_inputs`).
* `strict` (the project's own reading, as before issue 18): `processing.answers` (the first `<answer>` block,
  "{" to "}", strict JSON then our lenient repairs; tool "crop" / "final" only), `processing.crop` (integer
  geometry, every crop upscaled), images EXIF-transposed and RGB, the paraphrase drawn per image with
  `Random(f"{seed}/{index}")`.

Both share the chat layout of `processing.prompts` and the sampler; docs/inference.md tables every point.

The GRPO format reward (`format_problems`) and evaluation (`zoom.run_zoomiqa`, which `zoomiqa eval` runs) read
every reply through the SAME `parse`, so training rewards what evaluation counts as valid.
"""

from __future__ import annotations

import dataclasses
import io
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from PIL import Image

from zoomiqa_jax.processing import answers, crop, official, official_answers, official_inputs
from zoomiqa_jax.processing.image import ImageLoadError, load_image
from zoomiqa_jax.processing.prompts import (
    DEFAULT_PROMPTS,
    Message,
    PromptSet,
    choose_question,
    load_prompt_file,
    zoomiqa_stage1_messages,
    zoomiqa_stage2_messages,
)

ProtocolName = Literal["official", "strict"]
PROTOCOLS: tuple[ProtocolName, ...] = ("official", "strict")
DEFAULT_PROTOCOL: ProtocolName = "official"


@dataclass(frozen=True)
class Stage1Decision:
    """What follows stage 1: `action` "crop" (cut `box`), "final" (keep `rating`) or "invalid" (`error`)."""

    action: Literal["crop", "final", "invalid"]
    rating: float | None
    warning: str | None = None
    box: object = None
    error: str | None = None


@dataclass(frozen=True)
class Stage2Result:
    """The final rating of a two-round answer, or the class that made it invalid, and routing warnings."""

    rating: float | None
    error: str | None
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class CropCut:
    """The crop given to stage 2: the image, the box cut (pixels, and normalized by the image size), the
    geometry adjustments made, and whether it is the official central fallback."""

    image: Image.Image
    pixel: tuple[int, int, int, int]
    normalized: tuple[float, float, float, float]
    adjustments: tuple[str, ...]
    fallback: bool = False


@dataclass(frozen=True)
class Protocol:
    """One evaluation protocol (module docstring). Build it with `make_protocol`."""

    name: ProtocolName
    prompts: PromptSet = DEFAULT_PROMPTS

    # ---- prompts and questions
    def question_for(self, index: int, seed: int, record_question: str | None = None) -> str:
        """The question of the image at position `index` of a run: its own, else a drawn paraphrase.

        strict: `Random(f"{seed}/{index}").choice` of the paraphrases (batch independent). official: the
        `index`-th draw of the authors' `Random(42)` over the pool (`seed` unused), which is their draw for the
        `index`-th record of an annotation file whose records have no question of their own; `draw_questions`
        gives the draw of a file whose records may have one. (GRPO rollouts draw their questions the project's
        way under both protocols: `train.grpo_loop`.)
        """
        if self.name == "official":  # their own question is sent as it is, even when blank (a bare "<|image|>")
            if record_question is not None:
                return record_question
            return _official_draws(self.prompts.zoomiqa_questions, index + 1)[index]
        return choose_question(random.Random(f"{seed}/{index}"), record_question, self.prompts)

    def draw_questions(self, own: Sequence[str | None]) -> list[tuple[str, str]]:
        """official: (stage-1 question, stage-2 history turn) of every record of ONE annotation file in order,
        from their own questions (None: none) as the authors draw them (`official_inputs.draw_questions`: one
        `Random(42)` draw per record without one). A question given here is already the record's own text, so
        both entries are it. strict has no file-level draw: ValueError."""
        if self.name != "official":
            raise ValueError("draw_questions: only the official protocol draws per annotation file")
        records = [{} if q is None else {"conversations": [{"value": q}]} for q in own]
        return [(q.stage1, q.history) for q in
                official_inputs.draw_questions(records, self.prompts.zoomiqa_questions)]

    def stage1_messages(self, question: str) -> list[Message]:
        """Stage 1: the question inside the stage-1 instructions, then the image."""
        return zoomiqa_stage1_messages(question, self.prompts)

    def stage2_messages(self, question: str, stage1_output: str) -> list[Message]:
        """Stage 2: the question, the stage-1 reply, the stage-2 text verbatim, the two labelled images."""
        return zoomiqa_stage2_messages(question, stage1_output, self.prompts)

    # ---- answers
    def parse(self, text: object) -> Any:
        """One reply read by this protocol's parser: `answers.ZoomAnswer` (strict) or
        `official_answers.OfficialAnswer` (official). Both have `rating` (clipped to [1, 5], None when
        unusable), `raw_rating`, `bbox`, `tool`, `error`, `errors`, `lenient`, `requests_crop`. Never raises."""
        if self.name == "official":
            return official_answers.parse_official_answer(text)
        return answers.parse_zoomiqa_answer(text)

    def route_stage1(self, answer: Any) -> Stage1Decision:
        """Whether stage 1 crops (and which box), keeps its rating, or is invalid."""
        if self.name == "official":
            routing = answer.routing
            if routing.rounds == 2:
                return Stage1Decision("crop", answer.rating, routing.warning, routing.bbox)
            if answer.rating is None:
                return Stage1Decision("invalid", None, routing.warning, error=answer.error)
            return Stage1Decision("final", answer.rating, routing.warning)
        route = answers.route_stage1(answer)
        box = answer.bbox if route.action == "crop" else None
        error = (answer.error or "invalid_rating") if route.action == "invalid" else None
        return Stage1Decision(route.action, route.rating, route.warning, box, error)

    def stage2_result(self, answer: Any) -> Stage2Result:
        """The stage-2 rating is final. strict records the stage-2 answer's other problems as warnings; the
        authors' evaluation reads only the rating of stage 2 (evaluate.py:360) and records none."""
        if answer.rating is None:
            return Stage2Result(None, answer.error or "invalid_rating")
        if self.name == "official":
            return Stage2Result(answer.rating, None)
        warnings = (["stage2_requested_crop"] if answer.tool == "crop" else []) + [
            f"stage2_{e}" for e in answer.errors]
        return Stage2Result(answer.rating, None, tuple(warnings))

    def requested_box(self, round_answer: dict[str, Any] | None) -> object:
        """The box a stored stage-1 answer (`Round.answer`, the parsed answer as a dict) asked to crop, as this
        protocol's `cut` takes it: strict's four numbers, official's raw `bbox_2d` value."""
        if not round_answer:
            return None
        if self.name == "official":
            return (round_answer.get("payload") or {}).get("bbox_2d")
        return round_answer.get("bbox")

    # ---- images
    def load_image(self, source: str | os.PathLike[str] | bytes) -> Image.Image:
        """An image file (a path, or its encoded bytes as a tfds record holds them) as this protocol loads it:
        official as `official_inputs.load_official_image` (no EXIF transpose, the file's own mode), strict
        `processing.image.load_image` (EXIF-transposed, RGB). Raises ImageLoadError naming the file."""
        if isinstance(source, (bytes, bytearray, memoryview)):
            try:
                with Image.open(io.BytesIO(bytes(source))) as opened:
                    return opened.copy() if self.name == "official" else load_image(opened)
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
                raise ImageLoadError(f"cannot decode image bytes: {type(err).__name__}: {err}") from err
        if self.name == "official":
            return official_inputs.load_official_image(source)
        return load_image(source)

    def stage1_images(self, image: Image.Image) -> list[Image.Image]:
        """The stage-1 image as given to the processor: official `official_inputs.official_stage1_image`
        (qwen-vl-utils' RGB conversion and resize; the processor then resizes again), strict the image itself.
        Raises ValueError for an aspect ratio over 200 (official)."""
        if self.name == "official":
            return [official_inputs.official_stage1_image(image)]
        return [image]

    def stage2_images(self, image: Image.Image, box: object) -> tuple[list[Image.Image], CropCut]:
        """The two stage-2 images (original, crop) as given to the processor, and the crop: official
        `official_inputs.official_stage2_images` (cut and upscaled in the file's own mode), strict `cut`."""
        if self.name == "official":
            original, region, placed = official_inputs.official_stage2_images(image, box)
            return [original, region], _official_cut(region, placed, *image.size)
        cut = self.cut(image, box)
        return [image, cut.image], cut

    # ---- crops
    def cut(self, image: Image.Image, box: object) -> CropCut:
        """The crop of `box` from the ORIGINAL image (its file pixel size) that stage 2 sees."""
        width, height = image.size
        if self.name == "official":
            return _official_cut(*official.stage2_crop(image, box), width, height)
        placed = crop.crop_box(box, width, height)
        return CropCut(crop.crop_and_zoom(image, placed), placed.pixel, placed.normalized, placed.adjustments)

    # ---- the GRPO format reward
    def format_problems(self, rounds: Sequence[str], *, max_rounds: int = answers.MAX_ROUNDS) -> tuple[str, ...]:
        """Why a trajectory's texts fail the Zoom-IQA format reward (Eq. 3); empty when it earns it.

        strict: `answers.zoomiqa_format_problems` (its strict-JSON, in-range and box rules). official: the same
        layout (each round `<think>` with its four sections, then one `<answer>`), and each answer as the
        authors' evaluation reads it with `parse`: a usable rating in every round, every round but the last
        routed to a crop, the last one not (a one-round trajectory is final; a stage-2 answer counts only for its
        rating, as in their evaluation). So an official R_format of 1 implies `zoomiqa eval` counts it valid.
        """
        if self.name == "strict":
            return answers.zoomiqa_format_problems(rounds, max_rounds=max_rounds)
        if isinstance(rounds, str) or not isinstance(rounds, Sequence):
            return ("rounds must be a sequence of round texts",)
        if not 1 <= len(rounds) <= max_rounds:
            return (f"expected 1 to {max_rounds} rounds, found {len(rounds)}",)
        problems: list[str] = []
        for index, text in enumerate(rounds):
            where = f"round {index + 1}"
            sections = answers.STAGE1_SECTIONS if index == 0 else answers.STAGE2_SECTIONS
            layout = answers.round_layout_problem(text, sections)
            if layout:
                problems.append(f"{where}: {layout}")
                continue
            answer = self.parse(text)
            if not self.answer_valid(answer):
                problems.append(f"{where}: no usable rating ({answer.error})")
            elif index == 0 and answer.requests_crop != (len(rounds) > 1):
                problems.append(f"{where}: routed to {answer.routing.rounds} round(s), the trajectory has "
                                f"{len(rounds)}")
        return tuple(problems)

    def answer_valid(self, answer: Any) -> bool:
        """Whether a parsed reply (`parse`) has a usable rating: the validity `zoomiqa eval` counts for the round
        that decides, and the answer half of the official format reward."""
        return answer.rating is not None

    def format_ok(self, rounds: Sequence[str]) -> bool:
        """R_format = 1.0 when `format_problems` finds nothing, else 0 (Zoom-IQA Eq. 3)."""
        return not self.format_problems(rounds)


def _official_cut(region: Image.Image, placed: official.OfficialCrop, width: int, height: int) -> CropCut:
    x1, y1, x2, y2 = placed.pixel
    return CropCut(region, placed.pixel, (x1 / width, y1 / height, x2 / width, y2 / height), placed.reasons,
                   placed.fallback)


_DRAWS: dict[tuple[str, ...], list[str]] = {}


def _official_draws(pool: Sequence[str], n: int) -> list[str]:
    """The first `n` draws of `Random(OFFICIAL_SEED).choice(pool)` (cached per pool, extended on demand)."""
    key = tuple(pool)
    draws = _DRAWS.get(key)
    if draws is None or len(draws) < n:
        records: list[dict[str, Any]] = [{}] * max(n, 2 * len(draws or ()))
        draws = [q.stage1 for q in official_inputs.draw_questions(records, key)]
        _DRAWS[key] = draws
    return draws


def official_prompts(base: PromptSet = DEFAULT_PROMPTS) -> PromptSet:
    """`base` with the authors' stage-2 labels (protocol.py:223, :225); a prompt file may still override them."""
    return dataclasses.replace(base, zoomiqa_original_label=official.OFFICIAL_ORIGINAL_LABEL,
                               zoomiqa_crop_label=official.OFFICIAL_CROP_LABEL)


def make_protocol(name: str = DEFAULT_PROTOCOL, prompt_file: str | os.PathLike[str] | None = None,
                  prompts: PromptSet | None = None) -> Protocol:
    """The protocol `name` ("official" or "strict"), with prompts from `prompt_file` (over the protocol's own
    defaults: official sets the authors' stage-2 labels) or `prompts` as given. Raises ValueError naming the
    known protocols; `load_prompt_file`'s PromptFileError for a bad file."""
    if name not in PROTOCOLS:
        raise ValueError(f"protocol: expected one of {list(PROTOCOLS)}, found {name!r}")
    if prompts is None:
        base = official_prompts() if name == "official" else DEFAULT_PROMPTS
        prompts = load_prompt_file(prompt_file, base) if prompt_file else base
    return Protocol(name, prompts)  # type: ignore[arg-type]
