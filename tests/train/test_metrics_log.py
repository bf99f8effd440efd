"""Metrics: TensorBoard event files parse back (own reader and protobuf's), JSONL lines, FLOPs by hand."""

import json
import struct

import jax.numpy as jnp
import numpy as np
import pytest

from zoomiqa_jax.config import ModelConfig
from zoomiqa_jax.train.metrics_log import (
    MetricsLogger,
    crc32c,
    device_peak_flops,
    encode_event,
    estimate_flops_per_token,
    estimate_vision_flops,
    mfu,
    progress_bar,
    read_events,
    show_metrics,
    text_matmul_params,
)


def test_crc32c_known_values():
    assert crc32c(b"123456789") == 0xE3069283  # the standard check value
    assert crc32c(b"") == 0
    assert crc32c(bytes(32)) == 0x8A9136AA  # RFC 3720 B.4: 32 bytes of zeros


def _event_class():
    """The Event message built at run time from its .proto fields, to check our hand encoding independently."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(name="tb_event_test.proto", package="tbtest")
    value = fdp.message_type.add(name="Value")
    value.field.add(name="tag", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    value.field.add(name="simple_value", number=2, type=F.TYPE_FLOAT, label=F.LABEL_OPTIONAL)
    summary = fdp.message_type.add(name="Summary")
    summary.field.add(name="value", number=1, type=F.TYPE_MESSAGE, type_name=".tbtest.Value", label=F.LABEL_REPEATED)
    event = fdp.message_type.add(name="Event")
    event.field.add(name="wall_time", number=1, type=F.TYPE_DOUBLE, label=F.LABEL_OPTIONAL)
    event.field.add(name="step", number=2, type=F.TYPE_INT64, label=F.LABEL_OPTIONAL)
    event.field.add(name="file_version", number=3, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    event.field.add(name="summary", number=5, type=F.TYPE_MESSAGE, type_name=".tbtest.Summary",
                    label=F.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tbtest.Event"))


def test_event_encoding_parses_with_protobuf():
    Event = _event_class()
    msg = Event.FromString(encode_event(1234.5, 300000, {"loss": 0.25, "train/lr": 2.5e-6}))
    assert msg.wall_time == 1234.5 and msg.step == 300000
    assert [(v.tag, v.simple_value) for v in msg.summary.value] == [
        ("loss", 0.25), ("train/lr", pytest.approx(2.5e-6, rel=1e-7))]
    assert Event.FromString(encode_event(0.0, 0, file_version="brain.Event:2")).file_version == "brain.Event:2"


def test_logger_writes_events_and_jsonl(tmp_path):
    with MetricsLogger(tmp_path, enabled=True) as log:
        log.log(10, {"loss": jnp.float32(1.5), "lr": 1e-5, "tokens_per_s": np.float64(1234.0)})
        log.log(20, {"loss": 0.75, "grad_norm": float("nan")})
    files = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert len(files) == 1
    events = read_events(files[0])
    assert events[0]["file_version"] == "brain.Event:2"
    assert [e["step"] for e in events[1:]] == [10, 20]
    assert events[1]["scalars"] == {"loss": 1.5, "lr": pytest.approx(1e-5, rel=1e-7), "tokens_per_s": 1234.0}
    assert events[2]["scalars"]["loss"] == 0.75 and np.isnan(events[2]["scalars"]["grad_norm"])
    # each frame: length, its masked CRC, data, its masked CRC (a corrupted byte is caught)
    raw = bytearray(files[0].read_bytes())
    (length,) = struct.unpack("<Q", raw[:8])
    raw[12 + length // 2] ^= 0xFF
    files[0].write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="CRC"):
        read_events(files[0])
    lines = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines == [{"step": 10, "loss": 1.5, "lr": pytest.approx(1e-5), "tokens_per_s": 1234.0},
                     {"step": 20, "loss": 0.75, "grad_norm": "nan"}]


def test_logger_off_process_zero_writes_nothing(tmp_path):
    with MetricsLogger(tmp_path / "off", enabled=False) as log:
        assert log.log(1, {"loss": 2.0}) == {"loss": 2.0}
    assert not (tmp_path / "off").exists()


def test_progress_bar_shows_loss_lr_tokens():
    bar = progress_bar(total=4, enabled=True)
    show_metrics(bar, {"loss": 0.5, "lr": 2.5e-6, "tokens_per_s": 999.4})
    assert bar.n == 1 and "loss=0.5000" in str(bar) and "lr=2.50e-06" in str(bar) and "tok/s=999" in str(bar)
    bar.close()


def test_flops_per_token_by_hand_on_tiny_config():
    cfg = ModelConfig.tiny()  # d 64, 4 q heads / 2 kv heads of 16, MLP 128, 2 layers, vocab 512
    q, k, v, o, mlp = 64 * 64, 64 * 32, 64 * 32, 64 * 64, 3 * 64 * 128
    n = 2 * (q + k + v + o + mlp) + 64 * 512
    assert text_matmul_params(cfg) == n == 106496
    assert estimate_flops_per_token(cfg, 100) == 6 * 106496 + 12 * 2 * 64 * 100 == 792576
    # 7B: N is the familiar ~7.07e9 matmul weights (untied head 3584 x 152064 counted once)
    assert 7.0e9 < text_matmul_params(ModelConfig.qwen2_5_vl_7b()) < 7.2e9


def test_vision_flops_by_hand_on_tiny_config():
    vis = ModelConfig.tiny().vision  # h 64, i 96, depth 4, 2 full-attention blocks, window 8x8 patches, out 64
    per_patch = 1176 * 64 + 4 * (4 * 64 * 64 + 3 * 64 * 96) + (16 * 64 * 64 + 4 * 64 * 64) / 4
    p = 256
    attention = 12 * 64 * (2 * 256 + 2 * 64) * p
    assert estimate_vision_flops(vis, p) == 6 * per_patch * p + attention


def test_mfu_and_peak():
    assert mfu(1e15, 2.0, 1e15, num_devices=2) == 0.25
    assert device_peak_flops() is None or device_peak_flops() > 0  # CPU: unknown
