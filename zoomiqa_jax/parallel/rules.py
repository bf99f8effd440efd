"""Logical axis rules: the one table that decides how every parameter and activation is laid out.

Layers name each parameter dimension (`logical_axes` metadata, e.g. ("embed", "mlp")). A rule maps a logical name
to a mesh axis, a tuple of mesh axes, or None (replicated). A dimension whose size the mesh axes do not divide, or
whose mesh axis another dimension of the same array already uses, is replicated instead: tiny test models and odd
vocabularies still shard where they can.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MeshAxes = str | tuple[str, ...] | None

# FSDP over "fsdp" on the model dimension, tensor parallelism over heads / MLP / vocabulary.
DEFAULT_RULES: dict[str, MeshAxes] = {
    # activations
    "batch": ("data", "fsdp"),
    "seq": None,
    # text decoder
    "vocab": "tensor",
    "embed": "fsdp",
    "mlp": "tensor",
    "q_heads": "tensor",
    "kv_heads": "tensor",
    # vision tower
    "vit_patch": None,
    "vit_embed": "fsdp",
    "vit_qkv": "tensor",
    "vit_heads": "tensor",
    "vit_mlp": "tensor",
    "vit_merge": "fsdp",
    "vit_merge_out": "tensor",
}


def logical_to_spec(
    axes: Sequence[str | None],
    shape: Sequence[int],
    mesh: Mesh,
    rules: Mapping[str, MeshAxes] = DEFAULT_RULES,
) -> PartitionSpec:
    """PartitionSpec for an array with these logical axes and shape on `mesh`."""
    if len(axes) != len(shape):
        raise ValueError(f"logical axes {tuple(axes)} do not match shape {tuple(shape)}")
    used: set[str] = set()
    out: list[MeshAxes] = []
    for name, size in zip(axes, shape):
        target = rules.get(name) if name is not None else None
        names = (target,) if isinstance(target, str) else tuple(target or ())
        names = tuple(n for n in names if n not in used and mesh.shape.get(n, 1) > 1)
        ways = int(np.prod([mesh.shape[n] for n in names])) if names else 1
        if not names or size % ways:
            out.append(None)
            continue
        used.update(names)
        out.append(names[0] if len(names) == 1 else names)
    return PartitionSpec(*out)


def state_shardings(state: nnx.State, mesh: Mesh, rules: Mapping[str, MeshAxes] = DEFAULT_RULES) -> nnx.State:
    """A State of NamedShardings with the structure of `state` (each Variable keeps its wrapper, its value becomes
    the sharding), from each Variable's `logical_axes` metadata (none: replicated)."""

    def one(var: nnx.Variable) -> nnx.Variable:
        axes = var.get_metadata().get("logical_axes")
        shape = var.get_value().shape  # also works on abstract (eval_shape) parameters
        spec = PartitionSpec() if axes is None else logical_to_spec(axes, shape, mesh, rules)
        return var.replace(NamedSharding(mesh, spec))

    return jax.tree.map(one, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def batch_sharding(mesh: Mesh, ndim: int, batch_axis: int = 0, rules: Mapping[str, MeshAxes] = DEFAULT_RULES
                   ) -> NamedSharding:
    """Shard dimension `batch_axis` of an `ndim` array over the batch mesh axes, replicate the rest."""
    spec: list[MeshAxes] = [None] * ndim
    spec[batch_axis] = rules["batch"]
    return NamedSharding(mesh, PartitionSpec(*spec))


def shard_model(model: nnx.Module, mesh: Mesh, rules: Mapping[str, MeshAxes] = DEFAULT_RULES) -> Any:
    """Place every parameter of `model` by the rules (in place); returns the shardings State."""
    state = nnx.state(model)
    shardings = state_shardings(state, mesh, rules)
    nnx.update(model, jax.device_put(state, shardings))
    return shardings
