"""Hugging Face checkpoint directories <-> our NNX model.

    load_hf(path)              config.json + model.safetensors (or index + shards), either key layout
    save_hf(model, out_dir)    config.json, generation_config.json, shards + index in the published layout,
                               tokenizer / processor files copied from `tokenizer_dir`

Both work tensor by tensor (see `safetensors_io`), so peak memory is about one copy of the model. Writes go to
a temporary sibling `.NAME.tmp-HOST-PID-XXXX` of `out_dir` that is renamed into place at the end: on any error
nothing is left behind, and the next run removes what a killed one (SIGKILL, OOM) left on this host.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import json
import os
import re
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from zoomiqa_jax.checkpoint.keymap import expected_hf_shapes, ours_to_hf, to_hf
from zoomiqa_jax.checkpoint.safetensors_io import (
    DEFAULT_MAX_SHARD_BYTES,
    CheckpointReader,
    TensorSpec,
    write_checkpoint,
)
from zoomiqa_jax.checkpoint.state import (
    CheckpointMismatchError,
    check_hf_keys,
    model_from_hf_tensors,
    model_param_items,
)
from zoomiqa_jax.config import ConfigError, ModelConfig
from zoomiqa_jax.model import Qwen25VL

# Files copied verbatim next to the weights when the source directory has them.
AUX_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "chat_template.json",
    "chat_template.jinja",
    "preprocessor_config.json",
    "video_preprocessor_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "generation_config.json",
)

# The published Qwen2.5-VL-Instruct generation_config.json, token ids taken from the model config.
GENERATION_DEFAULTS = {"do_sample": True, "repetition_penalty": 1.05, "temperature": 0.1, "top_p": 0.001, "top_k": 1}


class ConversionError(ValueError):
    """An output directory or config problem that stops a conversion before anything is written."""


# ------------------------------------------------------------------------------------------ shared helpers
def _host() -> str:
    """This machine's name as it appears in temporary directory names (no '-', so names parse back)."""
    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "localhost"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temp_dirs(out_dir: str | Path) -> list[Path]:
    """Remove the `.NAME.tmp-HOST-PID-*` and `.NAME.old-HOST-PID-*` siblings of `out_dir` that a killed run on
    this host left (its PID is dead), printing one line each. Directories of live processes, of other hosts
    (a shared file system) and of other names are never touched. A run killed mid-swap (`out_dir` already
    moved into its `.old-` directory, the new result not yet in place) gets its previous result put back.
    Returns the removed directories."""
    out = Path(out_dir).absolute()
    if not out.parent.is_dir():
        return []
    pattern = re.compile(rf"\.{re.escape(out.name)}\.(tmp|old)-(.+)-(\d+)-[^-]+")
    host, removed = _host(), []
    for path in sorted(out.parent.iterdir()):
        m = pattern.fullmatch(path.name)
        if m is None or m[2] != host or not path.is_dir() or _pid_alive(int(m[3])):
            continue
        if m[1] == "old" and not out.exists() and (path / out.name).is_dir():
            os.replace(path / out.name, out)
            print(f"restored {out} from {path} (a run killed mid-swap, pid {m[3]})", file=sys.stderr, flush=True)
        shutil.rmtree(path, ignore_errors=True)
        print(f"removed {path}: left by a killed run (pid {m[3]} on {host})", file=sys.stderr, flush=True)
        removed.append(path)
    return removed


def check_output_dir(out_dir: str | Path, overwrite: bool = False) -> Path:
    """`out_dir` must not exist or be empty (or `overwrite`). Returns it as a Path. Removes first what killed
    runs left beside it (`remove_stale_temp_dirs`)."""
    out = Path(out_dir)
    remove_stale_temp_dirs(out)
    if out.exists() and not out.is_dir():
        raise ConversionError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConversionError(f"{out}: directory exists and is not empty (pass overwrite / --overwrite to replace it)")
    return out


