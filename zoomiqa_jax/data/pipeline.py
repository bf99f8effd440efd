"""grain input pipelines over any random-access source of labelled images.

    source (Sequence / grain RandomAccessDataSource of records)
      -> shard: records [shard_index::shard_count]        (ShardByJaxProcess, or an explicit index / count)
      -> shuffle(seed), reshuffled every epoch            (grain's index shuffle: no buffer, exact, by seed)
      -> repeat(num_epochs)
      -> decode (+ Qwen2-VL patches)                      (`ReadOptions.num_threads` worker threads)
      -> batch(batch_size)                                (+ `worker_count` processes via grain `mp_prefetch`)

A record is a dict (a tfds builder's example, a `LabelRecord.to_dict()`) or an object with the same
attributes (`LabelRecord`). Fields read:

    image     encoded bytes (the ORIGINAL file bytes), a path (str / Path), a PIL image or a uint8 array
    key       a stable id (else `source`, else the image path, else the record's position in the source)
    mos       the score; `mos_norm` (the [1, 5] normalized score) wins when present
    dataset, question, distortion_class, severity   carried through when present

A record whose image cannot be read is never fatal: its example has `error` set (and no pixels), its batch
row has `valid` False, and `PipelineIterator.bad` lists (key, error) for every one seen so far. The
iterator state (`get_state` / `set_state`) holds grain's position and that list, so a restored iterator
continues with exactly the batches (and bad-record counts) the original would have produced.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import grain
import numpy as np
from PIL import Image

from zoomiqa_jax.processing.image import (
    MAX_PIXELS,
    MIN_PIXELS,
    PATCH_SIZE,
    TEMPORAL_PATCH_SIZE,
    ImageLoadError,
    load_image,
    preprocess_images,
)

META_FIELDS = ("dataset", "question", "distortion_class", "severity")


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """How the pipeline reads, orders, shards and batches.

    `shard_index` / `shard_count` None shard by JAX process (`grain.sharding.ShardByJaxProcess`): one shard
    per host; pass `shard_index = process_index * local_dp + local_rank`, `shard_count = hosts * local_dp` to
    give every data-parallel device its own shard. With `drop_remainder_shards` every shard has exactly
    floor(n / shard_count) records (equal step counts across hosts); otherwise the shards partition all n.
    `num_epochs` None repeats forever. `patches` False stops after decoding: examples carry the RGB uint8
    array `[h, w, 3]` (what the Zoom-IQA crop needs) instead of Qwen2-VL patches.
    """

    batch_size: int = 8
    seed: int = 0
    shuffle: bool = True
    num_epochs: int | None = 1
    shard_index: int | None = None
    shard_count: int | None = None
    drop_remainder_shards: bool = False
    drop_remainder: bool = False
    patches: bool = True
    min_pixels: int = MIN_PIXELS
    max_pixels: int = MAX_PIXELS
    merge_size: int = 2
    num_threads: int = 4
    prefetch_buffer_size: int = 16
    worker_count: int = 0

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"PipelineConfig.batch_size: expected >= 1, found {self.batch_size}")
        if self.num_epochs is not None and self.num_epochs < 1:
            raise ValueError(f"PipelineConfig.num_epochs: expected >= 1 or None, found {self.num_epochs}")
        if (self.shard_index is None) != (self.shard_count is None):
            raise ValueError("PipelineConfig: give both shard_index and shard_count, or neither")
        if self.shard_count is not None and not 0 <= self.shard_index < self.shard_count:  # type: ignore[operator]
            raise ValueError(
                f"PipelineConfig.shard_index: expected 0 <= index < {self.shard_count}, found {self.shard_index}"
            )

    def shard_options(self) -> grain.sharding.ShardOptions:
        """Explicit shard options, or one shard per JAX process."""
        if self.shard_count is None:
            return grain.sharding.ShardByJaxProcess(drop_remainder=self.drop_remainder_shards)
        return grain.sharding.ShardOptions(self.shard_index, self.shard_count, self.drop_remainder_shards)


# ------------------------------------------------------------------------------------------- one record


def _get(record: Any, name: str, default: Any = None) -> Any:
    if isinstance(record, dict):
        return record.get(name, default)
    return getattr(record, name, default)


def record_key(record: Any, index: int) -> str:
    """The record's stable id: `key`, else `source`, else its image path, else its position in the source."""
    for name in ("key", "source"):
        value = _get(record, name)
        if value is not None:
            return value.decode() if isinstance(value, bytes) else str(value)
    image = _get(record, "image")
    if isinstance(image, str | os.PathLike):
        return str(image)
    return str(index)


