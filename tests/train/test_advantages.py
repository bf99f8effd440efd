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


def test_flat_layout_and_jit():
    rewards = np.random.default_rng(1).random(4 * 6)
    got = jax.jit(group_advantages_flat, static_argnums=1)(rewards, 6)
    np.testing.assert_allclose(got, direct(rewards.reshape(4, 6)).reshape(-1), rtol=1e-5, atol=1e-6)


def test_rejects_groups_of_one_and_bad_shapes():
    with pytest.raises(ValueError, match="at least 2"):
        group_advantages(np.zeros((3, 1)))
    with pytest.raises(ValueError, match="group = 4"):
        group_advantages_flat(np.zeros(6), 4)
