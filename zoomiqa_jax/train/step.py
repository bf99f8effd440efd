"""The sharded train step shared by SFT and GRPO: value_and_grad of a loss, an optax update, `jax.jit` with explicit
in/out shardings (that is pjit).

Parameters and optimizer state are laid out by the logical-axis rules (`zoomiqa_jax.parallel.rules`); every batch
array whose leading dimension is the batch (rows of `input_ids`) is split over the batch mesh axes, `position_ids`
([3, batch, seq]) on its second dimension, image patches on their first when it divides, and the vision metadata
is replicated. GSPMD propagates the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from zoomiqa_jax.parallel.rules import DEFAULT_RULES, MeshAxes, batch_sharding, state_shardings

LossFn = Callable[[nnx.Module, Mapping[str, Any]], tuple[jax.Array, dict[str, jax.Array]]]


def batch_logits(model: nnx.Module, batch: Mapping[str, Any]) -> jax.Array:
    """The model's logits [rows, T, vocab] on a prepared training batch (`input_ids`, `attention_mask`,
    `position_ids`, and `pixel_values` / `vision_meta` when it has images): the forward every loss uses."""
    return model(
        batch["input_ids"],
        batch["attention_mask"],
        batch.get("pixel_values"),
        position_ids=batch["position_ids"],
        vision_meta=batch.get("vision_meta"),
    )


def batch_ways(mesh: Mesh, rules: Mapping[str, MeshAxes] = DEFAULT_RULES) -> int:
    """How many ways the batch dimension splits on `mesh` (the product of the rules' "batch" mesh axes)."""
    names = rules["batch"]
    names = (names,) if isinstance(names, str) else tuple(names or ())
    ways = 1
    for name in names:
        ways *= mesh.shape.get(name, 1)
    return ways


def batch_shardings(batch: Mapping[str, Any], mesh: Mesh, rules: Mapping[str, MeshAxes] = DEFAULT_RULES) -> dict:
    """NamedShardings for a batch dict (see the module docstring for the layout)."""
    rows = batch["input_ids"].shape[0]
    ways = batch_ways(mesh, rules)
    replicated = NamedSharding(mesh, PartitionSpec())
    out: dict[str, Any] = {}
    for key, value in batch.items():
        if value is None:
            out[key] = None
        elif key == "position_ids":
            out[key] = batch_sharding(mesh, 3, 1, rules)
        elif key == "pixel_values":
            out[key] = batch_sharding(mesh, 2, 0, rules) if value.shape[0] % ways == 0 else replicated
        elif key != "vision_meta" and getattr(value, "ndim", 0) >= 1 and value.shape[0] == rows:
            out[key] = batch_sharding(mesh, value.ndim, 0, rules)
        else:
            out[key] = jax.tree.map(lambda _: replicated, value)
    return out


def make_train_step(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    tx: optax.GradientTransformation,
    loss_fn: LossFn,
    *,
    mesh: Mesh | None = None,
    batch_example: Mapping[str, Any] | None = None,
    rules: Mapping[str, MeshAxes] = DEFAULT_RULES,
) -> tuple[Callable, Callable]:
    """Return (init_opt_state(params), step(params, opt_state, batch) -> (params, opt_state, metrics)).

    `loss_fn(model, batch) -> (loss, metrics)`. With a mesh both functions are jitted with explicit shardings
    (`batch_example` gives the batch structure); without one they are plainly jitted on the default device.
    The step donates params and optimizer state."""

    def step(params: nnx.State, opt_state: Any, batch: Mapping[str, Any]) -> tuple[nnx.State, Any, dict]:
        def objective(p: nnx.State) -> tuple[jax.Array, dict]:
            return loss_fn(nnx.merge(graphdef, p), batch)

        (loss, metrics), grads = jax.value_and_grad(objective, has_aux=True)(params)
        if isinstance(tx, optax.GradientTransformationExtraArgs):  # make_optimizer's: skips a non-finite loss too
            updates, opt_state = tx.update(grads, opt_state, params, loss=loss)
        else:
            updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return params, opt_state, dict(metrics, grad_norm=optax.global_norm(grads))

    if mesh is None:
        return jax.jit(tx.init), jax.jit(step, donate_argnums=(0, 1))
    if batch_example is None:
        raise ValueError("a sharded step needs batch_example to derive the batch shardings")
    p_shard = state_shardings(params, mesh, rules)
    replicated = NamedSharding(mesh, PartitionSpec())
    o_shard = optax.tree_map_params(tx, lambda _, s: s, jax.eval_shape(tx.init, params), p_shard,
                                    transform_non_params=lambda _: replicated)
    b_shard = batch_shardings(batch_example, mesh, rules)
    init = jax.jit(tx.init, in_shardings=(p_shard,), out_shardings=o_shard)
    jitted = jax.jit(step, in_shardings=(p_shard, o_shard, b_shard), out_shardings=(p_shard, o_shard, replicated),
                     donate_argnums=(0, 1))
    return init, jitted
