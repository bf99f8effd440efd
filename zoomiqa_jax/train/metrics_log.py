"""Training metrics: TensorBoard event files (no TensorFlow), JSONL, a progress bar, and FLOPs / MFU estimates.

TensorBoard reads `events.out.tfevents.*` files: a sequence of TFRecords, each

    uint64 length (little endian) | uint32 masked_crc32c(length bytes) | Event protobuf | uint32 masked_crc32c(data)
    masked_crc32c(x) = ((crc >> 15) | (crc << 17)) + 0xa282ead8   (mod 2^32; crc32c is the Castagnoli CRC)

and the Event protobuf (tensorflow/core/util/event.proto) needs only a few fields, written here by hand:

    Event   { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
    Summary { repeated Value value = 1; }     Value { string tag = 1; float simple_value = 2; }

The first record carries file_version "brain.Event:2"; each `log` call writes one Event holding every scalar.
Neither `tensorboard` nor TensorFlow is needed to write; `read_events` parses the files back (tests use it).

Only process 0 writes (`jax.process_index() == 0`); other processes get a logger that does nothing.
"""

from __future__ import annotations

import json
import socket
import struct
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np

from zoomiqa_jax.config import ModelConfig, VisionConfig

# ------------------------------------------------------------------------------------------ TFRecord framing
_CRC_TABLE = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1  # reversed Castagnoli polynomial
    _CRC_TABLE.append(_c)


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), e.g. crc32c(b"123456789") == 0xE3069283."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord(data: bytes) -> bytes:
    """One TFRecord frame around `data`."""
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc32c(length)) + data + struct.pack("<I", masked_crc32c(data))


# ------------------------------------------------------------------------------------------ protobuf by hand
def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # int64 two's complement, as protobuf does
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, wire: int, payload: bytes) -> bytes:
    return _varint(number << 3 | wire) + payload


def _bytes_field(number: int, data: bytes) -> bytes:
    return _field(number, 2, _varint(len(data)) + data)


def encode_event(wall_time: float, step: int, scalars: Mapping[str, float] | None = None,
                 file_version: str | None = None) -> bytes:
    """The serialized Event protobuf (fields as in the module docstring)."""
    out = _field(1, 1, struct.pack("<d", wall_time)) + _field(2, 0, _varint(int(step)))
    if file_version is not None:
        out += _bytes_field(3, file_version.encode())
    if scalars:
        values = b"".join(
            _bytes_field(1, _bytes_field(1, tag.encode()) + _field(2, 5, struct.pack("<f", float(v))))
            for tag, v in scalars.items()
        )
        out += _bytes_field(5, values)
    return out


def _parse(data: bytes) -> list[tuple[int, int, Any]]:
    """(field number, wire type, value) of one protobuf message; value is int, bytes or raw 4/8 bytes."""
    fields, i = [], 0
    while i < len(data):
        key, i = _read_varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _read_varint(data, i)
        elif wire == 1:
            value, i = data[i:i + 8], i + 8
        elif wire == 5:
            value, i = data[i:i + 4], i + 4
        elif wire == 2:
            n, i = _read_varint(data, i)
            value, i = data[i:i + n], i + n
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        fields.append((number, wire, value))
    return fields


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        b = data[i]
        result |= (b & 0x7F) << shift
        i += 1
        if not b & 0x80:
            return result, i
        shift += 7


