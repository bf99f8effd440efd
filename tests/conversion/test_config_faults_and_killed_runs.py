"""Typed config.json faults exit 2 naming the file and the field; what a SIGKILLed conversion leaves beside its
output is removed by the next run, and nothing of a live process, another host or another name is touched."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conversion.cli import main
from tests.conversion.conftest import save_hf_with_transformers
from tests.reference import make_hf_model
from zoomiqa_jax.checkpoint import hf
from zoomiqa_jax.config import ModelConfig

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    return save_hf_with_transformers(make_hf_model(ModelConfig.tiny(), seed=0), tmp_path_factory.mktemp("src") / "tiny")


@pytest.mark.parametrize("path,value,expected", [
    (("num_hidden_layers",), "two", "field 'num_hidden_layers' must be an integer >= 1, got 'two' (str)"),
    (("num_hidden_layers",), 1.5, "field 'num_hidden_layers' must be an integer >= 1, got 1.5"),
    (("vision_config", "depth"), -1, "field 'vision_config.depth' must be an integer >= 1, got -1"),
    (("rms_norm_eps",), float("inf"), "field 'rms_norm_eps' must be a finite number > 0, got inf"),
    (("rope_scaling", "mrope_section"), [2, "3", 3], "field 'rope_scaling.mrope_section' must be a list"),
    (("tie_word_embeddings",), "yes", "field 'tie_word_embeddings' must be true or false"),
    (("vision_config",), [], "field 'vision_config' must be a JSON object"),
])
def test_typed_config_fault_exits_2_naming_file_and_field(tmp_path, capsys, path, value, expected):
    config = ModelConfig.tiny().to_hf_dict()
    node = config
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    src = tmp_path / "src"
    src.mkdir()
    (src / "config.json").write_text(json.dumps(config))
    out = tmp_path / "out"
    assert main(["hf-to-orbax", str(src), str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"error: {src / 'config.json'}: {expected}" in err, err
    assert "Traceback" not in err and not out.exists()


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_temp_dirs_of_dead_pids_on_this_host_are_removed(tmp_path, capsys):
    out = tmp_path / "out"
    host, dead, live = hf._host(), _dead_pid(), os.getpid()
    names = {
        "stale_tmp": f".out.tmp-{host}-{dead}-abc_12x9",
        "stale_old": f".out.old-{host}-{dead}-zz0k1mq3",
        "live": f".out.tmp-{host}-{live}-q1w2e3r4",
        "other_host": f".out.tmp-otherhost-{dead}-q1w2e3r4",
        "other_name": f".out2.tmp-{host}-{dead}-q1w2e3r4",
        "old_format": ".out.tmp-k3j4h5g6",  # from before host and pid were in the name: cannot tell, kept
    }
    for name in names.values():
        (tmp_path / name).mkdir()
        (tmp_path / name / "shard.safetensors").write_bytes(b"partial")
    removed = hf.remove_stale_temp_dirs(out)
    assert sorted(p.name for p in removed) == sorted([names["stale_tmp"], names["stale_old"]])
    left = {p.name for p in tmp_path.iterdir()}
    assert left == {names[k] for k in ("live", "other_host", "other_name", "old_format")}
    err = capsys.readouterr().err
    assert f"removed {tmp_path / names['stale_tmp']}: left by a killed run (pid {dead} on {host})" in err


def test_run_killed_mid_swap_gets_its_previous_output_back(tmp_path):
    out = tmp_path / "out"
    old = tmp_path / f".out.old-{hf._host()}-{_dead_pid()}-abcdefgh"
    (old / "out").mkdir(parents=True)
    (old / "out" / "config.json").write_text("previous")
    hf.remove_stale_temp_dirs(out)
    assert (out / "config.json").read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# The child writes the whole result into its temporary directory, says so, then stalls before the rename:
# SIGKILL lands at the worst moment, deterministically.
_STALLED_CONVERSION = """
import contextlib, sys, time
from zoomiqa_jax.checkpoint import orbax_io
real = orbax_io.atomic_output_dir

@contextlib.contextmanager
def stalled(*args, **kwargs):
    with real(*args, **kwargs) as tmp:
        yield tmp
        print("WRITTEN", tmp, flush=True)
        time.sleep(600)

orbax_io.atomic_output_dir = stalled
from conversion.cli import main
sys.exit(main(["hf-to-orbax", sys.argv[1], sys.argv[2], "--no-progress"]))
"""


def test_sigkilled_conversion_leaves_nothing_after_the_next_run(hf_dir, tmp_path, capsys):
    out = tmp_path / "orbax"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    child = subprocess.Popen([sys.executable, "-c", _STALLED_CONVERSION, str(hf_dir), str(out)], cwd=ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = child.stdout.readline()
        assert line.startswith("WRITTEN"), (line, child.stderr.read()[-2000:] if child.poll() is not None else "")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    tmp = Path(line.split(maxsplit=1)[1].strip())
    assert tmp.is_dir() and tmp.name.startswith(f".orbax.tmp-{hf._host()}-{child.pid}-") and not out.exists()

    assert main(["hf-to-orbax", str(hf_dir), str(out), "--no-progress"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["orbax"]
    assert f"removed {tmp}: left by a killed run (pid {child.pid}" in capsys.readouterr().err
