"""The curation report (issue 19): per-filter counts, examples of each kind of reject, and the distribution of
ratings, crop rates and box sizes before and after filtering, from the rows of `curate.pipeline` alone.

"Before" is every candidate whose teacher reply reached the filters (it passed the format check, so its
rating and box are known); "after" is the kept ones. The box size is the area of the stage-1 crop box as a
fraction of the image, ``(x2 - x1) (y2 - y1)`` in normalized coordinates.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from zoomiqa_jax.curate.pipeline import STAGES

RATING_BINS = (1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0)  # [1, 1.5), ..., [4.5, 5.0]
EXAMPLES_PER_KIND = 2


def counts(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """{"total", "kept", "rejected": {stage: n}, "reasons": {stage: {reason: n}}}; the stages' counts and the
    kept add up to the total. A VRF reject lists every rule that held, so its reasons can sum past its count."""
    by_stage = Counter(row["stage"] for row in rows)
    reasons: dict[str, Counter[str]] = {}
    for row in rows:
        if row["stage"] != "kept":
            for reason in row["reasons"]:
                short = reason if row["stage"] in ("vrf", "hacf") else _kind(reason)
                reasons.setdefault(row["stage"], Counter())[short] += 1
    return {"total": len(rows), "kept": by_stage.get("kept", 0),
            "rejected": {s: by_stage.get(s, 0) for s in STAGES if s != "kept"},
            "reasons": {s: dict(sorted(c.items())) for s, c in reasons.items()}}


def _kind(reason: str) -> str:
    """A short class for free-text reasons (format / teacher errors): the text after the last ': ' field
    name, cut to 60 characters."""
    return reason.split(": ", 1)[-1][:60] if reason else "?"


def _box_area(box: Sequence[float] | None) -> float | None:
    if box is None:
        return None
    x1, y1, x2, y2 = box
    return abs(x2 - x1) * abs(y2 - y1)


def distribution(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Rating histogram over `RATING_BINS`, crop rate and box-area summary of `rows`."""
    ratings = [r["rating"] for r in rows if r.get("rating") is not None]
    hist = np.histogram(ratings, bins=RATING_BINS)[0].tolist() if ratings else [0] * (len(RATING_BINS) - 1)
    areas = [a for a in (_box_area(r.get("bbox")) for r in rows if r.get("cropped")) if a is not None]
    summary = ({"n": len(areas), "min": min(areas), "median": float(np.median(areas)), "max": max(areas)}
               if areas else {"n": 0, "min": None, "median": None, "max": None})
    return {"n": len(rows), "rating_histogram": hist,
            "rating_mean": float(np.mean(ratings)) if ratings else None,
            "crop_rate": (sum(bool(r.get("cropped")) for r in rows) / len(rows)) if rows else None,
            "box_area": summary}


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """counts, distributions before / after filtering."""
    before = [r for r in rows if r["stage"] in ("vrf", "hacf", "kept")]
    return {"counts": counts(rows), "before": distribution(before),
            "after": distribution([r for r in rows if r["stage"] == "kept"])}


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _example(row: dict[str, Any]) -> list[str]:
    lines = [f"- `{row['key']}` ({row['image']}): {', '.join(row['reasons'])}"]
    if row["stage"] == "vrf" and "vrf" in row:
        v = row["vrf"]
        a, b = v["with_image"], v["text_only"]
        lines.append(f"  - rating with image {a['rating']:.4f}, without {b['rating']:.4f} (|diff| "
                     f"{v['rating_difference']:.4f}); box IoU {v['bbox_iou']:.4f}; entropy {a['entropy']:.4f} vs "
                     f"{b['entropy']:.4f} nats (|diff| {v['entropy_difference']:.4f})")
    if row["stage"] == "hacf" and row.get("hacf"):
        reply = row["hacf"].get("reply") or row["hacf"].get("error") or ""
        lines.append(f"  - rater: {reply.strip()[:200]!r}")
    texts = (row.get("teacher") or {}).get("texts") or []
    if texts:
        lines.append(f"  - teacher (first turn, 200 chars): {texts[0].strip()[:200]!r}")
    return lines


def render_markdown(rows: Sequence[dict[str, Any]], title: str = "GR-IQA curation report") -> str:
    """report.md: counts, reasons, distributions before / after, and up to `EXAMPLES_PER_KIND` examples of each
    kind of reject (per stage and reason)."""
    s = summarize(rows)
    c = s["counts"]
    out = [f"# {title}", "", f"{c['total']} candidates: {c['kept']} kept, "
           f"{c['total'] - c['kept']} rejected.", "", "| stage | rejected |", "| --- | --- |"]
    out += [f"| {stage} | {n} |" for stage, n in c["rejected"].items()]
    out += ["| kept | " + str(c["kept"]) + " |", "", "## Reasons", ""]
    for stage, reasons in c["reasons"].items():
        out.append(f"- {stage}: " + ", ".join(f"{k} {v}" for k, v in reasons.items()))
    out += ["", "## Before and after filtering", "",
            "Before: the candidates that reached VRF / HACF (their reply passed the format check); after: the kept.",
            "", "| | before | after |", "| --- | --- | --- |"]
    b, a = s["before"], s["after"]
    out.append(f"| candidates | {b['n']} | {a['n']} |")
    out.append(f"| mean rating | {_fmt(b['rating_mean'])} | {_fmt(a['rating_mean'])} |")
    for i in range(len(RATING_BINS) - 1):
        close = "]" if i == len(RATING_BINS) - 2 else ")"
        label = f"rating [{RATING_BINS[i]:.1f}, {RATING_BINS[i + 1]:.1f}{close}"
        out.append(f"| {label} | {b['rating_histogram'][i]} | {a['rating_histogram'][i]} |")
    out.append(f"| crop rate | {_fmt(b['crop_rate'])} | {_fmt(a['crop_rate'])} |")
    for key in ("n", "min", "median", "max"):
        out.append(f"| box area {key} | {_fmt(b['box_area'][key])} | {_fmt(a['box_area'][key])} |")
    out += ["", "## Examples of rejects", ""]
    seen: Counter[tuple[str, str]] = Counter()
    for row in rows:
        if row["stage"] == "kept":
            continue
        kind = (row["stage"], row["reasons"][0] if row["stage"] in ("vrf", "hacf") else "")
        if seen[kind] >= EXAMPLES_PER_KIND:
            continue
        if not seen[kind]:
            out += ([""] if out[-1] else []) + [f"### {row['stage']}" + (f": {kind[1]}" if kind[1] else ""), ""]
        seen[kind] += 1
        out += _example(row)
    return "\n".join(out) + "\n"
