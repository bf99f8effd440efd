"""The GRPO policy loss with KL-Coverage, on arrays (no model): arXiv:2601.02918 Eqs. 1-2, supplement Eq. 7.

Inputs are per-token quantities of N sampled sequences padded to T tokens:

* `logp [N, T]`, `old_logp [N, T]`: log-probabilities of the sampled tokens under pi_theta and pi_old (the
  policy that sampled the batch); optionally `ref_logp [N, T]` under a frozen reference;
* `advantages [N]`: one per sequence (`advantages.group_advantages`), shared by all its tokens;
* `loss_mask [N, T]`: V of Eq. 7, 1 on tokens the model generated (prompt, padding, crop-tool output 0);
* `candidate_mask [N, T]`: N_ans of Sec. 3.2, the numeric tokens of the rating inside `<answer>`;
* `logits`, `old_logits [N, K, V]`: full-vocabulary logits (or log-softmax) of pi_theta and pi_old at K
  slot positions `logit_positions [N, K]` (time indices, distinct within a row, -1 for an unused slot).
  Only candidate tokens need slots; without `logit_positions` the slots are all T positions (K = T).

The loss, to minimize, is minus the objective of Eq. 7:

    r_t   = exp(logp_t - old_logp_t)
    J     = agg_t min(r_t A, clip(r_t, 1 - eps, 1 + eps) A)                    eps = 0.2
    loss  = -J + beta L_KLC   (+ ref_kl_beta agg_t k3_t when a reference is given)

`agg` is `seq-mean-token-mean` (mean over a sequence's valid tokens, then over the sequences that have
any: Eq. 7's 1/G sum_k 1/sum_t V_kt sum_t) or `token-mean` (one mean over all valid tokens of the batch).

KL-Coverage (`kl_cov="zoomiqa"`, Eqs. 1-2): over the batch's valid tokens,
Cov_t = (logp_t - mean logp)(A_t - mean A), stop-gradient, both means over all valid tokens (token-
weighted). The top max(1, floor(p n_cand)) candidate tokens by Cov are selected (p = 0.02; none when
there are no candidates) and L_KLC is the mean over them of the exact
KL(pi_old || pi_theta) = sum_v pi_old(v) (log pi_old(v) - log pi_theta(v)); beta = 0.04. The paper says
"top-p proportion" with no rounding rule: we floor as verl does, keeping at least one. pi_old is the
sampling policy, so the penalty is exactly 0 on the first update of a rollout batch and acts only from
the second mini-batch update or epoch on (mu > 1, or several mini-batches per rollout batch). The paper
(batch 1 x 2 accumulation) does not say how many updates it makes per rollout batch; with one, the term
never acts. `klcov/active` in the metrics shows how often it does.

KL-Cov as verl publishes it (`kl_cov="verl"`, "The Entropy Mechanism of RL for Reasoning LMs"): no ratio
clipping; the top max(1, floor(ratio n_valid)) of ALL valid tokens by the same Cov (ratio = 0.0002) get
coef |logp - old_logp| (coef = 1) added to their token loss -A r_t; then `agg` as above.

Reference KL (Q-Insight, VisualQuality-R1): k3_t = exp(ref_t - logp_t) - (ref_t - logp_t) - 1 per token,
unclamped, added to the token loss with weight `ref_kl_beta` before aggregation.

Top-k with a data-dependent k under jit: one stable lexicographic sort ranks every token by (eligible
first, larger Cov first, smaller flat index first); eligible tokens with rank < k are kept. Ties in Cov go
to the earlier position in row-major [N, T] order: the earlier sequence, then the earlier token (verl's
`torch.topk` leaves ties unspecified). -0.0 and 0.0 tie. k = floor(n ratio) is read from a table built in
float64 at trace time, so it equals Python's `int(n * ratio)` exactly.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

LOSS_AGG_MODES = ("seq-mean-token-mean", "token-mean")
KL_COV_MODES = ("zoomiqa", "verl", "none")


@dataclasses.dataclass(frozen=True)
class GrpoLossConfig:
    """Static settings of `grpo_loss` (hashable: pass as a static argument under jit)."""

    clip_eps: float = 0.2  # epsilon of Eq. 7
    loss_agg_mode: str = "seq-mean-token-mean"
    kl_cov: str = "zoomiqa"  # "zoomiqa" (Eqs. 1-2), "verl" (published KL-Cov) or "none"
    klc_beta: float = 0.04  # beta of Eq. 7
    klc_top_p: float = 0.02  # p of Sec. 3.2: fraction of candidate tokens penalized
    kl_cov_ratio: float = 0.0002  # verl: fraction of all valid tokens penalized
    kl_cov_coef: float = 1.0  # verl: ppo_kl_coef
    ref_kl_beta: float = 0.0  # weight of the k3 KL to a frozen reference (0 = off)
    temperature: float = 1.0  # rollout temperature: log-probs are of softmax(logits / temperature)

    def __post_init__(self) -> None:
        if self.loss_agg_mode not in LOSS_AGG_MODES:
            raise ValueError(
                f"GrpoLossConfig.loss_agg_mode: expected one of {LOSS_AGG_MODES}, "
                f"found {self.loss_agg_mode!r}"
            )
        if self.kl_cov not in KL_COV_MODES:
            raise ValueError(f"GrpoLossConfig.kl_cov: expected one of {KL_COV_MODES}, found {self.kl_cov!r}")
        for name in ("klc_top_p", "kl_cov_ratio"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ValueError(f"GrpoLossConfig.{name}: expected a fraction in (0, 1], found {value}")
        if not self.temperature > 0.0:
            raise ValueError(f"GrpoLossConfig.temperature: expected > 0, found {self.temperature}")
        if not self.clip_eps >= 0.0:
            raise ValueError(f"GrpoLossConfig.clip_eps: expected >= 0, found {self.clip_eps}")


def masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of x over mask (0 when the mask is empty)."""
    return jnp.sum(jnp.where(mask, x, 0.0)) / jnp.maximum(jnp.sum(mask), 1)


