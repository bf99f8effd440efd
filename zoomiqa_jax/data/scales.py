"""Published score scales of the seven IQA benchmarks and their linear map to [1, 5].

arXiv:2503.22679 Sec. 4.1: "Mean Opinion Scores (MOS) across these datasets are normalized into the range [1,5]".
We map each dataset's published range [lo, hi] linearly onto [1, 5], inverting the scales where lower is
better (DMOS):

    higher is better (MOS):  norm = 1 + 4 (x - lo) / (hi - lo)
    lower is better (DMOS):  norm = 1 + 4 (hi - x) / (hi - lo)

PIPAL publishes Elo ratings, which have no fixed range; for it (and only it) the range is the minimum and
maximum observed in the label file, the rule DeQA-Score applies to every dataset. PLCC / SRCC do not change
under these affine maps; RMSE and threshold rewards do. Sources and our confidence per dataset are in the
`source` / `confidence` fields and in docs/datasets.md.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from typing import Literal

import numpy as np

NORM_LOW, NORM_HIGH = 1.0, 5.0


def normalize_score(raw: float, low: float, high: float, higher_is_better: bool) -> float:
    """Linear map of `raw` from [low, high] to [1, 5]; inverted (high -> 1) when lower is better.

    Values outside [low, high] map outside [1, 5]: nothing is clipped, range checks belong to the caller.
    """
    if not high > low:
        raise ValueError(f"score range must have high > low, got [{low}, {high}]")
    t = (raw - low) / (high - low)
    if not higher_is_better:
        t = 1.0 - t
    return NORM_LOW + (NORM_HIGH - NORM_LOW) * t


def denormalize_score(norm: float, low: float, high: float, higher_is_better: bool) -> float:
    """Inverse of `normalize_score`: a [1, 5] score back on the dataset's own scale."""
    if not high > low:
        raise ValueError(f"score range must have high > low, got [{low}, {high}]")
    t = (norm - NORM_LOW) / (NORM_HIGH - NORM_LOW)
    if not higher_is_better:
        t = 1.0 - t
    return low + (high - low) * t


def observed_range(values: Iterable[float]) -> tuple[float, float]:
    """(min, max) over the finite values; the range used for scales that publish none (PIPAL Elo)."""
    arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if arr.size == 0:
        raise ValueError("observed_range needs at least one finite score")
    lo, hi = float(arr.min()), float(arr.max())
    if not hi > lo:
        raise ValueError(f"observed scores are all equal ({lo}); no range to normalize with")
    return lo, hi


@dataclasses.dataclass(frozen=True)
class ScoreScale:
    """One dataset's score scale and the label file its authors publish.

    `low` / `high` are None when the scale has no published bounds (Elo); then `normalize` needs the
    observed range. `label_file` / `name_column` / `score_column` describe the file as published.
    """

    key: str
    name: str
    kind: Literal["MOS", "DMOS", "Elo"]
    low: float | None
    high: float | None
    higher_is_better: bool
    label_file: str
    name_column: str
    score_column: str
    image_glob: str
    splits: tuple[str, ...]
    source: str
    confidence: str

    @property
    def has_published_range(self) -> bool:
        return self.low is not None and self.high is not None

    def _range(self, observed: tuple[float, float] | None) -> tuple[float, float]:
        if self.has_published_range:
            return float(self.low), float(self.high)  # type: ignore[arg-type]
        if observed is None:
            raise ValueError(
                f"{self.name} scores ({self.kind}) have no published range; "
                "pass observed=observed_range(scores)"
            )
        return observed

    def normalize(self, raw: float, observed: tuple[float, float] | None = None) -> float:
        """`raw` on this dataset's scale -> [1, 5], higher is better (see module docstring)."""
        lo, hi = self._range(observed)
        return normalize_score(raw, lo, hi, self.higher_is_better)

    def denormalize(self, norm: float, observed: tuple[float, float] | None = None) -> float:
        """A [1, 5] score back on this dataset's scale."""
        lo, hi = self._range(observed)
        return denormalize_score(norm, lo, hi, self.higher_is_better)

    def in_range(self, raw: float, tol: float = 1e-6) -> bool:
        """True when `raw` is finite and inside the published range (always True for finite Elo scores)."""
        if raw is None or not math.isfinite(raw):
            return False
        if not self.has_published_range:
            return True
        return self.low - tol <= raw <= self.high + tol  # type: ignore[operator]