def record_score(record: Any) -> float:
    """`mos_norm` when present, else `mos`, as float; NaN when neither is there (unlabelled data)."""
    for name in ("mos_norm", "mos"):
        value = _get(record, name)
        if value is not None:
            return float(value)
    return float("nan")


def decode_image(value: Any, key: str = "?") -> Image.Image:
    """An RGB PIL image from encoded bytes, a path, a PIL image or an array; ImageLoadError names `key`."""
    if value is None:
        raise ImageLoadError(f"record {key!r}: no 'image' field")
    if isinstance(value, bytes | bytearray | memoryview | np.bytes_):
        try:
            with Image.open(io.BytesIO(bytes(value))) as opened:
                opened.load()
                return load_image(opened)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
            raise ImageLoadError(f"record {key!r}: cannot decode image bytes: {type(err).__name__}: {err}") from err
    if isinstance(value, np.ndarray) and value.dtype.kind in "SO" and value.ndim == 0:
        return decode_image(value.item(), key)
    if isinstance(value, str | os.PathLike | Path | Image.Image | np.ndarray):
        return load_image(value)
    raise ImageLoadError(f"record {key!r}: field 'image' has unsupported type {type(value).__name__}")


def make_example(record: Any, index: int, config: PipelineConfig) -> dict[str, Any]:
    """Decode one record into an example dict (runs in grain worker threads). Never raises for a bad image."""
    key = record_key(record, index)
    example: dict[str, Any] = {"index": index, "key": key, "mos": record_score(record), "error": None,
                               "patches": config.patches, "image": None, "pixel_values": None, "grid_thw": None}
    for name in META_FIELDS:
        value = _get(record, name)
        example[name] = value.decode() if isinstance(value, bytes) else value
    raw = _get(record, "image")
    example["path"] = str(raw) if isinstance(raw, str | os.PathLike) else None
    try:
        image = decode_image(raw, key)
        if config.patches:
            pixels, grids = preprocess_images(image, min_pixels=config.min_pixels, max_pixels=config.max_pixels,
                                              merge_size=config.merge_size)
            example["pixel_values"], example["grid_thw"] = pixels, grids[0]
        else:
            example["image"] = np.asarray(image, np.uint8)  # [h, w, 3]
    except (ImageLoadError, ValueError, OSError) as err:
        example["error"] = str(err)
    return example


