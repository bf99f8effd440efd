"""Training checkpoints: an orbax CheckpointManager that saves and resumes everything a run needs.

Layout (a CheckpointManager root, which `zoomiqa_jax.checkpoint.orbax_io.load_orbax` reads directly):

    CKPT_DIR/
      config.json, generation_config.json   the model's HF config (`write_model_metadata`, once per run)
      <step>/                               one directory per saved optimizer step, written atomically
        params/        orbax PyTree (OCDBT) of the parameters, as given (nnx.State or a pure dict)
        opt_state/     orbax PyTree of the optimizer state
        train_state/   orbax PyTree {"rng": uint32 key data}   (only when a key was given)
        meta/metadata  JSON {"step", "rng_impl", "data_state"}; data_state is the data iterator's JSON-able
                       dict, or its bytes (a grain iterator state) as {"__bytes_b64__": ...}
        config/config.yaml   the TrainConfig in force, as YAML

Saving is asynchronous when asked (the arrays are copied to host, then written by a background thread while
training goes on); a step directory appears under its final name only once every item is complete, so a run
killed mid-save resumes from the previous step. What such a kill leaves (`<step>.orbax-checkpoint-tmp*`) is never
read as a step, and is removed (with a log line) when the next run opens the directory. The newest `keep` steps are
kept.

    ckpt = TrainCheckpointer.from_config(cfg)
    if ckpt.should_save(step): ckpt.save(step, params=..., opt_state=..., rng=key, data_state=it.get_state(),
                                         config=cfg)
    restored = ckpt.restore(params=abstract_params, opt_state=abstract_opt_state)   # latest step
    params, opt_state, rng, data_state = restored.params, restored.opt_state, restored.rng, restored.data_state
"""

from __future__ import annotations

import base64
import dataclasses
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from zoomiqa_jax.checkpoint.loading import CheckpointError
from zoomiqa_jax.config import ModelConfig
from zoomiqa_jax.train.config import TrainConfig, config_yaml

PARAMS, OPT_STATE, TRAIN_STATE, META, CONFIG = "params", "opt_state", "train_state", "meta", "config"
CONFIG_FILE = "config.yaml"
TMP_MARK = ".orbax-checkpoint-tmp"  # orbax's suffix of a step directory being written


class _YamlTextHandler(ocp.JsonCheckpointHandler):
    """Writes {"yaml": text} as a plain YAML file (the run config, readable without orbax)."""

    def __init__(self) -> None:
        super().__init__(filename=CONFIG_FILE)

    async def _save_fn(self, x: dict[str, str], directory: Any) -> None:
        if jax.process_index() == 0:
            (directory / CONFIG_FILE).write_text(x["yaml"])

    def restore(self, directory: Any, item: Any = None, args: Any = None) -> dict[str, str]:
        path = directory / CONFIG_FILE
        if not path.exists():
            raise FileNotFoundError(f"{path} not found")
        return {"yaml": path.read_text()}


@ocp.args.register_with_handler(_YamlTextHandler, for_save=True)
@dataclasses.dataclass
class YamlTextSave(ocp.args.CheckpointArgs):
    item: dict[str, str]  # {"yaml": text}


@ocp.args.register_with_handler(_YamlTextHandler, for_restore=True)
@dataclasses.dataclass
class YamlTextRestore(ocp.args.CheckpointArgs):
    item: Any = None


def _encode_data_state(state: Any) -> Any:
    if isinstance(state, (bytes, bytearray)):
        return {"__bytes_b64__": base64.b64encode(bytes(state)).decode("ascii")}
    try:
        json.dumps(state)
    except TypeError as e:
        raise CheckpointError(f"data_state must be JSON-able or bytes, got {type(state).__name__}: {e}") from None
    return state


def _decode_data_state(state: Any) -> Any:
    if isinstance(state, dict) and set(state) == {"__bytes_b64__"}:
        return base64.b64decode(state["__bytes_b64__"])
    return state


def _rng_to_data(rng: jax.Array) -> tuple[jax.Array, str | None]:
    """(uint32 key data, impl name or None for a raw uint32 key)."""
    if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(rng), str(jax.random.key_impl(rng))
    return rng, None


