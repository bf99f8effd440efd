"""Prompt texts and chat messages for Zoom-IQA, Q-Insight and VisualQuality-R1 (issue 3, Zoom-IQA inference).

Zoom-IQA (arXiv:2601.02918 Sec. 3, supplement Tables 4-5): the texts below are OUR wording, written to the published
structure (four labelled `<think>` sections; an `<answer>` JSON with a normalized `bbox_2d`, a two-decimal
`rating` and `tool` "crop" | "final"). Q-Insight (arXiv:2503.22679 Table 1, completed from its released training
code) and VisualQuality-R1 (its README) are quoted exactly, since their checkpoints were trained on them.

Messages use the Hugging Face chat-template format: `[{"role": ..., "content": [{"type": "text", "text": ...},
{"type": "image"}]}]`. Image entries carry no payload; the caller passes the images in the order they appear.

Prompt file (`--prompt-file`)
-----------------------------
A YAML (`.yaml`, `.yml`) or JSON (`.json`) file whose top level maps prompt names (the fields of `PromptSet`)
to texts; names left out keep our defaults. Texts are used literally (no brace escaping), except for these
placeholders, which must each appear exactly once:

* `zoomiqa_stage1`: `{question}`, replaced by the question;
* `qinsight_compare`: `<ref_image>`, `<image_A>`, `<image_B>`, in that order, replaced by the three images;
* `qinsight_compare_noref`: `<image_A>`, `<image_B>`, in that order.

`zoomiqa_stage2` is sent verbatim. `zoomiqa_questions` is a non-empty list of strings; every other name is a
non-empty string. Use YAML block scalars for long texts (`|` keeps the final newline, `|-` drops it):

    zoomiqa_stage1: |-
      {question}
      You are an image quality expert. ...
    zoomiqa_crop_label: "Cropped Image: "
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

Message = dict[str, Any]

ZOOMIQA_QUESTIONS = (
    "How would you judge the quality of this image?",
    "How would you rate the quality of this image?",
    "What do you think of the quality of this picture?",
    "Can you assess the quality of this photo?",
    "How good is the quality of this image?",
)

ZOOMIQA_STAGE1 = """{question}

You are an image quality expert. Judge the technical quality of the image on a scale from 1.00 (very \
poor) to 5.00 (excellent), and decide whether one region needs a closer look before you settle on a \
rating.

Reply with your reasoning in <think></think> followed by your decision in <answer></answer>, and nothing \
else.

Inside <think>, write exactly four labelled paragraphs, in this order:
1) Image Quality Summary: a short verdict on the technical flaws you see (sharpness, noise, exposure, \
colour, compression, resolution).
2) Directions for Improvement: how an ideal version of this image would look, in positive words only, \
tied to two or three named regions of the image.
3) Issues to Avoid: the technical problems the image has now, in negative words, each tied to a named \
region.
4) Decision & Rationale: your initial rating, whether you need a crop, and why. If you crop, say what the \
region should settle; if not, say why the full view is enough.
Write compact paragraphs, not bullet lists. Name regions by their content ("the sign above the door") or \
by their position ("the upper-left sky").

Inside <answer>, write one JSON object:
{"bbox_2d": [x1, y1, x2, y2], "rating": 3.25, "tool": "crop"}
- "rating": a number from 1.00 to 5.00 with two decimals.
- "tool": "crop" to look at one region more closely, or "final" to conclude now.
- "bbox_2d": the region to crop, given by its top-left corner (x1, y1) and bottom-right corner (x2, y2) \
in coordinates where the image width and height are both 1.0. Use [0, 0, 0, 0] with "final".
Choose "crop" when a detail you cannot resolve at this size (fine texture, text, faces, edges) could \
change your rating; choose "final" when the quality is clear from the full view."""

ZOOMIQA_STAGE2 = """You asked for a closer look. The original image and the zoomed crop of the region you \
chose follow. Using your earlier assessment and this new evidence, give your final quality rating.

Reply with your reasoning in <think></think> followed by your decision in <answer></answer>, and nothing \
else.

Inside <think>, write exactly four labelled paragraphs, in this order:
1) Crop Inspection Summary: what the crop confirmed or revealed about the flaws that were uncertain in \
the full view.
2) Directions for Improvement: how an ideal version would look, in positive words only, tied to specific \
details visible in the crop.
3) Issues to Avoid: the technical problems the crop confirms or newly shows, in negative words, each tied \
to a specific detail.
4) Final Decision & Rationale: restate your initial rating and why you cropped, say what the crop showed, \
and explain whether that raises, lowers or confirms the rating. Move the rating in proportion to the \
evidence: when the crop shows something clear, make a decisive change, not a token one of a few \
hundredths.
Write compact paragraphs, not bullet lists.

