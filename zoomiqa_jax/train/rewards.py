"""Zoom-IQA rewards (arXiv:2601.02918 Sec. 3.2 Eqs. 3-5, supplement Sec. 10.1 Eq. 6) as pure NumPy functions.

Every function works on a batch of B prompts (images) x G sampled responses. Ratings come in already parsed:
`rating: float[B, G]` holds the final rating of each response and NaN where the response had none (the
Zoom-IQA answer parser and format checker live in `zoomiqa_jax/processing/answers.py`). A response without a
usable rating scores 0 on the score and rank rewards; nothing here raises on model output.

The score and rank rewards do not look at the format flag: Eq. 6 adds the three terms, and a response
whose format is wrong but whose rating parses still earns its score and rank terms. A caller who wants the
terms gated passes NaN ratings for badly formatted responses.

Q-Insight's rewards (arXiv:2503.22679 Eqs. 3-6) are in `rewards_qinsight.py`.
"""

from __future__ import annotations

import re
from typing import NamedTuple

import numpy as np
from scipy.special import ndtr

SCORE_SIGMA = 0.35  # supplement Sec. 10.1
REWARD_ALPHA = 1.0  # weight of R_score in Eq. 6
REWARD_BETA = 2.0  # weight of R_rank in Eq. 6
FIDELITY_EPS = 1e-6  # the "+1e-6" terms of VisualQuality-R1's fidelity reward


class ZoomIqaRewards(NamedTuple):
    """The reward of every response and its parts, each `[batch, group]` float64."""

    format: np.ndarray
    score: np.ndarray
    rank: np.ndarray
    total: np.ndarray


