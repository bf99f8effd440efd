"""The shipped model configs equal the presets, and HF config parsing handles both layouts and bad input."""

import re
from pathlib import Path

import pytest

from zoomiqa_jax.config import ConfigError, ModelConfig

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name,preset", [("qwen2_5_vl_3b", ModelConfig.qwen2_5_vl_3b),
                                         ("qwen2_5_vl_7b", ModelConfig.qwen2_5_vl_7b)])
def test_shipped_configs_equal_presets(name, preset):
    assert ModelConfig.from_hf_json(ROOT / "configs" / "models" / f"{name}.json") == preset()


def test_transformers_reads_our_config_back_identically():
    from transformers import Qwen2_5_VLConfig

    ours = ModelConfig.tiny(tie_word_embeddings=False)
    hf = Qwen2_5_VLConfig(**ours.to_hf_dict())
    # transformers-5 nested layout (what save_pretrained writes) parses to the same config
    assert ModelConfig.from_hf_dict(hf.to_dict()) == ours


def test_config_errors_name_the_problem(tmp_path):
    d = ModelConfig.tiny().to_hf_dict()
    del d["vision_config"]["depth"]
    with pytest.raises(ConfigError, match="depth"):
        ModelConfig.from_hf_dict(d)
    d = ModelConfig.tiny().to_hf_dict()
    d["rope_scaling"]["mrope_section"] = [1, 1, 1]
    with pytest.raises(ConfigError, match="mrope_section"):
        ModelConfig.from_hf_dict(d)
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match=str(bad)):
        ModelConfig.from_hf_json(tmp_path)
    with pytest.raises(ConfigError, match="model_type"):
        ModelConfig.from_hf_dict({"model_type": "llama"})


# ------------------------------------------------------------------------------------------ parallelism
DEVICES_LINE = re.compile(r"^#\s+devices:\s*(?P<counts>\d+(?:\s+\d+)*)(?P<rest>.*)$")


def documented_devices(path: Path) -> list[tuple[list[int], list[str]]]:
    """The `#   devices: N [N ...] [key=value ...] [(comment)]` lines of a run config: device counts it shards on,
    with the overrides it names for them."""
    out = []
    for line in path.read_text().splitlines():
        m = DEVICES_LINE.match(line)
        if m:
            rest = m["rest"].split("(")[0].split()
            assert all("=" in item for item in rest), f"{path.name}: bad devices line {line!r}"
            out.append(([int(n) for n in m["counts"].split()], rest))
    return out


def _load(path: Path, overrides: list[str] = ()):
    from zoomiqa_jax.train.config import load_train_config
    from zoomiqa_jax.train.grpo_config import load_grpo_config

    first = path.read_text().splitlines()[0]
    return (load_grpo_config if "train grpo" in first else load_train_config)(path, list(overrides))


