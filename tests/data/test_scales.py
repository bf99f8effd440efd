"""Published score scales and the linear map to [1, 5]."""

import math

import numpy as np
import pytest

from zoomiqa_jax.data import scales as S

PUBLISHED = {  # key: (low, high, higher_is_better), as documented in docs/datasets.md
    "koniq": (1.0, 100.0, True),
    "spaq": (0.0, 100.0, True),
    "kadid": (1.0, 5.0, True),
    "livew": (0.0, 100.0, True),
    "agiqa3k": (0.0, 5.0, True),
    "csiq": (0.0, 1.0, False),
}


def test_the_seven_benchmarks_are_all_there():
    assert set(S.SCALES) == set(PUBLISHED) | {"pipal"}


@pytest.mark.parametrize("key", sorted(PUBLISHED))
def test_published_ranges_and_directions(key):
    scale = S.SCALES[key]
    assert (scale.low, scale.high, scale.higher_is_better) == PUBLISHED[key]


@pytest.mark.parametrize("key", sorted(PUBLISHED))
def test_best_maps_to_5_worst_to_1_middle_to_3(key):
    scale = S.SCALES[key]
    best, worst = (scale.high, scale.low) if scale.higher_is_better else (scale.low, scale.high)
    assert scale.normalize(best) == pytest.approx(5.0)
    assert scale.normalize(worst) == pytest.approx(1.0)
    assert scale.normalize((scale.low + scale.high) / 2) == pytest.approx(3.0)


def test_normalize_equals_the_direct_formula():
    rng = np.random.default_rng(0)
    for raw in rng.uniform(0.0, 100.0, 20):
        assert S.SCALES["spaq"].normalize(raw) == pytest.approx(1 + 4 * raw / 100)
    for raw in rng.uniform(0.0, 1.0, 20):
        assert S.SCALES["csiq"].normalize(raw) == pytest.approx(1 + 4 * (1 - raw))  # DMOS inverted
    for raw in rng.uniform(1.0, 100.0, 20):
        assert S.SCALES["koniq"].normalize(raw) == pytest.approx(1 + 4 * (raw - 1) / 99)


@pytest.mark.parametrize("key", sorted(PUBLISHED))
def test_denormalize_inverts_normalize(key):
    scale = S.SCALES[key]
    for raw in np.linspace(scale.low, scale.high, 7):
        assert scale.denormalize(scale.normalize(raw)) == pytest.approx(raw)


def test_pipal_elo_needs_the_observed_range():
    pipal = S.SCALES["pipal"]
    assert not pipal.has_published_range and pipal.higher_is_better
    with pytest.raises(ValueError, match="observed_range"):
        pipal.normalize(1500.0)
    elo = [1100.0, 1500.0, 1900.0, float("nan")]
    observed = S.observed_range(elo)
    assert observed == (1100.0, 1900.0)
    assert [pipal.normalize(v, observed) for v in elo[:3]] == pytest.approx([1.0, 3.0, 5.0])
    assert pipal.in_range(12345.0) and not pipal.in_range(float("nan"))


def test_observed_range_rejects_empty_or_constant_scores():
    with pytest.raises(ValueError, match="finite"):
        S.observed_range([float("nan")])
    with pytest.raises(ValueError, match="all equal"):
        S.observed_range([2.0, 2.0])


def test_in_range_checks_the_published_bounds():
    koniq = S.SCALES["koniq"]
    assert koniq.in_range(1.0) and koniq.in_range(100.0) and koniq.in_range(55.5)
    assert not koniq.in_range(0.5) and not koniq.in_range(100.5) and not koniq.in_range(math.inf)


def test_values_outside_the_range_are_not_clipped():
    assert S.normalize_score(110.0, 0.0, 100.0, True) == pytest.approx(5.4)
    with pytest.raises(ValueError, match="high > low"):
        S.normalize_score(1.0, 5.0, 5.0, True)


@pytest.mark.parametrize(
    ("alias", "key"),
    [("KonIQ-10k", "koniq"), ("livec", "livew"), ("LIVE-Wild", "livew"), ("AGIQA-3K", "agiqa3k"),
     ("CSIQ", "csiq")],
)
def test_get_scale_accepts_common_names(alias, key):
    assert S.get_scale(alias).key == key


def test_get_scale_names_the_choices_for_unknown_datasets():
    with pytest.raises(KeyError, match="tid2013"):
        S.get_scale("tid2013")
