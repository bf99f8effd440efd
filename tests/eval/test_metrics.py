"""Metrics against direct SciPy / NumPy computations and hand-worked cases."""

import itertools
import json

import numpy as np
import pytest
from scipy import optimize, stats

from zoomiqa_jax.eval import metrics as M


def _data(seed, n=300, ties=False):
    rng = np.random.default_rng(seed)
    x = rng.normal(3.0, 1.0, n)
    y = 0.7 * x + rng.normal(0.0, 0.6, n)
    if ties:
        x, y = np.round(x, 1), np.round(y, 1)
    return x, y


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_plcc_srcc_equal_scipy(seed):
    x, y = _data(seed, ties=seed == 2)
    assert M.plcc(x, y) == pytest.approx(stats.pearsonr(x, y).statistic, abs=1e-12)
    assert M.srcc(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)


def _tau_b(x, y):
    """Kendall tau-b by its definition over all pairs."""
    c = d = tx = ty = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        sx, sy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
        if sx == 0 and sy == 0:
            continue
        if sx == 0:
            tx += 1
        elif sy == 0:
            ty += 1
        elif sx == sy:
            c += 1
        else:
            d += 1
    return (c - d) / np.sqrt((c + d + tx) * (c + d + ty))


def test_krcc_equals_direct_tau_b_with_ties():
    x, y = _data(3, n=80, ties=True)
    assert M.krcc(x, y) == pytest.approx(_tau_b(x, y), abs=1e-12)


def test_rmse_equals_numpy():
    x, y = _data(4)
    assert M.rmse(x, y) == pytest.approx(np.sqrt(np.mean((x - y) ** 2)), rel=1e-12)


def test_isotonic_fit_hand_case_pools_violators():
    fitted = M.isotonic_fit(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 3.0, 2.0, 4.0]))
    np.testing.assert_allclose(fitted, [1.0, 2.5, 2.5, 4.0])


def test_isotonic_fit_gives_tied_predictions_one_value():
    fitted = M.isotonic_fit(np.array([1.0, 1.0, 2.0]), np.array([3.0, 1.0, 2.0]))
    np.testing.assert_allclose(fitted, [2.0, 2.0, 2.0])


def test_isotonic_fit_equals_scipy_on_sorted_order_and_is_optimal():
    x, y = _data(5, n=200)
    order = np.argsort(x)
    expected = np.empty_like(y)
    expected[order] = optimize.isotonic_regression(y[order]).x
    fitted = M.isotonic_fit(x, y)
    np.testing.assert_allclose(fitted, expected, atol=1e-12)
    assert np.all(np.diff(fitted[order]) >= -1e-12)
    # least squares among monotone maps: no worse than the identity-like linear fit, which is monotone
    slope, intercept = np.polyfit(x, y, 1)
    assert np.sum((fitted - y) ** 2) <= np.sum((slope * x + intercept - y) ** 2)


def test_isotonic_metrics_match_scipy_on_the_fitted_values():
    x, y = _data(6)
    out = M.score_metrics(x, y)
    fitted = M.isotonic_fit(x, y)
    assert out.plcc_isotonic == pytest.approx(stats.pearsonr(fitted, y).statistic, abs=1e-12)
    assert out.srcc_isotonic == pytest.approx(stats.spearmanr(fitted, y).statistic, abs=1e-12)
    assert out.plcc_isotonic > out.plcc  # the fit can only help a monotone relation


def test_logistic_fit_plcc_is_one_on_a_known_logistic_curve():
    x = np.random.default_rng(7).uniform(0.0, 10.0, 300)
    y = M.logistic4(x, 4.6, 1.1, 5.0, 0.8)
    fit = M.logistic_fit_plcc(x, y)
    assert fit.status == "ok"
    assert fit.plcc == pytest.approx(1.0, abs=1e-6)
    assert M.plcc(x, y) < 0.97  # the raw PLCC is clearly below, so the fit did something


def test_logistic_fit_falls_back_to_raw_plcc_when_curve_fit_fails(monkeypatch):
    x, y = _data(8)

    def broken(*args, **kwargs):
        raise RuntimeError("Optimal parameters not found")

    monkeypatch.setattr(M.optimize, "curve_fit", broken)
    fit = M.logistic_fit_plcc(x, y)
    assert fit.status.startswith("fallback_raw") and "Optimal parameters" in fit.status
    assert fit.plcc == pytest.approx(stats.pearsonr(x, y).statistic, abs=1e-12)


