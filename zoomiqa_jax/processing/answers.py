"""Parsers for the answers of Zoom-IQA, Q-Insight and VisualQuality-R1 (issue 3, "Zoom-IQA inference").

Every public function here takes any string (or any object) and never raises: a bad answer is a value with an
error class, counted and reported by the caller, never a crash and never a made-up score (DESIGN.md).

Zoom-IQA error classes, checked in this order (the first is `ZoomAnswer.error`):

* `missing_answer`: no complete `<answer>...</answer>` block;
* `malformed_json`: the block holds no JSON object, even after the lenient fallback;
* `invalid_rating`: `rating` missing, not a number or numeric string, or not finite;
* `invalid_bbox`: `bbox_2d` missing or not four finite numbers;
* `invalid_tool`: `tool` missing or not "crop" / "final" (case and surrounding spaces ignored).
"""

from __future__ import annotations

import ast
import json
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from zoomiqa_jax.processing.crop import coerce_box, coerce_number

ErrorKind = Literal["missing_answer", "malformed_json", "invalid_rating", "invalid_bbox", "invalid_tool"]
ERROR_KINDS: tuple[ErrorKind, ...] = (
    "missing_answer", "malformed_json", "invalid_rating", "invalid_bbox", "invalid_tool",
)
RATING_RANGE = (1.0, 5.0)
MAX_ROUNDS = 2
STAGE1_SECTIONS = (
    "Image Quality Summary", "Directions for Improvement", "Issues to Avoid", "Decision & Rationale",
)
STAGE2_SECTIONS = (
    "Crop Inspection Summary", "Directions for Improvement", "Issues to Avoid", "Final Decision & Rationale",
)
_ALL_LABELS = sorted(set(STAGE1_SECTIONS + STAGE2_SECTIONS), key=len, reverse=True)
# A label starts a line (after optional bullet, number, bold), may carry a "(...)" qualifier, ends with ":".
_LABEL = re.compile(
    r"^[ \t]*(?:[-*#>]+[ \t]*)?(?:\d+[.)][ \t]*)?(?:\*\*)?[ \t]*("
    + "|".join(
        r"[ \t]+".join("(?:&|and)" if word == "&" else re.escape(word) for word in label.split())
        for label in _ALL_LABELS
    )
    + r")[ \t]*(?:\([^)\n]*\))?[ \t]*(?:\*\*)?[ \t]*:(?:\*\*)?",
    re.IGNORECASE | re.MULTILINE,
)


@dataclass(frozen=True)
class ZoomAnswer:
    """One parsed Zoom-IQA round. A field that failed validation is None and its class is in `errors`.

    `rating` is clipped to [1, 5]; `raw_rating` is the number as written. `lenient` is True when only the
    lenient JSON fallback could read the object.
    """

    rating: float | None = None
    raw_rating: float | None = None
    bbox: tuple[float, float, float, float] | None = None
    tool: Literal["crop", "final"] | None = None
    errors: tuple[ErrorKind, ...] = ()
    lenient: bool = False

    @property
    def error(self) -> ErrorKind | None:
        """The first error class, or None when the answer is fully valid."""
        return self.errors[0] if self.errors else None

    @property
    def requests_crop(self) -> bool:
        """True when a crop may run: JSON parsed, tool is "crop", the box is four numbers, not all zero."""
        return self.tool == "crop" and self.bbox is not None and any(v != 0 for v in self.bbox)


@dataclass(frozen=True)
class Stage1Route:
    """What to do after stage 1: `action` "crop", "final" (keep `rating`) or "invalid" (count and exclude)."""

    action: Literal["crop", "final", "invalid"]
    rating: float | None
    warning: str | None = None


@dataclass(frozen=True)
class RestorationPrompts:
    """The "Directions for Improvement" (positive) and "Issues to Avoid" (negative) paragraphs (Sec. 8)."""

    positive: str | None
    negative: str | None