Inside <answer>, write one JSON object; the assessment is now final:
{"bbox_2d": [0, 0, 0, 0], "rating": 3.25, "tool": "final"}
- "rating": your final rating from 1.00 to 5.00 with two decimals, consistent with your rationale.
"""

QINSIGHT_SYSTEM = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind and then provides the user with "
    "the answer. The reasoning process and answer are enclosed within <think> </think> and <answer> "
    "</answer> tags, respectively, i.e., <think> reasoning process here </think><answer> answer here "
    "</answer>"
)
QINSIGHT_SCORE = (
    "What is your overall rating on the quality of this picture? The rating should be a float between 1 "
    "and 5, rounded to two decimal places, with 1 representing very poor quality and 5 representing "
    'excellent quality. Return the final answer in JSON format with the following keys: "rating": The '
    "score."
)
QINSIGHT_DEGRADATION = (
    'Analyze the given image and determine if it contains any of the following distortions: "noise", '
    '"compression", "blur", or "darken". If a distortion is present, classify its severity as "slight", '
    '"moderate", "obvious", "serious", or "catastrophic". Return the result in JSON format with the '
    'following keys: "distortion_class": The detected distortion (or "null" if none). and "severity": '
    'The severity level (or "null" if none).'
)
QINSIGHT_COMPARE = (
    "Given reference low-quality image: <ref_image>, Image A: <image_A> and Image B: <image_B>. Image A "
    "and Image B are results from two resolution methods. Explain and justify whether Image A or Image B "
    "is better. You should think from the following aspects: (1) Content fidelity and consistency with "
    'the reference image and (2) overall quality. Your answer should be "Image A" or "Image B".'
)
# Ours: Q-Insight publishes only the reference-based wording; this drops the reference and its aspect.
QINSIGHT_COMPARE_NOREF = (
    "Given Image A: <image_A> and Image B: <image_B>. Explain and justify whether Image A or Image B has "
    "the better overall quality, considering sharpness, noise, artifacts, exposure and colour. Your "
    'answer should be "Image A" or "Image B".'
)
VISUALQUALITY_R1_SCORE = (
    "You are doing the image quality assessment task. Here is the question: What is your overall rating "
    "on the quality of this picture? The rating should be a float between 1 and 5, rounded to two "
    "decimal places, with 1 representing very poor quality and 5 representing excellent quality. First "
    "output the thinking process in <think> </think> tags and then output the final answer with only one "
    "score in <answer> </answer> tags."
)

_PLACEHOLDERS = {
    "zoomiqa_stage1": ("{question}",),
    "qinsight_compare": ("<ref_image>", "<image_A>", "<image_B>"),
    "qinsight_compare_noref": ("<image_A>", "<image_B>"),
}


@dataclass(frozen=True)
class PromptSet:
    """Every prompt text by name; `load_prompt_file` overrides any of them."""

    zoomiqa_stage1: str = ZOOMIQA_STAGE1
    zoomiqa_stage2: str = ZOOMIQA_STAGE2
    zoomiqa_questions: tuple[str, ...] = ZOOMIQA_QUESTIONS
    zoomiqa_original_label: str = "Original image: "
    zoomiqa_crop_label: str = "Cropped image: "
    qinsight_system: str = QINSIGHT_SYSTEM
    qinsight_score: str = QINSIGHT_SCORE
    qinsight_degradation: str = QINSIGHT_DEGRADATION
    qinsight_compare: str = QINSIGHT_COMPARE
    qinsight_compare_noref: str = QINSIGHT_COMPARE_NOREF
    visualquality_r1_score: str = VISUALQUALITY_R1_SCORE


DEFAULT_PROMPTS = PromptSet()


class PromptFileError(ValueError):
    """A prompt file that cannot be read or does not follow the documented format."""


def prompt_problem(name: str, value: object) -> str | None:
    """Why `value` cannot be the prompt `name` (expected type, placeholders), or None when it can."""
    if name == "zoomiqa_questions":
        if not isinstance(value, (list, tuple)) or not value:
            return f"expected a non-empty list of strings, found {type(value).__name__}"
        bad = [q for q in value if not isinstance(q, str) or not q.strip()]
        return f"expected non-empty strings, found {bad[0]!r}" if bad else None
    if not isinstance(value, str) or not value:
        return f"expected a non-empty string, found {type(value).__name__} {value!r:.40}"
    marks = _PLACEHOLDERS.get(name, ())
    for mark in marks:
        if value.count(mark) != 1:
            return f"expected the placeholder {mark} exactly once, found {value.count(mark)}"
    if [value.index(m) for m in marks] != sorted(value.index(m) for m in marks):
        return f"expected the placeholders in the order {', '.join(marks)}"
    return None


def load_prompt_file(path: str | os.PathLike[str], base: PromptSet = DEFAULT_PROMPTS) -> PromptSet:
    """`base` with the prompts named in a YAML/JSON prompt file replaced (format in the module docstring).

    Raises PromptFileError naming the file, and the key where one is at fault.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".yaml", ".yml", ".json"):
        raise PromptFileError(f"prompt file {path}: expected a .yaml, .yml or .json file, found '{suffix}'")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise PromptFileError(f"prompt file {path}: cannot read it: {err}") from err
    try:
        data = json.loads(text) if suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise PromptFileError(f"prompt file {path}: not valid {suffix[1:].upper()}: {err}") from err
    if not isinstance(data, dict):
        raise PromptFileError(
            f"prompt file {path}: expected a mapping of prompt name to text at the top level, "
            f"found {type(data).__name__}"
        )
    known = [field.name for field in dataclasses.fields(PromptSet)]
    overrides: dict[str, Any] = {}
    for key, value in data.items():
        if key not in known:
            raise PromptFileError(f"prompt file {path}: unknown prompt name {key!r}; known names: {known}")
        problem = prompt_problem(key, value)
        if problem:
            raise PromptFileError(f"prompt file {path}, key {key!r}: {problem}")
        overrides[key] = tuple(value) if key == "zoomiqa_questions" else value
    return dataclasses.replace(base, **overrides)