def read_events(path: str | Path) -> list[dict[str, Any]]:
    """Parse an event file: [{"wall_time", "step", "file_version"?, "scalars": {tag: value}}], CRCs checked."""
    raw, events, i = Path(path).read_bytes(), [], 0
    while i < len(raw):
        header = raw[i:i + 8]
        (length,) = struct.unpack("<Q", header)
        if struct.unpack("<I", raw[i + 8:i + 12])[0] != masked_crc32c(header):
            raise ValueError(f"{path}: bad length CRC at byte {i}")
        data = raw[i + 12:i + 12 + length]
        if struct.unpack("<I", raw[i + 12 + length:i + 16 + length])[0] != masked_crc32c(data):
            raise ValueError(f"{path}: bad data CRC at byte {i}")
        i += 16 + length
        event: dict[str, Any] = {"scalars": {}}
        for number, _, value in _parse(data):
            if number == 1:
                event["wall_time"] = struct.unpack("<d", value)[0]
            elif number == 2:
                event["step"] = value - (1 << 64) if value >= 1 << 63 else value
            elif number == 3:
                event["file_version"] = value.decode()
            elif number == 5:
                for _, _, v in _parse(value):
                    parts = {n: x for n, _, x in _parse(v)}
                    event["scalars"][parts[1].decode()] = struct.unpack("<f", parts[2])[0]
        events.append(event)
    return events


class EventFileWriter:
    """Appends scalar Events to `logdir/events.out.tfevents.<time>.<host>`."""

    def __init__(self, logdir: str | Path):
        self.logdir = Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        now = time.time()
        self.path = self.logdir / f"events.out.tfevents.{int(now)}.{socket.gethostname()}"
        self._file = open(self.path, "ab")  # noqa: SIM115 (closed in close())
        self._file.write(tfrecord(encode_event(now, 0, file_version="brain.Event:2")))
        self._file.flush()

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        self._file.write(tfrecord(encode_event(time.time(), step, values)))
        self._file.flush()

    def close(self) -> None:
        self._file.close()


# ------------------------------------------------------------------------------------------ the logger
def _scalar(value: Any) -> float:
    return float(np.asarray(jax.device_get(value)))


class MetricsLogger:
    """log(step, {name: scalar}) -> `out_dir/metrics.jsonl` (one JSON object a line, with "step") and TensorBoard
    events under `out_dir/tensorboard`; `event` writes a line with "event" and non-scalar fields. Writes only on
    process 0 (or when `enabled` says so)."""

    def __init__(self, out_dir: str | Path, *, tensorboard: bool = True, enabled: bool | None = None):
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self.out_dir = Path(out_dir)
        self._jsonl = None
        self._events = None
        if self.enabled:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self._jsonl = open(self.out_dir / "metrics.jsonl", "a")  # noqa: SIM115 (closed in close())
            self._events = EventFileWriter(self.out_dir / "tensorboard") if tensorboard else None

    def log(self, step: int, metrics: Mapping[str, Any]) -> dict[str, float]:
        """Convert every value to a Python float (pulling it from the device) and write it; returns them."""
        values = {k: _scalar(v) for k, v in metrics.items()}
        if self.enabled:
            line = {"step": int(step), **{k: (v if np.isfinite(v) else str(v)) for k, v in values.items()}}
            self._jsonl.write(json.dumps(line) + "\n")
            self._jsonl.flush()
            if self._events is not None:
                self._events.scalars(step, values)
        return values

    def event(self, step: int, name: str, payload: Mapping[str, Any]) -> None:
        """One non-scalar line `{"step", "event": name, **payload}` in metrics.jsonl (e.g. the bad_data report of
        `train.data_checks`); `payload` must be JSON-serializable. Not sent to TensorBoard."""
        if self.enabled:
            self._jsonl.write(json.dumps({"step": int(step), "event": name, **payload}) + "\n")
            self._jsonl.flush()

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
        if self._events is not None:
            self._events.close()

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def progress_bar(total: int, initial: int = 0, desc: str = "train", enabled: bool | None = None) -> Any:
    """A tqdm bar over optimizer steps (disabled off process 0); update it with `show_metrics`."""
    from tqdm.auto import tqdm

    disable = not (jax.process_index() == 0 if enabled is None else enabled)
    return tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True, disable=disable)


def show_metrics(bar: Any, values: Mapping[str, float], advance: int = 1) -> None:
    """Advance `bar` and show loss, lr and tokens/s (whichever of them `values` holds)."""
    shown = {}
    if "loss" in values:
        shown["loss"] = f"{values['loss']:.4f}"
    if "lr" in values:
        shown["lr"] = f"{values['lr']:.2e}"
    if "tokens_per_s" in values:
        shown["tok/s"] = f"{values['tokens_per_s']:.0f}"
    bar.set_postfix(shown, refresh=False)
    bar.update(advance)


