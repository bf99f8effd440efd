"""Device mesh, logical-axis sharding rules, multi-host start-up."""

from zoomiqa_jax.parallel.mesh import AXES, initialize_distributed, make_mesh, mesh_shape
from zoomiqa_jax.parallel.rules import (
    DEFAULT_RULES,
    batch_sharding,
    logical_to_spec,
    shard_model,
    state_shardings,
)

__all__ = [
    "AXES",
    "DEFAULT_RULES",
    "batch_sharding",
    "initialize_distributed",
    "logical_to_spec",
    "make_mesh",
    "mesh_shape",
    "shard_model",
    "state_shardings",
]