def aggregate_loss(loss: jax.Array, mask: jax.Array, mode: str, seq_tokens: jax.Array | None = None) -> jax.Array:
    """Reduce a token loss `[N, T]` over the valid tokens: `token-mean` or `seq-mean-token-mean`.

    `seq_tokens` [N] (optional): the generated-token count of the TRAJECTORY each row belongs to, when a
    trajectory spans several rows (one per round, `train.rollout`). `seq-mean-token-mean` then stays a mean over
    trajectories of their token means: row r adds sum_r / n_k(r) and counts as n_r / n_k(r) of a trajectory
    (a trajectory's shares sum to 1; padding rows, with no tokens, count 0). Without it every row is its own
    trajectory (the same value as with seq_tokens equal to the rows' own counts)."""
    if mode == "token-mean":
        return masked_mean(loss, mask)
    if mode == "seq-mean-token-mean":
        count = jnp.sum(mask, axis=-1)
        norm = count if seq_tokens is None else seq_tokens.astype(jnp.float32)
        per_seq = jnp.sum(jnp.where(mask, loss, 0.0), axis=-1) / jnp.maximum(norm, 1)
        if seq_tokens is None:
            return masked_mean(per_seq, count > 0)
        shares = count / jnp.maximum(norm, 1)
        return jnp.sum(per_seq) / jnp.maximum(jnp.sum(shares), 1.0)
    raise ValueError(f"aggregate_loss: expected mode in {LOSS_AGG_MODES}, found {mode!r}")


def covariance_scores(logp: jax.Array, advantages: jax.Array, loss_mask: jax.Array) -> jax.Array:
    """Eq. 1: Cov_t = (logp_t - mean logp)(A_t - mean A), means over valid tokens, no gradient. `[N, T]`."""
    mask = loss_mask.astype(bool)
    lp = jax.lax.stop_gradient(jnp.where(mask, logp.astype(jnp.float32), 0.0))
    adv = jnp.where(mask, jax.lax.stop_gradient(advantages.astype(jnp.float32))[:, None], 0.0)
    n = jnp.maximum(jnp.sum(mask), 1)
    cov = (lp - jnp.sum(lp) / n) * (adv - jnp.sum(adv) / n)
    return jnp.where(mask, cov, 0.0)


def top_fraction_count(n_eligible: jax.Array, ratio: float, n_max: int) -> jax.Array:
    """k = max(1, floor(n ratio)) for n > 0, else 0; floor(n ratio) equals Python's int(n * ratio)."""
    table = jnp.asarray(np.floor(np.arange(n_max + 1, dtype=np.float64) * ratio).astype(np.int32))
    n = jnp.clip(n_eligible, 0, n_max).astype(jnp.int32)
    return jnp.where(n > 0, jnp.maximum(table[n], 1), 0)


def select_top_fraction(scores: jax.Array, eligible: jax.Array, ratio: float) -> jax.Array:
    """Mask of the top `top_fraction_count` eligible entries of `scores [N, T]`; ties to lower flat index."""
    shape = scores.shape
    flat_ok = eligible.reshape(-1).astype(bool)
    flat = jnp.where(flat_ok, scores.reshape(-1), 0.0)
    index = jnp.arange(flat.shape[0])
    # lexsort: the last key is the primary one. Ineligible last, then larger score first, then lower index.
    order = jnp.lexsort((index, -flat, ~flat_ok))
    rank = jnp.zeros_like(index).at[order].set(index)
    k = top_fraction_count(jnp.sum(flat_ok), ratio, flat.shape[0])
    return (flat_ok & (rank < k)).reshape(shape)


