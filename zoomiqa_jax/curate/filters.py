"""The decision rules of Visual Reliance Filtering (VRF) and Hint-Augmented Consistency Filtering (HACF).

Zoom-IQA (Liang et al.), Sec. 3.1.1 and supplementary 6.2-6.3. Pure functions over plain inputs: the caller
(a scripted model in tests; later the curation command reading our model's token probabilities) supplies the
two answers of a candidate and the rater's reply.

VRF (supp. 6.2). The answer is produced twice, once conditioned on the image I and the rationale R_A and once
on R_A alone. "If the outputs are excessively similar, we discard the sample"; the thresholds for "rating
difference, Bounding Box IoU, and entropy difference" are 0.05, 0.5 and 0.01. Our reading, where the paper is
silent:

* a candidate is discarded when ANY of the three says "too similar" (the paper's Fig. 6 shows samples
  discarded by one criterion each):
  ``|rating_img - rating_txt| < 0.05``  or  ``IoU(bbox_img, bbox_txt) > 0.5``  or
  ``|H_img - H_txt| < 0.01``; every reason that holds is reported;
* the differences are absolute (the paper says "difference" without a sign; similarity is symmetric);
* comparisons are strict, as the paper writes them (a rating difference of exactly 0.05 is kept), and are made
  on the quantities rounded to 9 decimals, so that decimal inputs compare as written: 3.45 vs 3.40 is a
  difference of exactly 0.05 (in binary floats it is 0.04999999999999982);
* the IoU is taken on the boxes as the answers write them (before the crop tool's resizing,
  `processing.crop.adjust_bbox`), both in the same coordinates; a missing or zero-area box (a "final" answer's
  ``[0, 0, 0, 0]``) has IoU 0 with any box, so answers without a crop are judged by rating and entropy only;
* H is the answer entropy in nats (natural log). Which distribution it is taken over is the caller's choice;
  `mean_token_entropy` gives the mean per-token entropy over a sequence of next-token distributions, the
  definition we document for the curation readout (docs/curation.md).

HACF (Sec. 3.1.1, supp. 6.3). A rater judges the whole rationale given the image and the low-level hints and
answers "Pass" or "Fail"; only Pass is kept. `parse_verdict` reads the first standalone word "pass" or "fail"
(case-insensitive, on word boundaries: "Passed", "bypass" or "failure" do not count); a reply with neither is
rejected with reason ``unparsed``.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from zoomiqa_jax.processing.crop import box_iou

RATING_DIFFERENCE_THRESHOLD = 0.05  # discard when |rating_img - rating_txt| < this (supp. 6.2)
BBOX_IOU_THRESHOLD = 0.5  # discard when IoU(bbox_img, bbox_txt) > this
ENTROPY_DIFFERENCE_THRESHOLD = 0.01  # discard when |H_img - H_txt| < this (nats)
COMPARE_DECIMALS = 9  # quantities are rounded to this many decimals before the comparisons
PROBABILITY_SUM_TOLERANCE = 1e-6  # a distribution must sum to 1 within this

Box = tuple[float, float, float, float]
Verdict = Literal["pass", "fail"]


def entropy(probs: Sequence[float] | np.ndarray) -> float:
    """Shannon entropy in nats, ``H = -sum_i p_i ln p_i`` (0 ln 0 = 0), of one distribution `[V]`.

    Raises ValueError unless `probs` is a non-empty 1-D array of finite, non-negative values summing to 1
    within `PROBABILITY_SUM_TOLERANCE`. Uniform over V values gives ln V; one-hot gives 0.
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 1 or p.size == 0:
        raise ValueError(f"expected one probability distribution of shape [V], got shape {p.shape}")
    if not np.all(np.isfinite(p)) or np.any(p < 0.0):
        raise ValueError("expected finite, non-negative probabilities")
    total = float(p.sum())
    if abs(total - 1.0) > PROBABILITY_SUM_TOLERANCE:
        raise ValueError(f"expected probabilities summing to 1 (within {PROBABILITY_SUM_TOLERANCE}), got {total}")
    nz = p[p > 0.0]
    return float(max(0.0, -np.sum(nz * np.log(nz))))


def mean_token_entropy(token_probs: Sequence[Sequence[float]] | np.ndarray) -> float:
    """Mean per-token entropy in nats of next-token distributions `[T, V]`: ``(1 / T) sum_t H(p_t)``."""
    p = np.asarray(token_probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] == 0:
        raise ValueError(f"expected token distributions of shape [T, V] with T >= 1, got shape {p.shape}")
    return float(np.mean([entropy(row) for row in p]))


