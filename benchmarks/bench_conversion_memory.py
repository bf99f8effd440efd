"""Peak memory of `zoomiqa-convert` on a random model of a few hundred MB (not a test; numbers go in
docs/conversion.md).

    python -m benchmarks.bench_conversion_memory [--dtype float32|bfloat16] [--vocab-size N] [--layers N]

Writes a random HF checkpoint (text 1024 wide, 8 layers, vocab 32000, untied; vision 256 wide, depth 4),
then runs hf-to-orbax and orbax-to-hf each in its own process and reports the peak resident set size
(ru_maxrss of that process) next to the model size and the RSS of a process that only imports the same
libraries.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ml_dtypes
import numpy as np

from zoomiqa_jax.checkpoint.keymap import expected_hf_shapes
from zoomiqa_jax.checkpoint.safetensors_io import TensorSpec, write_checkpoint
from zoomiqa_jax.config import ModelConfig, TextConfig, VisionConfig


def make_config(vocab_size: int = 32000, layers: int = 8) -> ModelConfig:
    return ModelConfig(
        vision=VisionConfig(depth=4, hidden_size=256, intermediate_size=512, num_heads=4, out_hidden_size=1024,
                            fullatt_block_indexes=(1, 3)),
        text=TextConfig(vocab_size=vocab_size, hidden_size=1024, intermediate_size=2816, num_hidden_layers=layers,
                        num_attention_heads=16, num_key_value_heads=2, mrope_section=(8, 12, 12),
                        max_position_embeddings=4096),
        tie_word_embeddings=False, image_token_id=vocab_size - 4, video_token_id=vocab_size - 3,
        vision_start_token_id=vocab_size - 6, vision_end_token_id=vocab_size - 5, bos_token_id=vocab_size - 8,
        eos_token_id=vocab_size - 7,
    )

# Runs `argv` as a child and prints that child's peak RSS in KiB (Linux ru_maxrss unit).
_WRAP = "import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:]).returncode; " \
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(rc)"
_IMPORTS = "import jax, jax.numpy as jnp, orbax.checkpoint, conversion.cli, zoomiqa_jax.checkpoint.orbax_io; " \
           "jnp.zeros(1).block_until_ready()"


def write_random_hf(out: Path, config: ModelConfig, dtype: np.dtype, seed: int = 0) -> tuple[int, int]:
    """A random HF checkpoint of `config` in `out`; returns (all tensor bytes, largest tensor bytes)."""
    out.mkdir(parents=True)
    shapes = expected_hf_shapes(config)
    specs = [TensorSpec(k, s, dtype) for k, s in shapes.items()]
    rng = np.random.default_rng(seed)
    arrays = ((s.name, (rng.standard_normal(s.shape, np.float32) * 0.02).astype(dtype)) for s in specs)
    write_checkpoint(out, specs, arrays, max_shard_bytes=200 * 10**6)
    (out / "config.json").write_text(json.dumps(config.to_hf_dict(torch_dtype=np.dtype(dtype).name), indent=2))
    return sum(s.nbytes for s in specs), max(s.nbytes for s in specs)


def peak_rss_mib(argv: list[str]) -> tuple[float, float]:
    """(peak RSS in MiB, wall seconds) of `argv` run in a fresh process."""
    t = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", _WRAP, *argv], capture_output=True, text=True)
    if res.returncode:
        raise RuntimeError(f"{argv} failed:\n{res.stderr[-3000:]}")
    return int(res.stdout.strip().splitlines()[-1]) / 1024, time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="stored dtype")
    parser.add_argument("--vocab-size", type=int, default=32000, help="text vocabulary (default 32000)")
    parser.add_argument("--layers", type=int, default=8, help="text decoder layers (default 8)")
    parser.add_argument("--workdir", type=Path, default=None, help="scratch directory (default: a temp dir)")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="convert-mem-"))
    dtype = np.dtype(ml_dtypes.bfloat16) if args.dtype == "bfloat16" else np.dtype(np.float32)
    nbytes, largest = write_random_hf(work / "hf", make_config(args.vocab_size, args.layers), dtype)
    cli = [sys.executable, "-m", "conversion.cli"]
    base, _ = peak_rss_mib([sys.executable, "-c", _IMPORTS])
    h2o, t1 = peak_rss_mib([*cli, "hf-to-orbax", str(work / "hf"), str(work / "orbax"), "--no-progress"])
    o2h, t2 = peak_rss_mib([*cli, "orbax-to-hf", str(work / "orbax"), str(work / "hf2"), "--no-progress"])
    size = nbytes / 2**20
    print(f"model: {args.dtype}, vocab {args.vocab_size}, {args.layers} layers: {nbytes / 1e6:.0f} MB "
          f"({size:.0f} MiB) of tensors, largest {largest / 2**20:.0f} MiB")
    print(f"imports only: peak RSS {base:.0f} MiB")
    for name, peak, secs in (("hf-to-orbax", h2o, t1), ("orbax-to-hf", o2h, t2)):
        print(f"{name}: peak RSS {peak:.0f} MiB = imports + {peak - base:.0f} MiB "
              f"= imports + {(peak - base) / size:.2f} x model; {secs:.1f} s")


if __name__ == "__main__":
    main()
