"""Data-parallel eval sampling over 8 simulated CPU devices gives the single-device predictions (greedy)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("runner_devices_worker.py")


@pytest.mark.slow  # a subprocess compiling the tiny model once per device
def test_data_parallel_generate_matches_single_device() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
    proc = subprocess.run([sys.executable, str(WORKER)], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["devices"] == 8
    assert result["raw_devices_used"] == 3  # 3 real rows of 4 (the dummy dropped): one per device
    assert result["devices_used"] >= 2
    # greedy: every generated token, answer and invalid class equal; log-probs up to float rounding
    assert result["n_trajectories"] == 3 and result["trajectories_equal"]
    assert result["trajectory_logprob_max_diff"] < 1e-5
    assert result["tokens_equal"]
    assert result["logprob_max_diff"] < 1e-5


def test_patches_are_split_by_row() -> None:
    import numpy as np

    from zoomiqa_jax.eval.runner_devices import _patches_per_row

    start = 7
    ids = np.array([[1, start, 2, start, 3], [1, 2, 3, 4, start], [0, 0, 0, 0, 9]])
    grids = np.array([[1, 2, 2], [1, 4, 2], [1, 2, 6]])
    assert _patches_per_row(ids, grids, start) == [(12, 2), (12, 1), (0, 0)]
    with pytest.raises(ValueError, match="3 <.vision_start.> tokens in input_ids but 2 rows"):
        _patches_per_row(ids, grids[:2], start)
