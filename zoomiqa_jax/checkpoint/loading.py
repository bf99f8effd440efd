"""Loading a checkpoint for inference or as training weights, whatever its format, and the one error it raises.

    model, config, meta_dir = load_checkpoint("runs/sft/final", dtype=jnp.bfloat16)

`load_checkpoint` reads an HF directory (config.json + *.safetensors, `checkpoint.hf`) or an orbax checkpoint
(`checkpoint.orbax_io`); `meta_dir` is the directory holding config.json and, normally, the tokenizer.
`pixel_limits` reads the image processor's pixel bounds beside them. `CheckpointError` is the single error type
of a checkpoint that is missing, of neither format, or (`train.checkpointing`) does not match what a resume
asks of it: a `ConfigError`, so every CLI reports it as a bad input (exit 2), naming the directory.

Importing this module imports no jax (the CLIs' `--help` stays fast); loading does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from zoomiqa_jax.config_fields import ConfigError


class CheckpointError(ConfigError):
    """A checkpoint directory is missing, is neither an HF nor an orbax checkpoint, or does not match what is
    asked of it (a training resume's restore targets, a step that is not there)."""


def load_checkpoint(path: str | Path, dtype: Any = None, param_dtype: Any = None) -> tuple[Any, Any, Path]:
    """Load an HF directory (config.json + *.safetensors) or an orbax checkpoint, with compute `dtype` (default
    float32) and parameters cast to `param_dtype` (default: as stored).

    Returns (model, config, metadata directory): the last holds config.json and, normally, the tokenizer.
    Raises CheckpointError naming the directory when it is neither.
    """
    import jax.numpy as jnp

    dtype = jnp.float32 if dtype is None else dtype
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {path}: no such directory")
    if (path / "config.json").is_file() and any(path.glob("*.safetensors")):
        from zoomiqa_jax.checkpoint.hf import load_hf

        model, config = load_hf(path, dtype=dtype, param_dtype=param_dtype)
        return model, config, path
    from zoomiqa_jax.checkpoint.hf import ConversionError
    from zoomiqa_jax.checkpoint.orbax_io import load_orbax, locate_orbax

    try:
        location = locate_orbax(path)
    except ConversionError as err:
        raise CheckpointError(
            f"checkpoint {path}: expected an HF directory (config.json + *.safetensors) or an orbax "
            f"checkpoint ({err})"
        ) from err
    model, config = load_orbax(path, dtype=dtype, param_dtype=param_dtype)
    return model, config, location.meta_dir


def pixel_limits(directory: str | Path) -> tuple[int | None, int | None]:
    """(min_pixels, max_pixels) from the checkpoint's preprocessor_config.json, None where it has none."""
    file = Path(directory) / "preprocessor_config.json"
    if not file.is_file():
        return None, None
    try:
        d = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError):
        return None, None
    size = d.get("size") if isinstance(d.get("size"), dict) else {}
    low, high = d.get("min_pixels", size.get("shortest_edge")), d.get("max_pixels", size.get("longest_edge"))
    return (int(low) if low else None), (int(high) if high else None)
