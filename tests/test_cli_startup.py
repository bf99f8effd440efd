"""Fast feedback from the command line: `--help` of every command imports no heavy library (jax, transformers,
tfds, grain, ...), a missing input fails before jax is imported, and transformers' "PyTorch was not found"
notice never shows (while its other warnings still do)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_public_api import HIDE_TORCH

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("jax", "flax", "transformers", "tensorflow_datasets", "tensorflow", "grain", "orbax", "torch")
NOTICE = "PyTorch was not found"

# Runs ARGV through an entry point and prints the heavy modules it imported on the last stdout line.
_PROBE = """
import sys
from {module} import main
try:
    code = main({argv!r})
except SystemExit as e:
    code = e.code
print("RC", code, "HEAVY", sorted({{m.split(".")[0] for m in sys.modules}} & set({heavy!r})))
"""


def _probe(module: str, argv: list[str]) -> tuple[str, str]:
    code = _PROBE.format(module=module, argv=argv, heavy=HEAVY)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout.strip().splitlines()[-1], res.stdout + res.stderr


@pytest.mark.parametrize("module,argv", [
    ("zoomiqa_jax.cli", ["--help"]),
    *[("zoomiqa_jax.cli", [*cmd.split(), "--help"])
      for cmd in ("score", "compare", "eval", "train", "train sft", "train grpo", "demo")],
    ("conversion.cli", ["--help"]),
    ("conversion.cli", ["hf-to-orbax", "--help"]),
])
def test_help_imports_no_heavy_library(module, argv):
    last, output = _probe(module, argv)
    assert last == "RC 0 HEAVY []", last
    assert "usage" in output.lower()


def test_missing_image_fails_before_jax_is_imported(tmp_path):
    last, output = _probe("zoomiqa_jax.cli", ["score", "--checkpoint", str(tmp_path), "missing.png"])
    assert last == "RC 2 HEAVY []", last
    assert "error: missing.png: no such file or folder" in output


def _without_torch(code: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    res = subprocess.run([sys.executable, "-c", HIDE_TORCH + code], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stderr


def test_importing_the_package_first_silences_the_torch_notice():
    assert NOTICE in _without_torch("import transformers"), "torch not hidden, or transformers changed the notice"
    assert NOTICE not in _without_torch("import zoomiqa_jax, transformers")


def test_other_transformers_warnings_still_show():
    # the filter drops one message only (commands without torch: tests/test_fresh_install.py checks the demo's output)
    err = _without_torch("import zoomiqa_jax\nfrom transformers.utils import logging\n"
                         "logging.get_logger('transformers.models').warning('a real transformers warning')")
    assert "a real transformers warning" in err and NOTICE not in err