def choose_question(
    seed: int | random.Random, record_question: str | None = None, prompts: PromptSet = DEFAULT_PROMPTS
) -> str:
    """The record's own question if it has one, else one of `prompts.zoomiqa_questions` drawn with `seed`.

    An int seed draws `random.Random(seed).choice(...)`; a Random is advanced by one draw (one per image).
    """
    if record_question is not None:
        if not record_question.strip():
            raise ValueError(f"choose_question: expected a non-blank question, found {record_question!r}")
        return record_question
    rng = seed if isinstance(seed, random.Random) else random.Random(seed)
    return rng.choice(prompts.zoomiqa_questions)


def zoomiqa_stage1_messages(question: str, prompts: PromptSet = DEFAULT_PROMPTS) -> list[Message]:
    """Stage 1: one user turn, the question inside the stage-1 instructions, then the image (issue 3)."""
    text = prompts.zoomiqa_stage1.replace("{question}", question)
    return [{"role": "user", "content": [_text(text), {"type": "image"}]}]


def zoomiqa_stage2_messages(
    question: str, stage1_output: str, prompts: PromptSet = DEFAULT_PROMPTS
) -> list[Message]:
    """Stage 2 (issue 3): the question WITHOUT the image, the full stage-1 output as the assistant turn, then
    the stage-2 instructions, "Original image: " + image, "Cropped image: " + crop. Images: original, crop."""
    return [
        {"role": "user", "content": [_text(question)]},
        {"role": "assistant", "content": [_text(stage1_output)]},
        {
            "role": "user",
            "content": [
                _text(prompts.zoomiqa_stage2),
                _text(prompts.zoomiqa_original_label),
                {"type": "image"},
                _text(prompts.zoomiqa_crop_label),
                {"type": "image"},
            ],
        },
    ]


def qinsight_score_messages(prompts: PromptSet = DEFAULT_PROMPTS) -> list[Message]:
    """Q-Insight score regression: the shared system prompt, then the image and the task prompt (Table 1)."""
    return _qinsight([{"type": "image"}, _text(prompts.qinsight_score)], prompts)


def qinsight_degradation_messages(prompts: PromptSet = DEFAULT_PROMPTS) -> list[Message]:
    """Q-Insight degradation perception: system prompt, then the image and the task prompt (Table 1)."""
    return _qinsight([{"type": "image"}, _text(prompts.qinsight_degradation)], prompts)


def qinsight_compare_messages(with_reference: bool, prompts: PromptSet = DEFAULT_PROMPTS) -> list[Message]:
    """Q-Insight A/B comparison (Table 1): each image placeholder becomes an image entry, in place.

    Images in order: reference (when `with_reference`), A, B.
    """
    name = "qinsight_compare" if with_reference else "qinsight_compare_noref"
    text = getattr(prompts, name)
    content: list[Message] = []
    for mark in _PLACEHOLDERS[name]:
        before, text = text.split(mark, 1)
        if before:
            content.append(_text(before))
        content.append({"type": "image"})
    if text:
        content.append(_text(text))
    return _qinsight(content, prompts)


def visualquality_r1_messages(prompts: PromptSet = DEFAULT_PROMPTS) -> list[Message]:
    """VisualQuality-R1 scoring: one user turn, the image then the prompt; no system prompt (its README)."""
    return [{"role": "user", "content": [{"type": "image"}, _text(prompts.visualquality_r1_score)]}]


def _qinsight(content: list[Message], prompts: PromptSet) -> list[Message]:
    return [
        {"role": "system", "content": [_text(prompts.qinsight_system)]},
        {"role": "user", "content": content},
    ]


def _text(text: str) -> Message:
    return {"type": "text", "text": text}