def klcov_selection(
    logp: jax.Array, advantages: jax.Array, loss_mask: jax.Array, candidate_mask: jax.Array, top_p: float
) -> jax.Array:
    """Zoom-IQA's mask M (Sec. 3.2): the top-p fraction of valid candidate tokens by Cov. `bool[N, T]`."""
    cov = covariance_scores(logp, advantages, loss_mask)
    return select_top_fraction(cov, candidate_mask.astype(bool) & loss_mask.astype(bool), top_p)


def verl_klcov_selection(
    logp: jax.Array, advantages: jax.Array, loss_mask: jax.Array, ratio: float
) -> jax.Array:
    """verl KL-Cov's selection: the top max(1, int(n_valid ratio)) valid tokens by Cov. `bool[N, T]`."""
    cov = covariance_scores(logp, advantages, loss_mask)
    return select_top_fraction(cov, loss_mask.astype(bool), ratio)


def exact_kl(old_logits: jax.Array, logits: jax.Array) -> jax.Array:
    """KL(pi_old || pi_theta) = sum_v p_old(v) (log p_old(v) - log p_theta(v)) over the last axis (Eq. 2).

    Takes logits or log-probabilities (log_softmax is applied to both); pi_old gets no gradient.
    `[..., V] -> [...]`. Exactly 0 where the two inputs are equal.
    """
    old_lp = jax.nn.log_softmax(jax.lax.stop_gradient(old_logits.astype(jnp.float32)), axis=-1)
    new_lp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    p_old = jnp.exp(old_lp)
    return jnp.sum(jnp.where(p_old > 0, p_old * (old_lp - new_lp), 0.0), axis=-1)


def token_entropy(logits: jax.Array) -> jax.Array:
    """Entropy -sum_v p(v) log p(v) of the softmax over the last axis. `[..., V] -> [...]`."""
    lp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    p = jnp.exp(lp)
    return -jnp.sum(jnp.where(p > 0, p * lp, 0.0), axis=-1)


def k3_kl(logp: jax.Array, ref_logp: jax.Array) -> jax.Array:
    """k3 estimate of KL(pi_theta || pi_ref) per token: exp(ref - logp) - (ref - logp) - 1 (arXiv:2503.22679)."""
    d = ref_logp.astype(jnp.float32) - logp.astype(jnp.float32)
    return jnp.expm1(d) - d  # = exp(d) - d - 1, without the cancellation of the "- 1" in float32


def _slot_values(per_token: jax.Array, positions: jax.Array) -> jax.Array:
    """Gather a `[N, T]` mask at slot positions `[N, K]` (False for unused slots)."""
    picked = jnp.take_along_axis(per_token, jnp.clip(positions, 0, per_token.shape[1] - 1), axis=1)
    return picked & (positions >= 0)


