"""The authors' Zoom-IQA answer reading, `official` protocol (issue 18 item 7).

Read from their released evaluation (GitHub EthanLiang99/Zoom-IQA, commit f4dee23,
`src/zoomiqa/inference/protocol.py` and `evaluate.py`; the line numbers are of that file at that commit; no code
of theirs is copied here). The project's own reading (`strict`) stays in `processing/answers.py`.

1. The answer object is the first match of the regular expression `<answer>\\s*(\\{.*?\\})\\s*</answer>`
   (`re.DOTALL`, `re.search`; `_answer_object`, protocol.py:142-151). The object must start right after
   `<answer>` (spaces allowed) and end right before a `</answer>`: prose or a code fence inside the tags is no
   match there, and the search goes on to a later `<answer>`, so a later well-formed block is used. The lazy
   `.*?` may run past a `</answer>`: in `<answer>{...} note</answer> <answer>{...}</answer>` the group runs
   from the first "{" to the "}" that closes the second block.
2. The group is read with `json.loads`; on `JSONDecodeError` with `dirtyjson.loads` (`_loads_relaxed`,
   protocol.py:128-139), which takes single quotes, unquoted keys, trailing commas, `//` and `/* */` comments
   and ignores text after the first object (so the run-on group above reads as the FIRST block's object), but
   not curly quotes. A value that is not an object is a parse error.
3. The rating is Python `float(value["rating"])` (`extract_rating`, protocol.py:154-167): `true` is 1.0,
   `"1_0"` is 10.0, `" 3.5 "` is 3.5; `null`, a list, `"abc"` and a non-finite value are `invalid_rating`.
   Their evaluation then clips it to [1, 5] (evaluate.py:360, `min(5.0, max(1.0, ...))`).
4. Error classes are theirs (`_categorize_parse_error`, evaluate.py:173-185, reads the messages of
   protocol.py:135-188): `missing_answer` (no match), `malformed_json` (neither reader), `invalid_rating`,
   `invalid_bbox`, `invalid_tool` (a routing key missing or the box not iterable), `parse_error` (not text, not
   an object).

Where their code raises past its own handler, a whole batch of theirs becomes `runtime_error`
(evaluate.py, `_worker`); here the one answer gets a class instead, and nothing raises: an integer rating too
large for a float (`OverflowError`) is `invalid_rating`; a JSON integer of more than 4300 digits (`ValueError`
from `int`) or nesting deeper than the recursion limit (`RecursionError`) is `malformed_json`.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Literal

import dirtyjson

from zoomiqa_jax.processing.official import OfficialRouting, route_answer

OfficialError = Literal[
    "missing_answer", "malformed_json", "invalid_rating", "invalid_bbox", "invalid_tool", "parse_error"
]
ANSWER_PATTERN = re.compile(r"<answer>\s*(\{.*?\})\s*</answer>", re.DOTALL)
RATING_RANGE = (1.0, 5.0)  # evaluate.py:360


class AnswerParseError(ValueError):
    """A reply without a usable answer object or rating; `kind` is the authors' error class."""

    def __init__(self, kind: OfficialError, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind: OfficialError = kind


@dataclass(frozen=True)
class OfficialAnswer:
    """One round read as the authors' evaluation reads it.

    `payload` is the decoded answer object (plain dicts / lists), None when there is none. `rating` is the
    clipped rating their record keeps, None when `extract_rating` fails; `raw_rating` is `float()` of the
    written value before clipping. `error` is the class of a missing rating (their record's `error`), `routing`
    is stage-1 routing (`processing.official.route_answer`; its `warning` is their `routing_warning`).
    `bbox` is the box as their `_display_bbox` shows it (four floats or None), `tool` the raw `tool` value.
    `lenient` is True when only dirtyjson read the object.
    """

    payload: dict[str, Any] | None
    rating: float | None
    raw_rating: float | None
    error: OfficialError | None
    routing: OfficialRouting
    bbox: tuple[float, float, float, float] | None = None
    tool: object = None
    lenient: bool = False

    @property
    def errors(self) -> tuple[OfficialError, ...]:
        """The rating error and a routing warning that differs from it, in that order."""
        found = [e for e in (self.error, self.routing.warning) if e is not None]
        return tuple(dict.fromkeys(found))

    @property
    def requests_crop(self) -> bool:
        """True when the authors' evaluation runs a second round on this (stage-1) answer."""
        return self.routing.rounds == 2


def answer_object(text: object) -> tuple[dict[str, Any], bool]:
    """The decoded answer object of `text` and whether only dirtyjson could read it (module docstring 1-2).

    Raises AnswerParseError with kind `parse_error`, `missing_answer` or `malformed_json`.
    """
    if not isinstance(text, str):
        raise AnswerParseError("parse_error", f"completion is not text ({type(text).__name__})")
    match = ANSWER_PATTERN.search(text)
    if match is None:
        raise AnswerParseError("missing_answer", "no <answer>{...}</answer> block")
    payload = match.group(1)
    lenient = False
    try:
        value = json.loads(payload)
    except json.JSONDecodeError:
        lenient = True
        try:
            value = dirtyjson.loads(payload)
        except Exception as err:  # dirtyjson.Error and whatever else its reader raises, as upstream catches
            raise AnswerParseError("malformed_json", f"answer JSON could not be parsed: {err}") from err
    except (ValueError, RecursionError) as err:  # upstream: uncaught, its whole batch fails
        raise AnswerParseError("malformed_json", f"answer JSON could not be read: {err}") from err
    if not isinstance(value, dict):
        raise AnswerParseError("parse_error", "answer payload is not an object")
    return _plain(value), lenient


def answer_span(text: str) -> tuple[int, int] | None:
    """(start, end) in `text` of the answer object the authors' regex reads (ANSWER_PATTERN's group), or None."""
    match = ANSWER_PATTERN.search(text)
    return None if match is None else match.span(1)


def rating_of(payload: dict[str, Any]) -> float:
    """`float(payload["rating"])`, unclipped; raises AnswerParseError `invalid_rating` (protocol.py:160-167)."""
    try:
        rating = float(payload["rating"])
    except (KeyError, TypeError, ValueError, OverflowError) as err:
        raise AnswerParseError("invalid_rating", f"rating is missing or non-numeric: {err}") from err
    if not math.isfinite(rating):
        raise AnswerParseError("invalid_rating", f"rating is not finite: {rating}")
    return rating


def extract_rating(text: object) -> float:
    """The clipped rating the authors' evaluation records for one reply (protocol.py:154-167 then
    evaluate.py:360). Raises AnswerParseError naming the class."""
    payload, _ = answer_object(text)
    low, high = RATING_RANGE
    return min(high, max(low, rating_of(payload)))


def parse_official_answer(text: object) -> OfficialAnswer:
    """Read one reply as the authors' evaluation does; never raises (module docstring)."""
    try:
        payload, lenient = answer_object(text)
    except AnswerParseError as err:
        return OfficialAnswer(None, None, None, err.kind, OfficialRouting(1, err.kind))
    try:
        raw: float | None = rating_of(payload)
        error: OfficialError | None = None
    except AnswerParseError as err:
        raw, error = None, err.kind
    rating = None if raw is None else min(RATING_RANGE[1], max(RATING_RANGE[0], raw))
    return OfficialAnswer(payload, rating, raw, error, route_answer(payload), _display_box(payload.get("bbox_2d")),
                          payload.get("tool"), lenient)


def _display_box(value: object) -> tuple[float, float, float, float] | None:
    """Their `_display_bbox` (evaluate.py:195-200): four `float()` values, else None."""
    try:
        values = tuple(float(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError, OverflowError):
        return None
    return values if len(values) == 4 else None  # type: ignore[return-value]


def _plain(value: Any) -> Any:
    """dirtyjson's AttributedDict / AttributedList as plain dicts and lists (they serialize and copy as JSON)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