def answer_block(text: object, *, last: bool = False) -> str | None:
    """The text inside the first (or last) complete `<answer>...</answer>` block, or None."""
    if not isinstance(text, str):
        return None
    blocks = []
    start = text.find("<answer>")
    while start >= 0:
        end = text.find("</answer>", start + 8)
        if end < 0:
            break
        blocks.append(text[start + 8 : end])
        if not last:
            break
        start = text.find("<answer>", end + 9)
    return (blocks[-1] if last else blocks[0]) if blocks else None


def parse_zoomiqa_answer(text: object) -> ZoomAnswer:
    """Parse the JSON object in the first `<answer>` block: {"bbox_2d": [4 numbers], "rating": r, "tool": t}.

    The object spans the first "{" to the last "}" of the block; strict JSON is tried first, then a lenient
    reading (single quotes, trailing commas, unquoted keys, Python literals, curly quotes). The rating may be
    a number or a numeric string; it must be finite and is clipped to [1, 5] (issue 3).
    """
    block = answer_block(text)
    if block is None:
        return ZoomAnswer(errors=("missing_answer",))
    obj, lenient = _load_object(block)
    if obj is None:
        return ZoomAnswer(errors=("malformed_json",))
    errors: list[ErrorKind] = []
    raw = coerce_number(obj.get("rating"))
    if raw is None:
        errors.append("invalid_rating")
    bbox = coerce_box(obj.get("bbox_2d"))
    if bbox is None:
        errors.append("invalid_bbox")
    tool = obj.get("tool")
    tool = tool.strip().lower() if isinstance(tool, str) else None
    if tool not in ("crop", "final"):
        tool = None
        errors.append("invalid_tool")
    rating = None if raw is None else min(max(raw, RATING_RANGE[0]), RATING_RANGE[1])
    return ZoomAnswer(rating, raw, bbox, tool, tuple(errors), lenient)


def route_stage1(answer: ZoomAnswer) -> Stage1Route:
    """Decide the second turn (issue 3).

    * crop: the answer requests a crop (tool "crop", four numbers, not all zero); the final rating comes from
      stage 2 whatever the stage-1 rating was;
    * final: a usable rating and tool "final", or a usable rating with no usable bbox/tool, in which case the
      stage-1 rating is kept and `warning` names the problem (the error class, or "crop_with_zero_box");
    * invalid: no usable rating and no crop; the image is counted and excluded, never given a random score.
    """
    if answer.requests_crop:
        return Stage1Route("crop", answer.rating)
    if answer.rating is None:
        return Stage1Route("invalid", None)
    if answer.tool == "crop":
        warning = "invalid_bbox" if answer.bbox is None else "crop_with_zero_box"
        return Stage1Route("final", answer.rating, warning)
    if answer.tool is None:
        return Stage1Route("final", answer.rating, "invalid_tool")
    return Stage1Route("final", answer.rating, "invalid_bbox" if answer.bbox is None else None)


def think_block(text: object) -> str | None:
    """The reasoning: between `<think>` and `</think>`, before a lone `</think>`, else before `<answer>`."""
    if not isinstance(text, str):
        return None
    start, end = text.find("<think>"), text.find("</think>")
    if start >= 0 and end > start:
        return text[start + 7 : end]
    if end >= 0:
        return text[:end]
    cut = text.find("<answer>")
    return text if cut < 0 else text[:cut]


def think_sections(text: object) -> list[tuple[str, str]]:
    """(label, body) for each labelled paragraph of the reasoning, in order; labels in canonical spelling."""
    think = think_block(text)
    if think is None:
        return []
    matches = list(_LABEL.finditer(think))
    canonical = {label.lower(): label for label in _ALL_LABELS}
    sections = []
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(think)
        key = " ".join("&" if word == "and" else word for word in match.group(1).lower().split())
        sections.append((canonical[key], think[match.end() : end].strip()))
    return sections


def extract_restoration_prompts(text: object) -> RestorationPrompts:
    """The "Directions for Improvement" and "Issues to Avoid" paragraphs of one round (Zoom-IQA Sec. 8)."""
    found = dict(reversed(think_sections(text)))
    return RestorationPrompts(
        found.get("Directions for Improvement") or None, found.get("Issues to Avoid") or None
    )


