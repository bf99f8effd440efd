"""Does a run config shard on a given number of devices? Checked before anything is compiled or loaded.

    validate_parallelism(cfg, jax.device_count())   # run_sft / run_grpo call it; `zoomiqa plan` too

A pure function of (config, device count): no device is touched, so a test or a CPU host can check a config for a
16- or 64-chip slice. It resolves `parallel.mesh` against the device count (`parallel.mesh.mesh_shape`), then
checks, by the logical-axis rules (`parallel.rules.DEFAULT_RULES`):

* the batch: its rows are split over `rules["batch"]` = data x fsdp, so they must divide. SFT: `data.batch_size`
  rows per micro-batch. GRPO: `data.batch_size / grpo.mini_batches` images x `grpo.group_size` samples per
  mini-batch (`train.grpo_config`).
* every model dimension the rules put on a mesh axis of size > 1: on `tensor` the attention heads (q and kv; a
  split inside a head is never wanted), the MLP width and the vocabulary of the decoder, the heads and MLP width of
  the vision tower; on `fsdp` the decoder's and the vision tower's model width. The rules would quietly replicate a
  dimension that does not divide (`logical_to_spec`), losing the memory the axis was meant to save; here it is an
  error naming the key.

A fault raises ParallelismError (a ConfigError: `zoomiqa train` exits 2) naming the keys, their values, the mesh
as given and as resolved, and the device count, e.g.
"data.batch_size=2 is not divisible by data*fsdp=16 (parallel.mesh [1, -1, 1] on 16 devices = (1, 16, 1))".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zoomiqa_jax.config import ConfigError, ModelConfig
from zoomiqa_jax.parallel.mesh import AXES, mesh_shape
from zoomiqa_jax.parallel.rules import DEFAULT_RULES


class ParallelismError(ConfigError):
    """The config does not shard on the mesh it resolves to (batch or model dimensions vs the mesh axes)."""


# (key named in errors, logical axis of the parameter dimension in parallel/rules.py, value from a ModelConfig)
MODEL_DIMS: tuple[tuple[str, str, Any], ...] = (
    ("text.num_attention_heads", "q_heads", lambda m: m.text.num_attention_heads),
    ("text.num_key_value_heads", "kv_heads", lambda m: m.text.num_key_value_heads),
    ("text.intermediate_size", "mlp", lambda m: m.text.intermediate_size),
    ("text.vocab_size", "vocab", lambda m: m.text.vocab_size),
    ("text.hidden_size", "embed", lambda m: m.text.hidden_size),
    ("vision.num_heads", "vit_heads", lambda m: m.vision.num_heads),
    ("vision.intermediate_size", "vit_mlp", lambda m: m.vision.intermediate_size),
    ("vision.hidden_size", "vit_embed", lambda m: m.vision.hidden_size),
)


def _axes(logical: str) -> tuple[str, ...]:
    target = DEFAULT_RULES.get(logical)
    return (target,) if isinstance(target, str) else tuple(target or ())


def resolve_mesh(cfg: Any, device_count: int) -> dict[str, int]:
    """{'data': .., 'fsdp': .., 'tensor': ..}: `parallel.mesh` with its -1 resolved for `device_count` devices;
    ParallelismError naming parallel.mesh when it cannot be laid out."""
    if device_count < 1:
        raise ParallelismError(f"device count must be >= 1, got {device_count}")
    try:
        shape = mesh_shape(cfg.parallel.mesh, device_count)
    except ValueError as err:
        raise ParallelismError(f"parallel.mesh={list(cfg.parallel.mesh)} cannot be laid out on {device_count} "
                               f"device(s): {err}") from None
    return dict(zip(AXES, shape))


def model_config_of(cfg: Any) -> ModelConfig:
    """The ModelConfig the run will build: the checkpoint's config.json when `model.weights` names a directory
    holding one (as `checkpoint.loading.load_checkpoint` reads it), else `model.config` (a preset or an HF
    config.json)."""
    if cfg.model.weights:
        from zoomiqa_jax.checkpoint.hf import ConversionError
        from zoomiqa_jax.checkpoint.orbax_io import locate_orbax

        candidates = [Path(cfg.model.weights) / "config.json"]
        try:
            candidates.append(Path(locate_orbax(cfg.model.weights).meta_dir) / "config.json")
        except ConversionError:  # not an orbax checkpoint (or no such directory: load_model says so)
            pass
        for path in candidates:
            if path.is_file():
                return ModelConfig.from_hf_json(path)
    return cfg.model.resolve()


def batch_rows(cfg: Any) -> tuple[int, str]:
    """(rows of one training micro-batch, how they are counted from the keys) for an SFT or a GRPO config."""
    grpo = getattr(cfg, "grpo", None)
    if grpo is None:
        return cfg.data.batch_size, f"data.batch_size={cfg.data.batch_size}"
    images = cfg.data.batch_size // grpo.mini_batches
    return images * grpo.group_size, (
        f"data.batch_size={cfg.data.batch_size} / grpo.mini_batches={grpo.mini_batches} images x "
        f"grpo.group_size={grpo.group_size} = {images * grpo.group_size} rollout rows per mini-batch")


def validate_parallelism(cfg: Any, device_count: int, model: ModelConfig | None = None) -> None:
    """Raise ParallelismError (naming keys and values) unless `cfg` (a TrainConfig or GrpoTrainConfig) shards on
    `device_count` devices: the module docstring lists the checks. `model` defaults to `model_config_of(cfg)`."""
    mesh = resolve_mesh(cfg, device_count)
    where = (f"parallel.mesh {list(cfg.parallel.mesh)} on {device_count} device(s) = "
             f"({', '.join(str(mesh[a]) for a in AXES)})")
    batch_axes = _axes("batch")
    ways = 1
    for axis in batch_axes:
        ways *= mesh[axis]
    rows, counted = batch_rows(cfg)
    if rows % ways:
        product = "*".join(batch_axes)
        raise ParallelismError(
            f"{counted} is not divisible by {product}={ways} ({where}): the batch rows are split over {product}. "
            f"Use a multiple of {ways} rows (with a smaller optim.grad_accum to keep the effective batch), or a "
            f"parallel.mesh whose {product} divides {rows}, the other devices on 'tensor'")
    model = model or model_config_of(cfg)
    source = f"model {cfg.model.weights or cfg.model.config}"
    for key, logical, value_of in MODEL_DIMS:
        axes = [a for a in _axes(logical) if mesh[a] > 1]
        split = 1
        for axis in axes:
            split *= mesh[axis]
        value = int(value_of(model))
        if split > 1 and value % split:
            raise ParallelismError(
                f"{source}: {key}={value} is not divisible by {'*'.join(axes)}={split} ({where}): parallel/rules.py "
                f"shards {logical!r} over {'*'.join(axes)}. Choose a mesh whose {'*'.join(axes)} divides {value}")
