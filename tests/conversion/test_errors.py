"""A checkpoint that does not fit its config fails with every offending key named, and nothing is written."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from conversion.cli import main
from tests.conversion.conftest import read_all
from zoomiqa_jax.checkpoint import hf as hf_module
from zoomiqa_jax.checkpoint.hf import load_hf
from zoomiqa_jax.checkpoint.orbax_io import load_orbax, save_orbax
from zoomiqa_jax.checkpoint.safetensors_io import TensorSpec, write_checkpoint
from zoomiqa_jax.checkpoint.state import CheckpointMismatchError


def assert_nothing_written(out, parent):
    assert not out.exists()
    assert not [p.name for p in parent.iterdir() if p.name.startswith(".")], "temporary directory left behind"


def write_hf(tensors, src, config_from):
    src.mkdir()
    write_checkpoint(src, [TensorSpec(k, v.shape, v.dtype) for k, v in tensors.items()], tensors.items(),
                     max_shard_bytes=200_000)
    (src / "config.json").write_text((config_from / "config.json").read_text())
    return src


def test_hf_to_orbax_names_missing_unexpected_shape_and_dtype_errors(hf_case, tmp_path, capsys):
    _, _, _, f32, _ = hf_case
    tensors = read_all(f32)
    missing = ["model.layers.1.mlp.up_proj.weight", "visual.blocks.0.attn.qkv.bias"]
    for k in missing:
        del tensors[k]
    unexpected = ["model.layers.0.mlp.extra.weight", "visual.merger.mlp.4.weight"]
    for k in unexpected:
        tensors[k] = np.zeros((2, 2), np.float32)
    tensors["model.norm.weight"] = np.ones((7,), np.float32)
    tensors["visual.blocks.1.norm1.weight"] = tensors["visual.blocks.1.norm1.weight"].astype(np.float16)
    src = write_hf(tensors, tmp_path / "bad_hf", f32)
    out = tmp_path / "out" / "orbax"

    assert main(["hf-to-orbax", str(src), str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    for key in [*missing, *unexpected]:
        assert key in err, key
    assert "model.norm.weight: shape (7,), expected (64,)" in err
    assert "visual.blocks.1.norm1.weight: dtype float16, expected float32" in err
    assert_nothing_written(out, tmp_path)


def test_orbax_to_hf_names_every_param_that_does_not_fit_the_config(hf_case, tmp_path, capsys):
    name, cfg, _, f32, _ = hf_case
    model, _ = load_hf(f32)
    ckpt = tmp_path / "ckpt"
    save_orbax(model, ckpt)
    config = json.loads((ckpt / "config.json").read_text())
    config.update(num_hidden_layers=3, intermediate_size=160, tie_word_embeddings=not cfg.tie_word_embeddings)
    (ckpt / "config.json").write_text(json.dumps(config))
    out = tmp_path / "hf_out"

    assert main(["orbax-to-hf", str(ckpt), str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    for p in ("input_layernorm.weight", "self_attn.q_proj.kernel", "mlp.down_proj.kernel"):
        assert f"language_model.layers.2.{p}" in err
    for i in (0, 1):
        assert f"language_model.layers.{i}.mlp.gate_proj.kernel: shape (64, 128), expected (64, 160)" in err
        assert f"language_model.layers.{i}.mlp.down_proj.kernel: shape (128, 64), expected (160, 64)" in err
    assert "lm_head.kernel" in err  # missing when untying, unexpected when tying
    assert_nothing_written(out, tmp_path)


def test_orbax_mixed_dtypes_are_an_error_unless_allowed(hf_case, tmp_path):
    _, _, _, f32, _ = hf_case
    model, _ = load_hf(f32)
    norm = model.language_model.norm.weight
    norm.set_value(norm[...].astype(jnp.float16))
    save_orbax(model, tmp_path / "ckpt")
    with pytest.raises(CheckpointMismatchError, match=r"language_model\.norm\.weight: dtype float16, expected float32"):
        load_orbax(tmp_path / "ckpt")
    restored, _ = load_orbax(tmp_path / "ckpt", allow_mixed_dtypes=True)
    assert restored.language_model.norm.weight[...].dtype == jnp.float16


def test_failure_while_writing_leaves_nothing(hf_case, tmp_path, monkeypatch, capsys):
    _, _, _, f32, _ = hf_case
    ckpt = tmp_path / "ckpt"
    assert main(["hf-to-orbax", str(f32), str(ckpt), "--no-progress"]) == 0
    real = hf_module.write_checkpoint

    def fail_half_way(out_dir, specs, arrays, **kw):
        real(out_dir, specs[:3], arrays, **kw)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(hf_module, "write_checkpoint", fail_half_way)
    out = tmp_path / "hf_out"
    assert main(["orbax-to-hf", str(ckpt), str(out), "--no-progress"]) == 1
    assert "No space left on device" in capsys.readouterr().err
    assert_nothing_written(out, tmp_path)


def test_existing_output_is_kept_unless_overwrite(hf_case, tmp_path, capsys):
    _, _, _, f32, _ = hf_case
    out = tmp_path / "ckpt"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["hf-to-orbax", str(f32), str(out), "--no-progress"]) == 2
    assert "not empty" in capsys.readouterr().err and (out / "keep.txt").read_text() == "mine"
    assert main(["hf-to-orbax", str(f32), str(out), "--no-progress", "--overwrite"]) == 0
    assert not (out / "keep.txt").exists() and (out / "params").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