RUN_CONFIGS = sorted(p for p in (ROOT / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=lambda p: p.name)
def test_shipped_config_shards_on_the_device_counts_it_documents(path):
    """Every run config says in `devices:` lines which device counts (and overrides) it is for, and each of them
    passes the start-up check (a pure function of the config and the count: no devices needed)."""
    from zoomiqa_jax.train.validate import validate_parallelism

    lines = documented_devices(path)
    assert lines, f"{path.name} documents no '#   devices: ...' line"
    for counts, overrides in lines:
        cfg = _load(path, overrides)
        for n in counts:
            validate_parallelism(cfg, n)


def test_paper_sft_configs_cover_the_16_and_32_chip_slices():
    """The 3B and 7B SFT configs shard on 16 chips (v5e-16, v6e-16, v5p-32) as shipped, and on 32 with the mesh
    they name; the paper's effective batch (2 x 8) is kept."""
    from zoomiqa_jax.train.validate import ParallelismError, validate_parallelism

    for size in ("3b", "7b"):
        path = ROOT / "configs" / f"sft_qwen2_5_vl_{size}.yaml"
        cfg = _load(path)
        assert cfg.data.batch_size * cfg.optim.grad_accum == 16
        validate_parallelism(cfg, 16)
        assert any(32 in counts for counts, _ in documented_devices(path))
        with pytest.raises(ParallelismError):  # as shipped, 32 devices would split 16 rows 32 ways
            validate_parallelism(cfg, 32)


def test_parallelism_errors_name_keys_values_and_the_mesh():
    from zoomiqa_jax.train.validate import ParallelismError, validate_parallelism

    sft7 = ROOT / "configs" / "sft_qwen2_5_vl_7b.yaml"
    with pytest.raises(ParallelismError, match=re.escape(
            "data.batch_size=2 is not divisible by data*fsdp=16 (parallel.mesh [1, -1, 1] on 16 device(s) = "
            "(1, 16, 1))")) as info:
        validate_parallelism(_load(sft7, ["data.batch_size=2"]), 16)
    assert isinstance(info.value, ConfigError)  # `zoomiqa train` exits 2
    with pytest.raises(ParallelismError, match=re.escape("text.num_attention_heads=28 is not divisible by tensor=8")):
        validate_parallelism(_load(sft7, ["parallel.mesh=[1,2,8]"]), 16)
    sft3 = ROOT / "configs" / "sft_qwen2_5_vl_3b.yaml"
    with pytest.raises(ParallelismError, match=re.escape("text.num_key_value_heads=2 is not divisible by tensor=4")):
        validate_parallelism(_load(sft3, ["parallel.mesh=[1,4,4]"]), 16)
    with pytest.raises(ParallelismError, match=re.escape("vision.intermediate_size=3420 is not divisible by "
                                                         "tensor=8")):
        validate_parallelism(_load(sft3, ["parallel.mesh=[1,2,8]"]), 16,
                             model=_no_text_limits(ModelConfig.qwen2_5_vl_3b()))
    with pytest.raises(ParallelismError, match=re.escape("text.hidden_size=64 is not divisible by fsdp=128")):
        validate_parallelism(_load(ROOT / "configs" / "sft_tiny.yaml", ["parallel.mesh=[1,-1,1]",
                                                                         "data.batch_size=128"]), 128)
    with pytest.raises(ParallelismError, match=re.escape("parallel.mesh=[1, 3, -1] cannot be laid out on 16 "
                                                         "device(s)")):
        validate_parallelism(_load(sft3, ["parallel.mesh=[1,3,-1]"]), 16)
    grpo = ROOT / "configs" / "zoomiqa_grpo.yaml"
    with pytest.raises(ParallelismError, match=re.escape(
            "data.batch_size=1 / grpo.mini_batches=1 images x grpo.group_size=8 = 8 rollout rows per mini-batch "
            "is not divisible by data*fsdp=16")):
        validate_parallelism(_load(grpo), 16)
    validate_parallelism(_load(grpo, ["grpo.group_size=16"]), 16)  # 16 rows: fine


def _no_text_limits(model: ModelConfig) -> ModelConfig:
    """`model` with decoder widths that divide 8 ways, so that the vision tower's check is the one that fails."""
    import dataclasses

    return dataclasses.replace(model, text=dataclasses.replace(model.text, num_key_value_heads=8,
                                                                 num_attention_heads=16))


def test_the_train_cli_exits_2_naming_the_mesh(tmp_path, capsys):
    """Through `zoomiqa train sft` on this 1-device process: a mesh that needs 2 devices stops before any model
    or data is loaded, exit 2, the key named."""
    from zoomiqa_jax.train.cli import main

    code = main(["sft", "--config", "configs/sft_tiny.yaml", "parallel.mesh=[1,1,2]", f"run.out_dir={tmp_path}",
                 "--no-progress"])
    assert code == 2
    assert "parallel.mesh=[1, 1, 2] cannot be laid out on 1 device(s)" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()  # nothing generated
