"""Atomic output folders get normal permissions and survive a failed swap; hostile safetensors headers are
rejected with SafetensorsError naming the file."""

import json
import os
import struct

import pytest

from zoomiqa_jax.checkpoint import hf
from zoomiqa_jax.checkpoint.safetensors_io import SafetensorsError, SafetensorsFile


def test_atomic_output_dir_has_umask_mode(tmp_path):
    out = tmp_path / "out"
    with hf.atomic_output_dir(out) as tmp:
        (tmp / "f").write_text("x")
    umask = os.umask(0)
    os.umask(umask)
    assert (out.stat().st_mode & 0o777) == (0o777 & ~umask)


def test_failed_swap_restores_the_previous_output(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("previous")
    real_replace = os.replace

    def flaky(src, dst):
        if ".tmp-" in str(src):  # the new result moving into place fails
            raise OSError("disk full")
        return real_replace(src, dst)

    monkeypatch.setattr(hf.os, "replace", flaky)
    with pytest.raises(OSError, match="disk full"):
        with hf.atomic_output_dir(out, overwrite=True) as tmp:
            (tmp / "new.txt").write_text("new")
    assert (out / "old.txt").read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def _write(path, header: dict, data: bytes) -> None:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)


@pytest.mark.parametrize("shape,data_len", [([2**70], 8), ([-2, -2], 16), ([2**62 + 1, 4], 4), ([True, 2], 2),
                                            ([1.5], 4)])
def test_hostile_shapes_are_rejected(tmp_path, shape, data_len):
    path = tmp_path / "bad.safetensors"
    _write(path, {"t": {"dtype": "U8", "shape": shape, "data_offsets": [0, data_len]}}, b"\0" * data_len)
    with pytest.raises(SafetensorsError, match="bad.safetensors"):
        SafetensorsFile(path)
