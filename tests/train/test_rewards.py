"""Zoom-IQA and Q-Insight rewards against direct formulas; fuzzed Q-Insight parsing never raises."""

import math
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm

from zoomiqa_jax.train.rewards import (
    gaussian_score_reward,
    group_rating_stats,
    thurstone_rank_reward,
    zoomiqa_rewards,
)
from zoomiqa_jax.train.rewards_qinsight import (
    qinsight_degradation_reward,
    qinsight_format_reward,
    qinsight_rewards,
    qinsight_score_reward,
)

# ---------------------------------------------------------------- Zoom-IQA


def random_ratings(seed, batch=5, group=6, missing=0.15):
    rng = np.random.default_rng(seed)
    rating = np.round(rng.uniform(1.0, 5.0, (batch, group)), 2)
    rating[rng.random((batch, group)) < missing] = np.nan
    mos = np.round(rng.uniform(1.0, 5.0, batch), 1)
    mos[1] = mos[0]  # a tie in MOS: p* = 0.5
    return rating, mos


def direct_rank(rating, mos, eps=1e-6):
    """VisualQuality-R1's fidelity reward by loops, scipy's normal CDF, numpy's ddof=1 variance."""
    batch, group = rating.shape
    stats = []
    for i in range(batch):
        r = rating[i][np.isfinite(rating[i])]
        stats.append((r.mean() if len(r) else None, r.var(ddof=1) if len(r) > 1 else 0.0))
    out = np.zeros((batch, group))
    for i in range(batch):
        for k in range(group):
            if not np.isfinite(rating[i, k]):
                continue
            terms = []
            for j in range(batch):
                if j == i or stats[j][0] is None:
                    continue
                p = norm.cdf((rating[i, k] - stats[j][0]) / math.sqrt(stats[i][1] + stats[j][1] + eps))
                target = 1.0 if mos[i] > mos[j] else 0.0 if mos[i] < mos[j] else 0.5
                terms.append(math.sqrt(p * target + eps) + math.sqrt((1 - p) * (1 - target) + eps))
            out[i, k] = np.mean(terms) if terms else 0.0
    return out


@pytest.mark.parametrize("seed", range(4))
def test_gaussian_score_reward_matches_formula(seed):
    rating, mos = random_ratings(seed)
    want = np.exp(-((rating - mos[:, None]) ** 2) / (2 * 0.35**2))
    want[np.isnan(rating)] = 0.0
    np.testing.assert_allclose(gaussian_score_reward(rating, mos), want, rtol=1e-12)


def test_gaussian_score_reward_hand_made():
    got = gaussian_score_reward(np.array([[3.0, 3.35, np.nan, np.inf]]), np.array([3.0]))
    np.testing.assert_allclose(got, [[1.0, math.exp(-0.5), 0.0, 0.0]], rtol=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_thurstone_rank_reward_matches_loops(seed):
    rating, mos = random_ratings(seed)
    np.testing.assert_allclose(thurstone_rank_reward(rating, mos), direct_rank(rating, mos), rtol=1e-12)


def test_thurstone_rank_reward_hand_made():
    # image 0: ratings 3, 4 (mean 3.5, unbiased var 0.5), MOS 3.5; image 1: ratings 2, 2 (var 0), MOS 2.
    got = thurstone_rank_reward(np.array([[3.0, 4.0], [2.0, 2.0]]), np.array([3.5, 2.0]))
    phi = lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2)))
    s = math.sqrt(0.5 + 1e-6)
    want = [
        [math.sqrt(phi(1 / s) + 1e-6) + 1e-3, math.sqrt(phi(2 / s) + 1e-6) + 1e-3],  # p* = 1
        [1e-3 + math.sqrt(1 - phi(-1.5 / s) + 1e-6)] * 2,  # p* = 0
    ]
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_thurstone_edge_cases():
    # one image: no partner, reward 0; an image without parsed ratings is no partner
    assert np.all(thurstone_rank_reward(np.array([[3.0, 4.0]]), np.array([3.0])) == 0.0)
    rating = np.array([[3.0, 4.0], [np.nan, np.nan], [2.0, 1.0]])
    got = thurstone_rank_reward(rating, np.array([4.0, 3.0, 1.0]))
    np.testing.assert_allclose(got, direct_rank(rating, np.array([4.0, 3.0, 1.0])), rtol=1e-12)
    assert np.all(got[1] == 0.0) and np.all(got[[0, 2]] > 0.5)
    stats_in = np.array([[1.0, 2.0, np.nan, 4.0], [np.nan] * 4, [2.0, np.nan, np.nan, 1]])
    mu, var, count = group_rating_stats(stats_in)
    np.testing.assert_allclose(var, [np.var([1.0, 2.0, 4.0], ddof=1), 0.0, 0.5])
    assert np.isnan(mu[1]) and list(count) == [3, 0, 2]


