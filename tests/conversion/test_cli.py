"""`zoomiqa-convert` end to end through `conversion.cli.main`: flags, layouts, training-run directories."""

import json
import os
import subprocess
import sys
from pathlib import Path

import ml_dtypes
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from conversion.cli import build_parser, main
from tests.conversion.conftest import TOKENIZER_FILES, read_all
from zoomiqa_jax.checkpoint.hf import load_hf
from zoomiqa_jax.checkpoint.safetensors_io import INDEX_FILE, SINGLE_FILE

ROOT = Path(__file__).resolve().parents[2]


def test_help_explains_every_flag(capsys):
    for sub in ("hf-to-orbax", "orbax-to-hf"):
        with pytest.raises(SystemExit) as e:
            main([sub, "--help"])
        assert e.value.code == 0
        text = capsys.readouterr().out
        sub_parser = build_parser()._subparsers._group_actions[0].choices[sub]
        for action in sub_parser._actions:
            assert action.help, f"{sub}: {action.option_strings or action.dest} has no help"
            for flag in action.option_strings:
                assert flag in text


def test_bad_max_shard_size_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["orbax-to-hf", "a", "b", "--max-shard-size", "lots"])
    assert e.value.code == 2 and "expected a positive number" in capsys.readouterr().err


def test_cli_round_trip_with_shards(hf_case, tmp_path):
    _, _, _, _, bf16 = hf_case
    assert main(["hf-to-orbax", str(bf16), str(tmp_path / "ckpt"), "--no-progress"]) == 0
    assert main(["orbax-to-hf", str(tmp_path / "ckpt"), str(tmp_path / "hf"), "--max-shard-size", "50KB",
                 "--no-progress"]) == 0
    out = tmp_path / "hf"
    assert (out / INDEX_FILE).is_file() and not (out / SINGLE_FILE).exists()
    want, got = read_all(bf16), read_all(out)
    assert sorted(want) == sorted(got)
    for k in want:
        assert got[k].dtype == np.dtype(ml_dtypes.bfloat16) and np.array_equal(got[k].view(np.uint16),
                                                                               want[k].view(np.uint16)), k


def test_param_dtype_casts_and_updates_config(hf_case, tmp_path):
    _, _, _, f32, _ = hf_case
    assert main(["hf-to-orbax", str(f32), str(tmp_path / "ckpt"), "--param-dtype", "bfloat16",
                 "--no-progress"]) == 0
    assert main(["orbax-to-hf", str(tmp_path / "ckpt"), str(tmp_path / "hf"), "--no-progress"]) == 0
    config = json.loads((tmp_path / "hf/config.json").read_text())
    assert config.get("dtype", config.get("torch_dtype")) == "bfloat16"
    want, got = read_all(f32), read_all(tmp_path / "hf")
    for k in want:
        assert np.array_equal(got[k], want[k].astype(ml_dtypes.bfloat16)), k


def test_reads_a_checkpoint_manager_run_directory(hf_case, tmp_path):
    """A training run: RUN/<step>/params saved as an nnx.State, config.json and tokenizer at RUN/."""
    _, _, _, f32, _ = hf_case
    model, _ = load_hf(f32)
    run = tmp_path / "run"
    with ocp.CheckpointManager(run) as mngr:
        for step, scale in ((10, 1.0), (20, 2.0)):
            state = nnx.state(model, nnx.Param)
            state = nnx.map_state(lambda _p, v, s=scale: v.replace(v[...] * s), state)
            mngr.save(step, args=ocp.args.Composite(params=ocp.args.StandardSave(state)))
        mngr.wait_until_finished()
    for name in ("config.json", *TOKENIZER_FILES):
        (run / name).write_bytes((f32 / name).read_bytes())
    want = read_all(f32)
    for step, scale in ((None, 2.0), (10, 1.0)):
        out = tmp_path / f"hf_{step}"
        argv = ["orbax-to-hf", str(run), str(out), "--no-progress"] + ([] if step is None else ["--step", str(step)])
        assert main(argv) == 0
        got = read_all(out)
        for k in want:
            assert np.array_equal(got[k], want[k] * np.float32(scale)), (step, k)
        assert (out / "tokenizer.json").read_text() == TOKENIZER_FILES["tokenizer.json"]
    assert main(["orbax-to-hf", str(run), str(tmp_path / "x"), "--step", "5", "--no-progress"]) == 2


def test_conversion_never_imports_torch(hf_case, tmp_path):
    _, _, _, f32, _ = hf_case
    code = (
        "import sys; from conversion.cli import main; "
        f"assert main(['hf-to-orbax', {str(f32)!r}, {str(tmp_path / 'c')!r}, '--no-progress']) == 0; "
        f"assert main(['orbax-to-hf', {str(tmp_path / 'c')!r}, {str(tmp_path / 'h')!r}, '--no-progress']) == 0; "
        "bad = [m for m in ('torch', 'transformers') if m in sys.modules]; assert not bad, bad"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
