"""checkpoint.loading: one CheckpointError for every checkpoint fault (a ConfigError, so every CLI exits 2 naming
the directory), raised by the loader and by the training checkpointer alike; importing it needs no jax."""

import subprocess
import sys
from pathlib import Path

import pytest

from zoomiqa_jax.checkpoint.loading import CheckpointError, load_checkpoint
from zoomiqa_jax.config_fields import ConfigError


def test_one_error_type_for_loading_and_resuming(tmp_path: Path) -> None:
    from zoomiqa_jax.train import checkpointing

    assert checkpointing.CheckpointError is CheckpointError and issubclass(CheckpointError, ConfigError)
    with pytest.raises(CheckpointError, match=f"checkpoint {tmp_path / 'none'}: no such directory"):
        load_checkpoint(tmp_path / "none")
    with pytest.raises(CheckpointError, match=f"checkpoint {tmp_path}: expected an HF directory"):
        load_checkpoint(tmp_path)


def test_a_bad_model_weights_directory_exits_2_naming_the_key(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    from zoomiqa_jax.train.cli import main

    (tmp_path / "weights").mkdir()
    assert main(["sft", "--config", "configs/sft_tiny.yaml", f"model.weights={tmp_path / 'weights'}",
                 f"run.out_dir={tmp_path / 'sft'}"]) == 2  # a traceback (exit 1) before
    err = capsys.readouterr().err
    assert f"zoomiqa train sft: model.weights: checkpoint {tmp_path / 'weights'}: expected an HF directory" in err


def test_importing_the_loader_and_the_score_cli_imports_no_jax() -> None:
    code = "import sys, zoomiqa_jax.checkpoint.loading, zoomiqa_jax.score; print('jax' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