def grpo_loss(
    logp: jax.Array,
    old_logp: jax.Array,
    advantages: jax.Array,
    loss_mask: jax.Array,
    config: GrpoLossConfig,
    *,
    candidate_mask: jax.Array | None = None,
    logits: jax.Array | None = None,
    old_logits: jax.Array | None = None,
    logit_positions: jax.Array | None = None,
    ref_logp: jax.Array | None = None,
    seq_tokens: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The GRPO loss of supplement Eq. 7 (module docstring) and its metrics. Jittable with `config` static.

    Shapes: logp, old_logp, loss_mask, candidate_mask, ref_logp `[N, T]`; advantages, seq_tokens `[N]`
    (`seq_tokens`: rows of one trajectory, see `aggregate_loss`);
    logits, old_logits `[N, K, V]` with logit_positions `[N, K]`, or `[N, T, V]` without.
    Returns (loss, metrics); metrics are scalars.
    """
    n_seq, n_tok = logp.shape
    if old_logp.shape != logp.shape or loss_mask.shape != logp.shape or advantages.shape != (n_seq,):
        raise ValueError(
            f"grpo_loss: expected logp, old_logp, loss_mask [N, T] = {logp.shape} and advantages [N], found "
            f"old_logp {old_logp.shape}, loss_mask {loss_mask.shape}, advantages {advantages.shape}"
        )
    if seq_tokens is not None and seq_tokens.shape != (n_seq,):
        raise ValueError(f"grpo_loss: expected seq_tokens [N] = ({n_seq},), found {seq_tokens.shape}")
    valid = loss_mask.astype(bool)
    lp = jnp.where(valid, logp.astype(jnp.float32), 0.0)
    old_lp = jnp.where(valid, jax.lax.stop_gradient(old_logp.astype(jnp.float32)), 0.0)
    adv = jax.lax.stop_gradient(advantages.astype(jnp.float32))[:, None]

    log_ratio = lp - old_lp
    ratio = jnp.exp(log_ratio)
    obj_unclipped = ratio * adv
    obj_clipped = jnp.clip(ratio, 1.0 - config.clip_eps, 1.0 + config.clip_eps) * adv
    metrics: dict[str, jax.Array] = {
        "pg/ratio_mean": masked_mean(ratio, valid),
        "pg/ratio_min": jnp.where(jnp.any(valid), jnp.min(jnp.where(valid, ratio, jnp.inf)), 1.0),
        "pg/ratio_max": jnp.where(jnp.any(valid), jnp.max(jnp.where(valid, ratio, -jnp.inf)), 1.0),
        "pg/approx_kl": masked_mean(-log_ratio, valid),
        "tokens/valid": jnp.sum(valid),
    }

    zero = jnp.zeros((), jnp.float32)
    izero = jnp.zeros((), jnp.int32)
    klc_value, penalty, missing, n_selected, n_candidates = zero, zero, zero, izero, izero
    if config.kl_cov == "verl":
        selected = verl_klcov_selection(logp, advantages, valid, config.kl_cov_ratio)
        kl_term = jnp.where(selected, config.kl_cov_coef * jnp.abs(log_ratio), 0.0)
        token_loss = -obj_unclipped + kl_term
        n_candidates, n_selected = jnp.sum(valid), jnp.sum(selected)
        klc_value = masked_mean(jnp.abs(log_ratio), selected)
        penalty = aggregate_loss(kl_term, valid, config.loss_agg_mode, seq_tokens)
        metrics["pg/clip_frac"] = zero  # no ratio clipping in this variant
        metrics["pg/objective"] = aggregate_loss(obj_unclipped, valid, config.loss_agg_mode, seq_tokens)
    else:
        token_loss = -jnp.minimum(obj_unclipped, obj_clipped)
        metrics["pg/clip_frac"] = masked_mean(obj_clipped < obj_unclipped, valid)
        metrics["pg/objective"] = -aggregate_loss(token_loss, valid, config.loss_agg_mode, seq_tokens)

    if ref_logp is not None:
        k3 = k3_kl(lp, jnp.where(valid, jax.lax.stop_gradient(ref_logp), 0.0))
        if config.ref_kl_beta:  # skipped at 0, so an overflowing k3 cannot turn the loss into 0 * inf
            token_loss = token_loss + config.ref_kl_beta * k3
        metrics["ref_kl/mean"] = masked_mean(k3, valid)
    loss = aggregate_loss(token_loss, valid, config.loss_agg_mode, seq_tokens)

    if logits is not None:
        if old_logits is None or old_logits.shape != logits.shape:
            raise ValueError(
                "grpo_loss: logits and old_logits must both be given with equal shapes, found "
                f"{logits.shape} and {None if old_logits is None else old_logits.shape}"
            )
        positions = logit_positions
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(n_tok), (n_seq, n_tok))
        if logits.shape[:2] != positions.shape:
            raise ValueError(
                f"grpo_loss: logits [N, K, V] = {logits.shape} do not match logit_positions [N, K] = "
                f"{positions.shape}"
            )
        slot_ok = (positions >= 0)[..., None]
        cur = jnp.where(slot_ok, logits, 0.0)
        old = jnp.where(slot_ok, old_logits, 0.0)
        if candidate_mask is not None:
            answer_slots = _slot_values(candidate_mask.astype(bool) & valid, positions)
            metrics["entropy/answer"] = masked_mean(jax.lax.stop_gradient(token_entropy(cur)), answer_slots)

    if config.kl_cov == "zoomiqa":
        if candidate_mask is None or logits is None:
            raise ValueError("grpo_loss: kl_cov='zoomiqa' needs candidate_mask, logits and old_logits")
        candidates = candidate_mask.astype(bool) & valid
        selected = klcov_selection(logp, advantages, valid, candidates, config.klc_top_p)
        selected_slots = _slot_values(selected, positions)
        n_candidates, n_selected = jnp.sum(candidates), jnp.sum(selected)
        kl = exact_kl(old, cur)  # [N, K]
        klc_value = jnp.sum(jnp.where(selected_slots, kl, 0.0)) / jnp.maximum(n_selected, 1)  # Eq. 2
        penalty = config.klc_beta * klc_value
        loss = loss + penalty
        missing = (n_selected - jnp.sum(selected_slots)).astype(jnp.float32)

    metrics.update(
        {
            "loss": loss,
            "klcov/candidates": n_candidates,
            "klcov/active_tokens": n_selected,
            "klcov/value": klc_value,
            "klcov/penalty": penalty,
            "klcov/active": (klc_value > 0).astype(jnp.float32),
            "klcov/missing_logits": missing,
        }
    )
    return loss, metrics
