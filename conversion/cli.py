"""`zoomiqa-convert`: convert Qwen2.5-VL checkpoints between Hugging Face safetensors and orbax.

    zoomiqa-convert hf-to-orbax HF_DIR OUT_DIR       # e.g. a downloaded Qwen/Qwen2.5-VL-3B-Instruct
    zoomiqa-convert orbax-to-hf CKPT_DIR OUT_DIR     # back to a directory transformers loads

Both read and write tensor by tensor on the host CPU (peak memory about one copy of the model; see
docs/conversion.md). On any error the message names every offending key, the exit code is 2 and OUT_DIR is
left untouched.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import sys
from collections.abc import Sequence
from pathlib import Path

_DTYPES = ("keep", "float32", "bfloat16", "float16")


def _size(text: str) -> int:
    from zoomiqa_jax.checkpoint.safetensors_io import parse_size

    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zoomiqa-convert",
        description="Convert Qwen2.5-VL checkpoints between Hugging Face safetensors directories and orbax "
        "checkpoints (layout: docs/conversion.md). Conversions are exact: no tensor changes unless "
        "--param-dtype asks for a cast.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--param-dtype", choices=_DTYPES, default="keep",
                       help="cast every parameter to this dtype; 'keep' (default) keeps the stored dtypes, "
                       "so bf16 stays bf16 and the round trip is bit-exact")
        p.add_argument("--allow-mixed-dtypes", action="store_true",
                       help="accept a checkpoint whose tensors have different dtypes (by default every tensor "
                       "must share the checkpoint's dtype and the others are reported as errors)")
        p.add_argument("--overwrite", action="store_true",
                       help="replace OUT_DIR if it exists and is not empty (default: refuse)")
        p.add_argument("--no-progress", action="store_true", help="do not show progress bars")

    h2o = sub.add_parser(
        "hf-to-orbax", help="HF directory -> orbax checkpoint",
        description="Read an HF Qwen2.5-VL directory (config.json plus model.safetensors or an index with "
        "shards; key layout of the published checkpoints or of transformers 5) and write OUT_DIR/params "
        "(orbax), OUT_DIR/config.json and the tokenizer / processor / generation config files found in HF_DIR.",
    )
    h2o.add_argument("hf_dir", metavar="HF_DIR", type=Path, help="the Hugging Face model directory to read")
    h2o.add_argument("out_dir", metavar="OUT_DIR", type=Path, help="the orbax checkpoint directory to create")
    common(h2o)

    o2h = sub.add_parser(
        "orbax-to-hf", help="orbax checkpoint -> HF directory",
        description="Read an orbax checkpoint (a converted CKPT_DIR, one training step directory, or a "
        "CheckpointManager run directory) and write an HF directory transformers loads: config.json, "
        "generation_config.json, safetensors shards with model.safetensors.index.json in the published "
        "key layout, and the tokenizer files found next to the checkpoint.",
    )
    o2h.add_argument("ckpt_dir", metavar="CKPT_DIR", type=Path, help="the orbax checkpoint (or run) directory")
    o2h.add_argument("out_dir", metavar="OUT_DIR", type=Path, help="the HF directory to create")
    o2h.add_argument("--step", type=int, default=None,
                     help="for a CheckpointManager run directory: the step to convert (default: the latest)")
    o2h.add_argument("--max-shard-size", type=_size, default="4GB", metavar="SIZE",
                     help="largest safetensors shard, e.g. 4GB (default), 500MB, 2GiB; a model that fits one "
                     "shard is written as a single model.safetensors")
    common(o2h)
    return parser


def _param_dtype(name: str) -> object | None:
    import jax.numpy as jnp

    return None if name == "keep" else jnp.dtype(name)


def hf_to_orbax(args: argparse.Namespace) -> str:
    from zoomiqa_jax.checkpoint.hf import check_output_dir, load_hf, read_hf_config
    from zoomiqa_jax.checkpoint.orbax_io import save_orbax

    check_output_dir(args.out_dir, args.overwrite)
    config_dict = read_hf_config(args.hf_dir)
    model, _ = load_hf(args.hf_dir, param_dtype=_param_dtype(args.param_dtype),
                       allow_mixed_dtypes=args.allow_mixed_dtypes, progress=not args.no_progress)
    _trim_heap()
    _log(args, f"writing orbax checkpoint to {args.out_dir} ...")
    save_orbax(model, args.out_dir, config_dict=config_dict, tokenizer_dir=args.hf_dir, overwrite=args.overwrite)
    return f"wrote {args.out_dir} ({_summary(model)})"


def orbax_to_hf(args: argparse.Namespace) -> str:
    from zoomiqa_jax.checkpoint.hf import check_output_dir, read_hf_config, save_hf
    from zoomiqa_jax.checkpoint.orbax_io import load_orbax, locate_orbax

    check_output_dir(args.out_dir, args.overwrite)
    loc = locate_orbax(args.ckpt_dir, args.step)
    _log(args, f"restoring {loc.params_dir} ...")
    model, _ = load_orbax(args.ckpt_dir, step=args.step, param_dtype=_param_dtype(args.param_dtype),
                          allow_mixed_dtypes=args.allow_mixed_dtypes)
    _trim_heap()
    save_hf(model, args.out_dir, config_dict=read_hf_config(loc.meta_dir), tokenizer_dir=loc.meta_dir,
            max_shard_bytes=args.max_shard_size, overwrite=args.overwrite, progress=not args.no_progress)
    return f"wrote {args.out_dir} ({_summary(model)})"


def _summary(model: object) -> str:
    from zoomiqa_jax.checkpoint.state import model_param_items

    items = list(model_param_items(model))
    nbytes = sum(v.size * v.dtype.itemsize for _, v in items)
    dtypes = sorted({str(v.dtype) for _, v in items})
    return f"{len(items)} tensors, {nbytes / 1e6:.1f} MB, {'/'.join(dtypes)}"


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, musl): the defaults stay
        return None


def _tune_malloc() -> None:
    """Serve every allocation of 1 MiB or more with its own mmap, so a freed tensor buffer goes back to the OS
    at once. glibc's default (a threshold that grows up to 32 MiB) keeps freed tensors of orbax's reader
    threads in per-thread heaps: measured +25-40% peak RSS on conversion (docs/conversion.md)."""
    libc = _libc()
    if libc is not None and hasattr(libc, "mallopt"):
        libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD


def _trim_heap() -> None:
    """Return freed heap pages to the OS between reading and writing."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def _log(args: argparse.Namespace, msg: str) -> None:
    if not args.no_progress:
        print(msg, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code: 0 done, 2 bad arguments or a checkpoint that does not fit its
    config, 1 an operating-system error (disk full, permissions), 130 interrupted (SIGINT or SIGTERM). OUT_DIR is
    untouched on any error or interruption."""
    args = build_parser().parse_args(argv)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")  # conversion is host work; never fill an accelerator
    _tune_malloc()
    from zoomiqa_jax.checkpoint.hf import ConversionError
    from zoomiqa_jax.checkpoint.safetensors_io import SafetensorsError
    from zoomiqa_jax.checkpoint.state import CheckpointMismatchError
    from zoomiqa_jax.config import ConfigError
    from zoomiqa_jax.train.preemption import sigterm_raises_interrupt

    run = {"hf-to-orbax": hf_to_orbax, "orbax-to-hf": orbax_to_hf}[args.command]
    try:
        with sigterm_raises_interrupt():  # SIGTERM cleans up the temporary OUT_DIR sibling as Ctrl-C does
            message = run(args)
    except KeyboardInterrupt as e:
        print(f"zoomiqa-convert {args.command}: interrupted ({e or 'SIGINT'}); {args.out_dir} untouched",
              file=sys.stderr)
        return 130
    except (ConversionError, CheckpointMismatchError, SafetensorsError, ConfigError) as e:
        print(f"zoomiqa-convert {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # disk full, permissions: nothing was left in OUT_DIR either
        print(f"zoomiqa-convert {args.command}: error: {e}", file=sys.stderr)
        return 1
    print(message)
    return 0


if __name__ == "__main__":
    sys.exit(main())
