"""GR-IQA curation, one candidate at a time: teacher -> format -> VRF -> HACF (Zoom-IQA (Liang et al.),
Sec. 3.1.1, Fig. 3; issue 19). `zoomiqa curate` (`curate.cli`) drives it and keeps the run store.

Per label (an image and its MOS) the stages run in order, and the first that rejects decides the outcome:

    unreadable  the image cannot be loaded
    teacher     the teacher wrote nothing (endpoint failure, image the processor rejects, no replay record)
    format      the reply is not an SFT trajectory (`train.sft_data.parse_record`: the Zoom-IQA format of
                every turn, the crop box, the MOS range)
    vrf         Visual Reliance Filtering (`filters.vrf_decision` on `vrf_readout.vrf_readouts`)
    hacf        Hint-Augmented Consistency Filtering (`filters.hacf_decision` on the rater's reply)
    kept        none rejected: `record` is the SFT trajectory

Every outcome is one row (a JSON object) holding the reasons, the quantities each filter compared and the
teacher's texts, so a reject can be read and the report (`curate.report`) be built from the rows alone.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoomiqa_jax.curate.filters import (
    BBOX_IOU_THRESHOLD,
    ENTROPY_DIFFERENCE_THRESHOLD,
    RATING_DIFFERENCE_THRESHOLD,
    AnswerReadout,
    hacf_decision,
    vrf_decision,
)
from zoomiqa_jax.curate.hints import compute_hints, overrides_from_metadata, render_hints
from zoomiqa_jax.curate.rater import Rater, RaterQuery, hint_block, rationale_of
from zoomiqa_jax.curate.teacher import Teacher, sft_record
from zoomiqa_jax.inference.rounds import ImageItem, SamplingSettings
from zoomiqa_jax.processing.answers import parse_zoomiqa_answer
from zoomiqa_jax.processing.image import ImageLoadError, load_image
from zoomiqa_jax.processing.prompts import DEFAULT_PROMPTS, PromptSet

STAGES = ("unreadable", "teacher", "format", "vrf", "hacf", "kept")


@dataclass(frozen=True)
class CurateItem:
    """One label: `id` (its "id", else the image file stem), the resolved image path, the MOS, the row."""

    id: str
    image: Path
    mos: float
    row: dict[str, Any]
    index: int


def read_labels(path: str | Path, image_root: str | Path | None = None) -> list[CurateItem]:
    """The labels JSONL: one object per line with "image" (relative to `image_root`, default the file's folder)
    and "mos" (1-5, the SFT scale); other fields (e.g. KonIQ / SPAQ attributes, `hints.METADATA_ALIASES`) are
    kept. Raises ValueError naming file:line and the field; ids must be unique."""
    path = Path(path)
    root = Path(image_root) if image_root else path.parent
    items: list[CurateItem] = []
    seen: dict[str, str] = {}
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{where}: not valid JSON ({err.msg})") from None
            if not isinstance(row, dict) or not isinstance(row.get("image"), str) or not row["image"].strip():
                raise ValueError(f"{where}: field 'image': expected a non-empty path string")
            mos = row.get("mos")
            if isinstance(mos, bool) or not isinstance(mos, (int, float)):
                raise ValueError(f"{where}: field 'mos': expected a number on the 1-5 scale, found {mos!r}")
            key = str(row.get("id") or Path(row["image"]).stem)
            if key in seen:
                raise ValueError(f"{where}: id {key!r} repeats {seen[key]}; ids must be unique")
            seen[key] = where
            image = Path(row["image"]) if Path(row["image"]).is_absolute() else root / row["image"]
            items.append(CurateItem(key, image, float(mos), row, len(items)))
    return items


@dataclass(frozen=True)
class Thresholds:
    """VRF thresholds (supp. 6.2 defaults; the comparisons are `filters.vrf_decision`'s)."""

    rating: float = RATING_DIFFERENCE_THRESHOLD
    iou: float = BBOX_IOU_THRESHOLD
    entropy: float = ENTROPY_DIFFERENCE_THRESHOLD


@dataclass
class Reader:
    """The model whose token probabilities VRF reads (`vrf_readout`)."""

    model: Any
    tokenizer: Any
    settings: SamplingSettings
    prompts: PromptSet = DEFAULT_PROMPTS


@dataclass
class Curator:
    """The stages of one run. `reader` None skips VRF and `rater` None skips HACF (the row says so).
    `hint_fields` names label fields the rater also gets as hints (a label without one simply lacks it)."""

    teacher: Teacher
    reader: Reader | None
    rater: Rater | None
    out_dir: Path
    thresholds: Thresholds = field(default_factory=Thresholds)
    hint_fields: tuple[str, ...] = ()

    def run(self, items: Sequence[CurateItem]) -> list[dict[str, Any]]:
        """One row per item, in order (module docstring). Creates `out_dir` (record image paths are relative to it)."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        rows: dict[int, dict[str, Any]] = {}
        loaded: list[tuple[CurateItem, ImageItem]] = []
        for item in items:
            try:
                loaded.append((item, ImageItem(str(item.image), load_image(item.image), index=item.index)))
            except ImageLoadError as err:
                rows[item.index] = _row(item, "unreadable", [str(err)])
        replies = self.teacher.write([image for _, image in loaded]) if loaded else []
        rating_queue: list[tuple[CurateItem, ImageItem, dict[str, Any]]] = []
        for (item, image), reply in zip(loaded, replies):
            row = _row(item, "kept", [])
            row["teacher"] = {"question": reply.question, "texts": list(reply.texts), "error": reply.error}
            row.update(_answer_summary(reply.texts))
            rows[item.index] = row
            if reply.error is not None or not reply.texts:
                row.update(stage="teacher", reasons=[reply.error or "the teacher wrote no turn"])
                continue
            record, problem = sft_record(reply, record_id=item.id, image=item.image, mos=item.mos,
                                         out_dir=self.out_dir, meta={"curation": {"index": item.index}})
            if record is None:
                row.update(stage="format", reasons=[problem])
                continue
            row["record"] = record
            if self.reader is not None and not self._vrf(row, image, reply.question or "", reply.texts[0]):
                continue
            rating_queue.append((item, image, row))
        if self.rater is not None and rating_queue:
            self._hacf(rating_queue)
        for row in rows.values():
            if row["stage"] != "kept":
                row["record"] = None
            else:
                row["record"]["meta"]["curation"] = {k: row[k] for k in ("vrf", "hacf") if k in row}
        return [rows[item.index] for item in items]

    def _vrf(self, row: dict[str, Any], image: ImageItem, question: str, first_turn: str) -> bool:
        from zoomiqa_jax.curate.vrf_readout import vrf_readouts

        reader = self.reader
        assert reader is not None
        try:
            with_image, text_only = vrf_readouts(reader.model, reader.tokenizer, image.image, question, first_turn,
                                                 reader.settings, reader.prompts)
        except ValueError as err:
            row.update(stage="vrf", reasons=[f"readout: {err}"])
            return False
        t = self.thresholds
        decision = vrf_decision(with_image, text_only, t.rating, t.iou, t.entropy)
        row["vrf"] = {"with_image": _readout_dict(with_image), "text_only": _readout_dict(text_only),
                      **decision.to_dict()}
        if not decision.keep:
            row.update(stage="vrf", reasons=list(decision.reasons))
        return decision.keep

    def _hacf(self, queue: list[tuple[CurateItem, ImageItem, dict[str, Any]]]) -> None:
        assert self.rater is not None
        queries = []
        for item, image, row in queue:
            hints = compute_hints(image.image, overrides_from_metadata(item.row, where=f"label {item.id}"))
            extra = {name: item.row[name] for name in self.hint_fields if item.row.get(name) not in (None, "")}
            row["hints"] = {**hints.to_dict(), **extra}
            queries.append(RaterQuery(image.image, rationale_of(row["teacher"]["texts"]),
                                      hint_block(render_hints(hints), item.mos, extra)))
        replies = self.rater.judge(queries, [item.index for item, _, _ in queue])
        for (_, _, row), (reply, error) in zip(queue, replies):
            if error is not None:
                row["hacf"] = {"reply": None, "verdict": None, "error": error}
                row.update(stage="hacf", reasons=["rater_error"])
                continue
            decision = hacf_decision(reply or "")
            row["hacf"] = {"reply": reply, **decision.to_dict()}
            if not decision.keep:
                row.update(stage="hacf", reasons=list(decision.reasons))


def _row(item: CurateItem, stage: str, reasons: list[str]) -> dict[str, Any]:
    return {"key": item.id, "index": item.index, "image": str(item.image), "mos": item.mos, "stage": stage,
            "reasons": reasons}


def _readout_dict(r: AnswerReadout) -> dict[str, Any]:
    return {"rating": r.rating, "bbox": None if r.bbox is None else list(r.bbox), "entropy": r.entropy}


def _answer_summary(texts: Sequence[str]) -> dict[str, Any]:
    """The teacher's final rating, whether it cropped and its stage-1 box (for the report's distributions)."""
    if not texts:
        return {"rating": None, "cropped": False, "bbox": None}
    first, last = parse_zoomiqa_answer(texts[0]), parse_zoomiqa_answer(texts[-1])
    cropped = len(texts) == 2
    return {"rating": last.rating, "cropped": cropped,
            "bbox": list(first.bbox) if cropped and first.bbox is not None else None}
