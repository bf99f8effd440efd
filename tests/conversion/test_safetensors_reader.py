"""The safe_open-based reader: float8 tensors (read past safetensors' numpy API) come back bit for bit, and
reading a file tensor by tensor leaves none of it mapped (the memory bound of docs/conversion.md)."""

from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from safetensors import safe_open

from zoomiqa_jax.checkpoint.safetensors_io import SINGLE_FILE, CheckpointReader, TensorSpec, write_checkpoint


def _write(tensors: dict, out: Path) -> Path:
    write_checkpoint(out, [TensorSpec(k, v.shape, v.dtype) for k, v in tensors.items()], tensors.items())
    return out / SINGLE_FILE


def test_float8_tensors_read_back_bit_for_bit(tmp_path):
    rng = np.random.default_rng(1)
    tensors = {
        "before": rng.standard_normal((3, 3)).astype(np.float32),
        "e4m3": rng.standard_normal((5, 7)).astype(ml_dtypes.float8_e4m3fn),
        "bf16": rng.standard_normal((2, 9)).astype(ml_dtypes.bfloat16),
        "e5m2": rng.standard_normal((11,)).astype(ml_dtypes.float8_e5m2),
        "e5m2_empty": np.zeros((0, 4), ml_dtypes.float8_e5m2),
    }
    path = _write(tensors, tmp_path)
    with safe_open(path, "numpy") as f:  # the package agrees on what the header says
        assert {k: f.get_slice(k).get_dtype() for k in f.keys()} == {
            "before": "F32", "e4m3": "F8_E4M3", "bf16": "BF16", "e5m2": "F8_E5M2", "e5m2_empty": "F8_E5M2"}
    with CheckpointReader(tmp_path) as r:
        for k, v in tensors.items():
            got = r.get_tensor(k)
            assert got.dtype == v.dtype and got.shape == v.shape and got.flags.writeable, k
            assert got.tobytes() == v.tobytes(), k


def _rss_file_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1])
    raise AssertionError("/proc/self/status has no RssFile line")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_reading_every_tensor_leaves_the_file_unmapped(tmp_path):
    tensors = {f"t{i}": np.full((1024, 1024, 4), i, np.float32) for i in range(4)}  # 4 x 16 MiB
    _write(tensors, tmp_path)
    with CheckpointReader(tmp_path) as r:
        before = _rss_file_kib()
        for k in r.keys():
            assert r.get_tensor(k)[0, 0, 0] == int(k[1:])
        grown = _rss_file_kib() - before
    assert grown < 8 * 1024, f"file-backed RSS grew {grown} KiB reading a 64 MiB file (an mmap reader: ~65536)"
