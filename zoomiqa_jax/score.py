"""`zoomiqa score` and `zoomiqa compare`: rate images with a checkpoint, or compare two images.

    zoomiqa score --checkpoint DIR IMAGE_OR_FOLDER... [--json OUT.jsonl]
    zoomiqa compare --checkpoint DIR [--ref R] A B

`score` prints, per image, the model's reasoning, each zoom (the requested box and the crop actually cut, in
pixels and normalized) and the rating. Every path named on the command line is checked before the model loads:
a missing image, checkpoint, tokenizer or prompt file stops the command at once. A corrupt image is reported by
name and the others still run; an unparseable answer is reported with its error class and gets no rating (never
a made-up one).

Exit status: 0 when at least one image went through the model, 1 when none could (every image unreadable),
2 for a path that does not exist, a bad checkpoint, prompt file or flag.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from zoomiqa_jax.config import DTYPES, PROMPT_TASKS, PROTOCOL_CHOICES

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif")


def missing_paths(args: argparse.Namespace, inputs: Sequence[str] = ()) -> list[str]:
    """What does not exist among the paths a command names (`inputs`: image files or folders; the
    --checkpoint, --tokenizer, --prompt-file, the folder of --json), one message each. Checked before the model
    loads, which takes seconds to minutes."""
    problems = [f"{p}: no such file or folder" for p in inputs if not Path(p).exists()]
    if not Path(args.checkpoint).is_dir():
        problems.append(f"--checkpoint {args.checkpoint}: no such directory")
    if getattr(args, "tokenizer", None) and not Path(args.tokenizer).is_dir():
        problems.append(f"--tokenizer {args.tokenizer}: no such directory")
    if getattr(args, "prompt_file", None) and not Path(args.prompt_file).is_file():
        problems.append(f"--prompt-file {args.prompt_file}: no such file")
    if getattr(args, "json", None) and not Path(args.json).absolute().parent.is_dir():
        problems.append(f"--json {args.json}: folder {Path(args.json).absolute().parent} does not exist")
    guidance = getattr(args, "export_guidance", None)
    if guidance and not Path(guidance).absolute().parent.is_dir():
        problems.append(f"--export-guidance {guidance}: folder {Path(guidance).absolute().parent} does not exist")
    return problems


def report_missing(problems: Sequence[str], err: TextIO) -> bool:
    """Print each problem as an error line; True when there was any."""
    for problem in problems:
        print(f"error: {problem}", file=err)
    return bool(problems)


def collect_images(paths: Sequence[str]) -> tuple[list[Path], bool]:
    """Files in order; a folder contributes its image files (sorted, by suffix). Returns (files, any folder)."""
    files: list[Path] = []
    folder = False
    for p in map(Path, paths):
        if p.is_dir():
            folder = True
            files.extend(sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES))
        else:
            files.append(p)  # missing paths were refused before (`missing_paths`); one that vanished since is
            # reported when it is loaded
    return files, folder


def build_parser(command: str = "score") -> argparse.ArgumentParser:
    """The argparse parser of `zoomiqa score` or `zoomiqa compare`."""
    fmt = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(prog=f"zoomiqa {command}", description=__doc__, formatter_class=fmt)
    p.add_argument("--checkpoint", required=True, metavar="DIR",
                   help="HF directory (config.json + *.safetensors + tokenizer files) or orbax checkpoint")
    p.add_argument("--tokenizer", metavar="DIR", help="tokenizer directory (default: the checkpoint's own)")
    if command == "score":
        p.add_argument("images", nargs="+", metavar="IMAGE_OR_FOLDER",
                       help="image files and/or folders (a folder contributes its " + ", ".join(IMAGE_SUFFIXES)
                       + " files, sorted by name)")
        p.add_argument("--prompt", choices=sorted(PROMPT_TASKS), default="zoomiqa",
                       help="zoomiqa: reasoning with an optional crop-and-zoom second round (default); qinsight: "
                       "Q-Insight score prompt; qinsight-degradation: Q-Insight distortion class and severity; "
                       "vqr1: VisualQuality-R1 score prompt")
        p.add_argument("--no-zoom", action="store_true",
                       help="stop after the first round: a requested crop is not run and its rating is kept "
                       "(same as --max-turns 1)")
        p.add_argument("--max-turns", type=int, choices=(1, 2), default=2,
                       help="most model rounds per image for --prompt zoomiqa (the protocol allows 2; default 2)")
        p.add_argument("--batch-size", type=int, default=4,
                       help="images per sampler call; the rows that crop share one second call (default 4)")
        p.add_argument("--protocol", choices=PROTOCOL_CHOICES, default="official",
                       help="how Zoom-IQA replies are prompted, read, routed and cropped: official (the authors' "
                       "released evaluation, default) or strict (the project's own reading); docs/inference.md")
    else:
        p.add_argument("--ref", metavar="R", help="reference (e.g. low-quality input) image for the comparison")
        p.add_argument("image_a", metavar="A", help="image A")
        p.add_argument("image_b", metavar="B", help="image B")
    p.add_argument("--prompt-file", metavar="FILE",
                   help="YAML/JSON file replacing prompt texts by name (format: zoomiqa_jax.processing.prompts)")
    p.add_argument("--json", metavar="OUT.jsonl",
                   help="also write one JSON line per input: image, rating, rounds, boxes, restoration prompts")
    if command == "score":
        p.add_argument("--export-guidance", metavar="FILE",
                       help="write each image's 'Directions for Improvement' paragraph (the last round that has "
                       "one) as a text prompt for text-guided restoration: one line per image, "
                       "'IMAGE<TAB>PROMPT' (Zoom-IQA Sec. 4); an image without one gets an empty prompt")
    p.add_argument("--json-tokens", action="store_true",
                   help="in --json, also write prompt texts, token ids, log-probs and the generated-token mask")
    p.add_argument("--max-new-tokens", type=int, default=1024, help="new tokens per round (default 1024)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature; 0 is greedy (default 1.0)")
    p.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling mass (default 0.95)")
    p.add_argument("--top-k", type=int, default=50, help="keep the k most likely tokens; 0 disables (default 50)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the sampler and of the question paraphrase per image (default 0)")
    p.add_argument("--dtype", choices=DTYPES, default="bfloat16",
                   help="compute dtype (default bfloat16, as published; float32 for exact CPU runs)")
    p.add_argument("--min-pixels", type=int, help="smallest image area given to the model (default: checkpoint's)")
    p.add_argument("--max-pixels", type=int, help="largest image area given to the model (default: checkpoint's)")
    p.add_argument("--quiet", action="store_true", help="print only one result line per image, not the reasoning")
    return p


def setup_or_report(args: argparse.Namespace, err: TextIO) -> Any:
    """`inference.setup.load_for_inference(args)`, or None after printing why it cannot start."""
    from zoomiqa_jax.inference.setup import SETUP_ERRORS, load_for_inference

    try:
        return load_for_inference(args)
    except SETUP_ERRORS as e:
        print(f"error: {e}", file=err)
        return None


def _load_items(files: Sequence[Path], start: int = 0, protocol: Any = None) -> Iterator[tuple[Path, Any]]:
    """(path, ImageItem or the load error message) per file, loaded as `protocol` loads images (None: RGB,
    EXIF-transposed, `processing.image.load_image`)."""
    from zoomiqa_jax.inference.rounds import ImageItem
    from zoomiqa_jax.processing.image import ImageLoadError, load_image

    load = load_image if protocol is None else protocol.load_image
    for i, f in enumerate(files, start):
        try:
            yield f, ImageItem(str(f), load(f), index=i)
        except ImageLoadError as e:
            yield f, str(e)


def score_main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """`zoomiqa score`; returns the exit status (module docstring)."""
    out, err = out or sys.stdout, err or sys.stderr
    args = build_parser("score").parse_args(argv)
    if args.batch_size < 1:
        print(f"error: --batch-size must be >= 1, found {args.batch_size}", file=err)
        return 2
    if report_missing(missing_paths(args, args.images), err):
        return 2
    from tqdm.auto import tqdm

    from zoomiqa_jax.inference.protocol import Protocol
    from zoomiqa_jax.inference.tasks import run_task
    from zoomiqa_jax.inference.trajectory import count_invalid

    files, folder = collect_images(args.images)
    if not files:
        print(f"error: no images found in {' '.join(args.images)} (suffixes: {', '.join(IMAGE_SUFFIXES)})", file=err)
        return 1
    setup = setup_or_report(args, err)
    if setup is None:
        return 2
    model, tokenizer, settings, prompts = setup.model, setup.tokenizer, setup.settings, setup.prompts
    max_turns = 1 if args.no_zoom else args.max_turns
    task = PROMPT_TASKS[args.prompt]
    protocol = Protocol(args.protocol, prompts)

    def run(batch: list) -> list:
        return run_task(model, tokenizer, batch, task, settings, prompts=prompts, protocol=protocol,
                        max_turns=max_turns)

    results, unreadable = [], []
    sink = open(args.json, "w", encoding="utf-8") if args.json else None
    try:
        with tqdm(total=len(files), desc="scoring", unit="image", disable=not folder, file=err) as bar:
            batch: list = []
            for k, (path, item) in enumerate(_load_items(files, protocol=protocol if task == "zoomiqa" else None)):
                if isinstance(item, str):
                    unreadable.append(path)
                    bar.write(f"skipped {path}: {item}", file=err)
                    bar.update()
                    if sink:
                        sink.write(json.dumps({"image": str(path), "rating": None, "invalid": "unreadable",
                                               "error": item}) + "\n")
                else:
                    batch.append(item)
                if batch and (len(batch) == args.batch_size or k == len(files) - 1):
                    for traj in run(batch):
                        results.append(traj)
                        _write(bar.write, traj, quiet=args.quiet, out=out)
                        if sink:
                            record = traj.to_dict(tokens=args.json_tokens)
                            record["turns"] = len(traj.rounds)
                            sink.write(json.dumps(record) + "\n")
                        bar.update()
                    batch = []
    finally:
        if sink:
            sink.close()
    if args.export_guidance:
        write_guidance(args.export_guidance, results)
    rated = sum(t.rating is not None for t in results)
    invalid = dict(count_invalid(results))
    print(f"scored {len(results)} of {len(files)} images: {rated} rated, {sum(invalid.values())} invalid"
          + (f" {invalid}" if invalid else "") + f", {len(unreadable)} unreadable", file=out)
    for path in unreadable:
        print(f"  unreadable: {path}", file=out)
    return 0 if results else 1


def write_guidance(path: str | Path, trajectories: Sequence[Any]) -> None:
    """One line per trajectory, ``IMAGE<TAB>PROMPT``: the "Directions for Improvement" paragraph
    (`Trajectory.restoration_prompts["positive"]`) with its whitespace runs collapsed to one space, else ''."""
    lines = []
    for traj in trajectories:
        prompt = " ".join(((traj.restoration_prompts or {}).get("positive") or "").split())
        lines.append(f"{traj.image}\t{prompt}\n")
    Path(path).write_text("".join(lines), encoding="utf-8")


def compare_main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """`zoomiqa compare`: the Q-Insight comparison prompt on A and B (with --ref, the reference-based one)."""
    out, err = out or sys.stdout, err or sys.stderr
    args = build_parser("compare").parse_args(argv)
    files = [Path(f) for f in ([args.ref] if args.ref else []) + [args.image_a, args.image_b]]
    if report_missing(missing_paths(args, [str(f) for f in files]), err):
        return 2
    from zoomiqa_jax.inference.single_turn import run_comparisons

    loaded = list(_load_items(files))
    bad = [(p, e) for p, e in loaded if isinstance(e, str)]
    for path, message in bad:
        print(f"error: cannot compare, {path}: {message}", file=err)
    if bad:
        return 1
    setup = setup_or_report(args, err)
    if setup is None:
        return 2
    model, tokenizer, settings, prompts = setup.model, setup.tokenizer, setup.settings, setup.prompts
    items = [item for _, item in loaded]
    triple = (items[0], items[1], items[2]) if args.ref else (None, items[0], items[1])
    traj = run_comparisons(model, tokenizer, [triple], settings, prompts=prompts)[0]
    if not args.quiet:
        print(traj.rounds[0].output_text.strip() if traj.rounds else "", file=out)
    choice = (traj.final_answer or {}).get("choice")
    if choice:
        print(f"better: Image {choice} ({traj.inputs[choice]})", file=out)
    else:
        print(f"no choice: invalid answer ({traj.invalid})", file=out)
    if args.json:
        record = traj.to_dict(tokens=args.json_tokens)
        Path(args.json).write_text(json.dumps(record) + "\n", encoding="utf-8")
    return 0


def _write(write: Any, traj: Any, *, quiet: bool, out: TextIO) -> None:
    """Print one trajectory: reasoning per round, each zoom, then the rating (or why there is none)."""
    size = "x".join(map(str, traj.image_size or []))
    if traj.rating is not None:
        verdict = f"rating {traj.rating:.2f}"
    elif traj.invalid is not None:
        verdict = f"no rating: invalid output ({traj.invalid}, round {traj.invalid_round}), excluded"
    else:
        verdict = ", ".join(f"{k}: {v}" for k, v in (traj.final_answer or {}).items() if k != "error")
    if quiet:
        write(f"{traj.image}\t{verdict}", file=out)
        return
    lines = [f"== {traj.image} [{size}] =="]
    for r in traj.rounds:
        lines.append(f"-- round {r.index}" + (" (token limit reached)" if r.hit_token_limit else ""))
        lines.extend("   " + line for line in r.output_text.strip().splitlines())
        if r.bbox_pixels is not None:
            norm = ", ".join(f"{v:.3f}" for v in r.bbox_normalized)
            lines.append(f"   zoom: requested {r.bbox_requested} -> crop pixels {r.bbox_pixels} "
                         f"(normalized [{norm}])")
    if traj.routing_warnings:
        lines.append(f"   warnings: {', '.join(traj.routing_warnings)}")
    lines.append(f"   {verdict}")
    write("\n".join(lines), file=out)
