"""Training metrics: TensorBoard event files (through tensorboardX, no TensorFlow), JSONL and a progress bar.

Each `MetricsLogger.log` call writes one line to `metrics.jsonl` and one TensorBoard Event holding every scalar of
the step (a Summary with one `simple_value` per tag) to `tensorboard/events.out.tfevents.*`; tensorboardX writes
the TFRecord framing, the masked CRC-32C and the protobuf. Its writer queues events for a background thread
that flushes the file every `TENSORBOARD_FLUSH_SECS`; `close` writes everything left. FLOPs and MFU: `train.flops`.

tensorboardX is imported only when a logger with TensorBoard on is made. Note that its package imports torch when
torch is installed (to accept torch tensors), as transformers' tokenizer loading already does in a training run;
nothing here needs torch, and without it tensorboardX works the same.

Only process 0 writes (`jax.process_index() == 0`); other processes get a logger that does nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np

TENSORBOARD_FLUSH_SECS = 10  # how stale the TensorBoard file may be while a run goes on (metrics.jsonl: never)


class EventFileWriter:
    """Appends one scalar Event per `scalars` call to `logdir/events.out.tfevents.<time>.<host>` (tensorboardX)."""

    def __init__(self, logdir: str | Path, flush_secs: float = TENSORBOARD_FLUSH_SECS):
        from tensorboardX import FileWriter

        self.logdir = Path(logdir)
        self._writer = FileWriter(str(self.logdir), flush_secs=flush_secs)

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        from tensorboardX.proto.summary_pb2 import Summary

        summary = Summary(value=[Summary.Value(tag=tag, simple_value=float(v)) for tag, v in values.items()])
        self._writer.add_summary(summary, global_step=int(step))

    def close(self) -> None:
        self._writer.close()


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