def zoomiqa_format_problems(rounds: Sequence[str], *, max_rounds: int = MAX_ROUNDS) -> tuple[str, ...]:
    """Why a trajectory fails the Zoom-IQA format reward (Eq. 3); empty when it passes.

    Each round is `<think>...</think>` then `<answer>...</answer>` with nothing else around them. Round 1's
    reasoning has the four stage-1 sections, later rounds the four stage-2 sections, each exactly once, in
    order, non-empty, with no text before the first. Each answer is STRICT JSON (the lenient fallback is for
    inference, not for the reward) with no error class and a rating already inside [1, 5]. Every round but
    the last is a crop with a box normalized to [0, 1] and x1 < x2, y1 < y2; the last is "final" with
    [0, 0, 0, 0].
    """
    if isinstance(rounds, str) or not isinstance(rounds, Sequence):
        return ("rounds must be a sequence of round texts",)
    if not 1 <= len(rounds) <= max_rounds:
        return (f"expected 1 to {max_rounds} rounds, found {len(rounds)}",)
    problems: list[str] = []
    for index, text in enumerate(rounds):
        where = f"round {index + 1}"
        frame = _frame_problem(text)
        if frame:
            problems.append(f"{where}: {frame}")
            continue
        sections = _sections_problem(text, STAGE1_SECTIONS if index == 0 else STAGE2_SECTIONS)
        if sections:
            problems.append(f"{where}: {sections}")
        answer = parse_zoomiqa_answer(text)
        last = index == len(rounds) - 1
        if answer.errors or answer.lenient:
            problems.append(f"{where}: answer errors {list(answer.errors)}, lenient JSON: {answer.lenient}")
        elif answer.raw_rating != answer.rating:
            problems.append(f"{where}: rating {answer.raw_rating} outside [1, 5]")
        elif last and (answer.tool != "final" or any(v != 0 for v in answer.bbox)):
            problems.append(f"{where}: the last round must be tool 'final' with bbox [0, 0, 0, 0]")
        elif not last and not _is_normalized_box(answer.bbox, answer.tool):
            problems.append(f"{where}: a round before the last must crop a normalized box x1<x2, y1<y2")
    return tuple(problems)


def round_layout_problem(text: object, sections: Sequence[str]) -> str | None:
    """Why one round is not `<think>` (`sections` labelled, non-empty, in order, no text before the first)
    then one `<answer>...</answer>`, with nothing around them; None when it is. The layout half of
    `zoomiqa_format_problems`, shared by every protocol's format reward (`inference.protocol`)."""
    return _frame_problem(text) or _sections_problem(text, sections)


_FRAME = re.compile(r"<think>(.*)</think>\s*<answer>(.*)</answer>", re.DOTALL)


def _frame_problem(text: object) -> str | None:
    if not isinstance(text, str):
        return "not a string"
    stripped = text.strip()
    if _FRAME.fullmatch(stripped) is None or any(
        stripped.count(tag) != 1 for tag in ("<think>", "</think>", "<answer>", "</answer>")
    ):
        return "expected exactly <think>...</think><answer>...</answer>"
    return None


def _sections_problem(text: str, expected: Sequence[str]) -> str | None:
    """For a text `_frame_problem` accepts: the section labels and bodies, then nothing before the first."""
    sections = think_sections(text)
    if tuple(label for label, _ in sections) != tuple(expected) or not all(body for _, body in sections):
        return f"expected non-empty sections {list(expected)}"
    think = _FRAME.fullmatch(text.strip()).group(1)  # type: ignore[union-attr]
    if think[: _LABEL.search(think).start()].strip():  # type: ignore[union-attr]
        return "text before the first section label"
    return None


def check_zoomiqa_format(rounds: Sequence[str], *, max_rounds: int = MAX_ROUNDS) -> bool:
    """True when `zoomiqa_format_problems` finds nothing: R_format = 1.0, else 0 (Zoom-IQA Eq. 3)."""
    return not zoomiqa_format_problems(rounds, max_rounds=max_rounds)