SCALES: dict[str, ScoreScale] = {
    s.key: s
    for s in (
        ScoreScale(
            key="koniq", name="KonIQ-10k", kind="MOS", low=1.0, high=100.0, higher_is_better=True,
            label_file="koniq10k_distributions_sets.csv", name_column="image_name", score_column="MOS",
            image_glob="1024x768/*.jpg", splits=("train", "test"),
            source="github.com/subpic/koniq metadata/koniq10k_distributions_sets.csv (columns image_name, "
            "c1..c5, c_total, MOS, SD, set); range [1, 100] as in pyiqa DATASET_INFO",
            confidence="high",
        ),
        ScoreScale(
            key="spaq", name="SPAQ", kind="MOS", low=0.0, high=100.0, higher_is_better=True,
            label_file="Annotations/MOS and Image attribute scores.xlsx", name_column="Image name",
            score_column="MOS", image_glob="TestImage/*.jpg", splits=("test",),
            source="github.com/h4nwei/SPAQ; file name from pyiqa scripts/process_spaq.py; 0-100 slider per "
            "the SPAQ paper (pyiqa lists (1, 100)); column names not confirmed",
            confidence="medium",
        ),
        ScoreScale(
            key="kadid", name="KADID-10k", kind="MOS", low=1.0, high=5.0, higher_is_better=True,
            label_file="dmos.csv", name_column="dist_img", score_column="dmos",
            image_glob="images/I*_*_*.png", splits=("test",),
            source="KADID-10k dmos.csv (dist_img, ref_img, dmos, var); despite its name the 'dmos' column "
            "is a 1-5 opinion score with 5 = imperceptible (pyiqa DATASET_INFO: mos, (1, 5))",
            confidence="high",
        ),
        ScoreScale(
            key="pipal", name="PIPAL", kind="Elo", low=None, high=None, higher_is_better=True,
            label_file="Train_Label/*.txt", name_column="(1st field)", score_column="(2nd field)",
            image_glob="Distortion_*/*.bmp", splits=("test",),
            source="PIPAL (NTIRE 2021) Train_Label/*.txt, lines 'A0001_00_00.bmp,<elo>' (pyiqa "
            "scripts/process_pipal.py); Elo ratings have no fixed range, normalized by observed min/max",
            confidence="high (direction); range observed, not published",
        ),
        ScoreScale(
            key="livew", name="LIVE-Wild (LIVE Challenge)", kind="MOS", low=0.0, high=100.0,
            higher_is_better=True, label_file="Data/AllMOS_release.mat", name_column="AllImages_release",
            score_column="AllMOS_release", image_glob="Images/*.bmp", splits=("test",),
            source="LIVE In the Wild Image Quality Challenge Data/AllImages_release.mat + AllMOS_release.mat "
            "(pyiqa scripts/process_livechallenge.py); continuous 0-100 scale",
            confidence="high (files); medium-high (range [0, 100])",
        ),
        ScoreScale(
            key="agiqa3k", name="AGIQA-3K", kind="MOS", low=0.0, high=5.0, higher_is_better=True,
            label_file="data.csv", name_column="name", score_column="mos_quality",
            image_glob="*.jpg", splits=("test",),
            source="github.com/lcysyzxdxc/AGIQA-3k-Database data.csv (name, prompt, adj1, adj2, style, "
            "mos_quality, std_quality, mos_align, std_align); range [0, 5] not confirmed in the paper, "
            "the values checked lie within it",
            confidence="medium-low",
        ),
        ScoreScale(
            key="csiq", name="CSIQ", kind="DMOS", low=0.0, high=1.0, higher_is_better=False,
            label_file="csiq_label.txt", name_column="(1st field)", score_column="(2nd field)",
            image_glob="dst_imgs/*/*.png", splits=("test",),
            source="DMOS in [0, 1], 0 = no visible distortion (pyiqa DATASET_INFO: dmos, (0, 1)); the "
            "authors publish an Excel sheet (csiq.DMOS.xlsx) whose layout we could not confirm, so we read "
            "the two-column text export 'name dmos' that pyiqa uses",
            confidence="high (range, direction); low (label file)",
        ),
    )
}

_ALIASES = {
    "koniq10k": "koniq", "koniq-10k": "koniq",
    "kadid10k": "kadid", "kadid-10k": "kadid",
    "live-wild": "livew", "livewild": "livew", "live_wild": "livew", "livec": "livew",
    "clive": "livew", "live-challenge": "livew", "livechallenge": "livew",
    "agiqa": "agiqa3k", "agiqa-3k": "agiqa3k",
}


def get_scale(name: str) -> ScoreScale:
    """The scale for a dataset key or common alias (case-insensitive: 'KonIQ-10k', 'livec', 'AGIQA-3K')."""
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in SCALES:
        raise KeyError(f"unknown dataset {name!r}; expected one of {sorted(SCALES)} or {sorted(_ALIASES)}")
    return SCALES[key]
