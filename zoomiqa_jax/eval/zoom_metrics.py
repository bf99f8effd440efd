"""Metrics of the zoom itself, for held-out sets whose labels say where the flaw is (the demo's local flaws).

Labels carry `scope` ("local", "global" or "none") and `flaw_box` (the flaw as a normalized [x1, y1, x2, y2];
`data.degrade.generate_degradation_set(local_fraction=...)` writes them). From `zoomiqa eval`'s predictions:

* crop rate per scope: the share of images of that scope whose trajectory ran a second round (every image
  counts, an invalid one as not cropped);
* IoU of the box the model asked for in round 1 (`bbox_requested`, normalized) with the true flaw patch, on
  local-flaw images that were cropped: median and mean;
* round 1 vs round 2 on cropped images whose two ratings both parse: the mean absolute error to the MOS of the
  provisional round-1 rating and of the final round-2 rating (a zoom that helps lowers the second).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from zoomiqa_jax.processing.crop import box_iou


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The objects of a JSONL file (blank lines skipped); a bad line raises naming the file and line."""
    rows = []
    with Path(path).open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}:{number}: not JSON: {err}") from err
    return rows


def _rating(answer: object) -> float | None:
    value = answer.get("rating") if isinstance(answer, dict) else None
    try:
        return float(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None


def zoom_metrics(predictions: Iterable[dict[str, Any]], labels: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The module docstring's metrics. Predictions and labels are joined on the image file name; a prediction
    without a label carrying `scope` raises (the set has no flaw positions, or it is another set)."""
    by_name = {Path(str(lab["image"])).name: lab for lab in labels if "scope" in lab}
    counts = {scope: [0, 0] for scope in ("local", "global", "none")}  # [images, cropped]
    ious: list[float] = []
    err1: list[float] = []
    err2: list[float] = []
    for pred in predictions:
        name = Path(str(pred["image"])).name
        label = by_name.get(name)
        if label is None:
            raise ValueError(f"prediction for {pred['image']!r}: no label with 'scope' and 'flaw_box' for {name!r}")
        rounds = (pred.get("trajectory") or {}).get("rounds") or []
        cropped = len(rounds) > 1
        counts[label["scope"]][0] += 1
        counts[label["scope"]][1] += cropped
        if not cropped:
            continue
        if label["scope"] == "local":
            ious.append(box_iou(rounds[0].get("bbox_requested"), label["flaw_box"]))
        first, final = _rating(rounds[0].get("answer")), pred.get("pred")
        if first is not None and final is not None:
            err1.append(abs(first - float(pred["mos"])))
            err2.append(abs(float(final) - float(pred["mos"])))
    return {
        "n": {scope: c[0] for scope, c in counts.items()},
        "crop_rate": {scope: (c[1] / c[0] if c[0] else None) for scope, c in counts.items()},
        "iou_median": statistics.median(ious) if ious else None,
        "iou_mean": statistics.fmean(ious) if ious else None,
        "n_iou": len(ious),
        "round1_abs_error": statistics.fmean(err1) if err1 else None,
        "round2_abs_error": statistics.fmean(err2) if err2 else None,
        "n_rounds_compared": len(err1),
    }


def zoom_metrics_files(eval_out: str | Path, labels_path: str | Path) -> dict[str, Any]:
    """`zoom_metrics` of an eval output folder (its predictions*.jsonl) against a labels.jsonl."""
    preds = [row for file in sorted(Path(eval_out).glob("predictions*.jsonl")) for row in read_jsonl(file)]
    return zoom_metrics(preds, read_jsonl(labels_path))
