"""The README's first command in a fresh virtual environment without torch: `pip install -e .`, then
`zoomiqa demo --quick` to the end (issue 13). The test environment has torch, which brings jinja2 and more, so a
runtime dependency missing from pyproject.toml passes unnoticed everywhere else; here the import that needs it
fails the demo (with jinja2 left out: "ImportError: apply_chat_template requires jinja2" at stage 2).

pip installs with this environment's configuration (its package indexes) and a constraints file pinning every
distribution installed here to its installed version, so it resolves to the wheels already used here instead of
newer releases (no build from source, no drift). `--no-compile` skips writing .pyc files for ~90 packages.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from zoomiqa_jax.demo import MARKER

REPO = Path(__file__).resolve().parents[1]


def _constraints(path: Path) -> Path:
    """`name==version` for every installed distribution but this project (installed from the checkout)."""
    pins = set()
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name and re.sub(r"[-_.]+", "-", name).lower() != "zoomiqa-jax":
            pins.add(f"{name}=={dist.version}")
    path.write_text("\n".join(sorted(pins)) + "\n")
    return path


def _run(cmd: list, *, env: dict, cwd: Path, timeout: int) -> subprocess.CompletedProcess:
    t = time.perf_counter()
    result = subprocess.run([str(c) for c in cmd], env=env, cwd=cwd, capture_output=True, text=True,
                            timeout=timeout)
    print(f"{time.perf_counter() - t:.0f} s: {' '.join(str(c) for c in cmd[:6])} ...")
    return result


def _tail(result: subprocess.CompletedProcess) -> str:
    return f"rc {result.returncode}\nstdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-5000:]}"


@pytest.mark.slow  # about 1.5 minutes to install and 2 to 3 minutes of demo on the 2-core CI machine
def test_fresh_venv_without_torch_installs_and_runs_the_quick_demo(tmp_path):
    # a newcomer's machine: no compilation cache from the other tests (tests/conftest.py)
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV") and not k.startswith("JAX_PERSISTENT_CACHE")
           and k != "JAX_COMPILATION_CACHE_DIR"}
    env.update(JAX_PLATFORMS="cpu", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    venv = tmp_path / "venv"
    made = _run([sys.executable, "-m", "venv", "--without-pip", venv], env=env, cwd=tmp_path, timeout=120)
    assert made.returncode == 0, _tail(made)
    python = venv / "bin" / "python"
    # this environment's pip installs into the new one (`--python`): no ensurepip, the same configuration
    installed = _run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-compile",
                      "-c", _constraints(tmp_path / "constraints.txt"), "-e", REPO],
                     env=env, cwd=tmp_path, timeout=900)
    assert installed.returncode == 0, _tail(installed)
    no_torch = _run([python, "-c", "import torch"], env=env, cwd=tmp_path, timeout=60)
    assert no_torch.returncode != 0 and "No module named 'torch'" in no_torch.stderr, _tail(no_torch)

    # --out is a folder an earlier demo wrote (marker, a stale report) that also holds a file of the user's:
    # the rerun replaces the demo's outputs and keeps the user's file
    out = tmp_path / "demo"
    out.mkdir()
    (out / MARKER).write_text("an earlier demo\n")
    (out / "report.md").write_text("stale\n")
    (out / "my_notes.md").write_text("keep\n")
    demo = _run([venv / "bin" / "zoomiqa", "demo", "--quick", "--out", out], env=env, cwd=tmp_path, timeout=1200)
    assert demo.returncode == 0, _tail(demo)
    report = (out / "report.md").read_text()
    assert report.startswith("# zoomiqa demo") and "`--quick` run" in report and "## GRPO steps" in report
    assert (out / "summary.json").is_file() and (out / "my_notes.md").read_text() == "keep\n"
    assert f"report: {out / 'report.md'}" in demo.stdout
    # the progress lines of the long stages (bars on stderr)
    for line in ("compiling the first GRPO step", "held-out reward", "digit read-out", "held-out eval"):
        assert line in demo.stdout + demo.stderr, line
    # no torch in this venv: transformers would print its PyTorch notice on every command without the filter
    assert "PyTorch was not found" not in demo.stdout + demo.stderr, _tail(demo)
