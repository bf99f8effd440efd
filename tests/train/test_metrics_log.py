"""Metrics: TensorBoard event files read back frame by frame (length and data CRCs checked with a CRC-32C written
here, Events parsed with the protobuf schema), JSONL lines, the progress bar."""

import json
import struct
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from zoomiqa_jax.train.metrics_log import MetricsLogger, progress_bar, show_metrics


def _crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli, reversed polynomial 0x82F63B78), bit by bit: independent of the writer's own CRC."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


def _masked(data: bytes) -> int:
    crc = _crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _read_events(path: Path) -> list:
    """The Events of a TFRecord file: uint64 length | masked crc(length) | Event | masked crc(Event)."""
    from tensorboardX.proto.event_pb2 import Event

    raw, events, i = path.read_bytes(), [], 0
    while i < len(raw):
        header = raw[i:i + 8]
        (length,) = struct.unpack("<Q", header)
        if struct.unpack("<I", raw[i + 8:i + 12])[0] != _masked(header):
            raise ValueError(f"{path}: bad length CRC at byte {i}")
        data = raw[i + 12:i + 12 + length]
        if struct.unpack("<I", raw[i + 12 + length:i + 16 + length])[0] != _masked(data):
            raise ValueError(f"{path}: bad data CRC at byte {i}")
        events.append(Event.FromString(data))
        i += 16 + length
    return events


def test_reader_crc32c_known_values():
    assert _crc32c(b"123456789") == 0xE3069283  # the standard check value
    assert _crc32c(b"") == 0
    assert _crc32c(bytes(32)) == 0x8A9136AA  # RFC 3720 B.4: 32 bytes of zeros


def test_logger_writes_events_and_jsonl(tmp_path):
    with MetricsLogger(tmp_path, enabled=True) as log:
        log.log(10, {"loss": jnp.float32(1.5), "lr": 1e-5, "tokens_per_s": np.float64(1234.0)})
        log.log(20, {"loss": 0.75, "grad_norm": float("nan")})
    files = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert len(files) == 1
    events = _read_events(files[0])
    assert events[0].file_version == "brain.Event:2"
    assert [e.step for e in events[1:]] == [10, 20]
    scalars = [{v.tag: v.simple_value for v in e.summary.value} for e in events[1:]]  # one Event per log call
    assert scalars[0] == {"loss": 1.5, "lr": pytest.approx(1e-5, rel=1e-7), "tokens_per_s": 1234.0}
    assert scalars[1]["loss"] == 0.75 and np.isnan(scalars[1]["grad_norm"])
    assert all(e.wall_time > 1e9 for e in events)
    # a corrupted byte inside the first frame's data fails its CRC
    raw = bytearray(files[0].read_bytes())
    (length,) = struct.unpack("<Q", raw[:8])
    raw[12 + length // 2] ^= 0xFF
    files[0].write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="CRC"):
        _read_events(files[0])
    lines = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines == [{"step": 10, "loss": 1.5, "lr": pytest.approx(1e-5), "tokens_per_s": 1234.0},
                     {"step": 20, "loss": 0.75, "grad_norm": "nan"}]


def test_logger_without_tensorboard_writes_only_jsonl(tmp_path):
    with MetricsLogger(tmp_path, tensorboard=False, enabled=True) as log:
        log.log(1, {"loss": 2.0})
        log.event(1, "bad_data", {"skipped": 3})
    assert not (tmp_path / "tensorboard").exists()
    lines = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines == [{"step": 1, "loss": 2.0}, {"step": 1, "event": "bad_data", "skipped": 3}]


def test_logger_off_process_zero_writes_nothing(tmp_path):
    with MetricsLogger(tmp_path / "off", enabled=False) as log:
        assert log.log(1, {"loss": 2.0}) == {"loss": 2.0}
    assert not (tmp_path / "off").exists()


def test_progress_bar_shows_loss_lr_tokens():
    bar = progress_bar(total=4, enabled=True)
    show_metrics(bar, {"loss": 0.5, "lr": 2.5e-6, "tokens_per_s": 999.4})
    assert bar.n == 1 and "loss=0.5000" in str(bar) and "lr=2.50e-06" in str(bar) and "tok/s=999" in str(bar)
    bar.close()