def test_zoomiqa_total_is_format_plus_alpha_score_plus_beta_rank():
    rating, mos = random_ratings(9)
    fmt = np.random.default_rng(9).random(rating.shape) < 0.7
    out = zoomiqa_rewards(fmt, rating, mos)
    want = fmt + 1.0 * gaussian_score_reward(rating, mos) + 2.0 * direct_rank(rating, mos)
    np.testing.assert_allclose(out.total, want, rtol=1e-12)
    np.testing.assert_array_equal(out.format, fmt.astype(float))
    with pytest.raises(ValueError, match="format_ok"):
        zoomiqa_rewards(fmt[:, :2], rating, mos)
    with pytest.raises(ValueError, match="mos"):
        zoomiqa_rewards(fmt, rating, mos[:2])


# ---------------------------------------------------------------- Q-Insight

GOOD = '<think>\nThe image is sharp.\n</think>\n<answer>\n{"rating": 3.42}\n</answer>'
GOOD_DEG = (
    '<think>\nnoisy\n</think>\n<answer>\n{"distortion_class": "noise", "severity": "moderate"}\n</answer>'
)


@pytest.mark.parametrize(
    "text, want",
    [
        (GOOD, 1.0),
        (GOOD_DEG, 1.0),
        ('<think>  \nline one\nline two  \n  </think>  \n<answer> \n{"rating": 3}  \n  </answer> \n', 1.0),
        ('<think>\nx\n</think>\n<answer>\n{"a": {"rating": 3}}\n</answer>', 0.0),  # nested braces
        ('<think>\nx\n</think>\n<answer>\n"rating": 3\n</answer>', 0.0),  # no braces
        ('<think>x</think><answer>{"rating": 3}</answer>', 0.0),  # no newlines
        ('<think>\nx\n</think>\n<answer>\n{"rating": 3}\n</answer>\nextra', 0.0),  # text after the answer
        ('preamble <think>\nx\n</think>\n<answer>\n{"rating": 3}\n</answer>', 0.0),  # text before
        ('<think>\nx\n</think>\n\n<answer>\n{"rating": 3}\n</answer>', 1.0),  # blank line: whitespace
        ("", 0.0),
    ],
)
def test_qinsight_format_reward(text, want):
    assert qinsight_format_reward(text) == want


@pytest.mark.parametrize(
    "answer, rating",
    [
        ('{"rating": 3.42}', 3.42),
        ('{"rating":4}', 4.0),
        ('{"rating": 3.}', 3.0),
        ('{"rating": "3.42"}', None),  # quoted: not a JSON number
        ('{"rating": -1.0}', None),
        ('{"rating": 1.2.3}', None),
        ('{"rating": .}', None),
        ('{"score": 3.4}', None),
    ],
)
def test_qinsight_score_reward_reads_only_json_numbers(answer, rating):
    # a rating that reads scores 1 at its own value and 0 just past the threshold; one that does not scores 0
    text = f"<think>\nx\n</think>\n<answer>\n{answer}\n</answer>"
    for mos in (1.0, 3.0, 3.42, 4.0, -1.0, 5.0):
        want = 1.0 if rating is not None and abs(rating - mos) < 0.35 else 0.0
        assert qinsight_score_reward(text, mos) == want
    if rating is not None:
        assert qinsight_score_reward(text, rating + 0.36) == 0.0


def test_qinsight_score_reward_threshold():
    make = lambda r: f'<think>\nx\n</think>\n<answer>\n{{"rating": {r}}}\n</answer>'
    assert qinsight_score_reward(make(3.34), 3.0) == 1.0
    assert qinsight_score_reward(make(3.36), 3.0) == 0.0
    assert qinsight_score_reward(make(2.66), 3.0) == 1.0
    assert qinsight_score_reward(make(0.65), 1.0) == 0.0  # |0.65 - 1.0| == 0.35 exactly: the bound is strict
    assert qinsight_score_reward(make('"3.0"'), 3.0) == 0.0
    # only the first answer block counts; the format is not required
    assert qinsight_score_reward('<answer>{"rating": 1}</answer><answer>{"rating": 3}</answer>', 3.0) == 0.0
    assert qinsight_score_reward('junk <answer>{"rating": 3.1}</answer>', 3.0) == 1.0