def test_logistic_fit_falls_back_on_too_few_or_constant_inputs():
    few = M.logistic_fit_plcc(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.5, 2.0]))
    assert few.status.startswith("fallback_raw") and few.params is None
    assert few.plcc == pytest.approx(stats.pearsonr([1, 2, 3], [1, 2.5, 2]).statistic)
    const = M.logistic_fit_plcc(np.full(10, 3.0), np.arange(10.0))
    assert const.status.startswith("fallback_raw") and const.plcc is None


@pytest.mark.parametrize(
    ("scores", "ratio", "n_unique", "n_nonfinite"),
    [
        ([1.0, 1.001, 2.0, 2.0], 0.5, 2, 0),  # 1.001 rounds onto 1.00
        ([1.234, 1.236], 1.0, 2, 0),  # 1.23 vs 1.24
        ([3.0, float("nan"), None, 3.0], 0.5, 1, 2),
        ([4.0] * 49 + [2.0], 0.04, 2, 0),
    ],
)
def test_unique_score_ratio_hand_cases(scores, ratio, n_unique, n_nonfinite):
    out = M.unique_score_ratio(scores)
    assert out.ratio == pytest.approx(ratio)
    assert (out.n_unique, out.n_nonfinite) == (n_unique, n_nonfinite)


def test_unique_score_ratio_of_nothing_is_none():
    assert M.unique_score_ratio([float("nan")]).ratio is None


def test_score_metrics_drop_nonfinite_pairs_and_count_them():
    x, y = _data(9, n=50)
    xs = list(x) + [float("nan"), None, 2.0]
    ys = list(y) + [3.0, 3.0, float("inf")]
    out = M.score_metrics(xs, ys)
    assert (out.n_total, out.n_used, out.n_dropped_nonfinite) == (53, 50, 3)
    assert out.status == "ok"
    assert out.plcc == pytest.approx(stats.pearsonr(x, y).statistic, abs=1e-12)
    assert out.krcc == pytest.approx(stats.kendalltau(x, y).statistic, abs=1e-12)
    assert out.unique_ratio_pred.n_nonfinite == 2
    json.dumps(out.to_dict(), allow_nan=False)  # plain JSON, NaN never leaks


def test_score_metrics_with_too_few_samples_say_so():
    out = M.score_metrics([1.0, 2.0, float("nan")], [1.0, 2.0, 3.0])
    assert out.status.startswith("too_few_samples")
    assert out.plcc is None and out.srcc is None and out.plcc_logistic is None
    json.dumps(out.to_dict(), allow_nan=False)


def test_score_metrics_with_constant_predictions_are_undefined_not_crashing():
    out = M.score_metrics([3.0] * 10, list(range(10)))
    assert out.status.startswith("undefined") and out.plcc is None
    assert out.unique_ratio_pred.ratio == pytest.approx(0.1)
    json.dumps(out.to_dict(), allow_nan=False)


def _falling(n, rng):
    """n predictions 0..n-1 against strictly falling MOS: the isotonic fit pools them into one constant."""
    return np.arange(n, dtype=np.float64), np.sort(rng.uniform(1.0, 5.0, n))[::-1].copy()


def test_constant_fit_gives_no_value_not_rounding_noise():
    # The mean of n equal fitted values can be one rounding step off, which made the PLCC of a constant fit
    # about 1e-16 instead of undefined (e.g. MOS [3.1234] * 2 + [2.7] * 5 gave -2.7e-15).
    rng = np.random.default_rng(10)
    cases = [(np.arange(7.0), np.array([3.1234] * 2 + [2.7] * 5))] + [_falling(n, rng) for n in range(2, 9)
                                                                        for _ in range(20)]
    for pred, mos in cases:
        fitted = M.isotonic_fit(pred, mos)
        assert np.ptp(fitted) == 0.0
        assert np.isnan(M.plcc(fitted, mos)) and np.isnan(M.srcc(fitted, mos)), (pred, mos)
        out = M.score_metrics(pred, mos)
        assert out.plcc_isotonic is None and out.srcc_isotonic is None, (pred, mos)
        assert out.status.startswith(("undefined", "too_few_samples")), out.status
        json.dumps(out.to_dict(), allow_nan=False)


