"""Group-normalized advantages of GRPO (seeds/002 Eq. 1; seeds/000 supplement Eq. 7).

    A_k = (R_k - mean_g R_g) / (std_g R_g + 1e-4)

over the G responses of one prompt, with the UNBIASED (ddof = 1) standard deviation and 1e-4 added to
it, as both seed code bases compute it (`torch.std` then `+ 1e-4`). The papers write plain mean / std; the
code is the reference. A group whose rewards are all equal gets advantage 0 for every response.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

ADV_EPS = 1e-4


def group_advantages(rewards: jax.Array, eps: float = ADV_EPS) -> jax.Array:
    """Advantage of every response from its group's rewards.

    rewards: `[batch, group]` (group >= 2). Returns `[batch, group]` float32. Jittable.
    """
    rewards = jnp.asarray(rewards, dtype=jnp.float32)
    if rewards.ndim != 2:
        raise ValueError(f"group_advantages: expected rewards of shape [batch, group], found {rewards.shape}")
    if rewards.shape[1] < 2:
        raise ValueError(
            "group_advantages: the unbiased std needs at least 2 responses per group, "
            f"found {rewards.shape[1]}"
        )
    mean = jnp.mean(rewards, axis=1, keepdims=True)
    std = jnp.std(rewards, axis=1, keepdims=True, ddof=1)
    return (rewards - mean) / (std + eps)


def group_advantages_flat(rewards: jax.Array, group_size: int, eps: float = ADV_EPS) -> jax.Array:
    """`group_advantages` for flat rewards `[batch * group]`, each group contiguous; returns `[N]`."""
    rewards = jnp.asarray(rewards, dtype=jnp.float32)
    if rewards.ndim != 1 or rewards.shape[0] % group_size:
        raise ValueError(
            f"group_advantages_flat: expected [batch * group] rewards with group = {group_size}, "
            f"found shape {rewards.shape}"
        )
    return group_advantages(rewards.reshape(-1, group_size), eps).reshape(-1)
