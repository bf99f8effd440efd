"""`zoomiqa train sft|grpo --config FILE [key=value ...]`: run a training job from a YAML config.

    zoomiqa train sft --config configs/sft_tiny.yaml run.steps=50 run.out_dir=runs/sft_tiny
    zoomiqa train grpo --config configs/zoomiqa_grpo.yaml model.weights=runs/sft/final

Overrides are `section.key=value` (values parsed as YAML: `parallel.mesh=[2,4,1]`, `optim.lr=1e-5`). A run
resumes by itself from the newest checkpoint in its checkpoint directory; the config in force is written to
`<run.out_dir>/config.yaml`. Exit status 2 for a bad config or override (the message names the key), a batch or
mesh that does not shard on the devices found (`zoomiqa_jax.train.validate`), an incomplete JAX_* multi-process
environment, or more bad training records than `data.max_bad_fraction` allows.

Resuming refuses (exit 2, naming the keys) a config that differs from the checkpoint's in anything that alters the
result (steps, schedule, batch, data, recipe, model, seeds; zoomiqa_jax/train/resume.py lists the keys that may
change freely); --allow-config-change resumes anyway and logs the changed keys.

SIGINT (Ctrl-C) or SIGTERM (a preempted VM): the current step finishes, a checkpoint is written (data position and
sampler state included) and the command exits 0, printing the command that resumes the run; on several hosts all
stop at the same step. Ctrl-C a second time aborts at once.
"""

from __future__ import annotations

import argparse
import shlex
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
    p.add_argument("--allow-config-change", action="store_true",
                   help="resume even when the config differs from the checkpoint's in keys that alter the result "
                        "(the changed keys are logged)")
    return p


def main(argv: list[str] | None = None) -> int:
    """`zoomiqa train`; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_intermixed_args(argv)
    kw = dict(progress=not args.no_progress, allow_config_change=args.allow_config_change)
    try:
        if args.job == "sft":
            from zoomiqa_jax.train.config import load_train_config
            from zoomiqa_jax.train.sft_loop import run_sft

            cfg = load_train_config(args.config, args.overrides)
            run = lambda stop: run_sft(cfg, stop=stop, **kw)  # noqa: E731
        else:
            from zoomiqa_jax.train.grpo_config import load_grpo_config
            from zoomiqa_jax.train.grpo_loop import run_grpo

            gcfg = load_grpo_config(args.config, args.overrides)
            run = lambda stop: run_grpo(gcfg, stop=stop, **kw)  # noqa: E731
    except ConfigError as err:
        print(f"zoomiqa train {args.job}: {err}", file=sys.stderr)
        return 2
    from zoomiqa_jax.processing.image import ImageLoadError
    from zoomiqa_jax.train.data_checks import BadDataError
    from zoomiqa_jax.train.preemption import StopRequest

    try:
        with StopRequest() as stop:  # SIGINT / SIGTERM: finish the step, save, stop (train.preemption)
            result = run(stop)
    except (BadDataError, ConfigError) as err:  # too many bad records; a resume whose config changes the result
        # (ResumeConfigError); a batch or mesh that does not shard on the devices (train.validate.ParallelismError);
        # an incomplete multi-process environment (parallel.mesh.DistributedEnvError)
        print(f"zoomiqa train {args.job}: {err}", file=sys.stderr)
        return 2
    except ImageLoadError as err:  # an image that passed the start-up check broke later (train.data_checks)
        print(f"zoomiqa train {args.job}: {err}; the file changed after the data check at start-up: fix or remove "
              "it and rerun the same command (it resumes from the last checkpoint)", file=sys.stderr)
        return 2
    if result.stopped:
        print(f"Stopped at step {result.step} ({result.stopped}); checkpoint saved. Resume with the same command: "
              f"{shlex.join(['zoomiqa', 'train', *argv])}", flush=True)
        return 0
    print(f"done: step {result.step}, outputs in {result.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
