"""SFT trajectories (Zoom-IQA stage 1, arXiv:2601.02918 Sec. 3.1.2): the JSONL format, its loader, training examples
with generated-token labels, and bucketed collation. The format is documented in docs/sft_data.md.

One JSONL line is one trajectory:

    {"id": "a", "image": "imgs/a.png", "mos": 3.4, "question": "How would ...?",        (id, question optional)
     "turns": [{"text": "<think>...</think><answer>{... \"tool\": \"crop\"}</answer>", "bbox": [x1, y1, x2, y2]},
               {"text": "<think>...</think><answer>{... \"tool\": \"final\"}</answer>"}],
     "meta": {...}}                                                                      (meta optional, free)

A training example renders exactly the token layout inference builds (`inference.zoom`): a one-turn record is
the stage-1 prompt (question + instructions + original image) then the reply; a crop record is the stage-2
sequence: the question without the image, the stage-1 reply spliced in as the assistant turn
(`inference.trajectory.splice_assistant_turn`), the stage-2 instructions with the original and the crop, then
the stage-2 reply. The crop is cut from the ORIGINAL image with `processing.crop.crop_box` + `crop_and_zoom`.

Labels: `labels[t] = input_ids[t]` where the model generated token t (the reply tokens and the `<|im_end|>` that
ends each reply), else -100 (system / user turns, chat scaffolding, image tokens of the original and the crop).
`per_round=True` instead yields one example per round, each round's reply under its own prompt (stage 1 then
sees its image, as in the paper's loss p(S_t | S_<t, I, T_CoT)); the stage-1 reply inside the stage-2 history
is then masked.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zoomiqa_jax.inference.trajectory import SPLICE_MARK, final_sequence, splice_assistant_turn
from zoomiqa_jax.processing.answers import parse_zoomiqa_answer, zoomiqa_format_problems
from zoomiqa_jax.processing.crop import coerce_box, crop_and_zoom, crop_box
from zoomiqa_jax.processing.image import MAX_PIXELS, MIN_PIXELS, load_image, preprocess_images
from zoomiqa_jax.processing.prompts import (
    DEFAULT_PROMPTS,
    PromptSet,
    choose_question,
    zoomiqa_stage1_messages,
    zoomiqa_stage2_messages,
)
from zoomiqa_jax.processing.tokenizer import SPECIAL_TOKENS, render_chat
from zoomiqa_jax.train.data_checks import (
    BAD_LABEL,
    BAD_RECORD,
    MISSING_IMAGE,
    BadDataError,
    BadRecords,
    drop_bad_images,
)

IGNORE_INDEX = -100
MOS_RANGE = (1.0, 5.0)  # the rating scale of the Zoom-IQA prompts (data.labels.DEFAULT_RANGE)
STOP_TOKEN = "<|im_end|>"
_RECORD_KEYS = {"id", "image", "mos", "question", "turns", "meta"}
_TURN_KEYS = {"text", "bbox"}


class SFTDataError(ValueError):
    """A trajectory record that does not follow the format; the message names file:line and the field.
    `category` sorts it for the bad-data report (`train.data_checks.CATEGORIES`)."""

    def __init__(self, message: str, category: str = BAD_RECORD) -> None:
        super().__init__(message)
        self.category = category


@dataclass(frozen=True)
class SFTTurn:
    """One assistant turn: its text; `bbox` (normalized [x1, y1, x2, y2]) only on a crop turn."""

    text: str
    bbox: tuple[float, float, float, float] | None = None


@dataclass(frozen=True)
class SFTRecord:
    """A validated trajectory. `image` is resolved against the JSONL file's folder; `where` is "file:line"."""

    image: str
    mos: float
    turns: tuple[SFTTurn, ...]
    question: str | None = None
    id: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    where: str = "<record>"

    @property
    def crops(self) -> bool:
        """True for a two-turn (crop) trajectory."""
        return len(self.turns) == 2


@dataclass
class LoadResult:
    """What `load_sft_jsonl` read: the good records, (where, message) for every bad one and, beside it, its
    category (`train.data_checks.CATEGORIES`)."""

    records: list[SFTRecord]
    bad: list[tuple[str, str]]
    categories: list[str] = field(default_factory=list)

    @property
    def n_bad(self) -> int:
        return len(self.bad)