def test_plcc_of_a_constant_input_is_nan_for_any_value():
    rng = np.random.default_rng(11)
    y = rng.normal(size=7)
    for value in [2.7, 3.1234, *rng.uniform(1.0, 5.0, 200)]:
        assert np.isnan(M.plcc(np.full(7, value), y)) and np.isnan(M.plcc(y, np.full(7, value)))


@pytest.mark.parametrize(
    "pred,mos,fit_plcc,fit_srcc",
    [
        ([1.0, 2.0], [2.5, 4.0], 1.0, 1.0),  # a rising pair is fitted exactly
        ([4.5, 2.0], [4.0, 1.5], 1.0, 1.0),
        ([1.0, 2.0], [4.0, 2.5], None, None),  # a falling pair pools into one constant: no value
        ([3.0, 3.0], [2.0, 4.0], None, None),  # tied predictions: one constant
        ([1.0, 2.0], [3.0, 3.0], None, None),  # constant MOS
    ],
)
def test_isotonic_correlations_from_two_pairs(pred, mos, fit_plcc, fit_srcc):
    # The authors' evaluation computes fit PLCC / SRCC from 2 valid pairs; raw correlations still need 3.
    out = M.score_metrics(pred + [float("nan")], mos + [3.0])
    assert (out.plcc_isotonic, out.srcc_isotonic) == (fit_plcc, fit_srcc)
    assert out.plcc is None and out.srcc is None and out.krcc is None and out.plcc_logistic is None
    assert out.status.startswith("too_few_samples") and out.n_used == 2
    json.dumps(out.to_dict(), allow_nan=False)


def test_one_pair_gives_no_isotonic_value():
    out = M.score_metrics([2.0], [3.0])
    assert out.plcc_isotonic is None and out.srcc_isotonic is None and out.status.startswith("too_few_samples")


def test_score_metrics_rejects_different_lengths():
    with pytest.raises(ValueError, match="differ in length"):
        M.score_metrics([1.0, 2.0], [1.0])


def test_degradation_accuracy_hand_case():
    gt_c = ["noise", "noise", "noise", "noise", "jpeg", "compression", "null", "null"]
    gt_l = ["slight", "slight", "serious", "serious", "moderate", "moderate", "null", "null"]
    pr_c = ["noise", "noise", "noise", "blur", "JPEG", "compression", "null", None]
    pr_l = ["slight", "moderate", "serious", "serious", "moderate", "slight", "null", None]
    out = M.degradation_accuracy(pr_c, pr_l, gt_c, gt_l)
    noise, comp, null = out.per_class["noise"], out.per_class["compression"], out.per_class["null"]
    assert (noise.n, noise.class_acc, noise.level_acc) == (4, 0.75, 0.5)  # right level, wrong class -> wrong
    assert (comp.n, comp.class_acc, comp.level_acc) == (2, 1.0, 0.5)  # "jpeg"/"JPEG" alias "compression"
    assert (null.n, null.class_acc, null.level_acc) == (2, 0.5, None)
    assert out.n_invalid_pred == 1
    assert out.mean_class_acc == pytest.approx((0.75 + 1.0 + 0.5) / 3)
    assert out.mean_level_acc == pytest.approx((0.5 + 0.5) / 2)  # null has no level
    assert out.overall_class_acc == pytest.approx(6 / 8)
    assert out.overall_level_acc == pytest.approx(3 / 6)
    json.dumps(out.to_dict(), allow_nan=False)


def test_degradation_accuracy_skips_missing_ground_truth_and_checks_lengths():
    out = M.degradation_accuracy(["blur", "blur"], ["slight", "slight"], [None, "blur"], [None, "slight"])
    assert (out.n, out.n_skipped, out.per_class["blur"].level_acc) == (1, 1, 1.0)
    with pytest.raises(ValueError, match="equal lengths"):
        M.degradation_accuracy(["blur"], [], ["blur"], ["slight"])