# ---- Q-Insight (arXiv:2503.22679 Sec. 3.3 and its released training code) and VisualQuality-R1 (its README) ----
# The Q-Insight readers below are the ONLY ones in the project: the GRPO rewards (train/rewards_qinsight.py)
# call them with their defaults, which are the semantics of Q-Insight's released training code (issue 6).

# The whole response (fullmatch, "." spans newlines), ws = optional whitespace: `<think>` ws NL ... NL ws
# `</think>` ws NL `<answer>` ws NL `{...}` ws NL ws `</answer>` ws, with no "{" or "}" inside the object.
_QINSIGHT_FORMAT = re.compile(
    r"<think>\s*\n.*?\n\s*</think>\s*\n<answer>\s*\n\{[^{}]*\}\s*\n\s*</answer>\s*", re.DOTALL
)
_QINSIGHT_RATING = re.compile(r'"rating"\s*:\s*([\d.]+)')  # upstream: an unquoted run of digits and dots
_QINSIGHT_RATING_OR_STRING = re.compile(r'"rating"\s*:\s*"?\s*([\d.]+)')  # strict=False: "3.5" too
_QINSIGHT_DEGRADATION = re.compile(
    r'"distortion_class"\s*:\s*"([^"]+)".*?"severity"\s*:\s*"([^"]+)"', re.DOTALL
)
_VQR1_RATING = re.compile(r"-?\d+(?:\.\d+)?")  # upstream `-?\d+(\.\d+)?`: the first signed decimal, no exponent


@dataclass(frozen=True)
class ScoreAnswer:
    """A single-turn rating: `rating` as written (not clipped; both models' rewards use the raw number)."""

    rating: float | None
    error: Literal["missing_answer", "invalid_rating"] | None = None
    from_answer_tag: bool = True


@dataclass(frozen=True)
class DegradationAnswer:
    """Q-Insight degradation perception: the two JSON string fields, stripped ("null" when none, "" when blank)."""

    distortion_class: str | None
    severity: str | None
    error: Literal["missing_answer", "invalid_degradation"] | None = None


@dataclass(frozen=True)
class ComparisonAnswer:
    """Q-Insight zero-shot A/B comparison: "A" or "B"."""

    choice: Literal["A", "B"] | None
    error: Literal["missing_answer", "invalid_choice"] | None = None


def check_qinsight_format(text: object) -> bool:
    """Q-Insight's format test (arXiv:2503.22679 Sec. 3.3; r_fmt = 1 when True): the WHOLE text is `<think>` NL ...
    NL `</think>` NL `<answer>` NL `{...}` NL `</answer>`, optional whitespace around each newline and at the
    end, no inner "{" or "}". Text before `<think>` or after `</answer>` fails."""
    return isinstance(text, str) and _QINSIGHT_FORMAT.fullmatch(text) is not None


def parse_qinsight_score(text: object, *, strict: bool = True) -> ScoreAnswer:
    """Q-Insight score: in the first `<answer>...</answer>` block, the first match of `"rating": [\\d.]+`.

    strict (the default, and what the reward uses) is the released training code: the rating must be an
    unquoted JSON number, so `"rating": "3.5"` is `invalid_rating`; a minus sign does not match, so
    `"rating": -1` is invalid too. The run of digits and dots must read as a finite float: "3." is 3.0,
    "3.5.1", "." and an overflow to inf are `invalid_rating` (upstream's float() raises, or gives inf that no
    threshold accepts). strict=False also reads a quoted rating, `"rating": "3.5"`, for a print-out of what
    a model answered; never use it for a reward.
    """
    block = answer_block(text)
    if block is None:
        return ScoreAnswer(None, "missing_answer")
    match = (_QINSIGHT_RATING if strict else _QINSIGHT_RATING_OR_STRING).search(block)
    rating = coerce_number(match.group(1)) if match else None
    return ScoreAnswer(rating, None if rating is not None else "invalid_rating")