def parse_record(
    obj: Any, where: str = "<record>", base_dir: str | Path | None = None, *, check_format: bool = True,
    check_image: bool = True, mos_range: tuple[float, float] | None = MOS_RANGE,
) -> SFTRecord:
    """Validate one decoded JSON line and return it as an SFTRecord; raise SFTDataError naming `where` + field.

    Checks: known keys only; `image` a non-empty path (existing when `check_image`); `mos` a finite number
    in `mos_range` (inclusive; None: any);
    `question` a non-blank string when present; 1 or 2 `turns`, each a non-empty `text` free of special
    tokens; the first of two turns carries a normalized `bbox` (four numbers in [0, 1], x1 < x2, y1 < y2) equal
    to its answer's `bbox_2d`, the last turn none; with `check_format`, the texts pass the Zoom-IQA format
    (`processing.answers.zoomiqa_format_problems`).
    """

    def fail(name: str, message: str, category: str = BAD_RECORD) -> SFTDataError:
        return SFTDataError(f"{where}: field {name!r}: {message}", category)

    if not isinstance(obj, dict):
        raise SFTDataError(f"{where}: expected a JSON object, found {type(obj).__name__}")
    unknown = sorted(set(obj) - _RECORD_KEYS)
    if unknown:
        raise fail(unknown[0], f"unknown field; expected fields {sorted(_RECORD_KEYS)}")
    image = obj.get("image")
    if not isinstance(image, str) or not image.strip():
        raise fail("image", f"expected a non-empty path string, found {image!r:.60}")
    path = Path(image) if base_dir is None or Path(image).is_absolute() else Path(base_dir) / image
    if check_image and not path.is_file():
        raise fail("image", f"file {str(path)!r} does not exist", MISSING_IMAGE)
    mos = obj.get("mos")
    if isinstance(mos, bool) or not isinstance(mos, (int, float)) or not math.isfinite(mos):
        raise fail("mos", f"expected a finite number, found {mos!r:.60}", BAD_LABEL)
    if mos_range is not None and not mos_range[0] <= mos <= mos_range[1]:
        raise fail("mos", f"{mos} is outside the score range [{mos_range[0]}, {mos_range[1]}]", BAD_LABEL)
    question = obj.get("question")
    if question is not None and (not isinstance(question, str) or not question.strip()):
        raise fail("question", f"expected a non-blank string or no field, found {question!r:.60}")
    record_id = obj.get("id")
    if record_id is not None and not isinstance(record_id, str):
        raise fail("id", f"expected a string, found {type(record_id).__name__}")
    meta = obj.get("meta", {})
    if not isinstance(meta, dict):
        raise fail("meta", f"expected an object, found {type(meta).__name__}")
    turns = obj.get("turns")
    if not isinstance(turns, list) or not 1 <= len(turns) <= 2:
        found = f"{len(turns)} turns" if isinstance(turns, list) else type(turns).__name__
        raise fail("turns", f"expected a list of 1 or 2 assistant turns, found {found}")
    parsed = tuple(_parse_turn(t, i, len(turns), fail) for i, t in enumerate(turns))
    if check_format:
        problems = zoomiqa_format_problems([t.text for t in parsed])
        if problems:
            raise fail("turns", f"not in the Zoom-IQA format: {'; '.join(problems)}")
    return SFTRecord(str(path), float(mos), parsed, question, record_id, dict(meta), where)


def _parse_turn(turn: Any, index: int, count: int, fail: Any) -> SFTTurn:
    name = f"turns[{index}]"
    if not isinstance(turn, dict):
        raise fail(name, f"expected an object with 'text' (and 'bbox' on a crop turn), found {type(turn).__name__}")
    unknown = sorted(set(turn) - _TURN_KEYS)
    if unknown:
        raise fail(f"{name}.{unknown[0]}", f"unknown field; expected {sorted(_TURN_KEYS)}")
    text = turn.get("text")
    if not isinstance(text, str) or not text.strip():
        raise fail(f"{name}.text", f"expected a non-empty string, found {text!r:.60}")
    special = [s for s in SPECIAL_TOKENS if s in text]
    if special:
        raise fail(f"{name}.text", f"contains the special token {special[0]} (the loader adds the stop token)")
    is_crop = index < count - 1
    bbox = turn.get("bbox")
    if not is_crop:
        if bbox is not None:
            raise fail(f"{name}.bbox", "only a crop turn (the first of two) carries a bbox; the last turn is final")
        return SFTTurn(text)
    box = coerce_box(bbox) if not isinstance(bbox, str) else None
    if box is None or any(isinstance(v, str) for v in bbox):
        raise fail(f"{name}.bbox", f"a crop turn needs four numbers [x1, y1, x2, y2], found {bbox!r:.60}")
    x1, y1, x2, y2 = box
    if not (all(0.0 <= v <= 1.0 for v in box) and x1 < x2 and y1 < y2):
        raise fail(f"{name}.bbox", f"expected a normalized box in [0, 1] with x1 < x2, y1 < y2, found {list(box)}")
    answer = parse_zoomiqa_answer(text)
    if answer.bbox is not None and any(abs(a - b) > 1e-6 for a, b in zip(answer.bbox, box)):
        raise fail(f"{name}.bbox", f"{list(box)} differs from the answer's bbox_2d {list(answer.bbox)}")
    return SFTTurn(text, box)