def abstract_like(tree: Any, shardings: Any = None) -> Any:
    """ShapeDtypeStructs for the arrays of `tree`, with `shardings` (a matching tree, or one sharding for all);
    by default each array's own sharding (or the first device's for non-arrays)."""
    default = jax.sharding.SingleDeviceSharding(jax.devices()[0])

    def one(x: Any, s: Any = None) -> jax.ShapeDtypeStruct:
        sharding = s or getattr(x, "sharding", None) or default
        return jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding)

    if shardings is None or isinstance(shardings, jax.sharding.Sharding):
        return jax.tree.map(lambda x: one(x, shardings), tree)
    return jax.tree.map(one, tree, shardings)


@dataclasses.dataclass
class Restored:
    """What `TrainCheckpointer.restore` returns."""

    step: int
    params: Any
    opt_state: Any
    rng: jax.Array | None
    data_state: Any
    config_yaml: str


class TrainCheckpointer:
    """Save every `save_every` steps, keep the newest `keep`, asynchronously if asked; resume the latest."""

    def __init__(self, directory: str | Path, *, save_every: int = 500, keep: int = 3, async_save: bool = True,
                 log: Callable[[str], None] | None = None):
        self.directory = Path(directory).absolute()
        self.save_every = save_every
        remove_stale_tmp_dirs(self.directory, log or (lambda msg: print(msg, flush=True)))
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            save_interval_steps=1,  # the cadence is ours (`should_save`): orbax would also save the first step
            enable_async_checkpointing=async_save,
            create=True,
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    @classmethod
    def from_config(cls, cfg: TrainConfig, log: Callable[[str], None] | None = None) -> TrainCheckpointer:
        """From the `checkpoint` section (directory: checkpoint.dir, or <run.out_dir>/checkpoints)."""
        c = cfg.checkpoint
        return cls(cfg.checkpoint_dir, save_every=c.save_every, keep=c.keep, async_save=c.async_save, log=log)

    # ------------------------------------------------------------------------------------------ queries
    def all_steps(self) -> list[int]:
        """Completed (committed) steps, oldest first."""
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def should_save(self, step: int) -> bool:
        """Whether `step` is a multiple of save_every (the trainer also saves its last step: `save(force=True)`)."""
        return step % self.save_every == 0

    # ------------------------------------------------------------------------------------------ save
    def save(
        self,
        step: int,
        *,
        params: Any,
        opt_state: Any,
        rng: jax.Array | None = None,
        data_state: Any = None,
        config: TrainConfig | str | None = None,
        force: bool = False,
    ) -> bool:
        """Start saving everything at `step`; returns False when `step` is not due (and not `force`), or is saved
        already (a resumed run reaching its restored step again).

        Returns as soon as the arrays are on the host when saving asynchronously; `wait()` blocks until written.
        """
        if not (force or self.should_save(step)) or step in self._manager.all_steps():
            return False
        rng_impl = None
        items = {
            PARAMS: ocp.args.StandardSave(params),
            OPT_STATE: ocp.args.StandardSave(opt_state),
            CONFIG: YamlTextSave({"yaml": config if isinstance(config, str) else
                                  config_yaml(config) if config is not None else ""}),
        }
        if rng is not None:  # orbax cannot write an empty array: no key, no item
            rng_data, rng_impl = _rng_to_data(rng)
            items[TRAIN_STATE] = ocp.args.StandardSave({"rng": rng_data})
        meta = {"step": int(step), "rng_impl": rng_impl, "has_rng": rng is not None,
                "data_state": _encode_data_state(data_state)}
        args = ocp.args.Composite(**items, **{META: ocp.args.JsonSave(meta)})
        return bool(self._manager.save(step, args=args, force=True))

    def wait(self) -> None:
        """Block until pending asynchronous saves are on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()

    def __enter__(self) -> TrainCheckpointer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------ restore
    def restore(self, *, params: Any, opt_state: Any, step: int | None = None) -> Restored:
        """Restore `step` (default: the latest) into the abstract targets `params` and `opt_state`.

        The targets are trees of jax.ShapeDtypeStruct (their `sharding` decides where each array lands; see
        `abstract_like`) or of arrays (their shapes, dtypes and shardings are used). Raises CheckpointError
        when there is no checkpoint or the step is missing."""
        self.wait()
        steps = self.all_steps()
        if step is None:
            if not steps:
                raise CheckpointError(f"{self.directory}: no checkpoint to resume from")
            step = steps[-1]
        elif step not in steps:
            raise CheckpointError(f"{self.directory}: no step {step}; saved steps: {steps}")
        step_dir = self.directory / str(step)
        meta = self._manager.restore(step, args=ocp.args.Composite(**{META: ocp.args.JsonRestore()}))[META]
        targets = {
            PARAMS: ocp.args.StandardRestore(_as_abstract(params)),
            OPT_STATE: ocp.args.StandardRestore(_as_abstract(opt_state)),
            CONFIG: YamlTextRestore(),
        }
        if meta["has_rng"]:
            targets[TRAIN_STATE] = ocp.args.StandardRestore({"rng": self._rng_target(step_dir)})
        try:
            out = self._manager.restore(step, args=ocp.args.Composite(**targets))
        except (ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"{step_dir}: does not match the restore targets: {e}") from e
        rng = None
        if meta["has_rng"]:
            data = out[TRAIN_STATE]["rng"]
            rng = jax.random.wrap_key_data(data, impl=meta["rng_impl"]) if meta["rng_impl"] else data
        return Restored(step=int(step), params=out[PARAMS], opt_state=out[OPT_STATE], rng=rng,
                        data_state=_decode_data_state(meta["data_state"]), config_yaml=out[CONFIG]["yaml"])

    def _rng_target(self, step_dir: Path) -> jax.ShapeDtypeStruct:
        """The saved key data's shape, on the first device (keys are small and replicated)."""
        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        meta = ocp.Checkpointer(ocp.StandardCheckpointHandler()).metadata(step_dir / TRAIN_STATE)
        tree = getattr(meta, "item_metadata", meta)
        tree = getattr(tree, "tree", tree)
        return jax.ShapeDtypeStruct(tuple(tree["rng"].shape), jnp.uint32, sharding=device)


