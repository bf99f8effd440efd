"""`zoomiqa curate`: make GR-IQA-style SFT trajectories from labelled images (issue 19; docs/curation.md).

    zoomiqa curate --labels labels.jsonl --out DIR --teacher-checkpoint CKPT [--rater-checkpoint CKPT2]
    zoomiqa curate --labels labels.jsonl --out DIR --teacher-endpoint http://host:8000/v1 --teacher-model NAME \\
                   --reader-checkpoint CKPT
    zoomiqa curate --labels labels.jsonl --out DIR --teacher-file replies.jsonl --reader-checkpoint CKPT

Per label (a JSONL line with "image" and "mos" on 1-5), the teacher writes a Zoom-IQA trajectory, which must
pass the SFT format, then Visual Reliance Filtering (the reader checkpoint's token probabilities with and
without the image) and Hint-Augmented Consistency Filtering (a rater's Pass / Fail given the image and hints).

Files in --out:
  predictions.jsonl  one line per candidate: outcome, reasons, every compared quantity (the run store: a killed
                     run continues where it stopped, as `zoomiqa eval` does; another config is refused)
  run_config.json    the config the store was written under
  curated.jsonl      the kept trajectories, in label order: `zoomiqa train sft data.train=DIR/curated.jsonl`
                     (pass the same --prompt-file as data.prompt_file)
  rejects.jsonl      the rejected candidates with their stage and reasons
  counts.json        per-filter counts and the distributions before / after filtering
  report.md          the same, with examples of each kind of reject

Models: the reader defaults to the teacher checkpoint, the rater to the reader. A checkpoint named twice is
loaded once. Exit status: 0 when every label has an outcome, 2 for a bad path, flag, label file or checkpoint,
or an --out written under another config, 130 when interrupted (SIGINT / SIGTERM: the finished candidates are
kept and the same command resumes).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from zoomiqa_jax.config import DTYPES


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="zoomiqa curate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--labels", required=True, metavar="FILE",
                   help='labels JSONL: "image" (relative to --image-root) and "mos" (1-5) per line; an "id" '
                   "(default: the image file stem) and dataset attributes (brightness, contrast, ...) optional")
    p.add_argument("--image-root", metavar="DIR", help="folder the label image paths are relative to "
                   "(default: the labels file's folder)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created; resumed when it exists)")
    t = p.add_mutually_exclusive_group(required=True)
    t.add_argument("--teacher-checkpoint", metavar="DIR", help="teacher: an HF or orbax Qwen2.5-VL checkpoint run "
                   "by our engine (the `zoomiqa score` loop: stage 1, crop, stage 2)")
    t.add_argument("--teacher-endpoint", metavar="URL", help="teacher: an OpenAI-compatible chat endpoint "
                   "(http://host:port/v1); needs --teacher-model")
    t.add_argument("--teacher-file", metavar="FILE", help="teacher: replies written earlier, an SFT-format JSONL "
                   "matched to labels by id")
    p.add_argument("--teacher-model", metavar="NAME", help="model name sent to --teacher-endpoint")
    p.add_argument("--reader-checkpoint", metavar="DIR",
                   help="VRF: the checkpoint whose token probabilities are read (default: --teacher-checkpoint)")
    p.add_argument("--no-vrf", action="store_true", help="skip Visual Reliance Filtering")
    r = p.add_mutually_exclusive_group()
    r.add_argument("--rater-checkpoint", metavar="DIR", help="HACF rater checkpoint (default: the reader's)")
    r.add_argument("--rater-endpoint", metavar="URL", help="HACF rater: an OpenAI-compatible chat endpoint; "
                   "needs --rater-model")
    r.add_argument("--no-hacf", action="store_true", help="skip Hint-Augmented Consistency Filtering")
    p.add_argument("--rater-model", metavar="NAME", help="model name sent to --rater-endpoint")
    p.add_argument("--hint-fields", default="", metavar="A,B",
                   help="label fields the rater also gets as hints, e.g. KonIQ++ quality labels "
                   "'artifacts,blurriness' (default: none; dataset attributes named like our five hints replace "
                   "those anyway)")
    p.add_argument("--api-key-env", default="OPENAI_API_KEY", metavar="VAR",
                   help="environment variable holding the endpoints' bearer token, sent when set "
                   "(default OPENAI_API_KEY)")
    p.add_argument("--vrf-rating", type=float, default=0.05, metavar="X",
                   help="VRF: discard when |rating with image - without| < X (default 0.05, supp. 6.2)")
    p.add_argument("--vrf-iou", type=float, default=0.5, metavar="X",
                   help="VRF: discard when the box IoU with / without the image > X (default 0.5)")
    p.add_argument("--vrf-entropy", type=float, default=0.01, metavar="X",
                   help="VRF: discard when |answer entropy with - without| < X nats (default 0.01)")
    p.add_argument("--tokenizer", metavar="DIR", help="tokenizer directory (default: each checkpoint's own)")
    p.add_argument("--prompt-file", metavar="FILE", help="YAML/JSON prompt texts for the teacher and the reader "
                   "(format: zoomiqa_jax.processing.prompts); give the same file to `zoomiqa train sft`")
    p.add_argument("--max-new-tokens", type=int, default=1024, help="teacher tokens per round (default 1024)")
    p.add_argument("--rater-max-new-tokens", type=int, default=64, help="rater tokens (default 64)")
    p.add_argument("--temperature", type=float, default=1.0, help="teacher sampling temperature (default 1.0)")
    p.add_argument("--top-p", type=float, default=0.95, help="teacher nucleus mass (default 0.95)")
    p.add_argument("--top-k", type=int, default=50, help="teacher top-k; 0 disables (default 50)")
    p.add_argument("--seed", type=int, default=0, help="seed of sampling and question paraphrases (default 0)")
    p.add_argument("--dtype", choices=DTYPES, default="float32", help="compute dtype (default float32)")
    p.add_argument("--min-pixels", type=int, help="smallest image area given to the models (default: checkpoint's)")
    p.add_argument("--max-pixels", type=int, help="largest image area given to the models (default: checkpoint's)")
    p.add_argument("--batch-size", type=int, default=4, help="labels per teacher / rater call (default 4)")
    p.add_argument("--limit", type=int, help="curate only the first N labels (a later run can extend it)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _problems(args: argparse.Namespace) -> list[str]:
    out = []
    for flag in ("labels", "teacher_file", "prompt_file"):
        value = getattr(args, flag)
        if value and not Path(value).is_file():
            out.append(f"--{flag.replace('_', '-')} {value}: no such file")
    for flag in ("image_root", "teacher_checkpoint", "reader_checkpoint", "rater_checkpoint", "tokenizer"):
        value = getattr(args, flag)
        if value and not Path(value).is_dir():
            out.append(f"--{flag.replace('_', '-')} {value}: no such directory")
    if args.teacher_endpoint and not args.teacher_model:
        out.append("--teacher-endpoint needs --teacher-model")
    if args.rater_endpoint and not args.rater_model:
        out.append("--rater-endpoint needs --rater-model")
    if not args.no_vrf and not (args.reader_checkpoint or args.teacher_checkpoint):
        out.append("VRF reads a local model: give --reader-checkpoint (or --no-vrf)")
    if not args.no_hacf and not args.rater_endpoint and not (
            args.rater_checkpoint or args.reader_checkpoint or args.teacher_checkpoint):
        out.append("HACF needs a rater: give --rater-checkpoint or --rater-endpoint (or --no-hacf)")
    if args.batch_size < 1:
        out.append(f"--batch-size must be >= 1, found {args.batch_size}")
    return out


def _file_fingerprint(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def run_config(args: argparse.Namespace) -> dict[str, Any]:
    """What the outcome of a candidate depends on (hashed into the run store; --limit, --batch-size and
    --no-progress are not)."""
    from zoomiqa_jax.eval.runner_store import checkpoint_fingerprint

    def ckpt(path: str | None) -> Any:
        return None if path is None else checkpoint_fingerprint(path, exclude=args.out)

    reader = None if args.no_vrf else (args.reader_checkpoint or args.teacher_checkpoint)
    rater = None if args.no_hacf else (args.rater_checkpoint or reader or args.teacher_checkpoint)
    return {
        "labels": _file_fingerprint(args.labels), "image_root": args.image_root,
        "teacher": {"checkpoint": ckpt(args.teacher_checkpoint), "endpoint": args.teacher_endpoint,
                    "model": args.teacher_model,
                    "file": _file_fingerprint(args.teacher_file) if args.teacher_file else None},
        "reader": ckpt(reader),
        "rater": {"endpoint": args.rater_endpoint, "model": args.rater_model} if args.rater_endpoint else ckpt(rater),
        "thresholds": [args.vrf_rating, args.vrf_iou, args.vrf_entropy],
        "prompts": _file_fingerprint(args.prompt_file) if args.prompt_file else None,
        "tokenizer": args.tokenizer, "sampling": [args.max_new_tokens, args.temperature, args.top_p, args.top_k],
        "rater_max_new_tokens": args.rater_max_new_tokens, "hint_fields": args.hint_fields, "seed": args.seed,
        "dtype": args.dtype,
        "pixels": [args.min_pixels, args.max_pixels],
    }


class _Models:
    """Checkpoints loaded on first use, each once: (model, tokenizer, pixel limits)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self.cache = args, {}

    def get(self, path: str) -> tuple[Any, Any, tuple[int | None, int | None]]:
        if path not in self.cache:
            import jax.numpy as jnp

            from zoomiqa_jax.checkpoint.loading import load_checkpoint, pixel_limits
            from zoomiqa_jax.processing.tokenizer import load_tokenizer

            model, _, meta = load_checkpoint(path, dtype=getattr(jnp, self.args.dtype))
            tok_dir = Path(self.args.tokenizer or meta)
            self.cache[path] = (model, load_tokenizer(tok_dir), pixel_limits(tok_dir))
        return self.cache[path]

    def settings(self, path: str, **kw: Any) -> Any:
        from zoomiqa_jax.inference.rounds import SamplingSettings
        from zoomiqa_jax.processing.image import MAX_PIXELS, MIN_PIXELS

        low, high = self.get(path)[2]
        return SamplingSettings(seed=self.args.seed, min_pixels=self.args.min_pixels or low or MIN_PIXELS,
                                max_pixels=self.args.max_pixels or high or MAX_PIXELS, **kw)


