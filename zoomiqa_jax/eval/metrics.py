"""IQA evaluation metrics: pure NumPy/SciPy functions of predictions and ground truth.

Score regression (arXiv:2601.02918 Table 1, arXiv:2503.22679 Table 2):

* raw PLCC / SRCC / KRCC / RMSE between predictions and MOS;
* PLCC / SRCC after a monotonic isotonic-regression fit of predictions to MOS (the Zoom-IQA authors' style);
* PLCC after the 4-parameter logistic fit recommended by VQEG (the style of DeQA-Score / Q-Insight);
* the unique-score ratio of arXiv:2601.02918 Sec. 3.2 (2.04% for a collapsed model vs 71.34% for the KonIQ MOS).

Degradation perception (arXiv:2503.22679 Table 3, Eqs. 4-5): class accuracy and level accuracy per distortion class.

Nothing here crashes on bad input: non-finite pairs are dropped and counted, too few samples give `None`
with a status string (the isotonic-fit PLCC / SRCC are given from 2 pairs on), a constant input or fit gives
`None` (never rounding noise such as 1e-16), and a failed logistic fit falls back to the raw PLCC and says
so. Every result is a dataclass whose `to_dict()` is plain JSON (NaN is written as null).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import optimize, special, stats

MIN_SAMPLES = 3  # raw correlations need at least 3 finite pairs to mean anything
MIN_ISOTONIC_SAMPLES = 2  # the isotonic-fit PLCC / SRCC: 2 pairs, as the Zoom-IQA authors' evaluation computes them
MIN_LOGISTIC_SAMPLES = 5  # 4 free parameters + 1


def _json_float(x: float | None) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float):
        return _json_float(obj)
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    return obj


def finite_pairs(
    pred: Sequence[float] | np.ndarray, mos: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray, int]:
    """Keep the pairs where both values are finite; returns (pred, mos, n dropped). None counts as NaN."""
    p = np.asarray([np.nan if v is None else v for v in pred], dtype=np.float64).reshape(-1)
    m = np.asarray([np.nan if v is None else v for v in mos], dtype=np.float64).reshape(-1)
    if p.shape != m.shape:
        raise ValueError(f"pred and mos differ in length: {p.shape[0]} vs {m.shape[0]}")
    keep = np.isfinite(p) & np.isfinite(m)
    return p[keep], m[keep], int((~keep).sum())


# --------------------------------------------------------------------------------------------- correlations


def plcc(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson linear correlation: sum(dx dy) / sqrt(sum(dx^2) sum(dy^2)), dx = x - mean x, dy = y - mean y.

    NaN when fewer than 2 samples or either input is constant (the correlation is undefined). Constancy is
    tested exactly (max == min) before any mean is taken: the mean of n equal values can be one rounding step
    off, which would leave dx a tiny nonzero constant and the "correlation" about 1e-16.
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    dx, dy = x - x.mean(), y - y.mean()
    denom = math.sqrt(float(dx @ dx) * float(dy @ dy))
    if denom == 0.0:
        return float("nan")
    return float(np.clip((dx @ dy) / denom, -1.0, 1.0))


def srcc(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation: the PLCC of the average ranks (ties share the mean of their ranks)."""
    return plcc(stats.rankdata(x), stats.rankdata(y))


