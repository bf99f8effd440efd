"""Group-normalized advantages against the direct NumPy formula (R - mean) / (unbiased std + 1e-4)."""

import jax
import numpy as np
import pytest

from zoomiqa_jax.train.advantages import group_advantages, group_advantages_flat


def direct(rewards):
    rewards = np.asarray(rewards, np.float64)
    mean = rewards.mean(axis=1, keepdims=True)
    std = rewards.std(axis=1, ddof=1, keepdims=True)
    return (rewards - mean) / (std + 1e-4)


def test_matches_numpy_with_unbiased_std():
    rewards = np.random.default_rng(0).normal(1.0, 2.0, (5, 8))
    np.testing.assert_allclose(group_advantages(rewards), direct(rewards), rtol=1e-5, atol=1e-6)


def test_hand_made_group():
    # mean 2, unbiased std sqrt(((1)^2 + 0 + 1^2) / 2) = 1
    want = [[-1 / 1.0001, 0.0, 1 / 1.0001]]
    np.testing.assert_allclose(group_advantages([[1.0, 2.0, 3.0]]), want, rtol=1e-6)


def test_equal_rewards_give_zero_advantage():
    assert np.all(np.asarray(group_advantages(np.full((3, 8), 2.5))) == 0.0)


def test_flat_layout_and_jax_input():
    rewards = np.random.default_rng(1).random(4 * 6)
    got = group_advantages_flat(jax.numpy.asarray(rewards, jax.numpy.float32), 6)
    want = direct(rewards.astype(np.float32).reshape(4, 6)).reshape(-1)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_rejects_groups_of_one_and_bad_shapes():
    with pytest.raises(ValueError, match="at least 2"):
        group_advantages(np.zeros((3, 1)))
    with pytest.raises(ValueError, match="group = 4"):
        group_advantages_flat(np.zeros(6), 4)


def test_constant_groups_are_exactly_zero_for_every_value_and_group_size():
    # The float32 mean of G equal values can be one rounding step off (2.7 or 3.1234 with G = 7 or 8), which
    # divided by (0 + 1e-4) gave every response about +-2.4e-3; a float64 mean can be off too (by ~1e-15,
    # giving ~1e-11). The statistics must make any nonzero impossible.
    rng = np.random.default_rng(18)
    values = np.concatenate([[2.7, 3.1234, -1.5, 0.1, 1e-3, 123.456, -9.180529521276107],
                             rng.uniform(-10.0, 10.0, 400), rng.normal(0.0, 1e3, 100),
                             rng.uniform(-10.0, 10.0, 100).astype(np.float32)])
    for g in range(2, 17):
        rewards = np.repeat(values[:, None], g, axis=1)
        got = group_advantages(rewards)
        bad = np.flatnonzero(np.any(got != 0.0, axis=1))
        assert bad.size == 0, f"G = {g}: constant groups {values[bad[:3]]} got advantages {got[bad[:3], 0]}"
        assert np.all(group_advantages_flat(rewards.reshape(-1), g) == 0.0), f"G = {g}: flat layout"
        assert np.all(group_advantages(rewards.astype(np.float32)) == 0.0), f"G = {g}: float32 rewards"


def test_constant_group_beside_varied_groups_in_one_batch():
    rewards = np.array([[2.7] * 7, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], [3.1234] * 7])
    got = group_advantages(rewards)
    assert got.dtype == np.float32
    assert np.all(got[0] == 0.0) and np.all(got[2] == 0.0)
    np.testing.assert_allclose(got[1], direct(rewards)[1], rtol=0, atol=1e-6)


def test_varied_groups_match_float64_reference_within_1e6():
    rng = np.random.default_rng(7)
    for g in range(2, 17):
        base = rng.uniform(0.0, 5.0, (64, 1))
        spread = 10.0 ** rng.uniform(-3.0, 1.0, (64, 1))  # spreads from 0.001 to 10 around a reward-like level
        rewards = base + spread * rng.normal(size=(64, g))
        rewards[:8, 1:] = rewards[:8, :1]  # a few groups with one differing response: the largest |A|
        rewards[:8, 0] += rng.uniform(0.01, 2.0, 8)
        np.testing.assert_allclose(group_advantages(rewards), direct(rewards), rtol=0, atol=1e-6,
                                   err_msg=f"G = {g}")
