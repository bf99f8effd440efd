"""`train.resume.check_resume_config`: a resumed run whose config changes the result is refused naming the keys,
passes with `allow_change` (logged); output / cadence keys change freely. And what a kill mid-save leaves in the
checkpoint root is ignored and removed."""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import pytest

from zoomiqa_jax.config import ConfigError
from zoomiqa_jax.train.checkpointing import TrainCheckpointer, latest_saved_config
from zoomiqa_jax.train.config import config_yaml, load_train_config
from zoomiqa_jax.train.grpo_config import load_grpo_config
from zoomiqa_jax.train.resume import FREE_KEYS, ResumeConfigError, check_resume_config


def _saved_run(tmp_path: Path, overrides: list[str], step: int = 4, loader=load_train_config) -> Path:
    """A checkpoint root whose newest step holds the config of `overrides` (as TrainCheckpointer writes it)."""
    cfg = loader(None, [f"run.out_dir={tmp_path / 'run'}", *overrides])
    for s in (step - 2, step):
        d = cfg.checkpoint_dir / str(s) / "config"
        d.mkdir(parents=True)
        (d / "config.yaml").write_text(config_yaml(cfg))
    return cfg.checkpoint_dir


def test_changed_steps_are_refused_naming_the_key(tmp_path: Path) -> None:
    _saved_run(tmp_path, ["run.steps=60", "optim.lr=1e-5"])
    cfg = load_train_config(None, [f"run.out_dir={tmp_path / 'run'}", "run.steps=10", "optim.lr=1e-5"])
    with pytest.raises(ResumeConfigError, match=r"run\.steps 60 -> 10.*--allow-config-change") as info:
        check_resume_config(cfg, log=lambda _: None)
    assert isinstance(info.value, ConfigError)  # `zoomiqa train` exits 2 for it
    assert "optim.lr" not in str(info.value)


def test_allow_change_resumes_and_logs_the_keys(tmp_path: Path) -> None:
    _saved_run(tmp_path, ["run.steps=60", "data.seq_buckets=[512,1024]"])
    cfg = load_train_config(None, [f"run.out_dir={tmp_path / 'run'}", "run.steps=10", "data.seq_buckets=[512]"])
    logged: list[str] = []
    changed = check_resume_config(cfg, allow_change=True, log=logged.append)
    assert changed == {"run.steps": (60, 10), "data.seq_buckets": ([512, 1024], [512])}
    assert any("--allow-config-change" in m and "run.steps" in m and "data.seq_buckets" in m for m in logged)


def test_free_keys_change_without_refusal(tmp_path: Path) -> None:
    _saved_run(tmp_path, ["run.log_every=10", "checkpoint.save_every=5", "run.export_hf=true"])
    cfg = load_train_config(None, [f"run.out_dir={tmp_path / 'run'}", "run.log_every=1", "checkpoint.save_every=2",
                                   "run.export_hf=false"])
    logged: list[str] = []
    assert check_resume_config(cfg, log=logged.append) == {}
    assert any("run.log_every" in m for m in logged)
    assert {"run.log_every", "checkpoint.save_every", "run.export_hf"} <= FREE_KEYS


def test_grpo_recipe_change_is_refused(tmp_path: Path) -> None:
    _saved_run(tmp_path, ["grpo.recipe=zoomiqa"], loader=load_grpo_config)
    cfg = load_grpo_config(None, [f"run.out_dir={tmp_path / 'run'}", "grpo.recipe=qinsight",
                                  "rollout.temperature=0.7"])
    with pytest.raises(ResumeConfigError, match=r"grpo\.recipe 'zoomiqa' -> 'qinsight'.*rollout\.temperature"):
        check_resume_config(cfg, log=lambda _: None)


def test_same_config_or_no_checkpoint_passes(tmp_path: Path) -> None:
    cfg = load_train_config(None, [f"run.out_dir={tmp_path / 'run'}", "run.steps=7"])
    assert check_resume_config(cfg, log=lambda _: None) == {}  # nothing saved yet
    _saved_run(tmp_path, ["run.steps=7"])
    assert check_resume_config(cfg, log=lambda _: None) == {}


def test_unfinished_save_is_ignored_and_removed(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    with TrainCheckpointer(root, save_every=1, async_save=False, log=lambda _: None) as ckpt:
        ckpt.save(1, params={"w": jnp.ones(3)}, opt_state={"m": jnp.zeros(3)}, data_state={"k": 1})
    # what SIGKILL during the save of step 2 leaves (the layout orbax 0.12 writes before its final rename)
    tmp = root / "2.orbax-checkpoint-tmp"
    for item in ("params", "opt_state", "meta", "config"):
        (tmp / f"{item}.orbax-checkpoint-tmp").mkdir(parents=True)
    (tmp / "_CHECKPOINT_METADATA").write_text("{}")
    assert latest_saved_config(root)[0] == 1
    logged: list[str] = []
    with TrainCheckpointer(root, save_every=1, async_save=False, log=logged.append) as ckpt:
        assert ckpt.all_steps() == [1]
        restored = ckpt.restore(params={"w": jnp.zeros(3)}, opt_state={"m": jnp.ones(3)})
        assert restored.step == 1 and restored.data_state == {"k": 1}
    assert not tmp.exists()
    assert len(logged) == 1 and "2.orbax-checkpoint-tmp" in logged[0] and "unfinished" in logged[0]
