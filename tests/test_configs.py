"""The shipped model configs equal the presets, and HF config parsing handles both layouts and bad input."""

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
