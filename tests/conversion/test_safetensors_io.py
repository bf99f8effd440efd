"""Our NumPy safetensors reader/writer agrees with the safetensors package in both directions."""

import json
import struct

import ml_dtypes
import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.numpy import save_file

from zoomiqa_jax.checkpoint.safetensors_io import (
    INDEX_FILE,
    SINGLE_FILE,
    CheckpointReader,
    SafetensorsError,
    SafetensorsFile,
    TensorSpec,
    parse_size,
    write_checkpoint,
)


def sample_tensors():
    rng = np.random.default_rng(0)
    return {
        "f32": rng.standard_normal((3, 5)).astype(np.float32),
        "bf16": rng.standard_normal((4, 7)).astype(ml_dtypes.bfloat16),
        "f16": rng.standard_normal((6,)).astype(np.float16),
        "f64": rng.standard_normal((2, 2)),
        "i64": np.arange(6, dtype=np.int64).reshape(2, 3),
        "i32": np.arange(5, dtype=np.int32),
        "u8": np.arange(9, dtype=np.uint8),
        "bool": np.array([True, False, True]),
        "scalar": np.array(2.5, np.float32),
        "empty": np.zeros((0, 3), np.float32),
    }


def write(tensors, out, **kw):
    return write_checkpoint(out, [TensorSpec(k, v.shape, v.dtype) for k, v in tensors.items()], tensors.items(), **kw)


def test_safetensors_package_reads_what_we_write(tmp_path):
    tensors = sample_tensors()
    assert write(tensors, tmp_path) == [SINGLE_FILE]
    with safe_open(tmp_path / SINGLE_FILE, "np") as f:
        assert f.metadata() == {"format": "pt"}
        for k, v in tensors.items():
            if k != "bf16":
                got = f.get_tensor(k)
                assert got.dtype == v.dtype and np.array_equal(got, v), k
    with safe_open(tmp_path / SINGLE_FILE, "pt") as f:
        got = f.get_tensor("bf16")
        assert got.dtype == torch.bfloat16
        assert np.array_equal(got.float().numpy(), tensors["bf16"].astype(np.float32))


def test_we_read_what_we_and_the_safetensors_package_write(tmp_path):
    tensors = sample_tensors()
    write(tensors, tmp_path)
    with CheckpointReader(tmp_path) as r:
        assert r.keys() == list(tensors)
        for k, v in tensors.items():
            got = r.get_tensor(k)
            assert got.dtype == v.dtype and got.shape == v.shape and got.flags.writeable, k
            assert np.array_equal(got.reshape(-1).view(np.uint8), v.reshape(-1).view(np.uint8)), k
    theirs = {k: v for k, v in tensors.items() if k != "bf16"}
    save_file(theirs, tmp_path / "theirs.safetensors")
    with SafetensorsFile(tmp_path / "theirs.safetensors") as f:
        for k, v in theirs.items():
            assert np.array_equal(f.get_tensor(k), v), k


def test_sharded_write_has_hf_names_and_index(tmp_path):
    tensors = sample_tensors()
    files = write(tensors, tmp_path, max_shard_bytes=64)
    shards = [f for f in files if f != INDEX_FILE]
    n = len(shards)
    assert n > 2 and shards == [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
    index = json.loads((tmp_path / INDEX_FILE).read_text())
    assert index["metadata"]["total_size"] == sum(v.nbytes for v in tensors.values())
    assert set(index["weight_map"]) == set(tensors) and set(index["weight_map"].values()) == set(shards)
    for shard in shards:
        with safe_open(tmp_path / shard, "pt") as f:
            assert {index["weight_map"][k] for k in f.keys()} == {shard}
    with CheckpointReader(tmp_path) as r:
        assert np.array_equal(r.get_tensor("i64"), tensors["i64"])


def test_index_that_disagrees_with_shards_names_every_key(tmp_path):
    write(sample_tensors(), tmp_path, max_shard_bytes=64)
    index = json.loads((tmp_path / INDEX_FILE).read_text())
    index["weight_map"]["ghost"] = index["weight_map"]["f32"]
    del index["weight_map"]["i32"]
    (tmp_path / INDEX_FILE).write_text(json.dumps(index))
    with pytest.raises(SafetensorsError) as e:
        CheckpointReader(tmp_path)
    assert "ghost" in str(e.value) and "i32" in str(e.value) and INDEX_FILE in str(e.value)


def test_corrupt_files_are_reported_with_file_and_key(tmp_path):
    write({"w": np.ones((4, 4), np.float32)}, tmp_path)
    path = tmp_path / SINGLE_FILE
    raw = path.read_bytes()
    path.write_bytes(raw[:-8])  # truncated data
    with pytest.raises(SafetensorsError, match=r"model\.safetensors: tensor 'w'"):
        SafetensorsFile(path)
    path.write_bytes(struct.pack("<Q", 10**9) + raw[8:])  # header length past the end
    with pytest.raises(SafetensorsError, match="header length"):
        SafetensorsFile(path)
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(SafetensorsError, match="empty_dir: expected model.safetensors or"):
        CheckpointReader(tmp_path / "empty_dir")


def test_parse_size():
    assert parse_size("4GB") == 4 * 10**9
    assert parse_size("500MiB") == 500 * 2**20
    assert parse_size("1.5kb") == 1500
    assert parse_size("123") == 123
    for bad in ("", "GB", "-1GB", "4XB"):
        with pytest.raises(ValueError, match="expected a positive number"):
            parse_size(bad)