def load_sft_jsonl(
    path: str | Path, *, strict: bool = False, check_format: bool = True, check_image: bool = True,
    image_root: str | Path | None = None, mos_range: tuple[float, float] | None = MOS_RANGE,
) -> LoadResult:
    """Read and validate a trajectory JSONL file. Bad lines (invalid JSON or records) are counted in
    `LoadResult.bad` as ("file:line", message); with `strict` the first one raises SFTDataError. Blank lines
    are skipped. Relative image paths resolve against `image_root` (default: the file's folder)."""
    path = Path(path)
    root = Path(image_root) if image_root else path.parent
    records: list[SFTRecord] = []
    bad: list[tuple[str, str]] = []
    categories: list[str] = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as err:
                    raise SFTDataError(f"{where}: not valid JSON: {err}") from err
                records.append(parse_record(obj, where, root, check_format=check_format,
                                            check_image=check_image, mos_range=mos_range))
            except SFTDataError as err:
                if strict:
                    raise
                bad.append((where, str(err)))
                categories.append(err.category)
    return LoadResult(records, bad, categories)


def load_checked_sft(
    path: str | Path, *, image_root: str | Path | None = None, cache_dir: str | Path | None = None,
    log: Any = None, mos_range: tuple[float, float] | None = MOS_RANGE,
) -> tuple[list[SFTRecord], BadRecords]:
    """The usable records of a trajectory file and the report of the others (`train.data_checks`): lines that
    fail `parse_record` (bad JSON, fields, a missing image, a score outside `mos_range`) and records whose image
    does not decode (every image is decoded once here, `data_checks.check_images`; `cache_dir` keeps the
    verdicts). Nothing raises for bad records (the caller decides with `BadRecords.finish`); a missing file
    raises BadDataError naming `data.train`."""
    if not Path(path).is_file():
        raise BadDataError(f"data.train: the trajectory file {str(path)!r} does not exist")
    result = load_sft_jsonl(path, image_root=image_root, mos_range=mos_range)
    bad = BadRecords(str(path), n_records=len(result.records) + len(result.bad))
    for (where, message), category in zip(result.bad, result.categories):
        bad.add(where, category, message.removeprefix(f"{where}: "))
    records = drop_bad_images(result.records, lambda r: r.image, lambda r: r.where, bad, cache_dir=cache_dir,
                              log=log)
    bad.sort()
    return records, bad


@dataclass(frozen=True)
class SFTExample:
    """One training sequence. Shapes: input_ids / labels / attention_mask [seq] int32; pixel_values
    [patches, 3 * 2 * 14 * 14] float32 and image_grid_thw [images, 3] int64, images in prompt order
    (original, then crop). `crop_pixels` is the crop's pixel box on the original, None without a crop."""

    input_ids: np.ndarray
    labels: np.ndarray
    attention_mask: np.ndarray
    pixel_values: np.ndarray
    image_grid_thw: np.ndarray
    key: str
    mos: float
    crop_pixels: tuple[int, int, int, int] | None = None