def build_curator(args: argparse.Namespace, prompts: Any) -> Any:
    """The Curator of `args` (models loaded here)."""
    from zoomiqa_jax.curate.endpoint import ChatEndpoint
    from zoomiqa_jax.curate.pipeline import Curator, Reader, Thresholds
    from zoomiqa_jax.curate.rater import EndpointRater, LocalRater
    from zoomiqa_jax.curate.teacher import EndpointTeacher, LocalTeacher, ReplayTeacher

    models = _Models(args)
    sampling = dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                    top_k=args.top_k)
    if args.teacher_checkpoint:
        model, tok, _ = models.get(args.teacher_checkpoint)
        teacher: Any = LocalTeacher(model, tok, models.settings(args.teacher_checkpoint, **sampling), prompts)
    elif args.teacher_endpoint:
        endpoint = ChatEndpoint(args.teacher_endpoint, args.teacher_model, max_tokens=args.max_new_tokens,
                                temperature=args.temperature, api_key_env=args.api_key_env)
        teacher = EndpointTeacher(endpoint, args.seed, prompts)
    else:
        teacher = ReplayTeacher(args.teacher_file)
    reader_path = None if args.no_vrf else (args.reader_checkpoint or args.teacher_checkpoint)
    reader = None
    if reader_path:
        model, tok, _ = models.get(reader_path)
        reader = Reader(model, tok, models.settings(reader_path), prompts)
    rater: Any = None
    if args.rater_endpoint:
        rater = EndpointRater(ChatEndpoint(args.rater_endpoint, args.rater_model,
                                           max_tokens=args.rater_max_new_tokens, api_key_env=args.api_key_env))
    elif not args.no_hacf:
        path = args.rater_checkpoint or reader_path or args.teacher_checkpoint
        model, tok, _ = models.get(path)
        rater = LocalRater(model, tok, models.settings(path, max_new_tokens=args.rater_max_new_tokens,
                                                        temperature=0.0))
    thresholds = Thresholds(args.vrf_rating, args.vrf_iou, args.vrf_entropy)
    fields = tuple(f.strip() for f in args.hint_fields.split(",") if f.strip())
    return Curator(teacher, reader, rater, Path(args.out), thresholds, fields)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def write_outputs(out: Path, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """curated.jsonl, rejects.jsonl, counts.json and report.md from the rows (label order); returns the summary."""
    from zoomiqa_jax.curate.report import render_markdown, summarize

    kept = [json.dumps(r["record"]) + "\n" for r in rows if r["stage"] == "kept"]
    rejects = [json.dumps({k: r.get(k) for k in ("key", "image", "stage", "reasons", "vrf", "hacf", "teacher")})
               + "\n" for r in rows if r["stage"] != "kept"]
    summary = summarize(rows)
    _write_atomic(out / "curated.jsonl", "".join(kept))
    _write_atomic(out / "rejects.jsonl", "".join(rejects))
    _write_atomic(out / "counts.json", json.dumps(summary, indent=2) + "\n")
    _write_atomic(out / "report.md", render_markdown(rows))
    return summary


def curate_main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """`zoomiqa curate`; returns the exit status (module docstring)."""
    out, err = out or sys.stdout, err or sys.stderr
    args = build_parser().parse_args(argv)
    problems = _problems(args)
    for problem in problems:
        print(f"error: {problem}", file=err)
    if problems:
        return 2
    from tqdm.auto import tqdm

    from zoomiqa_jax.curate.pipeline import read_labels
    from zoomiqa_jax.eval.runner_store import ResumeError, open_store, predictions_file
    from zoomiqa_jax.processing.prompts import DEFAULT_PROMPTS, PromptFileError, load_prompt_file

    try:
        items = read_labels(args.labels, args.image_root)
        prompts = load_prompt_file(args.prompt_file) if args.prompt_file else DEFAULT_PROMPTS
        store = Path(args.out)
        digest, done = open_store(store, run_config(args))
    except (ValueError, OSError, PromptFileError, ResumeError) as e:
        print(f"error: {e}", file=err)
        return 2
    if args.limit is not None:
        items = items[: max(0, args.limit)]
    finished = {key: row for (dataset, key), row in done.items() if dataset == "curate"}
    todo = [item for item in items if item.id not in finished]
    if finished:
        print(f"resuming: {sum(i.id in finished for i in items)} of {len(items)} labels already curated",
              file=out)
    if todo:
        try:
            curator = build_curator(args, prompts)
        except (ValueError, OSError) as e:
            print(f"error: {e}", file=err)
            return 2
        from zoomiqa_jax.train.preemption import sigterm_raises_interrupt

        try:  # SIGINT / SIGTERM: the finished candidates stay (one flushed line each) for the resume
            with sigterm_raises_interrupt(), open(predictions_file(store), "a", encoding="utf-8") as sink, \
                    tqdm(total=len(todo), desc="curating", unit="image", disable=args.no_progress, file=err) as bar:
                for start in range(0, len(todo), args.batch_size):
                    for row in curator.run(todo[start : start + args.batch_size]):
                        row = {"config_hash": digest, "dataset": "curate", **row}
                        sink.write(json.dumps(row) + "\n")
                        sink.flush()
                        finished[row["key"]] = row
                        bar.update()
        except KeyboardInterrupt as e:
            print(f"interrupted ({e or 'SIGINT'}): {len(finished)} curated label(s) kept in {store}; the same "
                  "command resumes the rest", file=err)
            return 130
    rows = [finished[item.id] for item in items]
    summary = write_outputs(store, rows)
    c = summary["counts"]
    rejected = ", ".join(f"{stage} {n}" for stage, n in c["rejected"].items())
    print(f"curated {c['total']} labels: {c['kept']} kept; rejected: {rejected}", file=out)
    print(f"wrote {store / 'curated.jsonl'} (train: zoomiqa train sft ... data.train={store / 'curated.jsonl'}), "
          f"rejects.jsonl, counts.json, report.md", file=out)
    return 0


main = curate_main


if __name__ == "__main__":
    sys.exit(curate_main())

