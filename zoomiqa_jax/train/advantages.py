"""Group-normalized advantages of GRPO (arXiv:2503.22679 Eq. 1; arXiv:2601.02918 supplement Eq. 7).

    A_k = (R_k - mean_g R_g) / (std_g R_g + 1e-4)

over the G responses of one prompt, with the UNBIASED (ddof = 1) standard deviation and 1e-4 added to
it, as both seed code bases compute it (`torch.std` then `+ 1e-4`). The papers write plain mean / std; the
code is the reference. A group whose rewards are all equal gets advantage exactly 0.0 for every response.

How the statistics are computed (the formula is unchanged):
* on the host in float64 (the GRPO loop computes advantages between rollout and update, outside any jit), the
  result cast to float32 once at the end;
* of the rewards centred on the group's first reward, d_k = R_k - R_1, so A_k = (d_k - mean d) / (std d + 1e-4).
  A constant group has d = 0.0 exactly, hence mean 0.0, std 0.0 and A = 0.0 exactly. Without the centring the
  mean of G equal values can be one rounding step off (in float32 e.g. 2.7 or 3.1234 with G = 7 or 8), and that
  step divided by 1e-4 gave every response about +-2.4e-3 (float64 alone only makes the error smaller).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

ADV_EPS = 1e-4


def group_advantages(rewards: ArrayLike, eps: float = ADV_EPS) -> np.ndarray:
    """Advantage of every response from its group's rewards.

    rewards: `[batch, group]` (group >= 2), any float array (NumPy or a concrete JAX array; not a tracer: this
    is host code). Returns `[batch, group]` float32.
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    if rewards.ndim != 2:
        raise ValueError(f"group_advantages: expected rewards of shape [batch, group], found {rewards.shape}")
    if rewards.shape[1] < 2:
        raise ValueError(
            "group_advantages: the unbiased std needs at least 2 responses per group, "
            f"found {rewards.shape[1]}"
        )
    centred = rewards - rewards[:, :1]  # [batch, group]; exactly 0.0 everywhere in a constant group
    mean = centred.mean(axis=1, keepdims=True)  # [batch, 1]
    std = centred.std(axis=1, ddof=1, keepdims=True)  # [batch, 1], unbiased
    return ((centred - mean) / (std + eps)).astype(np.float32)


def group_advantages_flat(rewards: ArrayLike, group_size: int, eps: float = ADV_EPS) -> np.ndarray:
    """`group_advantages` for flat rewards `[batch * group]`, each group contiguous; returns `[N]` float32."""
    rewards = np.asarray(rewards, dtype=np.float64)
    if rewards.ndim != 1 or rewards.shape[0] % group_size:
        raise ValueError(
            f"group_advantages_flat: expected [batch * group] rewards with group = {group_size}, "
            f"found shape {rewards.shape}"
        )
    return group_advantages(rewards.reshape(-1, group_size), eps).reshape(-1)
