"""`zoomiqa train sft|grpo --config FILE [key=value ...]`: run a training job from a YAML config.

    zoomiqa train sft --config configs/sft_tiny.yaml run.steps=50 run.out_dir=runs/sft_tiny
    zoomiqa train grpo --config configs/zoomiqa_grpo.yaml model.weights=runs/sft/final

Overrides are `section.key=value` (values parsed as YAML: `parallel.mesh=[2,4,1]`, `optim.lr=1e-5`). A run
resumes by itself from the newest checkpoint in its checkpoint directory; the config in force is written to
`<run.out_dir>/config.yaml`. Exit status 2 for a bad config or override (the message names the key), or for
more bad training records than `data.max_bad_fraction` allows.
"""

from __future__ import annotations

import argparse
import sys

from zoomiqa_jax.config import ConfigError

JOBS = ("sft", "grpo")


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of `zoomiqa train`."""
    p = argparse.ArgumentParser(prog="zoomiqa train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("job", choices=JOBS, help="sft: supervised fine-tuning (stage 1); grpo: RL (stage 2)")
    p.add_argument("--config", required=True, help="YAML run config (see configs/README.md)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. optim.lr=1e-5")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    """`zoomiqa train`; returns the exit status."""
    args = build_parser().parse_intermixed_args(argv)
    try:
        if args.job == "sft":
            from zoomiqa_jax.train.config import load_train_config
            from zoomiqa_jax.train.sft_loop import run_sft

            cfg = load_train_config(args.config, args.overrides)
            run = lambda: run_sft(cfg, progress=not args.no_progress)  # noqa: E731
        else:
            from zoomiqa_jax.train.grpo_config import load_grpo_config
            from zoomiqa_jax.train.grpo_loop import run_grpo

            gcfg = load_grpo_config(args.config, args.overrides)
            run = lambda: run_grpo(gcfg, progress=not args.no_progress)  # noqa: E731
    except ConfigError as err:
        print(f"zoomiqa train {args.job}: {err}", file=sys.stderr)
        return 2
    from zoomiqa_jax.processing.image import ImageLoadError
    from zoomiqa_jax.train.data_checks import BadDataError

    try:
        result = run()
    except BadDataError as err:  # more bad training records than data.max_bad_fraction allows
        print(f"zoomiqa train {args.job}: {err}", file=sys.stderr)
        return 2
    except ImageLoadError as err:  # an image that passed the start-up check broke later (train.data_checks)
        print(f"zoomiqa train {args.job}: {err}; the file changed after the data check at start-up: fix or remove "
              "it and rerun the same command (it resumes from the last checkpoint)", file=sys.stderr)
        return 2
    print(f"done: step {result.step}, outputs in {result.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
