"""Move parameters between an NNX model and HF-named tensors, one tensor at a time.

`model_from_hf_tensors` builds the model abstractly (no random init, no memory for weights) and fills each
parameter from the HF tensor it maps to; `hf_tensors_from_model` yields (HF key, array) pairs. Both check
the complete key set and every shape first and report every problem at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from zoomiqa_jax.checkpoint.keymap import expected_hf_shapes, hf_to_ours, normalize_hf_key, ours_to_hf, to_hf, to_ours
from zoomiqa_jax.config import ModelConfig
from zoomiqa_jax.model import Qwen25VL


class CheckpointMismatchError(ValueError):
    """The tensors do not fit the config: lists every missing, unexpected and mis-shaped key."""

    def __init__(self, source: str, missing: list[str], unexpected: list[str], bad: list[str]) -> None:
        self.missing, self.unexpected, self.bad = missing, unexpected, bad
        lines = [f"{source}: checkpoint does not match the model config"]
        for title, items in (("missing keys", missing), ("unexpected keys", unexpected), ("mismatches", bad)):
            if items:
                lines.append(f"  {title} ({len(items)}):")
                lines.extend(f"    {x}" for x in items)
        super().__init__("\n".join(lines))


def _path_str(path: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in path)


def check_hf_keys(
    config: ModelConfig,
    shapes: Mapping[str, tuple[int, ...]],
    dtypes: Mapping[str, Any] | None = None,
    *,
    expected_dtype: Any | None = None,
    source: str = "checkpoint",
) -> dict[str, str]:
    """Validate HF key names/shapes (either layout) against the config. Returns {normalized key: original key}.

    A tied checkpoint may still carry `lm_head.weight` (some exporters write it); it is accepted and ignored.
    """
    want = expected_hf_shapes(config)
    seen: dict[str, str] = {}
    unexpected, bad = [], []
    for key, shape in shapes.items():
        norm = normalize_hf_key(key)
        if norm == "lm_head.weight" and config.tie_word_embeddings:
            continue
        if norm not in want:
            unexpected.append(key)
            continue
        if norm in seen:
            bad.append(f"{key}: duplicate of {seen[norm]}")
            continue
        seen[norm] = key
        if tuple(shape) != want[norm]:
            bad.append(f"{key}: shape {tuple(shape)}, expected {want[norm]}")
        if dtypes is not None and expected_dtype is not None and np.dtype(dtypes[key]) != np.dtype(expected_dtype):
            bad.append(f"{key}: dtype {np.dtype(dtypes[key])}, expected {np.dtype(expected_dtype)}")
    missing = sorted(k for k in want if k not in seen)
    if missing or unexpected or bad:
        raise CheckpointMismatchError(source, missing, sorted(unexpected), bad)
    return seen


def abstract_model(config: ModelConfig, dtype: Any = jnp.float32, param_dtype: Any = jnp.float32) -> Qwen25VL:
    """The model with shape-only parameters (nothing allocated)."""
    return nnx.eval_shape(lambda: Qwen25VL(config, rngs=nnx.Rngs(0), dtype=dtype, param_dtype=param_dtype))


def model_from_hf_tensors(
    config: ModelConfig,
    get_tensor: Callable[[str], np.ndarray] | Mapping[str, np.ndarray],
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    *,
    dtype: Any = jnp.float32,
    param_dtype: Any | None = None,
    source: str = "checkpoint",
) -> Qwen25VL:
    """Build a Qwen25VL from HF tensors. `get_tensor(key)` is called once per key, so a lazy reader keeps
    peak memory at about one copy of the model. `param_dtype=None` keeps each tensor's stored dtype."""
    if isinstance(get_tensor, Mapping):
        tensors = get_tensor
        shapes = {k: tuple(v.shape) for k, v in tensors.items()} if shapes is None else shapes
        get_tensor = tensors.__getitem__
    if shapes is None:
        raise ValueError("shapes are required with a lazy get_tensor")
    keys = check_hf_keys(config, shapes, source=source)
    model = abstract_model(config, dtype=dtype, param_dtype=param_dtype or jnp.float32)
    graphdef, state = nnx.split(model)
    flat = dict(nnx.to_flat_state(state))
    # Largest first: each tensor briefly exists twice (read + transposed or device copy), and that transient
    # costs least while the model is still mostly empty. Measured in docs/conversion.md.
    by_size = sorted(keys.items(), key=lambda kv: -int(np.prod(shapes[kv[1]], dtype=np.int64)))
    for norm, original in by_size:
        ours, transform = hf_to_ours(norm)
        path = tuple(int(p) if p.isdigit() else p for p in ours.split("."))
        var = flat[path]
        arr = to_ours(transform, np.asarray(get_tensor(original)))
        if param_dtype is not None:
            arr = arr.astype(param_dtype)
        var.set_value(jnp.asarray(arr)) if hasattr(var, "set_value") else setattr(var, "value", jnp.asarray(arr))
    return nnx.merge(graphdef, nnx.from_flat_state(flat))


def model_param_items(model: nnx.Module) -> Iterator[tuple[str, jax.Array]]:
    """(our dotted path, array) for every parameter."""
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        yield _path_str(path), var[...]


def hf_tensors_from_model(model: Qwen25VL) -> Iterator[tuple[str, np.ndarray]]:
    """(published HF key, array in HF layout and in the parameter's own dtype), one at a time."""
    for path, value in model_param_items(model):
        key, transform = ours_to_hf(path)
        yield key, to_hf(transform, np.asarray(value), model.config)