@contextlib.contextmanager
def atomic_output_dir(out_dir: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary directory beside `out_dir`; on success it replaces `out_dir`, on error it is
    deleted, so `out_dir` either holds the complete result or is untouched."""
    out = check_output_dir(out_dir, overwrite).absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{_host()}-{os.getpid()}-"  # lets the next run tell a killed run's leftovers from a live one's
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{tag}", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it 0700; the result should get a normal directory's mode
    try:
        yield tmp
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-{tag}", dir=out.parent))
            os.replace(out, old / out.name)
            try:
                os.replace(tmp, out)
            except BaseException:
                os.replace(old / out.name, out)  # put the previous result back: out_dir stays untouched
                shutil.rmtree(old, ignore_errors=True)
                raise
            shutil.rmtree(old)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def copy_aux_files(src_dir: str | Path | None, dst_dir: str | Path) -> list[str]:
    """Copy the tokenizer / processor / generation files of AUX_FILES that exist in `src_dir`."""
    if src_dir is None:
        return []
    copied = []
    for name in AUX_FILES:
        src = Path(src_dir) / name
        if src.is_file():
            shutil.copyfile(src, Path(dst_dir) / name)
            copied.append(name)
    return copied


def read_hf_config(path: str | Path) -> dict[str, Any]:
    """The parsed `config.json` of an HF directory (or the file itself)."""
    path = Path(path)
    path = path / "config.json" if path.is_dir() else path
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None


def dtype_name(dtype: Any) -> str:
    """np/jnp dtype -> the torch-style name HF configs use ('float32', 'bfloat16', ...)."""
    return np.dtype(dtype).name


def majority_dtype(dtypes: Mapping[str, Any], prefer: str | None = None) -> np.dtype | None:
    """The dtype most tensors have (ties go to `prefer`, e.g. the config's torch_dtype)."""
    counts = collections.Counter(np.dtype(d) for d in dtypes.values())
    if not counts:
        return None
    top = max(counts.values())
    best = [d for d, c in counts.items() if c == top]
    preferred = [d for d in best if d.name == prefer]
    return (preferred or best)[0]


def output_config_dict(model: Qwen25VL, config_dict: Mapping[str, Any] | None) -> dict[str, Any]:
    """The config.json to write next to `model`'s weights: `config_dict` (checked to describe the same model)
    or `config.to_hf_dict`, with the dtype fields set to the parameters' dtype."""
    dtypes = {path: value.dtype for path, value in model_param_items(model)}
    dt = majority_dtype(dtypes)
    name = dtype_name(dt) if dt is not None else "float32"
    if config_dict is None:
        return model.config.to_hf_dict(torch_dtype=name)
    described = ModelConfig.from_hf_dict(dict(config_dict), source="config_dict")
    if described != model.config:
        raise ConversionError(
            f"config_dict describes a different model than the weights:\n  config_dict: {described}\n"
            f"  model:       {model.config}"
        )
    d = copy.deepcopy(dict(config_dict))
    if "dtype" not in d:
        d["torch_dtype"] = name  # the 4.x key; transformers 5 reads it too
    for sub in (d, d.get("text_config"), d.get("vision_config")):
        for key in ("torch_dtype", "dtype"):
            if isinstance(sub, dict) and key in sub:
                sub[key] = name
    return d


def generation_config_dict(config: ModelConfig) -> dict[str, Any]:
    """Qwen2.5-VL-Instruct's published generation config with this config's token ids."""
    return {
        "bos_token_id": config.bos_token_id,
        "pad_token_id": config.bos_token_id,
        "eos_token_id": [config.eos_token_id, config.bos_token_id],
        **GENERATION_DEFAULTS,
    }


def write_metadata_files(
    out_dir: Path, config_json: Mapping[str, Any], config: ModelConfig, tokenizer_dir: str | Path | None
) -> None:
    """config.json, generation_config.json (copied if `tokenizer_dir` has one) and the tokenizer files."""
    (out_dir / "config.json").write_text(json.dumps(config_json, indent=2) + "\n")
    copied = copy_aux_files(tokenizer_dir, out_dir)
    if "generation_config.json" not in copied:
        gen = json.dumps(generation_config_dict(config), indent=2)
        (out_dir / "generation_config.json").write_text(gen + "\n")


# ------------------------------------------------------------------------------------------------ loading
def load_hf(
    path: str | Path,
    dtype: Any = jnp.float32,
    param_dtype: Any | None = None,
    *,
    allow_mixed_dtypes: bool = False,
    progress: bool = False,
) -> tuple[Qwen25VL, ModelConfig]:
    """Load an HF Qwen2.5-VL directory: `config.json` plus `model.safetensors` or an index with shards.

    Args:
      path: the directory.
      dtype: compute dtype of the forward.
      param_dtype: cast every parameter to this; None keeps the stored dtype (bf16 stays bf16).
      allow_mixed_dtypes: accept tensors of different dtypes; by default every tensor must share the
        checkpoint's dtype and the others are reported as mismatches.
      progress: show a tqdm bar over tensors.

    Raises CheckpointMismatchError naming every missing, unexpected, mis-shaped or mis-typed key.
    """
    path = Path(path)
    config_dict = read_hf_config(path)
    config = ModelConfig.from_hf_dict(config_dict, source=str(path / "config.json"))
    with CheckpointReader(path) as reader:
        shapes, dtypes = reader.shapes(), reader.dtypes()
        prefer = config_dict.get("torch_dtype") or config_dict.get("dtype")
        expected = None if allow_mixed_dtypes else majority_dtype(dtypes, prefer)
        check_hf_keys(config, shapes, dtypes, expected_dtype=expected, source=str(path))
        with tqdm(total=len(shapes), desc="reading tensors", unit="tensor", disable=not progress) as bar:

            def get(key: str) -> np.ndarray:
                arr = reader.get_tensor(key)
                bar.update()
                return arr

            model = model_from_hf_tensors(config, get, shapes, dtype=dtype, param_dtype=param_dtype, source=str(path))
    return model, config


# ------------------------------------------------------------------------------------------------- saving
def hf_specs(model: Qwen25VL) -> list[tuple[TensorSpec, str, str]]:
    """(HF tensor spec, our path, transform) for every parameter, in the published key layout."""
    config = model.config
    want = expected_hf_shapes(config)
    out, unexpected, bad = [], [], []
    for path, value in model_param_items(model):
        try:
            key, transform = ours_to_hf(path)
        except KeyError:
            unexpected.append(path)
            continue
        shape = tuple(value.shape)
        if transform == "linear":
            shape = shape[::-1]
        elif transform == "conv":
            shape = want.get(key, shape)
        if key in want and shape != want[key]:
            bad.append(f"{path} -> {key}: shape {shape}, expected {want[key]}")
        out.append((TensorSpec(key, shape, np.dtype(value.dtype)), path, transform))
    missing = sorted(set(want) - {s.name for s, _, _ in out})
    if missing or unexpected or bad:
        raise CheckpointMismatchError("model parameters", missing, unexpected, bad)
    return out


def save_hf(
    model: Qwen25VL,
    out_dir: str | Path,
    *,
    config_dict: Mapping[str, Any] | None = None,
    tokenizer_dir: str | Path | None = None,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Write `model` as an HF directory transformers loads with `from_pretrained`.

    Args:
      model: the model; each tensor keeps its parameter dtype.
      out_dir: must not exist or be empty (or pass `overwrite`); written atomically.
      config_dict: the original HF config (kept, dtype fields updated); None writes `config.to_hf_dict()`.
      tokenizer_dir: where to copy tokenizer / processor / generation config files from, if present.
      max_shard_bytes: the largest shard; more than one shard adds `model.safetensors.index.json`.
      overwrite: replace a non-empty `out_dir`.
      progress: show a tqdm bar over tensors.
    """
    specs = hf_specs(model)
    config_json = output_config_dict(model, config_dict)
    values = dict(model_param_items(model))
    with atomic_output_dir(out_dir, overwrite) as tmp:
        write_metadata_files(tmp, config_json, model.config, tokenizer_dir)
        arrays = ((s.name, to_hf(t, np.asarray(values[p]), model.config)) for s, p, t in specs)
        with tqdm(total=len(specs), desc="writing safetensors", unit="tensor", disable=not progress) as bar:
            write_checkpoint(
                tmp, [s for s, _, _ in specs], arrays, max_shard_bytes=max_shard_bytes,
                on_tensor=lambda _name: bar.update(),
            )
    return Path(out_dir)
