"""Loaders for the IQA label files users already have, all read into one record type.

Formats (each file may be a JSON list or JSON Lines; the loader tells them apart by the first character):

* ``deqa``     DeQA-Score metas (Data-DeQA-Score/<DATASET>/metas/*.json), used by Q-Insight: a JSON list of
               ``{"id", "image", "gt_score", "gt_score_norm", "std", ...}``; the MOS read is ``gt_score_norm``
               (DeQA's [1, 5] normalization) unless ``score_key="gt_score"``. Training metas also carry
               ``conversations`` (``{"from": "human", "value": "<question>\\n<|image|>"}``).
* ``vqr1``     VisualQuality-R1 training data: ``{"id", "dataset_name", "image": [path],
               "conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": mos}]}``.
* ``zoomiqa``  Zoom-IQA evaluation JSON: ``{"image" | "img_path", "gt_score", "conversations"?}``.
* ``plain``    our JSONL for new data: ``{"image": path, "mos": x, "distortion_class"?, "severity"?,
               "dataset"?, "question"?}`` (what `data.degrade.generate_degradation_set` writes).

A bad record (missing field, non-numeric, non-finite or out-of-range score, unparseable line, missing image
file when ``check_files``) is skipped, counted and listed with file and line (JSONL, 1-based) or index (JSON
list, 0-based); with ``strict=True`` the first one raises `LabelError` naming file and line instead.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

Format = Literal["auto", "deqa", "vqr1", "zoomiqa", "plain"]
DEFAULT_RANGE = (1.0, 5.0)


class LabelError(ValueError):
    """A label record is malformed and strict loading was asked for; the message names file and line."""


@dataclasses.dataclass(frozen=True)
class LabelRecord:
    """One labelled image. `image` is resolved against the loader's root; `source` is "file:line" or
    "file[index]"; `mos` is on the scale of the file (for the formats above, [1, 5], higher is better)."""

    image: Path
    mos: float
    dataset: str
    source: str
    question: str | None = None
    distortion_class: str | None = None
    severity: str | None = None
    # the record's own question exactly as the file writes it (`conversations[0]`, image tag and spaces kept), for
    # the official protocol: the authors' stage 1 removes only the tag from it, their stage-2 history keeps it whole
    question_raw: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["image"] = str(self.image)
        return out


@dataclasses.dataclass(frozen=True)
class BadRecord:
    """A skipped record: where, why, and its category ("bad_label": the score; "missing_image": `check_files`;
    "bad_record": anything else), the names `zoomiqa_jax.train.data_checks` reports by."""

    source: str
    reason: str
    category: str = "bad_record"


@dataclasses.dataclass
class LoadResult:
    """Records that loaded and the ones that did not, with where and why."""

    path: Path
    format: str
    records: list[LabelRecord]
    bad: list[BadRecord]

    @property
    def n_bad(self) -> int:
        return len(self.bad)

    def summary(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "format": self.format,
            "n_records": len(self.records),
            "n_bad": self.n_bad,
            "bad": [dataclasses.asdict(b) for b in self.bad],
        }


class _Bad(Exception):
    """Raised inside a record parser; turned into a BadRecord (or a LabelError when strict)."""

    def __init__(self, message: str, category: str = "bad_record") -> None:
        super().__init__(message)
        self.category = category


# ------------------------------------------------------------------------------------------------ reading


def _iter_items(path: Path) -> Iterator[tuple[str, Any]]:
    """Yield (location, item) from a JSON list or a JSON Lines file; a broken line yields a `_Bad` instead."""
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as err:
            yield f"{path}:{err.lineno}", _Bad(f"invalid JSON: {err.msg}")
            return
        for index, item in enumerate(items):
            yield f"{path}[{index}]", item
        return
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield f"{path}:{lineno}", json.loads(line)
        except json.JSONDecodeError as err:
            yield f"{path}:{lineno}", _Bad(f"invalid JSON: {err.msg}")


def _require(item: dict[str, Any], key: str) -> Any:
    if key not in item or item[key] is None:
        raise _Bad(f"missing field {key!r} (found keys {sorted(item)})")
    return item[key]


def _score(value: Any, key: str, valid_range: tuple[float, float] | None) -> float:
    if isinstance(value, bool):
        raise _Bad(f"field {key!r} is a boolean, expected a number", "bad_label")
    try:
        score = float(value)
    except (TypeError, ValueError):
        raise _Bad(f"field {key!r} is not a number: {value!r}", "bad_label") from None
    if not math.isfinite(score):
        raise _Bad(f"field {key!r} is not finite: {value!r}", "bad_label")
    if valid_range is not None and not valid_range[0] <= score <= valid_range[1]:
        raise _Bad(f"field {key!r} = {score} is outside [{valid_range[0]}, {valid_range[1]}]", "bad_label")
    return score


def _optional_str(item: dict[str, Any], key: str) -> str | None:
    value = item.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _Bad(f"field {key!r} should be a string, found {type(value).__name__}: {value!r}")
    return value


def _image_path(value: Any, key: str) -> str:
    if isinstance(value, list):
        if len(value) != 1:
            raise _Bad(f"field {key!r} should hold exactly one image, found {len(value)}")
        value = value[0]
    if not isinstance(value, str) or not value:
        raise _Bad(f"field {key!r} should be an image path, found {value!r}")
    return value


def _turn(conversations: Any, role: str) -> Any:
    """The value of the first turn from `role` ('human' or 'gpt') in a LLaVA-style conversation list."""
    if not isinstance(conversations, list):
        raise _Bad(f"field 'conversations' should be a list, found {type(conversations).__name__}")
    for turn in conversations:
        if isinstance(turn, dict) and turn.get("from") == role:
            return turn.get("value")
    raise _Bad(f"'conversations' has no turn from {role!r}")


def _raw_question(item: dict[str, Any]) -> str | None:
    """`processing.official_inputs.record_question`'s raw string: conversations[0]'s "value" or "content"."""
    from zoomiqa_jax.processing.official_inputs import record_question

    own = record_question(item)
    return None if own is None else own.history


def _question(item: dict[str, Any]) -> str | None:
    if "conversations" not in item:
        return None
    value = _turn(item["conversations"], "human")
    if not isinstance(value, str):
        raise _Bad(f"the human turn of 'conversations' should be text, found {value!r}")
    return value.replace("<|image|>", "").replace("<image>", "").strip() or None


# ------------------------------------------------------------------------------------------ record parsers
# Each returns (image path as written, mos, question, distortion class, severity, dataset or None).

Parsed = tuple[str, float, str | None, str | None, str | None, str | None]


def _parse_deqa(item: dict[str, Any], score_key: str, valid_range: tuple[float, float] | None) -> Parsed:
    image = _image_path(_require(item, "image"), "image")
    return image, _score(_require(item, score_key), score_key, valid_range), _question(item), None, None, None


def _parse_vqr1(item: dict[str, Any], score_key: str, valid_range: tuple[float, float] | None) -> Parsed:
    image = _image_path(_require(item, "image"), "image")
    conversations = _require(item, "conversations")
    answer = _turn(conversations, "gpt")
    mos = _score(answer, "conversations[gpt].value", valid_range)
    dataset = item.get("dataset_name")
    return image, mos, _question(item), None, None, str(dataset) if dataset is not None else None


def _parse_zoomiqa(item: dict[str, Any], score_key: str, valid_range: tuple[float, float] | None) -> Parsed:
    key = "image" if item.get("image") is not None else "img_path"
    image = _image_path(_require(item, key), key)
    return image, _score(_require(item, score_key), score_key, valid_range), _question(item), None, None, None


def _parse_plain(item: dict[str, Any], score_key: str, valid_range: tuple[float, float] | None) -> Parsed:
    image = _image_path(_require(item, "image"), "image")
    mos = _score(_require(item, score_key), score_key, valid_range)
    return (
        image,
        mos,
        _optional_str(item, "question"),
        _optional_str(item, "distortion_class"),
        _optional_str(item, "severity"),
        _optional_str(item, "dataset"),
    )


_PARSERS: dict[str, tuple[Callable[..., Parsed], str, tuple[float, float] | None]] = {
    # format: (parser, default score key, default valid range)
    "deqa": (_parse_deqa, "gt_score_norm", DEFAULT_RANGE),
    "vqr1": (_parse_vqr1, "", DEFAULT_RANGE),
    # Zoom-IQA eval files may carry the raw dataset score (as DeQA's gt_score does): no default range.
    "zoomiqa": (_parse_zoomiqa, "gt_score", None),
    "plain": (_parse_plain, "mos", DEFAULT_RANGE),
}


def detect_format(item: dict[str, Any]) -> str:
    """Guess the format from one record's keys (see the module docstring)."""
    if "gt_score_norm" in item:
        return "deqa"
    if "dataset_name" in item and "conversations" in item:
        return "vqr1"
    if "gt_score" in item:
        return "zoomiqa"
    if "mos" in item:
        return "plain"
    raise _Bad(f"cannot tell the label format from keys {sorted(item)}")