def collate(examples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch examples: per-row arrays and lists; patches of the valid rows concatenated in row order.

    index [b] int64, mos [b] float32, valid [b] bool, key / path (image path or None) / error / meta fields:
    lists of b;
    patches mode: pixel_values [sum patches, dim] float32, grid_thw [n_valid, 3] int64;
    decode mode: images, a list of b uint8 arrays [h, w, 3] (None for a bad row).
    """
    batch: dict[str, Any] = {
        "index": np.asarray([e["index"] for e in examples], np.int64),
        "mos": np.asarray([e["mos"] for e in examples], np.float32),
        "valid": np.asarray([e["error"] is None for e in examples], bool),
        "key": [e["key"] for e in examples],
        "path": [e["path"] for e in examples],
        "error": [e["error"] for e in examples],
    }
    for name in META_FIELDS:
        batch[name] = [e[name] for e in examples]
    ok = [e for e in examples if e["error"] is None]
    if examples and examples[0]["patches"]:
        dim = 3 * TEMPORAL_PATCH_SIZE * PATCH_SIZE**2
        batch["pixel_values"] = np.concatenate([np.zeros((0, dim), np.float32)] + [e["pixel_values"] for e in ok])
        batch["grid_thw"] = np.asarray([e["grid_thw"] for e in ok], np.int64).reshape(-1, 3)
    else:
        batch["images"] = [e["image"] for e in examples]
    return batch


# --------------------------------------------------------------------------------------------- the dataset


def shard_indices(n: int, shard_index: int, shard_count: int, drop_remainder: bool = False) -> range:
    """Source positions of one shard: strided, so the shards partition range(n) (or its first
    floor(n / count) * count positions with `drop_remainder`)."""
    end = (n // shard_count) * shard_count if drop_remainder else n
    return range(shard_index, end, shard_count)


class _Decode(grain.transforms.MapWithIndex):
    """grain transform (picklable for worker processes): (position, (source index, record)) -> example."""

    def __init__(self, config: PipelineConfig) -> None:
        self.config = config

    def map_with_index(self, index: int, element: tuple[int, Any]) -> dict[str, Any]:
        del index
        source_index, record = element
        return make_example(record, source_index, self.config)


class _Indexed(grain.sources.RandomAccessDataSource):
    """A view of `source` at `positions`, yielding (source index, record)."""

    def __init__(self, source: Sequence[Any], positions: range) -> None:
        self.source, self.positions = source, positions

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int) -> tuple[int, Any]:
        j = self.positions[i]
        return j, self.source[j]


def make_dataset(source: Sequence[Any], config: PipelineConfig) -> grain.IterDataset:
    """The grain pipeline of the module docstring; iterate it with `PipelineIterator(dataset)`."""
    shard = config.shard_options()
    positions = shard_indices(len(source), shard.shard_index, shard.shard_count, shard.drop_remainder)
    ds = grain.MapDataset.source(_Indexed(source, positions))
    if config.shuffle:
        ds = ds.shuffle(seed=config.seed)  # reshuffled per epoch by the repeat below
    if config.num_epochs != 1:
        ds = ds.repeat(config.num_epochs)
    ds = ds.map_with_index(_Decode(config))
    read = grain.ReadOptions(num_threads=config.num_threads, prefetch_buffer_size=config.prefetch_buffer_size)
    it = ds.to_iter_dataset(read).batch(config.batch_size, drop_remainder=config.drop_remainder, batch_fn=collate)
    if config.worker_count > 0:
        from absl import flags

        if not flags.FLAGS.is_parsed():  # grain reads absl flags in its worker processes
            flags.FLAGS.mark_as_parsed()
        it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=config.worker_count))
    return it


def num_batches(n_records: int, config: PipelineConfig) -> int | None:
    """Batches one pass of the pipeline yields (None when it repeats forever)."""
    if config.num_epochs is None:
        return None
    shard = config.shard_options()
    n = len(shard_indices(n_records, shard.shard_index, shard.shard_count, shard.drop_remainder)) * config.num_epochs
    return n // config.batch_size if config.drop_remainder else math.ceil(n / config.batch_size)


class PipelineIterator(Iterator[dict[str, Any]]):
    """Batches of a pipeline, counting bad records; checkpointable with `get_state` / `set_state`."""

    def __init__(self, dataset: grain.IterDataset) -> None:
        self._it = iter(dataset)
        self.bad: list[tuple[str, str]] = []

    def __iter__(self) -> PipelineIterator:
        return self

    def __next__(self) -> dict[str, Any]:
        batch = next(self._it)
        self.bad.extend((k, e) for k, e in zip(batch["key"], batch["error"]) if e is not None)
        return batch

    @property
    def n_bad(self) -> int:
        return len(self.bad)

    def get_state(self) -> dict[str, Any]:
        """JSON-serializable state: grain's iterator state and the bad records seen so far."""
        return {"grain": self._it.get_state(), "bad": [list(b) for b in self.bad]}

    def set_state(self, state: dict[str, Any]) -> None:
        """Continue from `state` (from `get_state` of an iterator over the same source and config)."""
        if not isinstance(state, dict) or "grain" not in state:
            raise ValueError(f"pipeline state: expected a dict with key 'grain', found {type(state).__name__}")
        self._it.set_state(state["grain"])
        self.bad = [(str(k), str(e)) for k, e in state.get("bad", [])]


def iterate(source: Sequence[Any], config: PipelineConfig, state: dict[str, Any] | None = None) -> PipelineIterator:
    """A checkpointable batch iterator over `source` (optionally restored from `state`)."""
    it = PipelineIterator(make_dataset(source, config))
    if state is not None:
        it.set_state(state)
    return it