@dataclasses.dataclass(frozen=True)
class AnswerReadout:
    """One answer of a VRF pair: the rating, the box (None for a "final" answer) and the answer entropy in
    nats (from `entropy` or `mean_token_entropy`, or the caller's own readout)."""

    rating: float
    bbox: Box | None
    entropy: float

    def __post_init__(self) -> None:
        for name in ("rating", "entropy"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise ValueError(f"AnswerReadout.{name}: expected a finite number, got {value!r}")
        if self.entropy < 0.0:
            raise ValueError(f"AnswerReadout.entropy: expected >= 0 (nats), got {self.entropy!r}")

    @classmethod
    def from_token_distributions(
        cls, rating: float, bbox: Box | None, token_probs: Sequence[Sequence[float]] | np.ndarray
    ) -> AnswerReadout:
        """The readout whose entropy is `mean_token_entropy(token_probs)` (`[T, V]`)."""
        return cls(float(rating), bbox, mean_token_entropy(token_probs))


@dataclasses.dataclass(frozen=True)
class VRFDecision:
    """Keep or discard, the reasons for a discard (any of "rating_difference", "bbox_iou",
    "entropy_difference", in that order; empty when kept) and the three quantities as compared (rounded)."""

    keep: bool
    reasons: tuple[str, ...]
    rating_difference: float
    bbox_iou: float
    entropy_difference: float

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["reasons"] = list(self.reasons)
        return out


def vrf_decision(
    with_image: AnswerReadout,
    text_only: AnswerReadout,
    rating_threshold: float = RATING_DIFFERENCE_THRESHOLD,
    iou_threshold: float = BBOX_IOU_THRESHOLD,
    entropy_threshold: float = ENTROPY_DIFFERENCE_THRESHOLD,
) -> VRFDecision:
    """VRF (Zoom-IQA supp. 6.2): discard when the answer without the image is too similar to the answer with it.

    Discard iff ``|r_img - r_txt| < rating_threshold`` or ``IoU(b_img, b_txt) > iou_threshold`` or
    ``|H_img - H_txt| < entropy_threshold``, each quantity rounded to `COMPARE_DECIMALS` decimals first (the
    module docstring gives our reading of the paper).
    """
    rating_difference = round(abs(with_image.rating - text_only.rating), COMPARE_DECIMALS)
    iou = round(box_iou(with_image.bbox, text_only.bbox), COMPARE_DECIMALS)
    entropy_difference = round(abs(with_image.entropy - text_only.entropy), COMPARE_DECIMALS)
    reasons = []
    if rating_difference < rating_threshold:
        reasons.append("rating_difference")
    if iou > iou_threshold:
        reasons.append("bbox_iou")
    if entropy_difference < entropy_threshold:
        reasons.append("entropy_difference")
    return VRFDecision(not reasons, tuple(reasons), rating_difference, iou, entropy_difference)


_VERDICT = re.compile(r"\b(pass|fail)\b", re.IGNORECASE)


def parse_verdict(reply: str) -> Verdict | None:
    """The rater's verdict: the first standalone word "pass" or "fail" in `reply` (case-insensitive, on word
    boundaries, so "**Pass**" and "FAIL." count but "Passed" and "failure" do not), lower-cased; None when
    there is neither (or `reply` is not a string)."""
    if not isinstance(reply, str):
        return None
    match = _VERDICT.search(reply)
    return None if match is None else match.group(1).lower()  # type: ignore[return-value]


@dataclasses.dataclass(frozen=True)
class HACFDecision:
    """Keep iff the verdict is "pass"; `reasons` is () when kept, ("fail",) or ("unparsed",) otherwise."""

    keep: bool
    reasons: tuple[str, ...]
    verdict: Verdict | None

    def to_dict(self) -> dict[str, Any]:
        return {"keep": self.keep, "reasons": list(self.reasons), "verdict": self.verdict}


def hacf_decision(reply: str) -> HACFDecision:
    """HACF (Zoom-IQA Sec. 3.1.1): keep only samples the rater answers Pass (`D_HACF = "Pass"`)."""
    verdict = parse_verdict(reply)
    if verdict == "pass":
        return HACFDecision(True, (), verdict)
    return HACFDecision(False, ("fail",) if verdict == "fail" else ("unparsed",), verdict)
