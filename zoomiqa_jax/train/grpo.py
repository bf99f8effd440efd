"""The jitted GRPO step on rollout batches (Zoom-IQA stage 2, arXiv:2601.02918 Sec. 3.2 / supp. Eq. 7;
Q-Insight Sec. 3).

A rollout batch holds N sampled sequences (prompt + generated tokens, G per prompt, possibly multi-round) as
`input_ids [N, T]` with `attention_mask`, `position_ids`, the images, and:

    loss_mask       [N, T]  1 on tokens the model generated (prompts, chat scaffolding and tool observations 0)
    candidate_mask  [N, T]  the numeric rating tokens inside <answer> (KL-Coverage candidates)
    logit_positions [N, K]  the token positions whose full-vocabulary logits KL-Coverage may need (-1 unused)
    advantages      [N]     group-normalized (`zoomiqa_jax.train.advantages`)
    seq_tokens      [N]     optional, generated tokens of the row's trajectory when a trajectory spans rows
    ref_logp        [N, T]  optional, log-probs under a frozen reference (Q-Insight / VisualQuality-R1 k3 KL)

Token t's log-prob comes from the logits at position t - 1. One optimization round over a rollout batch is

    old = old_policy(params, batch)          # pi_old: log-probs and candidate logits, before any update
    params, opt_state, m = first_step(params, opt_state, batch)        # batch without old_*: pi_old = pi_theta
    for the later updates (mini-batches x mu epochs): params, opt_state, m = step(params, opt_state, batch | old)

On the first update pi_theta == pi_old exactly, so the KL-Coverage penalty is exactly 0 (grpo_loss's docstring
says what that implies for the paper's setting). The step is the shared sharded step of `zoomiqa_jax.train.step`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh

from zoomiqa_jax.parallel.rules import DEFAULT_RULES, MeshAxes, batch_sharding, state_shardings
from zoomiqa_jax.train.grpo_loss import GrpoLossConfig, grpo_loss
from zoomiqa_jax.train.step import batch_logits, batch_shardings, make_train_step


def token_logprobs(logits: jax.Array, input_ids: jax.Array) -> jax.Array:
    """log p(input_ids[:, t] | tokens < t) for t >= 1, 0 at t = 0. logits [N, T, V] -> [N, T] float32."""
    logp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)
    tok = jnp.take_along_axis(logp, input_ids[:, 1:, None], axis=-1)[..., 0]
    return jnp.pad(tok, ((0, 0), (1, 0)))


def slot_logits(logits: jax.Array, positions: jax.Array) -> jax.Array:
    """The logits that predict the tokens at `positions [N, K]` (those at position - 1): [N, K, V]."""
    idx = jnp.clip(positions - 1, 0, logits.shape[1] - 1)
    return jnp.take_along_axis(logits, idx[..., None], axis=1)


def policy_outputs(model: nnx.Module, batch: Mapping[str, Any], temperature: float = 1.0
                   ) -> tuple[jax.Array, jax.Array]:
    """(token log-probs [N, T], candidate-slot logits [N, K, V]) of the model on a rollout batch, both of
    softmax(logits / temperature): the distribution the rollouts were sampled from (verl's convention), so that
    pi_theta, pi_old and the KL-Coverage term all refer to the sampling policy."""
    logits = batch_logits(model, batch)
    if temperature != 1.0:
        logits = logits.astype(jnp.float32) / temperature
    return token_logprobs(logits, batch["input_ids"]), slot_logits(logits, batch["logit_positions"])


def grpo_forward_loss(
    model: nnx.Module, batch: Mapping[str, Any], config: GrpoLossConfig
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Supp. Eq. 7 on a rollout batch. Without `old_logp` / `old_slot_logits` in the batch this is the first update
    of the batch: pi_old IS the current forward (stop-gradient), so the ratio is exactly 1 and the KL-Coverage
    penalty exactly 0, bit for bit. Later updates pass pi_old's outputs from `make_old_policy`."""
    logp, slots = policy_outputs(model, batch, config.temperature)
    old_logp, old_slots = batch.get("old_logp"), batch.get("old_slot_logits")
    if old_logp is None:
        old_logp, old_slots = jax.lax.stop_gradient(logp), jax.lax.stop_gradient(slots)
    return grpo_loss(
        logp,
        old_logp,
        batch["advantages"],
        batch["loss_mask"],
        config,
        candidate_mask=batch["candidate_mask"],
        logits=slots,
        old_logits=old_slots,
        logit_positions=batch["logit_positions"],
        ref_logp=batch.get("ref_logp"),
        seq_tokens=batch.get("seq_tokens"),
    )


OLD_KEYS = ("old_logp", "old_slot_logits")


def make_old_policy(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    mesh: Mesh | None = None,
    batch_example: Mapping[str, Any] | None = None,
    rules: Mapping[str, MeshAxes] = DEFAULT_RULES,
    temperature: float = 1.0,
) -> Callable:
    """Jitted `(params, batch) -> {"old_logp", "old_slot_logits"}`: pi_old's outputs (at the rollout `temperature`,
    as the loss takes them), before the updates. Any `old_*` entries already in the batch are ignored."""

    def old(params: nnx.State, batch: Mapping[str, Any]) -> dict[str, jax.Array]:
        logp, slots = policy_outputs(nnx.merge(graphdef, params), batch, temperature)
        return dict(zip(OLD_KEYS, (logp, slots)))

    strip = lambda b: {k: v for k, v in b.items() if k not in OLD_KEYS}
    if mesh is None:
        jitted = jax.jit(old)
    else:
        if batch_example is None:
            raise ValueError("a sharded old-policy pass needs batch_example")
        in_batch = batch_shardings(strip(batch_example), mesh, rules)
        out = {"old_logp": batch_sharding(mesh, 2, 0, rules), "old_slot_logits": batch_sharding(mesh, 3, 0, rules)}
        jitted = jax.jit(old, in_shardings=(state_shardings(params, mesh, rules), in_batch), out_shardings=out)
    return lambda p, b: jitted(p, strip(b))


def make_grpo_step(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    tx: optax.GradientTransformation,
    config: GrpoLossConfig | None = None,
    mesh: Mesh | None = None,
    batch_example: Mapping[str, Any] | None = None,
    rules: Mapping[str, MeshAxes] = DEFAULT_RULES,
) -> tuple[Callable, Callable]:
    """(init_opt_state, step) for GRPO. The step's batch structure is `batch_example`'s: with `old_logp` and
    `old_slot_logits` for later updates, without them for the first update of a rollout batch."""
    loss = partial(grpo_forward_loss, config=config or GrpoLossConfig())
    return make_train_step(graphdef, params, tx, loss, mesh=mesh,
                           batch_example=batch_example, rules=rules)