def remove_stale_tmp_dirs(directory: Path, log: Callable[[str], None]) -> list[Path]:
    """Remove what a run killed mid-save left in the checkpoint root (`<step>.orbax-checkpoint-tmp*`: never a
    step, orbax only clears it when it saves that same step again). Process 0 removes, before any process saves;
    returns the removed paths."""
    if jax.process_index() != 0 or not directory.is_dir():
        return []
    stale = sorted(p for p in directory.iterdir() if TMP_MARK in p.name)
    for path in stale:
        log(f"{path}: removing an unfinished checkpoint save (a run killed while saving)")
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    return stale


def latest_saved_config(directory: str | Path) -> tuple[int, Path, str] | None:
    """(step, path, YAML text) of the config saved at the newest committed step under `directory`, read from
    disk without orbax (a resumed run checks its config before loading the model); None when no step is saved.
    Committed steps are the directories named by an integer (unfinished saves carry TMP_MARK)."""
    directory = Path(directory)
    steps = sorted(int(p.name) for p in directory.iterdir() if p.is_dir() and p.name.isdigit()) \
        if directory.is_dir() else []
    if not steps:
        return None
    path = directory / str(steps[-1]) / CONFIG / CONFIG_FILE
    return steps[-1], path, path.read_text() if path.exists() else ""


def _as_abstract(tree: Any) -> Any:
    """Arrays -> ShapeDtypeStruct (keeping their shardings); ShapeDtypeStructs pass through."""
    return jax.tree.map(lambda x: x if isinstance(x, jax.ShapeDtypeStruct) else abstract_like(x), tree)


def write_model_metadata(directory: str | Path, model_config: ModelConfig,
                         config_json: dict[str, Any] | None = None, tokenizer_dir: str | Path | None = None) -> None:
    """Write config.json (+ generation_config.json, tokenizer files) at the checkpoint root, once per run, so
    `load_orbax(directory)` can rebuild the model. Only process 0 writes."""
    from zoomiqa_jax.checkpoint.hf import write_metadata_files

    if jax.process_index() != 0:
        return
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_metadata_files(directory, config_json or model_config.to_hf_dict(), model_config, tokenizer_dir)
