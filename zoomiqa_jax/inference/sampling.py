"""Token selection: temperature, top-k and top-p filtering, greedy and sampled choice.

Order and semantics follow transformers' logits warpers (temperature, then top-k, then top-p):

* top-k keeps every token whose logit is >= the k-th largest (ties at the boundary are kept); k <= 0 disables;
* top-p keeps the smallest set of most likely tokens whose probability reaches p: a token is dropped when the
  probability mass of the tokens ranked strictly above it is already >= p. The most likely token always stays.

All functions are jittable with traced temperature / k / p.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

NEG_INF = -jnp.inf


def top_k_filter(logits: jax.Array, k: jax.Array | int) -> jax.Array:
    """logits [..., vocab]; keep logits >= the k-th largest. k <= 0 keeps everything."""
    vocab = logits.shape[-1]
    k = jnp.asarray(k, jnp.int32)
    sorted_desc = jnp.sort(logits, axis=-1)[..., ::-1]
    kth = jax.lax.dynamic_index_in_dim(sorted_desc, jnp.clip(k - 1, 0, vocab - 1), axis=-1, keepdims=True)
    keep = (logits >= kth) | (k <= 0)
    return jnp.where(keep, logits, NEG_INF)


def top_p_filter(logits: jax.Array, p: jax.Array | float) -> jax.Array:
    """logits [..., vocab]; nucleus filtering. p >= 1 keeps everything."""
    p = jnp.asarray(p, jnp.float32)
    order = jnp.argsort(-logits, axis=-1)
    sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
    probs = jax.nn.softmax(sorted_logits.astype(jnp.float32), axis=-1)
    mass_above = jnp.cumsum(probs, axis=-1) - probs  # probability of the tokens ranked strictly above
    drop_sorted = (mass_above >= p) & (p < 1.0)
    drop_sorted = drop_sorted.at[..., 0].set(False)
    drop = jnp.zeros_like(drop_sorted)
    drop = jnp.put_along_axis(drop, order, drop_sorted, axis=-1, inplace=False)
    return jnp.where(drop, NEG_INF, logits)


def filter_logits(
    logits: jax.Array, temperature: jax.Array | float, top_k: jax.Array | int, top_p: jax.Array | float
) -> jax.Array:
    """Temperature, then top-k, then top-p, on float32 logits [..., vocab]."""
    x = logits.astype(jnp.float32) / jnp.asarray(temperature, jnp.float32)
    return top_p_filter(top_k_filter(x, top_k), top_p)


def _nucleus_mask_sorted(sorted_logits: jax.Array, p: jax.Array | float) -> jax.Array:
    """Which of descending-sorted logits [..., n] survive top-p (the first always does)."""
    probs = jax.nn.softmax(sorted_logits.astype(jnp.float32), axis=-1)
    mass_above = jnp.cumsum(probs, axis=-1) - probs
    keep = (mass_above < p) | (jnp.asarray(p) >= 1.0)
    return keep.at[..., 0].set(True)


def candidates(
    logits: jax.Array, temperature: jax.Array | float, top_k: int, top_p: jax.Array | float
) -> tuple[jax.Array, jax.Array | None]:
    """The sampling candidates as (scaled logits with -inf for dropped, token ids or None for the whole vocab).

    With a (static) top_k > 0 only the k best tokens are looked at (`lax.top_k`, O(vocab)), and top-p runs on
    those k sorted values: the cost no longer grows with a vocab sort per step. It equals `filter_logits` except
    that exact ties at the k-th value keep k tokens instead of all tied ones (a measure-zero event for float
    logits). Without top-k, the full-vocabulary top-p sort runs only when p < 1 (`lax.cond`).
    """
    x = logits.astype(jnp.float32) / jnp.asarray(temperature, jnp.float32)
    if top_k > 0:
        vals, ids = jax.lax.top_k(x, min(top_k, x.shape[-1]))
        return jnp.where(_nucleus_mask_sorted(vals, top_p), vals, NEG_INF), ids
    p = jnp.asarray(top_p, jnp.float32)
    return jax.lax.cond(p < 1.0, lambda v: top_p_filter(v, p), lambda v: v, x), None


def choose_tokens(
    logits: jax.Array,
    keys: jax.Array,
    *,
    greedy: bool,
    temperature: jax.Array | float = 1.0,
    top_k: int = 0,
    top_p: jax.Array | float = 1.0,
) -> tuple[jax.Array, jax.Array]:
    """One token per row. logits [batch, vocab], keys [batch] (one PRNG key per row); top_k is static.

    Returns (token [batch] int32, log-prob [batch] of that token under the unfiltered model distribution,
    i.e. log_softmax(logits) at temperature 1: the policy log-prob that GRPO's ratio uses).
    """
    logits = logits.astype(jnp.float32)
    if greedy:
        tokens = jnp.argmax(logits, axis=-1)
    else:
        cand, ids = candidates(logits, temperature, top_k, top_p)
        choice = jax.vmap(jax.random.categorical)(keys, cand)
        tokens = choice if ids is None else jnp.take_along_axis(ids, choice[:, None], axis=-1)[:, 0]
    tokens = tokens.astype(jnp.int32)
    logp = jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), tokens[:, None], axis=-1)[:, 0]
    return tokens, logp