def build_examples(
    record: SFTRecord, tokenizer: Any, *, prompts: PromptSet = DEFAULT_PROMPTS, per_round: bool = False,
    seed: int = 0, index: int = 0, merge_size: int = 2, min_pixels: int = MIN_PIXELS, max_pixels: int = MAX_PIXELS,
) -> list[SFTExample]:
    """Training examples of one record (module docstring): one sequence, or one per round with `per_round`.

    A record without a question gets the inference draw `choose_question(Random(f"{seed}/{index}"))`.
    Raises processing.image.ImageLoadError for an unreadable image (the message names the file).
    """
    question = choose_question(random.Random(f"{seed}/{index}"), record.question, prompts)
    key = record.id or record.image
    stop = tokenizer.convert_tokens_to_ids(STOP_TOKEN)
    replies = [list(tokenizer(t.text, add_special_tokens=False)["input_ids"]) + [stop] for t in record.turns]
    original = load_image(record.image)
    sizes = dict(min_pixels=min_pixels, max_pixels=max_pixels, merge_size=merge_size)
    examples: list[SFTExample] = []
    if per_round or not record.crops:
        pixels, grids = preprocess_images([original], **sizes)
        prompt = render_chat(tokenizer, zoomiqa_stage1_messages(question, prompts), _grids(grids),
                             merge_size=merge_size)
        ids, mask, _ = final_sequence(prompt, None, None, replies[0], [0.0] * len(replies[0]))
        examples.append(_example(ids, mask, pixels, grids, key, record.mos, None))
    if record.crops:
        box = crop_box(record.turns[0].bbox, *original.size)
        pixels, grids = preprocess_images([original, crop_and_zoom(original, box)], **sizes)
        messages = zoomiqa_stage2_messages(question, SPLICE_MARK, prompts)
        spliced = splice_assistant_turn(tokenizer, messages, replies[0], [0.0] * len(replies[0]), stop,
                                        _grids(grids), merge_size)
        history_mask = [0] * len(spliced.mask) if per_round else spliced.mask
        ids, mask, _ = final_sequence(spliced.ids, history_mask, None, replies[1], [0.0] * len(replies[1]))
        examples.append(_example(ids, mask, pixels, grids, key, record.mos, box.pixel))
    return examples


def build_example(record: SFTRecord, tokenizer: Any, **kwargs: Any) -> SFTExample:
    """The single full-trajectory example of `record` (`build_examples` without `per_round`)."""
    kwargs.pop("per_round", None)
    return build_examples(record, tokenizer, **kwargs)[0]


def _grids(grids: np.ndarray) -> list[list[int]]:
    return [[int(v) for v in g] for g in grids]


def _example(
    ids: list[int], mask: list[int], pixels: np.ndarray, grids: np.ndarray, key: str, mos: float,
    crop: tuple[int, int, int, int] | None,
) -> SFTExample:
    input_ids = np.asarray(ids, np.int32)
    labels = np.where(np.asarray(mask, bool), input_ids, IGNORE_INDEX).astype(np.int32)
    return SFTExample(input_ids, labels, np.ones_like(input_ids), pixels, np.asarray(grids, np.int64), key, mos,
                      crop)


@dataclass(frozen=True)
class SFTBuckets:
    """Static sizes a batch is padded up to: the sequence length and the total patch count of the batch.
    Patch buckets must be multiples of the merge unit (4). Sizes are picked by the inference engine's one rule
    (`inference.engine.Buckets.pick`: the smallest bucket that holds the value, above the largest one the next
    multiple of it); an example longer than the largest sequence bucket is refused (`collate`)."""

    seq_lengths: tuple[int, ...] = (256, 512, 1024, 2048, 4096)
    patch_counts: tuple[int, ...] = (256, 1024, 2048, 4096, 8192, 16384)


class SequenceTooLongError(ValueError):
    """A sequence longer than the largest sequence bucket; nothing is ever truncated."""