# ---------------------------------------------------------------------------------------------- the loader


def load_labels(
    path: str | Path,
    fmt: Format = "auto",
    *,
    root: str | Path | None = None,
    dataset: str | None = None,
    score_key: str | None = None,
    valid_range: tuple[float, float] | None | Literal["default"] = "default",
    check_files: bool = False,
    strict: bool = False,
) -> LoadResult:
    """Load one label file into `LabelRecord`s.

    Args:
      path: the label file (JSON list or JSON Lines).
      fmt: "deqa", "vqr1", "zoomiqa", "plain", or "auto" (decided by the first record it can recognise).
      root: directory that relative image paths are resolved against (default: the label file's directory;
        for DeQA-Score metas pass the Data-DeQA-Score directory, since their paths start with "KONIQ/...").
      dataset: dataset name for every record; default: the record's own (vqr1 `dataset_name`, plain
        `dataset`) or else the label file's stem.
      score_key: field holding the score (deqa: "gt_score_norm", zoomiqa: "gt_score", plain: "mos"; vqr1
        always reads the gpt turn).
      valid_range: inclusive [low, high] a score must lie in, None for no check; "default" is [1, 5] except
        for zoomiqa (no check).
      check_files: also count a record whose image file does not exist as bad.
      strict: raise `LabelError` at the first bad record instead of skipping it.
    """
    if fmt != "auto" and fmt not in _PARSERS:
        raise ValueError(f"unknown label format {fmt!r}; expected one of {sorted(_PARSERS)} or 'auto'")
    path = Path(path)
    base = Path(root) if root is not None else path.parent
    records: list[LabelRecord] = []
    bad: list[BadRecord] = []
    chosen = fmt

    for location, item in _iter_items(path):
        try:
            if isinstance(item, _Bad):
                raise item
            if not isinstance(item, dict):
                raise _Bad(f"expected a JSON object, found {type(item).__name__}")
            if chosen == "auto":
                chosen = detect_format(item)
            parser, default_key, default_range = _PARSERS[chosen]
            key = score_key or default_key
            rng = default_range if valid_range == "default" else valid_range
            image, mos, question, dclass, severity, own_dataset = parser(item, key, rng)
            image_path = Path(image)
            if not image_path.is_absolute():
                image_path = base / image_path
            if check_files and not image_path.is_file():
                raise _Bad(f"image file not found: {image_path}", "missing_image")
        except _Bad as err:
            if strict:
                raise LabelError(f"{location}: {err}") from None
            bad.append(BadRecord(location, str(err), err.category))
            continue
        records.append(
            LabelRecord(
                image=image_path,
                mos=mos,
                dataset=dataset or own_dataset or path.stem,
                source=location,
                question=question,
                distortion_class=dclass,
                severity=severity,
                question_raw=_raw_question(item),
            )
        )
    return LoadResult(path=path, format=chosen, records=records, bad=bad)
