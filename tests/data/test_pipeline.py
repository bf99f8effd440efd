"""grain pipeline: determinism by seed, exact shard partition, checkpoint / restore, bad images counted."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zoomiqa_jax.data.labels import LabelRecord
from zoomiqa_jax.data.pipeline import PipelineConfig, iterate, num_batches, shard_indices

SMALL = {"min_pixels": 28 * 28, "max_pixels": 56 * 56}


def _png(i: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((30 + i % 5, 40, 3), (i * 7) % 255, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def source() -> list[dict]:
    """20 records in the tfds builders' shape (image bytes, key, mos, mos_norm); record 7 is undecodable."""
    records = [{"image": _png(i), "key": f"img{i:02d}", "mos": 10.0 * i, "mos_norm": 1 + i / 5} for i in range(20)]
    records[7]["image"] = b"not an image"
    return records


def _keys(batches: list[dict]) -> list[list[str]]:
    return [b["key"] for b in batches]


def test_same_seed_gives_identical_batches(source: list[dict]) -> None:
    config = PipelineConfig(batch_size=4, seed=3, shard_index=0, shard_count=1, **SMALL)
    first, second = list(iterate(source, config)), list(iterate(source, config))
    assert _keys(first) == _keys(second)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a["pixel_values"], b["pixel_values"])
        np.testing.assert_array_equal(a["grid_thw"], b["grid_thw"])
        np.testing.assert_array_equal(a["mos"], b["mos"])
    other = list(iterate(source, PipelineConfig(batch_size=4, seed=4, shard_index=0, shard_count=1, **SMALL)))
    assert _keys(other) != _keys(first)
    assert sorted(sum(_keys(other), [])) == sorted(sum(_keys(first), []))


def test_epochs_reshuffle_and_cover_everything(source: list[dict]) -> None:
    config = PipelineConfig(batch_size=5, seed=0, num_epochs=2, patches=False, shard_index=0, shard_count=1)
    keys = sum(_keys(list(iterate(source, config))), [])
    assert len(keys) == 40
    assert sorted(keys[:20]) == sorted(keys[20:]) == sorted(r["key"] for r in source)
    assert keys[:20] != keys[20:]


@pytest.mark.parametrize("count", [1, 3, 4])
def test_shards_partition_the_data_exactly(source: list[dict], count: int) -> None:
    seen: list[str] = []
    for index in range(count):
        config = PipelineConfig(batch_size=3, seed=1, shard_index=index, shard_count=count, patches=False)
        batches = list(iterate(source, config))
        assert len(batches) == num_batches(len(source), config)
        seen += sum(_keys(batches), [])
    assert len(seen) == len(set(seen)) == len(source)


def test_shard_drop_remainder_gives_equal_shards() -> None:
    sizes = [len(shard_indices(10, i, 3, drop_remainder=True)) for i in range(3)]
    assert sizes == [3, 3, 3]
    assert sorted(sum((list(shard_indices(10, i, 3)) for i in range(3)), [])) == list(range(10))


def test_restored_iterator_continues_exactly(source: list[dict]) -> None:
    config = PipelineConfig(batch_size=3, seed=5, shard_index=0, shard_count=1, **SMALL)
    reference = list(iterate(source, config))
    it = iterate(source, config)
    head = [next(it) for _ in range(3)]
    state = it.get_state()
    rest = list(iterate(source, config, state=state))
    assert _keys(head + rest) == _keys(reference)
    for a, b in zip(rest, reference[3:]):
        np.testing.assert_array_equal(a["pixel_values"], b["pixel_values"])
    restored = iterate(source, config, state=state)
    list(restored)
    assert restored.n_bad == 1  # the bad-record log travels with the state


def test_bad_image_is_counted_not_fatal(source: list[dict]) -> None:
    it = iterate(source, PipelineConfig(batch_size=8, shuffle=False, shard_index=0, shard_count=1, **SMALL))
    batches = list(it)
    assert it.n_bad == 1 and it.bad[0][0] == "img07" and "cannot decode" in it.bad[0][1]
    first = batches[0]
    assert first["valid"].tolist() == [True] * 7 + [False]
    assert first["grid_thw"].shape == (7, 3)
    assert first["pixel_values"].shape[0] == int(np.prod(first["grid_thw"], axis=1).sum())
    np.testing.assert_allclose(first["mos"], [1 + i / 5 for i in range(8)], rtol=1e-6)  # mos_norm wins


def test_label_records_and_missing_files(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((28, 28, 3), np.uint8)).save(tmp_path / "a.png")
    records = [LabelRecord(tmp_path / "a.png", 3.0, "set", "labels.jsonl:1"),
               LabelRecord(tmp_path / "gone.png", 2.0, "set", "labels.jsonl:2")]
    it = iterate(records, PipelineConfig(batch_size=2, shuffle=False, patches=False, shard_index=0, shard_count=1))
    (batch,) = list(it)
    assert batch["key"] == ["labels.jsonl:1", "labels.jsonl:2"]
    assert batch["images"][0].shape == (28, 28, 3) and batch["images"][1] is None
    assert batch["dataset"] == ["set", "set"]
    assert it.n_bad == 1 and "does not exist" in it.bad[0][1]


def test_worker_processes_match_and_restore(source: list[dict]) -> None:
    config = PipelineConfig(batch_size=4, seed=2, worker_count=2, shard_index=0, shard_count=1, **SMALL)
    reference = _keys(list(iterate(source, config)))
    assert sorted(sum(reference, [])) == sorted(r["key"] for r in source)
    it = iterate(source, config)
    head = [next(it)["key"] for _ in range(2)]
    state = it.get_state()
    assert head + _keys(list(iterate(source, config, state=state))) == reference


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        PipelineConfig(batch_size=0)
    with pytest.raises(ValueError, match="shard_index"):
        PipelineConfig(shard_index=3, shard_count=3)