def collate(
    examples: Sequence[SFTExample], buckets: SFTBuckets = SFTBuckets(), *, pad_token_id: int,
    padding_side: str = "right", merge_unit: int = 4,
) -> dict[str, np.ndarray]:
    """Pad a batch to static buckets; NumPy arrays only.

    Returns input_ids / labels / attention_mask [batch, T] int32 (T = the smallest sequence bucket that holds
    the longest example, SequenceTooLongError naming it when none does; pad: `pad_token_id`, label -100, mask 0;
    on the right by default, `padding_side="left"` puts it first), pixel_values [P, D] float32 (every row's
    patches in row order, then zero patches up to the patch bucket P, `Buckets.pick`: past the largest bucket
    the next multiple of it), patch_mask [P] bool (True on real patches), image_grid_thw [images, 3] int64 (all
    images in row order, unpadded: host-side metadata), image_counts [batch] int32, mos [batch] float32.
    """
    if not examples:
        raise ValueError("collate: expected at least one example, found none")
    if padding_side not in ("left", "right"):
        raise ValueError(f"collate: padding_side must be 'left' or 'right', found {padding_side!r}")
    if any(p % merge_unit for p in buckets.patch_counts):
        raise ValueError(f"collate: patch buckets {buckets.patch_counts} must be multiples of {merge_unit}")
    from zoomiqa_jax.inference.engine import Buckets

    longest = max(examples, key=lambda e: len(e.input_ids))
    if len(longest.input_ids) > max(buckets.seq_lengths):
        raise SequenceTooLongError(
            f"collate: sequence length of example {longest.key!r}: {len(longest.input_ids)} exceeds the largest "
            f"bucket {max(buckets.seq_lengths)} of {list(buckets.seq_lengths)}; add a larger bucket to "
            "data.seq_buckets or drop the example (sequences are never truncated)")
    t = Buckets.pick(len(longest.input_ids), buckets.seq_lengths)
    b = len(examples)
    out = {
        "input_ids": np.full((b, t), pad_token_id, np.int32),
        "labels": np.full((b, t), IGNORE_INDEX, np.int32),
        "attention_mask": np.zeros((b, t), np.int32),
    }
    for row, ex in enumerate(examples):
        n = len(ex.input_ids)
        cols = slice(0, n) if padding_side == "right" else slice(t - n, t)
        out["input_ids"][row, cols] = ex.input_ids
        out["labels"][row, cols] = ex.labels
        out["attention_mask"][row, cols] = ex.attention_mask
    pixels = np.concatenate([ex.pixel_values for ex in examples]).astype(np.float32)
    p = Buckets.pick(len(pixels), buckets.patch_counts)
    out["pixel_values"] = np.concatenate([pixels, np.zeros((p - len(pixels), pixels.shape[1]), np.float32)])
    out["patch_mask"] = np.arange(p) < len(pixels)
    out["image_grid_thw"] = np.concatenate([ex.image_grid_thw for ex in examples]).astype(np.int64)
    out["image_counts"] = np.asarray([len(ex.image_grid_thw) for ex in examples], np.int32)
    out["mos"] = np.asarray([ex.mos for ex in examples], np.float32)
    return out


def add_model_inputs(batch: dict[str, Any], config: Any, patch_buckets: Sequence[int] | None = None) -> dict[str, Any]:
    """`batch` plus `position_ids` [3, batch, T] (M-RoPE, `get_rope_index`) and `vision_meta` (padded to the
    patch bucket, as the inference engine does), the inputs `train.sft.forward_loss` reads."""
    from zoomiqa_jax.inference.engine import Buckets, pad_vision_meta
    from zoomiqa_jax.model import get_rope_index, vision_metadata

    grids = batch["image_grid_thw"]
    position_ids, _ = get_rope_index(config, batch["input_ids"], batch["attention_mask"], grids)
    n_patches = len(batch["pixel_values"])
    chunk = Buckets.pick(int(grids.prod(-1).max()), patch_buckets or SFTBuckets().patch_counts)
    meta = pad_vision_meta(vision_metadata(grids, config.vision), n_patches, config.vision.merge_unit,
                           full_chunk=chunk if n_patches > 3 * chunk else None)
    return dict(batch, position_ids=position_ids, vision_meta=meta)


def iter_examples(
    records: Iterable[SFTRecord], tokenizer: Any, *, bad: list[tuple[str, str]] | None = None, strict: bool = False,
    **kwargs: Any,
) -> Iterator[tuple[SFTRecord, SFTExample]]:
    """(record, example) for every example of every record, in order (`kwargs` as `build_examples`).

    A record whose image cannot be read or processed (ImageLoadError, aspect ratio over 200) is skipped and
    appended to `bad` as (record.where, message); with `strict` it raises.
    """
    for index, record in enumerate(records):
        try:
            built = build_examples(record, tokenizer, index=index, **kwargs)
        except ValueError as err:  # ImageLoadError is a ValueError; so is the processor's aspect-ratio limit
            if strict:
                raise
            if bad is not None:
                bad.append((record.where, f"{record.where}: field 'image': {err}"))
            continue
        for example in built:
            yield record, example
