"""Supervised fine-tuning (Zoom-IQA stage 1, seeds/000 Sec. 3.1.2): masked cross-entropy on the model's own tokens,
and the sharded train step.

Labels follow the HF convention: `labels[b, t]` is the token at position t when the model produced it, else -100
(prompts, chat scaffolding, images, crop observations). Position t - 1 predicts it:

    loss = sum_{b,t: labels[b,t] != -100} -log p(labels[b,t] | tokens < t)  /  #{valid labels}

(a token mean over the whole batch, so long answers weigh as much per token as short ones).

The step is `jax.jit` with explicit in/out shardings (pjit): parameters and optimizer state by the logical-axis
rules, the batch split over (data, fsdp); GSPMD propagates the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from zoomiqa_jax.parallel.rules import DEFAULT_RULES, MeshAxes, batch_sharding, state_shardings

IGNORE = -100


def sft_loss(logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Masked next-token cross-entropy. logits [batch, seq, vocab]; labels [batch, seq] (-100 = ignore)."""
    pred = logits[:, :-1].astype(jnp.float32)
    target = labels[:, 1:]
    valid = target != IGNORE
    logp = jax.nn.log_softmax(pred, axis=-1)
    nll = -jnp.take_along_axis(logp, jnp.where(valid, target, 0)[..., None], axis=-1)[..., 0]
    count = valid.sum()
    denom = jnp.maximum(count, 1)
    loss = jnp.where(valid, nll, 0.0).sum() / denom
    correct = (jnp.argmax(pred, axis=-1) == target) & valid
    return loss, {"loss": loss, "token_accuracy": correct.sum() / denom, "tokens": count}


def forward_loss(model: nnx.Module, batch: Mapping[str, Any]) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Model forward on a prepared batch (see `zoomiqa_jax.train.sft_data`) and its SFT loss."""
    logits = model(
        batch["input_ids"],
        batch["attention_mask"],
        batch.get("pixel_values"),
        position_ids=batch["position_ids"],
        vision_meta=batch.get("vision_meta"),
    )
    return sft_loss(logits, batch["labels"])


def batch_shardings(batch: Mapping[str, Any], mesh: Mesh, rules: Mapping[str, MeshAxes] = DEFAULT_RULES) -> dict:
    """Token arrays split over the batch axes; patches split too when they divide; vision metadata replicated."""
    ways = 1
    for name in (rules["batch"] if isinstance(rules["batch"], tuple) else (rules["batch"],)):
        ways *= mesh.shape.get(name, 1) if name else 1
    replicated = NamedSharding(mesh, PartitionSpec())
    out: dict[str, Any] = {}
    for key, value in batch.items():
        if key in ("input_ids", "attention_mask", "labels"):
            out[key] = batch_sharding(mesh, 2, 0, rules)
        elif key == "position_ids":
            out[key] = batch_sharding(mesh, 3, 1, rules)
        elif key == "pixel_values" and value is not None:
            out[key] = batch_sharding(mesh, 2, 0, rules) if value.shape[0] % ways == 0 else replicated
        else:  # vision metadata and anything else: replicated
            out[key] = jax.tree.map(lambda _: replicated, value)
    return out


def make_train_step(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    tx: optax.GradientTransformation,
    mesh: Mesh | None = None,
    batch_example: Mapping[str, Any] | None = None,
    rules: Mapping[str, MeshAxes] = DEFAULT_RULES,
) -> tuple[Callable, Callable]:
    """Return (init_opt_state(params), step(params, opt_state, batch) -> (params, opt_state, metrics)).

    With a mesh, both are jitted with explicit shardings (parameters and optimizer state by the rules, the batch
    as `batch_shardings`); without one they are plainly jitted on the default device."""

    def step(params: nnx.State, opt_state: Any, batch: Mapping[str, Any]) -> tuple[nnx.State, Any, dict]:
        def loss_fn(p: nnx.State) -> tuple[jax.Array, dict]:
            return forward_loss(nnx.merge(graphdef, p), batch)

        (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        metrics = dict(metrics, grad_norm=optax.global_norm(grads))
        return params, opt_state, metrics

    if mesh is None:
        return jax.jit(tx.init), jax.jit(step, donate_argnums=(0, 1))
    p_shard = state_shardings(params, mesh, rules)
    replicated = NamedSharding(mesh, PartitionSpec())
    opt_shape = jax.eval_shape(tx.init, params)
    o_shard = optax.tree_map_params(tx, lambda _, s: s, opt_shape, p_shard,
                                    transform_non_params=lambda _: replicated)
    if batch_example is None:
        raise ValueError("a sharded step needs batch_example to derive the batch shardings")
    b_shard = batch_shardings(batch_example, mesh, rules)
    init = jax.jit(tx.init, in_shardings=(p_shard,), out_shardings=o_shard)
    jitted = jax.jit(step, in_shardings=(p_shard, o_shard, b_shard), out_shardings=(p_shard, o_shard, replicated),
                     donate_argnums=(0, 1))
    return init, jitted