# ------------------------------------------------------------------------------------------ FLOPs and MFU
def text_matmul_params(config: ModelConfig) -> int:
    """Weights of the decoder's matrix multiplies, per token (the N of 6N): per layer
    d*(H*hd) + 2*d*(K*hd) + (H*hd)*d  (q, k, v, o)  +  3*d*f  (gate, up, down), times L, plus the LM head d*V.
    The embedding lookup, biases and norms do no matmul and are not counted."""
    t = config.text
    q, kv = t.num_attention_heads * t.head_dim, t.num_key_value_heads * t.head_dim
    per_layer = t.hidden_size * q + 2 * t.hidden_size * kv + q * t.hidden_size + 3 * t.hidden_size * t.intermediate_size
    return t.num_hidden_layers * per_layer + t.hidden_size * t.vocab_size


def estimate_flops_per_token(config: ModelConfig, seq_len: int) -> float:
    """Training FLOPs (forward + backward) per text token at sequence length T (PaLM, Chowdhery et al. 2022, App. B):

        6 N  +  12 L (H hd) T

    N from `text_matmul_params`; 6 = 2 (multiply-add) x 3 (forward, and backward for inputs and weights).
    The attention term counts QK^T and AV (2 matmuls x 2 FLOPs x T keys x H hd per layer, x 3), over all T keys
    (no causal discount, as in PaLM's MFU). Recomputation for remat is NOT counted (that would be HFU)."""
    t = config.text
    return 6.0 * text_matmul_params(config) + 12.0 * t.num_hidden_layers * t.num_attention_heads * t.head_dim * seq_len


def estimate_vision_flops(vision: VisionConfig, num_patches: int) -> float:
    """Training FLOPs of the vision tower for one image of P patches: 6 N_v P + attention, with per patch

        N_v = patch_dim h + depth (4 h^2 + 3 h i) + (16 h^2 + 4 h o) / 4   (patch embed, blocks, 2x2 merger MLP)
        attention = 12 h keys per layer, keys = P in full-attention blocks, min(P, (window / patch)^2) elsewhere
    (h hidden, i MLP width, o out_hidden_size)."""
    h, i, o = vision.hidden_size, vision.intermediate_size, vision.out_hidden_size
    per_patch = vision.patch_dim * h + vision.depth * (4 * h * h + 3 * h * i) + (16 * h * h + 4 * h * o) / 4
    window = min(num_patches, (vision.window_size // vision.patch_size) ** 2)
    full = len(vision.fullatt_block_indexes)
    keys = full * num_patches + (vision.depth - full) * window
    return 6.0 * per_patch * num_patches + 12.0 * h * keys * num_patches


# Dense bf16 peak FLOP/s per device (vendor data sheets; no sparsity).
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "TPU v4": 275e12, "TPU v5 lite": 197e12,
              "TPU v5e": 197e12, "TPU v5p": 459e12, "TPU v6 lite": 918e12}


def device_peak_flops(device: jax.Device | None = None) -> float | None:
    """Peak dense bf16 FLOP/s of `device` (default: the first) by its device_kind, or None when unknown (CPU)."""
    kind = (device or jax.devices()[0]).device_kind
    for name, flops in sorted(PEAK_FLOPS.items(), key=lambda kv: -len(kv[0])):
        if name.lower() in kind.lower():
            return flops
    return None


def mfu(flops_per_step: float, step_time_s: float, peak_flops_per_device: float, num_devices: int = 1) -> float:
    """Model FLOPs utilisation = flops_per_step / (step_time_s * peak_flops_per_device * num_devices), where
    flops_per_step = tokens * estimate_flops_per_token (+ images * estimate_vision_flops)."""
    return flops_per_step / (step_time_s * peak_flops_per_device * num_devices)