def test_qinsight_degradation_reward():
    make = lambda c, s: f'<answer>\n{{"distortion_class": "{c}", "severity": "{s}"}}\n</answer>'
    assert qinsight_degradation_reward(make("noise", "moderate"), "noise", "moderate") == 1.0
    assert qinsight_degradation_reward(make(" noise ", "moderate"), "noise", "moderate") == 1.0  # stripped
    assert qinsight_degradation_reward(make("noise", "serious"), "noise", "moderate") == 0.25
    assert qinsight_degradation_reward(make("blur", "moderate"), "noise", "moderate") == 0.0
    assert qinsight_degradation_reward(make("Noise", "moderate"), "noise", "moderate") == 0.0
    assert qinsight_degradation_reward(make("noise", " "), "noise", "moderate") == 0.25  # blank severity: wrong
    swapped = '<answer>{"severity": "moderate", "distortion_class": "noise"}</answer>'
    assert qinsight_degradation_reward(swapped, "noise", "moderate") == 0.0


def test_qinsight_rewards_batch_sums_format_and_task():
    responses = [
        [GOOD, GOOD.replace("3.42", "4.5"), "garbage"],
        [GOOD_DEG, GOOD_DEG.replace("noise", "blur"), ""],
    ]
    labels = {"distortion_class": "noise", "severity": "moderate"}
    out = qinsight_rewards(responses, ["score", "dist"], [3.3, labels])
    np.testing.assert_array_equal(out.format, [[1, 1, 0], [1, 1, 0]])
    np.testing.assert_array_equal(out.task, [[1, 0, 0], [1, 0, 0]])
    np.testing.assert_array_equal(out.total, out.format + out.task)
    with pytest.raises(ValueError, match="task"):
        qinsight_rewards([["x"]], ["caption"], [1.0])
    with pytest.raises(ValueError, match="distortion_class"):
        qinsight_rewards([["x"]], ["degradation"], [1.0])


FRAGMENTS = [
    "<think>", "</think>", "<answer>", "</answer>", "\n", " ", "{", "}", '"rating"', ":", "3.5", "1.2.3", ".",
    '"3.5"', '"distortion_class"', '"severity"', '"noise"', '"moderate"', ",", "-", "\\", '"', "\x00", "é",
    "3.", "3.4", '" "', '"slight"', "9" * 400, "\u0663",
]
texts = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=6)), max_size=40).map("".join)
framed = st.lists(st.sampled_from(FRAGMENTS), max_size=12).map(
    lambda parts: "<answer>{" + "".join(parts) + "}</answer>"
)


def upstream_score_reward(text, mos):
    """Eq. 3 as Q-Insight's training code computes it, restated without our parser: the first answer block,
    the first `"rating": [\\d.]+`, Python's float() (a failure scores 0), |rating - MOS| < 0.35."""
    block = re.search(r"<answer>(.*?)</answer>", text, re.DOTALL)
    number = re.search(r'"rating"\s*:\s*([\d.]+)', block.group(1).strip()) if block else None
    try:
        return 1.0 if number and abs(float(number.group(1)) - mos) < 0.35 else 0.0
    except ValueError:
        return 0.0


def upstream_degradation_reward(text, distortion_class, severity):
    """Eqs. 4-6 restated: class then severity as quoted strings in the first answer block, stripped, exact."""
    block = re.search(r"<answer>(.*?)</answer>", text, re.DOTALL)
    pattern = r'"distortion_class"\s*:\s*"([^"]+)".*?"severity"\s*:\s*"([^"]+)"'
    found = re.search(pattern, block.group(1).strip(), re.DOTALL) if block else None
    if found is None or found.group(1).strip() != distortion_class:
        return 0.0
    return 0.25 + (0.75 if found.group(2).strip() == severity else 0.0)


@settings(max_examples=300, deadline=None)
@given(texts)
def test_qinsight_rewards_never_raise_on_fuzzed_text(text):
    assert qinsight_format_reward(text) in (0.0, 1.0)
    assert qinsight_score_reward(text, 3.5) in (0.0, 1.0)
    assert qinsight_degradation_reward(text, "noise", "moderate") in (0.0, 0.25, 1.0)
    out = qinsight_rewards([[text, text]], ["score"], [3.5])
    assert out.total.shape == (1, 2) and np.all(np.isfinite(out.total))


@settings(max_examples=400, deadline=None)
@given(st.one_of(texts, framed), st.sampled_from([1.0, 3.0, 3.4, 3.5, 5.0]))
def test_qinsight_task_rewards_equal_the_upstream_rule(text, mos):
    assert qinsight_score_reward(text, mos) == upstream_score_reward(text, mos)
    for labels in (("noise", "moderate"), ("noise", "slight"), ("null", "null")):
        assert qinsight_degradation_reward(text, *labels) == upstream_degradation_reward(text, *labels)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=25).map("".join))
def test_wrapped_fuzz_keeps_the_format_reward_consistent(body):
    # a fuzzed body in a well-formed frame keeps format 1 exactly when it holds no brace
    text = f"<think>\nx\n</think>\n<answer>\n{{{body}}}\n</answer>"
    assert qinsight_format_reward(text) == (1.0 if "{" not in body and "}" not in body else 0.0)
