"""VRF and HACF decision rules on scripted answers whose quantities are known (issue 19, "Must show" 2)."""

import math

import numpy as np
import pytest

from zoomiqa_jax.curate import filters as F

# A pair that every rule keeps: ratings 1.0 apart, disjoint boxes, entropies 0.5 nats apart.
BASE_IMG = dict(rating=3.0, bbox=(0, 0, 10, 10), entropy=1.0)
BASE_TXT = dict(rating=4.0, bbox=(20, 20, 30, 30), entropy=1.5)


def _decide(img=None, txt=None):
    return F.vrf_decision(
        F.AnswerReadout(**{**BASE_IMG, **(img or {})}), F.AnswerReadout(**{**BASE_TXT, **(txt or {})})
    )


def test_base_pair_is_kept_with_its_quantities():
    decision = _decide()
    assert decision.keep and decision.reasons == ()
    assert (decision.rating_difference, decision.bbox_iou, decision.entropy_difference) == (1.0, 0.0, 0.5)


@pytest.mark.parametrize(
    "rating_txt, keep",
    [
        (3.40, True),  # |3.45 - 3.40| = 0.05 exactly in decimal (0.04999999999999982 in binary): "< 0.05" keeps
        (3.401, False),  # 0.049
        (3.399, True),  # 0.051
        (3.50, True),  # 0.05 the other way: the difference is absolute
        (3.499, False),
        (3.501, True),
        (3.40001, False),  # 0.04999
        (3.45, False),  # identical
    ],
)
def test_rating_difference_threshold_at_below_above(rating_txt, keep):
    decision = _decide(img={"rating": 3.45}, txt={"rating": rating_txt})
    assert decision.keep is keep
    assert ("rating_difference" in decision.reasons) is (not keep)


def test_rating_difference_at_threshold_is_exact():
    assert _decide(img={"rating": 3.45}, txt={"rating": 3.40}).rating_difference == 0.05


@pytest.mark.parametrize(
    "box_txt, iou, keep",
    [
        ((0, 0, 10, 10), 1.0, False),  # identical
        ((0, 0, 10, 5), 0.5, True),  # exactly 0.5: the rule is "> 0.5"
        ((0, 0, 10, 5.1), 0.51, False),  # just above
        ((0, 0, 10, 4.9), 0.49, True),  # just below
        ((20, 20, 30, 30), 0.0, True),  # disjoint
    ],
)
def test_bbox_iou_threshold_at_below_above(box_txt, iou, keep):
    decision = _decide(txt={"bbox": box_txt})
    assert decision.bbox_iou == pytest.approx(iou, abs=1e-9)
    assert decision.keep is keep
    assert ("bbox_iou" in decision.reasons) is (not keep)


@pytest.mark.parametrize(
    "entropy_txt, keep", [(1.01, True), (1.0099, False), (1.0101, True), (0.99, True), (0.9901, False), (1.0, False)]
)
def test_entropy_difference_threshold_at_below_above(entropy_txt, keep):
    decision = _decide(txt={"entropy": entropy_txt})
    assert decision.keep is keep
    assert ("entropy_difference" in decision.reasons) is (not keep)


def test_all_reasons_are_reported_in_order():
    decision = _decide(txt={"rating": 3.0, "bbox": (0, 0, 10, 10), "entropy": 1.0})
    assert not decision.keep
    assert decision.reasons == ("rating_difference", "bbox_iou", "entropy_difference")
    assert decision.to_dict()["reasons"] == ["rating_difference", "bbox_iou", "entropy_difference"]


def test_custom_thresholds_are_used():
    assert not F.vrf_decision(F.AnswerReadout(**BASE_IMG), F.AnswerReadout(**BASE_TXT), rating_threshold=1.5).keep


def test_final_answers_without_boxes_are_judged_by_rating_and_entropy_only():
    decision = _decide(img={"bbox": None}, txt={"bbox": (0, 0, 0, 0)})
    assert decision.keep and decision.bbox_iou == 0.0