def _check_ratings(rating: np.ndarray, mos: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    rating = np.asarray(rating, dtype=np.float64)
    mos = np.asarray(mos, dtype=np.float64)
    if rating.ndim != 2:
        raise ValueError(f"{where}: expected rating of shape [batch, group], found shape {rating.shape}")
    if mos.shape != (rating.shape[0],):
        raise ValueError(
            f"{where}: expected mos of shape [batch] = ({rating.shape[0]},) to match rating {rating.shape}, "
            f"found {mos.shape}"
        )
    if not np.all(np.isfinite(mos)):
        raise ValueError(f"{where}: every ground-truth MOS must be finite, found {mos}")
    return rating, mos


def gaussian_score_reward(rating: np.ndarray, mos: np.ndarray, sigma: float = SCORE_SIGMA) -> np.ndarray:
    """Gaussian score reward, arXiv:2601.02918 Eq. 4: R_score = exp(-(r_pred - r_gt)^2 / (2 sigma^2)).

    rating: `[batch, group]`, NaN (or any non-finite value) where the response had no rating;
    mos: `[batch]` ground truth r_gt; sigma = 0.35 (supplement Sec. 10.1). Returns `[batch, group]` in [0, 1],
    0 where the rating is missing.
    """
    rating, mos = _check_ratings(rating, mos, "gaussian_score_reward")
    if not sigma > 0:
        raise ValueError(f"gaussian_score_reward: sigma must be positive, found {sigma}")
    ok = np.isfinite(rating)
    diff = np.where(ok, rating - mos[:, None], 0.0)
    return np.where(ok, np.exp(-(diff**2) / (2.0 * sigma**2)), 0.0)


def group_rating_stats(rating: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, UNBIASED variance and count of each image's parsed ratings.

    rating: `[batch, group]` with NaN for missing. Returns `mu [batch]`, `var [batch]`, `count [batch]`.
    Missing ratings are left out; var is the ddof=1 variance of the parsed ones (as `torch.var` computes it in
    VisualQuality-R1), or 0 when fewer than two parsed; mu is NaN when none parsed.
    """
    rating = np.asarray(rating, dtype=np.float64)
    ok = np.isfinite(rating)
    count = ok.sum(axis=1)
    total = np.where(ok, rating, 0.0).sum(axis=1)
    mu = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    dev = np.where(ok, rating - np.where(count > 0, mu, 0.0)[:, None], 0.0)
    var = np.where(count > 1, (dev**2).sum(axis=1) / np.maximum(count - 1, 1), 0.0)
    return mu, var, count


def preference_targets(mos: np.ndarray) -> np.ndarray:
    """p*_ij from the MOS order: 1 if MOS_i > MOS_j, 0 if MOS_i < MOS_j, 0.5 if equal. `[batch, batch]`."""
    mos = np.asarray(mos, dtype=np.float64)
    return np.where(mos[:, None] > mos[None, :], 1.0, np.where(mos[:, None] < mos[None, :], 0.0, 0.5))


def thurstone_rank_reward(rating: np.ndarray, mos: np.ndarray, eps: float = FIDELITY_EPS) -> np.ndarray:
    """Thurstone rank ("fidelity") reward, arXiv:2601.02918 Eq. 5, as VisualQuality-R1 publishes it.

    For response k of image i, against every other image j of the batch:

        p_hat_ikj = Phi((r_ik - mu_j) / sqrt(var_i + var_j + eps))
        f_ikj     = sqrt(p_hat_ikj p*_ij + eps) + sqrt((1 - p_hat_ikj)(1 - p*_ij) + eps)
        R_rank_ik = mean over j != i of f_ikj

    with mu / var the mean / unbiased variance of each image's G ratings (`group_rating_stats`), Phi the
    standard normal CDF, p*_ij from the MOS order (`preference_targets`), eps = 1e-6. The reward lies in
    about [2 sqrt(eps), sqrt(2)].

    The paper's text (garbled in the extraction) writes p_ij = Phi((mu_i - mu_j) / sqrt(v_i + v_j)), which
    gives every response of an image the same reward and so no advantage; VisualQuality-R1's code, which the
    paper follows, puts the response's own rating r_ik in place of mu_i and adds eps inside the root. We
    follow the code.

    Missing ratings: a response without a rating gets 0; images j without any parsed rating are no
    comparison partner (the mean runs over the others); a response with no partner at all (B = 1) gets 0, a
    constant in its group that moves no advantage. Ranks only mean something within one dataset: draw each
    batch from one dataset.

    rating: `[batch, group]` (NaN for missing); mos: `[batch]`. Returns `[batch, group]`.
    """
    rating, mos = _check_ratings(rating, mos, "thurstone_rank_reward")
    mu, var, count = group_rating_stats(rating)
    ok = np.isfinite(rating)
    n = rating.shape[0]
    # [batch i, group k, batch j]
    partner = (count > 0)[None, :] & ~np.eye(n, dtype=bool)  # [i, j]
    z = (np.where(ok, rating, 0.0)[:, :, None] - np.where(count > 0, mu, 0.0)[None, None, :]) / np.sqrt(
        var[:, None, None] + var[None, None, :] + eps
    )
    p_hat = ndtr(z)
    p_star = preference_targets(mos)[:, None, :]
    fidelity = np.sqrt(p_hat * p_star + eps) + np.sqrt((1.0 - p_hat) * (1.0 - p_star) + eps)
    weight = partner[:, None, :].astype(np.float64)
    n_partner = weight.sum(axis=2)
    reward = (fidelity * weight).sum(axis=2) / np.maximum(n_partner, 1.0)
    return np.where(ok & (n_partner > 0), reward, 0.0)


def zoomiqa_rewards(
    format_ok: np.ndarray,
    rating: np.ndarray,
    mos: np.ndarray,
    *,
    alpha: float = REWARD_ALPHA,
    beta: float = REWARD_BETA,
    sigma: float = SCORE_SIGMA,
) -> ZoomIqaRewards:
    """Zoom-IQA total reward, supplement Eq. 6: R_total = R_format + alpha R_score + beta R_rank.

    format_ok: `bool[batch, group]`, R_format of Eq. 3 (1 when every round is well formed, from the answer
    parser); rating: `float[batch, group]`, the final rating, NaN when unparseable; mos: `[batch]`.
    alpha = 1, beta = 2, sigma = 0.35 (supplement Sec. 10.1). Returns the total and its parts,
    `[batch, group]`.
    """
    rating, mos = _check_ratings(rating, mos, "zoomiqa_rewards")
    format_ok = np.asarray(format_ok)
    if format_ok.shape != rating.shape:
        raise ValueError(f"zoomiqa_rewards: format_ok has shape {format_ok.shape}, rating has {rating.shape}")
    r_format = format_ok.astype(bool).astype(np.float64)
    r_score = gaussian_score_reward(rating, mos, sigma)
    r_rank = thurstone_rank_reward(rating, mos)
    total = r_format + alpha * r_score + beta * r_rank
    return ZoomIqaRewards(format=r_format, score=r_score, rank=r_rank, total=total)


_VQR1_FORMAT = re.compile(r"<think>.*?</think>\s*<answer>.*?</answer>", re.DOTALL)


def visualquality_r1_format_reward(text: object) -> float:
    """VisualQuality-R1's format reward: 1.0 when the WHOLE response matches
    `<think>.*?</think>\\s*<answer>.*?</answer>` (fullmatch, "." spanning newlines), else 0.0. Never raises."""
    return 1.0 if isinstance(text, str) and _VQR1_FORMAT.fullmatch(text) else 0.0
