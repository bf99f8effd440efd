"""The configuration of a GRPO run: the SFT sections (`zoomiqa_jax.train.config`) plus `grpo` and `rollout`.

    cfg = load_grpo_config("configs/zoomiqa_grpo.yaml", ["grpo.group_size=4"])

Counting (what the sections mean together):

    one GRPO step  = draw `data.batch_size` images from ONE dataset (`data.resampling`), sample `grpo.group_size`
                     responses each (N = batch_size x group_size trajectories), score them, then
                     `grpo.epochs` (mu) passes over the N rollouts in `grpo.mini_batches` mini-batches; every
                     mini-batch is one micro-step of the optimizer and `optim.grad_accum` micro-steps make one
                     optimizer update. Updates per GRPO step = epochs x mini_batches / grad_accum.
    run.steps      = GRPO steps (0: derive from run.epochs over the images of the datasets)

Recipes (`grpo.recipe`) pick the prompt, the parser, the rewards and the rollout protocol:

    zoomiqa            multi-round crop-and-zoom rollouts (`inference.zoom`), rewards of supp. Eq. 6
                       (format + alpha Gaussian score + beta Thurstone rank), KL-Coverage (Sec. 3.2)
    qinsight           single-turn Q-Insight prompts, score (|r - mos| < 0.35) and degradation rewards plus the
                       strict format reward, k3 KL to the frozen start policy
    visualquality_r1   single-turn VisualQuality-R1 prompt, format + Thurstone fidelity reward, k3 KL
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from zoomiqa_jax.config import ConfigError
from zoomiqa_jax.inference.protocol import PROTOCOLS
from zoomiqa_jax.train.config import TrainConfig, load_train_config
from zoomiqa_jax.train.grpo_loss import KL_COV_MODES, LOSS_AGG_MODES, GrpoLossConfig

RECIPES = ("zoomiqa", "qinsight", "visualquality_r1")


@dataclasses.dataclass
class GrpoSection:
    recipe: str = "zoomiqa"  # one of RECIPES
    datasets: tuple[str, ...] = ()  # label files (zoomiqa eval formats), one dataset each; () = the synthetic set
    label_format: str = "auto"  # as `zoomiqa eval --label-format`
    group_size: int = 8  # G: responses per image
    epochs: int = 1  # mu: passes over one rollout batch
    mini_batches: int = 1  # mini-batches per pass (split by images, whole groups together)
    clip_eps: float = 0.2
    loss_agg_mode: str = "seq-mean-token-mean"  # or "token-mean"
    kl_cov: str = "zoomiqa"  # "zoomiqa" (Eqs. 1-2), "verl" (published KL-Cov) or "none"
    klc_beta: float = 0.04
    klc_top_p: float = 0.02
    kl_cov_ratio: float = 0.0002
    kl_cov_coef: float = 1.0
    ref_kl_beta: float = 0.0  # k3 KL to the frozen start policy (Q-Insight 0.001, VisualQuality-R1 0.04)
    reward_alpha: float = 1.0  # weight of the score reward (zoomiqa, supp. Eq. 6)
    reward_beta: float = 2.0  # weight of the rank reward (zoomiqa)
    score_sigma: float = 0.35  # Gaussian score reward width (zoomiqa)
    score_threshold: float = 0.35  # Q-Insight: score reward 1 when |rating - mos| < this
    degradation_fraction: float = 0.0  # Q-Insight: fraction of images asked the degradation question
    train_vision: bool = True  # false: the vision tower's parameters are frozen
    resample_starts: tuple[float, ...] = (0.0,)  # progressive re-sampling stage starts (fractions of run.steps)
    resample_powers: tuple[float, ...] = (0.0,)  # bin-weight power per stage (0 original, 1 uniform over bins)
    resample_bins: int = 5
    candidate_slots: int = 16  # logit slots per row for the KL-Coverage candidates

    def loss_config(self) -> GrpoLossConfig:
        return GrpoLossConfig(clip_eps=self.clip_eps, loss_agg_mode=self.loss_agg_mode, kl_cov=self.kl_cov,
                              klc_beta=self.klc_beta, klc_top_p=self.klc_top_p, kl_cov_ratio=self.kl_cov_ratio,
                              kl_cov_coef=self.kl_cov_coef, ref_kl_beta=self.ref_kl_beta)


@dataclasses.dataclass
class RolloutSection:
    max_new_tokens: int = 1024  # per round
    max_turns: int = 2  # zoomiqa: rounds per trajectory (1 = never crop)
    temperature: float = 1.0  # Q-Insight / VisualQuality-R1 code; pi_old = the sampling distribution
    top_p: float = 1.0  # 1.0 with top_k 0: sample the full distribution, so recorded log-probs are pi_old's
    top_k: int = 0
    prompt_buckets: tuple[int, ...] = (256, 512, 1024, 2048, 4096)  # padded prompt lengths (Buckets.pick)
    new_token_buckets: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048)
    seq_buckets: tuple[int, ...] = ()  # padded lengths of the training rows; () = sums of prompt + new-token buckets
    patch_buckets: tuple[int, ...] = (256, 512, 1024, 2048, 4096, 8192, 16384, 32768)  # patches of a batch
    protocol: str = "official"  # zoomiqa: the protocol trained for (`inference.protocol`): its prompts' labels,
    # parser, routing and crop in the rollouts, and its parser in the format reward; "official" or "strict"


@dataclasses.dataclass
class GrpoTrainConfig(TrainConfig):
    """A GRPO run: every TrainConfig section plus `grpo` and `rollout`."""

    grpo: GrpoSection = dataclasses.field(default_factory=GrpoSection)
    rollout: RolloutSection = dataclasses.field(default_factory=RolloutSection)

    @staticmethod
    def validate_extra(cfg: GrpoTrainConfig, where: str) -> None:
        g, r = cfg.grpo, cfg.rollout
        checks = [
            ("grpo.recipe", g.recipe in RECIPES, f"one of {RECIPES}"),
            ("grpo.group_size", g.group_size >= 2, ">= 2 (group-normalized advantages need a group)"),
            ("grpo.epochs", g.epochs >= 1, ">= 1"),
            ("grpo.mini_batches", g.mini_batches >= 1 and cfg.data.batch_size % g.mini_batches == 0,
             f">= 1 and divide data.batch_size ({cfg.data.batch_size})"),
            ("grpo.loss_agg_mode", g.loss_agg_mode in LOSS_AGG_MODES, f"one of {LOSS_AGG_MODES}"),
            ("grpo.kl_cov", g.kl_cov in KL_COV_MODES, f"one of {KL_COV_MODES}"),
            ("grpo.ref_kl_beta", g.ref_kl_beta >= 0, ">= 0"),
            ("grpo.degradation_fraction", 0 <= g.degradation_fraction <= 1, "in [0, 1]"),
            ("grpo.resample_powers", len(g.resample_powers) == len(g.resample_starts),
             "as long as grpo.resample_starts"),
            ("grpo.candidate_slots", g.candidate_slots >= 1, ">= 1"),
            ("rollout.max_new_tokens", r.max_new_tokens >= 1, ">= 1"),
            ("rollout.max_turns", r.max_turns in (1, 2), "1 or 2"),
            ("rollout.temperature", r.temperature > 0, "> 0 (GRPO samples)"),
            ("rollout.protocol", r.protocol in PROTOCOLS, f"one of {PROTOCOLS}"),
        ]
        for key, ok, expected in checks:
            if not ok:
                section, name = key.split(".")
                raise ConfigError(f"{where}: {key} must be {expected}, got {getattr(getattr(cfg, section), name)!r}")
        if g.recipe == "zoomiqa" and g.kl_cov == "zoomiqa" and g.candidate_slots < 4:
            raise ConfigError(f"{where}: grpo.candidate_slots must hold a rating's tokens (>= 4)")
        try:
            g.loss_config()
        except ValueError as err:
            raise ConfigError(f"{where}: {err}") from None


def load_grpo_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> GrpoTrainConfig:
    """Read a GRPO YAML config (`configs/*_grpo.yaml`), apply `key=value` overrides, validate."""
    return load_train_config(path, overrides, cls=GrpoTrainConfig)


def recipe_defaults(recipe: str) -> dict[str, Any]:
    """What each published recipe fixes (documentation and a test that the shipped configs follow it)."""
    return {
        "zoomiqa": {"optim.lr": 1e-6, "data.batch_size": 1, "optim.grad_accum": 2, "grpo.group_size": 8,
                    "grpo.klc_beta": 0.04, "grpo.kl_cov": "zoomiqa"},
        "qinsight": {"optim.lr": 1e-6, "grpo.group_size": 8, "grpo.ref_kl_beta": 0.001,
                     "rollout.max_new_tokens": 256, "optim.grad_accum": 2, "run.epochs": 10.0},
        "visualquality_r1": {"grpo.group_size": 6, "grpo.ref_kl_beta": 0.04, "rollout.max_new_tokens": 256,
                             "grpo.train_vision": True},
    }[recipe]