def krcc(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall rank correlation tau-b (tie-corrected): (C - D) / sqrt((n0 - n1)(n0 - n2)), by scipy.stats."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(stats.kendalltau(x, y, variant="b").statistic)


def rmse(x: np.ndarray, y: np.ndarray) -> float:
    """Root mean squared error sqrt(mean((x - y)^2)); meaningful only when both share a scale ([1, 5])."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if x.size == 0:
        return float("nan")
    return float(np.sqrt(np.mean((x - y) ** 2)))


# ------------------------------------------------------------------------------------------------ fitted maps


def isotonic_fit(pred: np.ndarray, mos: np.ndarray) -> np.ndarray:
    """The non-decreasing function of `pred` closest to `mos` in least squares, evaluated at each `pred`.

    Solves min_f sum_i (mos_i - f(pred_i))^2 with f non-decreasing (pool-adjacent-violators,
    `scipy.optimize.isotonic_regression`). Tied predictions must map to one value, so they are first pooled:
    each distinct prediction gets the mean MOS of its group, weighted by the group size.
    """
    pred = np.asarray(pred, np.float64)
    mos = np.asarray(mos, np.float64)
    if pred.size == 0:
        return np.zeros(0)
    levels, inverse, counts = np.unique(pred, return_inverse=True, return_counts=True)
    group_mean = np.bincount(inverse, weights=mos) / counts
    fitted = optimize.isotonic_regression(group_mean, weights=counts.astype(np.float64), increasing=True).x
    return fitted[inverse]


def logistic4(x: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    """VQEG 4-parameter logistic: f(x) = (b1 - b2) / (1 + exp(-(x - b3) / b4)) + b2.

    b1 and b2 are the upper and lower asymptotes, b3 the midpoint, b4 the slope scale. Written with the
    numerically stable `expit`, so large |x - b3| / b4 neither overflows nor warns.
    """
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return b2 + (b1 - b2) * special.expit((np.asarray(x, np.float64) - b3) / b4)


@dataclasses.dataclass(frozen=True)
class LogisticFit:
    """Outcome of the 4-parameter logistic fit; `status` is "ok" or says why the raw PLCC was used instead."""

    status: str
    params: tuple[float, ...] | None
    plcc: float | None

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(dataclasses.asdict(self))


def logistic_fit_plcc(pred: np.ndarray, mos: np.ndarray) -> LogisticFit:
    """PLCC between MOS and the 4-parameter logistic of the predictions fitted to MOS (VQEG).

    Initial guess (the common one, also used by DeQA-Score): b1 = max(mos), b2 = min(mos), b3 = mean(pred),
    b4 = std(pred) / 4. Least squares by `scipy.optimize.curve_fit` (Levenberg-Marquardt, maxfev 10000).
    On any failure (too few samples, constant input, no convergence, non-finite parameters or fitted values,
    a constant fitted curve) the result falls back to the raw PLCC and `status` starts with "fallback_raw".
    """
    pred = np.asarray(pred, np.float64)
    mos = np.asarray(mos, np.float64)
    raw = _json_float(plcc(pred, mos))

    def fallback(reason: str) -> LogisticFit:
        return LogisticFit(status=f"fallback_raw: {reason}", params=None, plcc=raw)

    if pred.size < MIN_LOGISTIC_SAMPLES:
        return fallback(f"{pred.size} samples, the 4-parameter fit needs at least {MIN_LOGISTIC_SAMPLES}")
    if np.ptp(pred) == 0 or np.ptp(mos) == 0:
        return fallback("constant predictions or MOS")
    p0 = [float(mos.max()), float(mos.min()), float(pred.mean()), float(pred.std()) / 4.0]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optimize.OptimizeWarning)
            params, _ = optimize.curve_fit(logistic4, pred, mos, p0=p0, maxfev=10000)
    except (RuntimeError, ValueError, FloatingPointError, np.linalg.LinAlgError) as err:
        return fallback(f"curve_fit failed: {err}")
    fitted = logistic4(pred, *params)
    if not (np.all(np.isfinite(params)) and np.all(np.isfinite(fitted))):
        return fallback("non-finite fitted parameters or values")
    value = plcc(fitted, mos)
    if not math.isfinite(value):
        return fallback("the fitted curve is constant over the predictions")
    return LogisticFit(status="ok", params=tuple(float(v) for v in params), plcc=value)


# ----------------------------------------------------------------------------------------- unique-score ratio


@dataclasses.dataclass(frozen=True)
class UniqueRatio:
    """Share of distinct values at `decimals` decimals among the finite values (0..1; x100 gives the %)."""

    ratio: float | None
    n_unique: int
    n_finite: int
    n_nonfinite: int
    decimals: int

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(dataclasses.asdict(self))


def unique_score_ratio(scores: Sequence[float] | np.ndarray, decimals: int = 2) -> UniqueRatio:
    """Unique-score ratio of arXiv:2601.02918 Sec. 3.2: |{round(s, 2)}| / n over the finite scores.

    The paper reports 2.04% for VisualQuality-R1 on the KonIQ test set against 71.34% for its MOS.
    Non-finite scores (invalid outputs) are excluded and counted; an empty input gives ratio None.
    """
    s = np.asarray([np.nan if v is None else v for v in scores], dtype=np.float64).reshape(-1)
    finite = s[np.isfinite(s)]
    n_unique = int(np.unique(np.round(finite, decimals)).size)
    ratio = n_unique / finite.size if finite.size else None
    return UniqueRatio(ratio, n_unique, int(finite.size), int(s.size - finite.size), decimals)


# ------------------------------------------------------------------------------------------ all score metrics


@dataclasses.dataclass(frozen=True)
class ScoreMetrics:
    """Every score-regression metric for one dataset. Correlations are None when undefined (see `status`)."""

    n_total: int
    n_used: int
    n_dropped_nonfinite: int
    status: str
    plcc: float | None
    srcc: float | None
    krcc: float | None
    rmse: float | None
    plcc_isotonic: float | None
    srcc_isotonic: float | None
    logistic: LogisticFit
    unique_ratio_pred: UniqueRatio
    unique_ratio_mos: UniqueRatio

    @property
    def plcc_logistic(self) -> float | None:
        return self.logistic.plcc

    def to_dict(self) -> dict[str, Any]:
        out = _jsonable(dataclasses.asdict(self))
        out["plcc_logistic"] = self.logistic.plcc
        return out


def score_metrics(pred: Sequence[float] | np.ndarray, mos: Sequence[float] | np.ndarray) -> ScoreMetrics:
    """All score-regression metrics for predictions `pred` against ground truth `mos` (same length).

    Pairs with a non-finite (or None) prediction or MOS are dropped and counted in `n_dropped_nonfinite`;
    they are never replaced by a guess. With fewer than MIN_SAMPLES pairs left the raw correlations and the
    logistic PLCC are None and `status` says "too_few_samples"; the isotonic-fit PLCC / SRCC are still given
    from MIN_ISOTONIC_SAMPLES (2) pairs. A constant fit (e.g. falling predictions, which the monotone fit pools
    into one value) gives None for both. Each unique ratio is taken over all finite values of its own input.
    """
    p_all = np.asarray([np.nan if v is None else v for v in pred], dtype=np.float64).reshape(-1)
    p, m, dropped = finite_pairs(pred, mos)
    n_total = int(p_all.size)
    uniq_pred = unique_score_ratio(p_all)
    uniq_mos = unique_score_ratio([np.nan if v is None else v for v in mos])
    if p.size < MIN_SAMPLES:
        iso = isotonic_fit(p, m) if p.size >= MIN_ISOTONIC_SAMPLES else None
        return ScoreMetrics(
            n_total=n_total, n_used=int(p.size), n_dropped_nonfinite=dropped,
            status=(f"too_few_samples: {p.size} finite pairs, raw correlations need at least {MIN_SAMPLES}, "
                    f"the isotonic-fit ones {MIN_ISOTONIC_SAMPLES}"),
            plcc=None, srcc=None, krcc=None, rmse=_json_float(rmse(p, m)) if p.size else None,
            plcc_isotonic=None if iso is None else _json_float(plcc(iso, m)),
            srcc_isotonic=None if iso is None else _json_float(srcc(iso, m)),
            logistic=LogisticFit("fallback_raw: too few samples", None, None),
            unique_ratio_pred=uniq_pred, unique_ratio_mos=uniq_mos,
        )
    iso = isotonic_fit(p, m)
    values = [plcc(p, m), srcc(p, m), krcc(p, m), plcc(iso, m), srcc(iso, m)]
    status = ("ok" if all(math.isfinite(v) for v in values)
              else "undefined: constant predictions, MOS or isotonic fit")
    return ScoreMetrics(
        n_total=n_total, n_used=int(p.size), n_dropped_nonfinite=dropped, status=status,
        plcc=_json_float(values[0]), srcc=_json_float(values[1]), krcc=_json_float(values[2]),
        rmse=_json_float(rmse(p, m)),
        plcc_isotonic=_json_float(values[3]), srcc_isotonic=_json_float(values[4]),
        logistic=logistic_fit_plcc(p, m),
        unique_ratio_pred=uniq_pred, unique_ratio_mos=uniq_mos,
    )


# ------------------------------------------------------------------------------------- degradation accuracy

# The Q-Insight prompt says "compression" where its Table 3 says "JPEG"; both name one class.
DEFAULT_CLASS_ALIASES: Mapping[str, str] = {"jpeg": "compression", "jpeg compression": "compression"}
NULL_CLASS = "null"


def _norm_label(value: object, aliases: Mapping[str, str]) -> str | None:
    if value is None:
        return None
    text = str(value).strip().lower()
    if not text:
        return None
    return aliases.get(text, text)


@dataclasses.dataclass(frozen=True)
class ClassAccuracy:
    """Accuracy for the items whose ground-truth class is this class. `level_acc` is None for "null"."""

    n: int
    class_acc: float
    level_acc: float | None


@dataclasses.dataclass(frozen=True)
class DegradationMetrics:
    """Degradation perception accuracy (arXiv:2503.22679 Table 3).

    `per_class` maps each ground-truth class to its accuracies; `mean_class_acc` / `mean_level_acc` are the
    macro averages over classes (Table 3 "Average"; the level average leaves out "null", which has no level);
    `overall_*` are micro averages over items. `n_invalid_pred` counts items with no predicted class (an
    unparseable answer); they count as wrong, never as a guess. `n_skipped` counts items with no ground truth.
    """

    n: int
    n_invalid_pred: int
    n_skipped: int
    per_class: dict[str, ClassAccuracy]
    mean_class_acc: float | None
    mean_level_acc: float | None
    overall_class_acc: float | None
    overall_level_acc: float | None

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(dataclasses.asdict(self))


def degradation_accuracy(
    pred_class: Sequence[object],
    pred_level: Sequence[object],
    gt_class: Sequence[object],
    gt_level: Sequence[object],
    aliases: Mapping[str, str] = DEFAULT_CLASS_ALIASES,
) -> DegradationMetrics:
    """Class and level accuracy per ground-truth distortion class (arXiv:2503.22679 Eqs. 4-5, Table 3).

    Class correct: pred_class == gt_class (Eq. 4). Level correct: pred_class == gt_class and
    pred_level == gt_level (Eq. 5), so a right level with a wrong class is wrong. Labels compare after
    strip + lower-case + `aliases`. The "null" class (no distortion) has class accuracy only.
    """
    lengths = {len(pred_class), len(pred_level), len(gt_class), len(gt_level)}
    if len(lengths) != 1:
        raise ValueError(
            f"degradation_accuracy needs equal lengths, got pred_class={len(pred_class)}, "
            f"pred_level={len(pred_level)}, gt_class={len(gt_class)}, gt_level={len(gt_level)}"
        )
    hits: dict[str, list[int]] = {}  # class -> [n, class hits, level hits]
    n = invalid = skipped = 0
    for pc, pl, gc, gl in zip(pred_class, pred_level, gt_class, gt_level):
        g = _norm_label(gc, aliases)
        if g is None:
            skipped += 1
            continue
        n += 1
        p = _norm_label(pc, aliases)
        invalid += p is None
        row = hits.setdefault(g, [0, 0, 0])
        row[0] += 1
        class_ok = p == g
        row[1] += class_ok
        row[2] += class_ok and _norm_label(pl, {}) == _norm_label(gl, {})
    per_class = {
        c: ClassAccuracy(n=r[0], class_acc=r[1] / r[0], level_acc=None if c == NULL_CLASS else r[2] / r[0])
        for c, r in sorted(hits.items())
    }
    class_accs = [a.class_acc for a in per_class.values()]
    level_accs = [a.level_acc for a in per_class.values() if a.level_acc is not None]
    leveled = [r for c, r in hits.items() if c != NULL_CLASS]
    n_leveled = sum(r[0] for r in leveled)
    return DegradationMetrics(
        n=n, n_invalid_pred=invalid, n_skipped=skipped, per_class=per_class,
        mean_class_acc=float(np.mean(class_accs)) if class_accs else None,
        mean_level_acc=float(np.mean(level_accs)) if level_accs else None,
        overall_class_acc=sum(r[1] for r in hits.values()) / n if n else None,
        overall_level_acc=sum(r[2] for r in leveled) / n_leveled if n_leveled else None,
    )
