"""Resume checks: a resumed run must be the run it continues.

Every checkpoint step holds the config in force when it was written (`train.checkpointing`, `config/config.yaml`).
A run that finds a checkpoint compares its own config with that one, key by key (`section.name`), before it loads
the model. A changed key that alters the result (steps and so the LR schedule, batch, data, optimizer, recipe,
model, seeds, rollout settings, the mesh: anything not in FREE_KEYS) is refused with a ResumeConfigError naming the
keys (`zoomiqa train` exits 2); `--allow-config-change` lets the run go on and logs the changed keys. Keys in
FREE_KEYS (where outputs go, how often to log or checkpoint, the non-finite budget) may change freely; their
changes are logged.

    check_resume_config(cfg, allow_change=False, log=print)   # before loading the model
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import yaml

from zoomiqa_jax.config import ConfigError
from zoomiqa_jax.train.checkpointing import latest_saved_config
from zoomiqa_jax.train.config import TrainConfig, config_yaml

# Keys that change what is written or when, never the parameters a step produces (data.eval and data.num_workers
# are not read by the training loops; data.max_bad_fraction only decides whether a run with bad records starts).
FREE_KEYS = frozenset({
    "run.out_dir", "run.log_every", "run.export_hf", "run.max_nonfinite",
    "checkpoint.dir", "checkpoint.save_every", "checkpoint.keep", "checkpoint.async_save",
    "data.eval", "data.num_workers", "data.max_bad_fraction",
})
ALLOW_FLAG = "--allow-config-change"


class ResumeConfigError(ConfigError):
    """A resumed run's config differs from the saved one in keys that alter the result."""


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix.rstrip("."): tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}{key}."))
    return out


def config_changes(saved_yaml: str, cfg: TrainConfig) -> tuple[dict[str, tuple[Any, Any]], list[str]]:
    """({key: (saved value, current value)} for every key whose value differs, [keys of `cfg` the saved config
    lacks]). Both sides go through the same YAML dump, so tuples and lists compare equal."""
    saved = _flat(yaml.safe_load(saved_yaml) or {})
    current = _flat(yaml.safe_load(config_yaml(cfg)))
    changed = {k: (saved[k], v) for k, v in current.items() if k in saved and saved[k] != v}
    missing = sorted(k for k in current if k not in saved)
    return changed, missing


def _describe(changed: dict[str, tuple[Any, Any]]) -> str:
    return ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in sorted(changed.items()))


def check_resume_config(cfg: TrainConfig, *, allow_change: bool = False,
                        log: Callable[[str], None] = print) -> dict[str, tuple[Any, Any]]:
    """Compare `cfg` with the config saved at the newest checkpoint step of `cfg.checkpoint_dir` (module
    docstring). Returns the changed keys that alter the result (empty when none, or when there is no checkpoint);
    raises ResumeConfigError for those unless `allow_change`, which logs them instead."""
    found = latest_saved_config(cfg.checkpoint_dir)
    if found is None:
        return {}
    step, path, saved_yaml = found
    if not saved_yaml.strip():
        log(f"{path}: the checkpoint holds no config; the resumed run's config cannot be checked")
        return {}
    changed, missing = config_changes(saved_yaml, cfg)
    free = {k: v for k, v in changed.items() if k in FREE_KEYS}
    binding = {k: v for k, v in changed.items() if k not in FREE_KEYS}
    if missing:
        log(f"{path}: key(s) {missing} not in the saved config (written by an older version): not checked")
    if free:
        log(f"resuming step {step} with changed output / cadence settings: {_describe(free)}")
    if binding and not allow_change:
        raise ResumeConfigError(
            f"{cfg.checkpoint_dir}: resuming step {step} with a config that changes the result: "
            f"{_describe(binding)} (saved config: {path}). Resume with the saved values, use a new "
            f"run.out_dir for a new run, or pass {ALLOW_FLAG} to resume anyway")
    if binding:
        log(f"{ALLOW_FLAG}: resuming step {step} with changed key(s) {sorted(binding)}: {_describe(binding)}")
    return binding