def parse_qinsight_degradation(text: object) -> DegradationAnswer:
    """Q-Insight degradation: in the first `<answer>` block, `"distortion_class": "..."` and, after it,
    `"severity": "..."` (string values; severity before class is `invalid_degradation`).

    Values are stripped and keep their case (the reward compares them to the labels exactly). A value of only
    spaces reads as "" and is no error, as upstream: `"noise"` with severity `" "` still earns the class reward.
    """
    block = answer_block(text)
    if block is None:
        return DegradationAnswer(None, None, "missing_answer")
    match = _QINSIGHT_DEGRADATION.search(block)
    if match is None:
        return DegradationAnswer(None, None, "invalid_degradation")
    return DegradationAnswer(match.group(1).strip(), match.group(2).strip())


def parse_qinsight_comparison(text: object) -> ComparisonAnswer:
    """Q-Insight comparison: the first `<answer>` block names exactly one of "Image A" / "Image B"."""
    block = answer_block(text)
    if block is None:
        return ComparisonAnswer(None, "missing_answer")
    named = {letter.upper() for letter in re.findall(r"\bimage\s*([ab])\b", block, re.IGNORECASE)}
    if len(named) != 1:
        return ComparisonAnswer(None, "invalid_choice")
    return ComparisonAnswer("A" if "A" in named else "B")


def parse_visualquality_r1(text: object) -> ScoreAnswer:
    """VisualQuality-R1: the first number `-?\\d+(\\.\\d+)?` (minus sign included) in the LAST `<answer>`
    block, or in the whole text when there is none (`from_answer_tag` False), as its GRPO accuracy reward reads
    it (docs/inference.md, "Single-turn parsers checked against upstream"). Not clipped: "-1.5" is -1.5, the
    number the upstream reward uses. Where its release draws a random score on failure, we return
    `invalid_rating`; a run of digits that overflows to inf is `invalid_rating` too."""
    if not isinstance(text, str):
        return ScoreAnswer(None, "missing_answer", False)
    block = answer_block(text, last=True)
    source = text if block is None else block
    match = _VQR1_RATING.search(source)
    rating = coerce_number(match.group(0)) if match else None
    return ScoreAnswer(rating, None if rating is not None else "invalid_rating", block is not None)


def _is_normalized_box(bbox: tuple[float, ...] | None, tool: str | None) -> bool:
    if tool != "crop" or bbox is None:
        return False
    x1, y1, x2, y2 = bbox
    return all(0.0 <= v <= 1.0 for v in bbox) and x1 < x2 and y1 < y2


def _load_object(block: str) -> tuple[dict | None, bool]:
    """A dict from the "{...}" span of `block`: (obj, lenient) or (None, False)."""
    start, end = block.find("{"), block.rfind("}")
    if start < 0 or end < start:
        return None, False
    span = block[start : end + 1]
    obj = _try(json.loads, span)
    if isinstance(obj, dict):
        return obj, False
    for candidate in _lenient_candidates(span):
        obj = _try(json.loads, candidate)
        if not isinstance(obj, dict):
            obj = _try(ast.literal_eval, candidate)
        if isinstance(obj, dict):
            return obj, True
    return None, False


def _lenient_candidates(span: str) -> list[str]:
    """Repairs of near-JSON, tried in turn; each is checked by json.loads, then ast.literal_eval."""
    text = span.translate({0x201C: '"', 0x201D: '"', 0x201E: '"', 0x2018: "'", 0x2019: "'"})
    text = re.sub(r",\s*([}\]])", r"\1", text)
    quoted = re.sub(r"([{,]\s*)([A-Za-z_][A-Za-z0-9_]*)\s*:", r'\1"\2":', text)
    double = re.sub(r"'([^'\"\\\n]*)'", r'"\1"', quoted)
    python = re.sub(r"\btrue\b", "True", re.sub(r"\bfalse\b", "False", re.sub(r"\bnull\b", "None", quoted)))
    return [text, double, python]


def _try(loader: object, text: str) -> object:
    """`loader(text)`, or None on any failure: the never-raise boundary of the lenient reader. Compiler warnings
    (`ast.literal_eval` on model text such as "4.58in" warns "invalid decimal literal") are silenced: a malformed
    answer is counted as invalid, not printed."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)
            return loader(text)  # type: ignore[operator]
    except Exception:  # json and ast raise ValueError, SyntaxError, RecursionError, MemoryError, ...
        return None
