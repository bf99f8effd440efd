"""The run config: YAML in, key=value overrides with typed parsing, clear errors, YAML out, shipped configs."""

from pathlib import Path

import pytest
import yaml

from zoomiqa_jax.config import ConfigError, ModelConfig
from zoomiqa_jax.train.config import (
    TrainConfig,
    config_to_dict,
    load_train_config,
    save_train_config,
)

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_overrides_are_typed(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("optim:\n  lr: 1.0e-4\nrun:\n  steps: 5\n")
    cfg = load_train_config(path, [
        "optim.lr=2.5e-6",          # YAML 1.1 would read this as a string
        "optim.grad_accum=4",
        "parallel.mesh=[2,4,1]",
        "parallel.scan_layers=true",
        "checkpoint.async_save=no",
        "data.seq_buckets=1024,2048",
        "run.out_dir=007",          # strings stay verbatim
        "run.epochs=2",             # an int where a float is expected
    ])
    assert cfg.optim.lr == 2.5e-6 and isinstance(cfg.optim.lr, float)
    assert cfg.optim.grad_accum == 4 and cfg.run.steps == 5
    assert cfg.parallel.mesh == (2, 4, 1) and cfg.parallel.scan_layers is True
    assert cfg.checkpoint.async_save is False
    assert cfg.data.seq_buckets == (1024, 2048)
    assert cfg.run.out_dir == "007" and cfg.run.epochs == 2.0
    assert cfg.optim.warmup_ratio == TrainConfig().optim.warmup_ratio  # untouched keys keep defaults


@pytest.mark.parametrize("override,message", [
    ("optim.lrr=1", r"unknown key 'optim.lrr'.*keys in optim"),
    ("optimizer.lr=1", r"unknown key 'optimizer.lr'"),
    ("optim.lr", r"expected key=value"),
    ("optim.grad_accum=two", r"optim.grad_accum expects an integer, got 'two'"),
    ("optim.grad_accum=1.5", r"optim.grad_accum expects an integer"),
    ("parallel.scan_layers=maybe", r"parallel.scan_layers expects a boolean"),
    ("optim.decay=step", r"optim.decay must be one of \('linear', 'cosine'\), got 'step'"),
    ("parallel.mesh=[2,2]", r"parallel.mesh must be"),
    ("parallel.remat=some", r"parallel.remat must be one of"),
])
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_train_config(None, [override])


@pytest.mark.parametrize("override,key", [
    ("optim.lr=inf", "optim.lr"),  # `lr > 0` alone lets inf through
    ("optim.lr=nan", "optim.lr"),
    ("optim.b2=-.inf", "optim.b2"),
    ("run.epochs=.nan", "run.epochs"),
    ("grpo.clip_eps=inf", "grpo.clip_eps"),
    ("grpo.resample_starts=[0.0,inf]", "grpo.resample_starts"),
    ("rollout.temperature=inf", "rollout.temperature"),
])
def test_non_finite_hyper_parameters_are_refused_naming_the_key(override, key):
    from zoomiqa_jax.train.grpo_config import load_grpo_config

    with pytest.raises(ConfigError, match=rf"{key} must be a finite number, got .*(inf|nan)"):
        load_grpo_config(None, [override])
    if not override.startswith(("grpo.", "rollout.")):
        with pytest.raises(ConfigError, match=rf"{key} must be a finite number"):
            load_train_config(None, [override])


def test_errors_in_a_file_name_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("optim:\n  learning_rate: 1\n")
    with pytest.raises(ConfigError, match=rf"{path}.*unknown key.*optim.learning_rate"):
        load_train_config(path)
    path.write_text("run:\n  steps: many\n")
    with pytest.raises(ConfigError, match=rf"{path}: run.steps expects an integer"):
        load_train_config(path)
    with pytest.raises(ConfigError, match="no such config file"):
        load_train_config(tmp_path / "missing.yaml")


def test_yaml_round_trip(tmp_path):
    cfg = load_train_config(None, ["optim.lr=3e-5", "parallel.mesh=[2,2,2]", "data.train=a b.jsonl"])
    path = save_train_config(cfg, tmp_path / "out" / "config.yaml", header="zoomiqa train sft --config x")
    text = path.read_text()
    assert text.startswith("# zoomiqa train sft --config x\n")
    assert load_train_config(path) == cfg
    assert yaml.safe_load(text) == config_to_dict(cfg)


@pytest.mark.parametrize("name", ["sft_tiny", "sft_qwen2_5_vl_3b", "sft_qwen2_5_vl_7b"])
def test_shipped_configs_load_and_name_their_command(name):
    path = CONFIGS / f"{name}.yaml"
    first = path.read_text().splitlines()[0]
    assert first.startswith(f"# zoomiqa train sft --config configs/{name}.yaml")
    cfg = load_train_config(path)
    assert config_to_dict(cfg) == yaml.safe_load(path.read_text())  # every key spelled out in the file
    model = cfg.model.resolve()
    if name == "sft_tiny":
        assert model == ModelConfig.tiny()
    else:
        assert model == getattr(ModelConfig, name.removeprefix("sft_"))()
        # the paper's SFT hyper-parameters (arXiv:2601.02918 Sec. 4): its batch 2 x 8 accumulation is one
        # micro-batch of 16 here, so that it splits over 16 chips (the config's Devices note, tests/test_configs.py)
        effective = cfg.data.batch_size * cfg.optim.grad_accum
        assert (effective, cfg.optim.lr, cfg.optim.warmup_ratio) == (16, 2.5e-6, 0.3)
        assert cfg.model.dtype == "bfloat16" and cfg.model.param_dtype == "float32"


def test_optimizer_steps_from_epochs():
    cfg = load_train_config(None, ["run.steps=0", "run.epochs=3", "data.batch_size=2", "optim.grad_accum=8"])
    assert cfg.optimizer_steps(100) == 19  # ceil(3 * 100 / 16)
    assert load_train_config(None, ["run.steps=7"]).optimizer_steps(100) == 7
    assert cfg.checkpoint_dir == Path("runs/sft/checkpoints")