@pytest.mark.parametrize(
    "a, b, iou",
    [
        ((0, 0, 10, 10), (0, 0, 10, 10), 1.0),
        ((0, 0, 10, 10), (10, 0, 20, 10), 0.0),  # touching, disjoint interiors
        ((0, 0, 10, 10), (50, 50, 60, 60), 0.0),
        ((0, 0, 10, 10), (5, 0, 15, 10), 50 / 150),  # half of each overlaps
        ((0, 0, 10, 10), (0, 0, 10, 5), 0.5),  # half of one is the other
        ((10, 10, 0, 0), (0, 0, 10, 10), 1.0),  # reversed corners are swapped
        (["0", "0", "0.5", "0.5"], (0.0, 0.0, 0.5, 0.25), 0.5),  # numeric strings, normalized coordinates
        (np.array([0, 0, 4, 4]), (0, 0, 2, 2), 0.25),
        ((0, 0, 0, 0), (0, 0, 0, 0), 0.0),  # empty boxes
        ((0, 0, 10, 0), (0, 0, 10, 10), 0.0),  # zero height
        (None, (0, 0, 10, 10), 0.0),
        ((0, 0, 10), (0, 0, 10, 10), 0.0),  # not four numbers
        ((0, 0, math.nan, 10), (0, 0, 10, 10), 0.0),
    ],
)
def test_box_iou_cases(a, b, iou):
    assert F.box_iou(a, b) == pytest.approx(iou, abs=1e-12)
    assert F.box_iou(b, a) == pytest.approx(iou, abs=1e-12)


@pytest.mark.parametrize("n", [1, 2, 7, 1000])
def test_entropy_of_uniform_is_log_n_nats(n):
    assert F.entropy(np.full(n, 1.0 / n)) == pytest.approx(math.log(n), abs=1e-12)


def test_entropy_of_one_hot_is_zero_and_of_a_known_distribution_by_hand():
    assert F.entropy([0.0, 1.0, 0.0]) == 0.0
    assert F.entropy([0.25, 0.75]) == pytest.approx(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)), abs=1e-15)


def test_mean_token_entropy_and_readout_from_distributions():
    probs = [[0.5, 0.5, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.25] * 4]
    expected = (math.log(2) + 0.0 + math.log(4)) / 3
    assert F.mean_token_entropy(probs) == pytest.approx(expected, abs=1e-12)
    readout = F.AnswerReadout.from_token_distributions(3.2, (0, 0, 1, 1), probs)
    assert readout.entropy == pytest.approx(expected, abs=1e-12) and readout.rating == 3.2


@pytest.mark.parametrize(
    "probs, match",
    [([0.5, 0.6], "summing to 1"), ([1.5, -0.5], "non-negative"), ([], r"shape \[V\]"), ([[1.0]], r"shape \[V\]")],
)
def test_entropy_rejects_non_distributions(probs, match):
    with pytest.raises(ValueError, match=match):
        F.entropy(probs)


def test_readout_rejects_bad_numbers():
    with pytest.raises(ValueError, match=r"AnswerReadout.rating"):
        F.AnswerReadout(rating=math.nan, bbox=None, entropy=0.0)
    with pytest.raises(ValueError, match=r"AnswerReadout.entropy"):
        F.AnswerReadout(rating=3.0, bbox=None, entropy=-0.1)
    with pytest.raises(ValueError, match=r"\[T, V\]"):
        F.mean_token_entropy(np.zeros((0, 3)))


@pytest.mark.parametrize(
    "reply, verdict",
    [
        ("Pass", "pass"),
        ("FAIL.", "fail"),
        ("**Pass**", "pass"),
        ("Decision: fail\nThe rationale claims noise that is absent.", "fail"),
        ("The rationale is consistent with the hints. Verdict: Pass", "pass"),
        ("Fail. It would pass if the noise claim were removed.", "fail"),  # the first word wins
        ("Passed", None),
        ("failure to match", None),
        ("bypass", None),
        ("", None),
        ("I cannot judge this image.", None),
        ("pass_fail", None),
    ],
)
def test_parse_verdict(reply, verdict):
    assert F.parse_verdict(reply) == verdict


def test_hacf_keeps_pass_only():
    assert F.hacf_decision("Pass").keep and F.hacf_decision("Pass").reasons == ()
    fail = F.hacf_decision("Fail")
    assert not fail.keep and fail.reasons == ("fail",) and fail.verdict == "fail"
    unparsed = F.hacf_decision("Looks fine to me")
    assert not unparsed.keep and unparsed.reasons == ("unparsed",) and unparsed.verdict is None
    assert F.hacf_decision(None).reasons == ("unparsed",)  # type: ignore[arg-type]
    assert unparsed.to_dict() == {"keep": False, "reasons": ["unparsed"], "verdict": None}
