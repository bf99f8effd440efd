"""SIGTERM during `zoomiqa-convert` (a stopped job, a preempted VM) cleans up as Ctrl-C does: exit 130, a message,
the temporary output directory removed at once and OUT_DIR untouched (issue 13, item 3)."""

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.conversion.conftest import save_hf_with_transformers
from tests.conversion.test_config_faults_and_killed_runs import _STALLED_CONVERSION
from tests.reference import make_hf_model
from zoomiqa_jax.config import ModelConfig

ROOT = Path(__file__).resolve().parents[2]


def test_sigterm_removes_the_temporary_output_and_exits_130(tmp_path: Path) -> None:
    hf_dir = save_hf_with_transformers(make_hf_model(ModelConfig.tiny(), seed=0), tmp_path / "tiny")
    out = tmp_path / "orbax"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    child = subprocess.Popen([sys.executable, "-c", _STALLED_CONVERSION, str(hf_dir), str(out)], cwd=ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = child.stdout.readline()  # the whole result is in the temporary directory, the rename not done
        assert line.startswith("WRITTEN"), (line, child.stderr.read()[-2000:] if child.poll() is not None else "")
        tmp = Path(line.split(maxsplit=1)[1].strip())
        assert tmp.is_dir()
        child.send_signal(signal.SIGTERM)
        _, err = child.communicate(timeout=60)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == 130, err[-2000:]
    assert f"interrupted (SIGTERM); {out} untouched" in err
    assert not tmp.exists() and not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]
