"""Our model's parameters as an orbax checkpoint, with everything needed to turn it back into an HF directory.

Layout written by `save_orbax(model, CKPT_DIR)` (and by `zoomiqa-convert hf-to-orbax`):

    CKPT_DIR/
      params/                  orbax PyTree checkpoint (PyTreeCheckpointHandler, OCDBT, 16 MiB data files) of
                               nnx.to_pure_dict(nnx.state(model, nnx.Param)): nested dicts named like the
                               modules, list indices as keys, e.g.
                               params["language_model"]["layers"][0]["mlp"]["gate_proj"]["kernel"]  [in, out]
                               Every array keeps its dtype (bf16 stays bf16); layouts are ours (keymap.py).
      config.json              the HF config dict (the original one when converted from HF)
      generation_config.json   copied from the source, or Qwen2.5-VL-Instruct's defaults
      tokenizer.json, ...      tokenizer / processor files copied from the source when present

CKPT_DIR is laid out like one step of an orbax `CheckpointManager` that saves a `params` item, so
`load_orbax` reads all of these:

    CKPT_DIR/params/...                      a converted checkpoint (above), or one step directory
    RUN_DIR/<step>/params/...                a CheckpointManager root: the latest step, or `step=`
    .../params                               the params item itself

`config.json` (and the tokenizer files) are looked for in the step directory, then in the run root, then in
its parent, so a training run only has to write them once at its root. A params tree saved as an
`nnx.State` (leaves ending in `.value`) reads too. Nothing is randomly initialised on restore: the model is
built abstractly (`nnx.eval_shape`), checked key by key against the checkpoint metadata, then filled.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from zoomiqa_jax.checkpoint.hf import (
    ConversionError,
    atomic_output_dir,
    majority_dtype,
    output_config_dict,
    read_hf_config,
    write_metadata_files,
)
from zoomiqa_jax.checkpoint.state import CheckpointMismatchError, abstract_model
from zoomiqa_jax.config import ModelConfig
from zoomiqa_jax.model import Qwen25VL

PARAMS_ITEM = "params"
# OCDBT keeps what it writes to one data file in memory until the file is flushed; with orbax's default
# target (2 GB) a small model is held twice. Smaller data files bound that buffer (measured: docs/conversion.md).
OCDBT_TARGET_FILE_BYTES = 16 * 2**20


@dataclasses.dataclass(frozen=True)
class OrbaxLocation:
    """Where the pieces of an orbax checkpoint live."""

    params_dir: Path  # the orbax params item
    meta_dir: Path  # the directory holding config.json and the tokenizer files
    step: int | None  # the CheckpointManager step, if the path was a run root


def _is_item(path: Path) -> bool:
    return path.is_dir() and ((path / "_METADATA").is_file() or (path / "manifest.ocdbt").is_file())


def _steps(root: Path) -> list[int]:
    return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit() and _is_item(p / PARAMS_ITEM))


def locate_orbax(path: str | Path, step: int | None = None) -> OrbaxLocation:
    """Find the params item and config.json for any of the layouts in the module docstring."""
    path = Path(path).absolute()
    if not path.is_dir():
        raise ConversionError(f"{path}: no such directory")
    if step is not None:
        if not _is_item(path / str(step) / PARAMS_ITEM):
            raise ConversionError(f"{path}: no step {step} with a '{PARAMS_ITEM}' item (steps: {_steps(path)})")
        params, candidates, found = path / str(step) / PARAMS_ITEM, [path / str(step), path, path.parent], step
    elif _is_item(path / PARAMS_ITEM):
        params, candidates, found = path / PARAMS_ITEM, [path, path.parent], None
    elif _is_item(path):
        params, candidates, found = path, [path.parent, path.parent.parent], None
    elif steps := _steps(path):
        found = steps[-1]
        params, candidates = path / str(found) / PARAMS_ITEM, [path / str(found), path, path.parent]
    else:
        raise ConversionError(
            f"{path}: not an orbax checkpoint: expected {PARAMS_ITEM}/ (a converted checkpoint or one step), "
            f"numbered step directories holding {PARAMS_ITEM}/, or an orbax item directory"
        )
    for d in candidates:
        if (d / "config.json").is_file():
            return OrbaxLocation(params, d, found)
    raise ConversionError(f"{path}: no config.json in any of {[str(d) for d in candidates]}")


def _concurrent_gb(tree: Any) -> float:
    """orbax's in-flight byte budget (in GB): just above the largest array, so host buffers stay near one
    tensor (orbax refuses an array larger than the budget; its default is 96 GB)."""
    largest = max((int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree)), default=0)
    return (largest + 2**24) / 1e9


def _flat_metadata(params_dir: Path) -> dict[tuple[str, ...], Any]:
    """{path of string keys: ArrayMetadata} of the saved params tree."""
    meta = ocp.Checkpointer(ocp.StandardCheckpointHandler()).metadata(params_dir)
    tree = getattr(meta, "item_metadata", meta)
    tree = getattr(tree, "tree", tree)
    flat = {}
    for kpath, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        flat[tuple(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in kpath)] = leaf
    return flat


def _our_path(saved: tuple[str, ...]) -> str:
    """Saved tree path -> our dotted path (an nnx.State save adds a trailing `value`)."""
    return ".".join(saved[:-1] if saved and saved[-1] == "value" else saved)


def load_orbax(
    path: str | Path,
    *,
    step: int | None = None,
    dtype: Any = jnp.float32,
    param_dtype: Any | None = None,
    allow_mixed_dtypes: bool = False,
) -> tuple[Qwen25VL, ModelConfig]:
    """Restore the model from an orbax checkpoint (any layout in the module docstring).

    Args:
      path: CKPT_DIR, a CheckpointManager root, or the params item itself.
      step: for a CheckpointManager root, the step to read (default: the latest).
      dtype: compute dtype of the forward.
      param_dtype: cast parameters to this on restore; None keeps the stored dtypes exactly.
      allow_mixed_dtypes: accept parameters of different dtypes (by default the minority is an error).

    Raises CheckpointMismatchError naming every missing, unexpected, mis-shaped or mis-typed parameter.
    """
    loc = locate_orbax(path, step)
    config = ModelConfig.from_hf_dict(read_hf_config(loc.meta_dir), source=str(loc.meta_dir / "config.json"))
    model = abstract_model(config, dtype=dtype, param_dtype=param_dtype or jnp.float32)
    graphdef, state = nnx.split(model)
    flat_state = dict(nnx.to_flat_state(state))
    want = {".".join(str(p) for p in k): k for k, v in flat_state.items() if isinstance(v, nnx.Param)}

    saved = _flat_metadata(loc.params_dir)
    by_path = {_our_path(k): k for k in saved}
    dtypes = {p: np.dtype(saved[k].dtype) for p, k in by_path.items() if p in want}
    expected = None if allow_mixed_dtypes else majority_dtype(dtypes)
    bad = []
    for p in sorted(set(by_path) & set(want)):
        meta, target = saved[by_path[p]], flat_state[want[p]]
        if tuple(meta.shape) != tuple(target.shape):
            bad.append(f"{p}: shape {tuple(meta.shape)}, expected {tuple(target.shape)}")
        if expected is not None and dtypes[p] != expected:
            bad.append(f"{p}: dtype {dtypes[p]}, expected {expected}")
    missing, unexpected = sorted(set(want) - set(by_path)), sorted(set(by_path) - set(want))
    if missing or unexpected or bad:
        source = f"{loc.params_dir} (against {loc.meta_dir / 'config.json'})"
        raise CheckpointMismatchError(source, missing, unexpected, bad)

    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])

    def nest(items: Mapping[tuple[str, ...], Any]) -> dict[str, Any]:
        tree: dict[str, Any] = {}
        for k, leaf in items.items():
            node = tree
            for part in k[:-1]:
                node = node.setdefault(part, {})
            node[k[-1]] = leaf
        return tree

    target = nest({
        k: jax.ShapeDtypeStruct(tuple(m.shape), np.dtype(param_dtype or m.dtype), sharding=device)
        for k, m in saved.items()
    })
    handler = ocp.PyTreeCheckpointHandler(restore_concurrent_gb=_concurrent_gb(target))
    restored = ocp.Checkpointer(handler).restore(
        loc.params_dir,
        args=ocp.args.PyTreeRestore(item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target)),
    )
    for p, k in by_path.items():
        node = restored
        for part in k:
            node = node[part]
        flat_state[want[p]].set_value(node)
    return nnx.merge(graphdef, nnx.from_flat_state(flat_state)), config


def save_orbax(
    model: Qwen25VL,
    out_dir: str | Path,
    *,
    config_dict: Mapping[str, Any] | None = None,
    tokenizer_dir: str | Path | None = None,
    overwrite: bool = False,
) -> Path:
    """Write `model` in the layout of the module docstring, atomically (nothing is left on error).

    Args:
      model: the model; parameters are saved in their own dtypes.
      out_dir: must not exist or be empty (or pass `overwrite`).
      config_dict: the original HF config dict (checked against the model); None writes `config.to_hf_dict()`.
      tokenizer_dir: where to copy tokenizer / processor / generation config files from, if present.
      overwrite: replace a non-empty `out_dir`.
    """
    config_json = output_config_dict(model, config_dict)
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    with atomic_output_dir(out_dir, overwrite) as tmp:
        handler = ocp.PyTreeCheckpointHandler(save_concurrent_gb=_concurrent_gb(params), use_ocdbt=True)
        ocp.Checkpointer(handler).save(
            tmp / PARAMS_ITEM,
            args=ocp.args.PyTreeSave(params, ocdbt_target_data_file_size=OCDBT_TARGET_FILE_BYTES),
        )
        write_metadata_files(tmp, config_json, model.config, tokenizer_dir)
    return Path(out_dir)
