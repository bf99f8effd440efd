"""`zoomiqa`: one entry point, one subcommand per job.

    zoomiqa demo     built-in demo: synthetic IQA images, a tiny random model, scores and a report
    zoomiqa score    rate images with a checkpoint (Zoom-IQA crop-and-zoom reasoning or Q-Insight)
    zoomiqa compare  which of two images is better (Q-Insight comparison prompt)
    zoomiqa eval     evaluate a checkpoint on IQA test sets
    zoomiqa train    train: `zoomiqa train sft|grpo --config FILE [key=value ...]`
    zoomiqa curate   make GR-IQA SFT trajectories: teacher, Visual Reliance and Hint-Augmented filtering
    zoomiqa prompts  `zoomiqa prompts import-official CHECKOUT OUT.yaml`: the authors' prompt texts as a file
    zoomiqa plan     `zoomiqa plan --config FILE --topology v5p:2x2x4`: AOT-compile for a TPU slice, memory and fit

`zoomiqa SUBCOMMAND --help` explains every flag of a subcommand.
"""

from __future__ import annotations

import importlib
import sys

# subcommand -> (module with `main(argv) -> int`, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("zoomiqa_jax.demo", "built-in demo on synthetic images with a tiny random model"),
    "score": ("zoomiqa_jax.score", "rate images with a checkpoint (reasoning, zooms, rating)"),
    "compare": ("zoomiqa_jax.score", "compare two images with the Q-Insight comparison prompt"),
    "eval": ("zoomiqa_jax.eval.runner", "evaluate a checkpoint on IQA test sets: metrics, report, plots"),
    "train": ("zoomiqa_jax.train.cli", "train: SFT (stage 1) or GRPO (stage 2) from a YAML config"),
    "curate": ("zoomiqa_jax.curate.cli", "make SFT trajectories: teacher, VRF and HACF filters, report"),
    "prompts": ("zoomiqa_jax.processing.official_prompts", "prompt files: import the Zoom-IQA authors' texts"),
    "plan": ("zoomiqa_jax.plan.cli", "will a config shard and fit on a TPU slice: AOT compile, memory per chip"),
}


def usage() -> str:
    lines = [__doc__.strip().splitlines()[0], "", "usage: zoomiqa SUBCOMMAND [options]", "", "subcommands:"]
    lines += [f"  {name:<10} {text}" for name, (_, text) in SUBCOMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"zoomiqa: unknown subcommand {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[name][0])
    entry = getattr(module, f"{name}_main", None) or module.main
    return int(entry(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
