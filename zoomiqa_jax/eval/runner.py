"""`zoomiqa eval`: run a checkpoint over IQA test sets and write predictions, metrics and a report.

    zoomiqa eval --checkpoint DIR --labels koniq_test.json,spaq_test.json [--out runs/eval]
    zoomiqa eval --checkpoint DIR --datasets koniq,spaq --data-dir ~/tensorflow_datasets

Outputs under --out:
    run_config.json    the config in force and its hash (the fields that change a prediction)
    environment.json   jax / flax versions, devices, the command line and the options outside the hash
    predictions.jsonl  one line per item: dataset, key, MOS, rating (null when invalid), invalid class,
                       rounds, crop, token-limit flag, the trajectory without token ids; every line carries
                       the config hash
    metrics.json       per dataset: score metrics (raw / isotonic / logistic PLCC, SRCC, KRCC, RMSE, unique-score
                       ratio), valid-format rate, invalid counts by class, crop rate, extra rounds, token-limit
                       hits; degradation accuracy for --prompt qinsight-degradation
    report.md, plots/  the papers' table layout beside their published rows; scatter and histogram per dataset

Resuming: a rerun with the same --out skips every (dataset, key) already in predictions.jsonl and runs only
the rest. If the hashed config differs from the one in run_config.json (or from a line's hash) the run
stops with an error naming both hashes and the fields that changed; use a new --out. A partial last line
(an interrupted write) is dropped. Invalid outputs are counted by class and excluded from the correlations,
never replaced by a random score.

Sharding: with several JAX processes each host runs items host_index, host_index + hosts, ... and appends
to its own predictions-IIIII-of-NNNNN.jsonl; after a barrier host 0 reads every file and writes the metrics
and the report. `--shard-index / --shard-count` do the same by hand (e.g. separate jobs); the metrics of a
run cover the lines of every shard found and say how many items are still missing. Within a host each round's
rows are split over the local devices when there are several (`runner_devices.DataParallelGenerate`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

# jax, grain, numpy and the inference stack load inside the functions that use them: `zoomiqa eval --help` stays
# fast.
from zoomiqa_jax.config import PROMPT_TASKS, PROTOCOL_CHOICES
from zoomiqa_jax.eval.runner_store import (  # noqa: F401 (ResumeError, config_hash, load_predictions: public here)
    ResumeError,
    checkpoint_fingerprint,
    config_hash,
    environment,
    load_predictions,
    open_store,
    predictions_file,
)

TASKS = PROMPT_TASKS  # --prompt name -> inference task (one table, zoomiqa_jax.config)
UNREADABLE = "unreadable_image"


@dataclasses.dataclass
class EvalSet:
    """One test set: its name, a random-access source of records, and the label records that failed to load."""

    name: str
    source: Sequence[Any]
    bad_labels: list[dict[str, Any]] = dataclasses.field(default_factory=list)


# ------------------------------------------------------------------------------------------------ test sets


def load_label_sets(files: Sequence[str], fmt: str = "auto", root: str | None = None) -> list[EvalSet]:
    """One EvalSet per label file (`data.labels` formats), named by its records' dataset (else file stem)."""
    from zoomiqa_jax.data.labels import load_labels

    sets = []
    for file in files:
        result = load_labels(file, fmt, root=root)  # type: ignore[arg-type]
        names = {r.dataset for r in result.records}
        name = names.pop() if len(names) == 1 else Path(file).stem
        sets.append(EvalSet(name, result.records, [dataclasses.asdict(b) for b in result.bad]))
    return _unique_names(sets, files)


def _unique_names(sets: list[EvalSet], sources: Sequence[str]) -> list[EvalSet]:
    """Results are keyed by set name: two sets of one name would overwrite each other, so refuse them."""
    seen: dict[str, str] = {}
    for s, src in zip(sets, sources):
        if s.name in seen:
            raise ValueError(f"{seen[s.name]} and {src} both give dataset name {s.name!r}; results would overwrite "
                             "each other (list each dataset once; label files need distinct dataset or file names)")
        seen[s.name] = src
    return sets


def load_tfds_sets(names: Sequence[str], data_dir: str | None, split: str = "test") -> list[EvalSet]:
    """Random-access sources of the built tfds datasets (`zoomiqa_jax.data.builders.load_split`), with the
    bad records of each build log."""
    try:
        from zoomiqa_jax.data.builders import load_split, read_build_log
    except ImportError as err:
        raise ValueError(f"--datasets needs the tfds builders (zoomiqa_jax.data.builders): {err}") from err
    if data_dir is None:
        raise ValueError("--datasets needs --data-dir (the folder the builders wrote to)")
    sets = []
    for name in names:
        try:
            source = load_split(data_dir, name, split)
        except (FileNotFoundError, KeyError) as err:
            raise ValueError(f"--datasets {name}: {err}") from err
        try:
            bad = list(read_build_log(data_dir, name).get("bad", []))
        except (OSError, ValueError):
            bad = []
        sets.append(EvalSet(name, source, bad))
    return _unique_names(sets, names)


# ---------------------------------------------------------------------------------------------- inference


def _prediction(traj: Any, dataset: str, key: str, index: int, meta: dict[str, Any], digest: str) -> dict[str, Any]:
    answer = traj.final_answer or {}
    return {
        "config_hash": digest, "dataset": dataset, "key": key, "index": index, "image": traj.image,
        "mos": meta["mos"], "pred": traj.rating, "invalid": traj.invalid,
        "invalid_round": traj.invalid_round, "rounds": len(traj.rounds), "zoomed": traj.zoomed,
        "hit_token_limit": traj.hit_token_limit,
        "distortion_class": meta["distortion_class"], "severity": meta["severity"],
        "pred_class": answer.get("distortion_class"), "pred_level": answer.get("severity"),
        "trajectory": traj.to_dict(tokens=False),
    }


class _View:
    """`source` at `positions`, read lazily (a tfds source is never loaded into memory)."""

    def __init__(self, source: Sequence[Any], positions: Sequence[int]) -> None:
        self.source, self.positions = source, positions

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int) -> Any:
        return self.source[self.positions[i]]


def _infer(model: Any, tokenizer: Any, items: list, task: str, settings: Any, max_turns: int, prompts: Any,
           generate_fn: Any = None, protocol: Any = None) -> list:
    from zoomiqa_jax.inference.tasks import run_task

    return run_task(model, tokenizer, items, task, settings, prompts=prompts, protocol=protocol, max_turns=max_turns,
                    generate_fn=generate_fn)


def evaluate_set(
    eval_set: EvalSet, model: Any, tokenizer: Any, *, task: str, settings: Any, max_turns: int, prompts: Any,
    done: dict[tuple[str, str], dict[str, Any]], digest: str, sink: TextIO, batch_size: int,
    limit: int | None = None, num_threads: int = 4, progress: bool = True, shard_index: int = 0,
    shard_count: int = 1, generate_fn: Any = None, progress_label: str | None = None, protocol: Any = None,
) -> tuple[list[str], int]:
    """Predict every unfinished item of `eval_set` (the first `limit`) in this shard (positions
    shard_index, shard_index + shard_count, ...), appending lines to `sink`.

    `generate_fn` replaces `engine.generate` (e.g. a `runner_devices.DataParallelGenerate`).
    `progress_label` labels the progress bar (default: the set's name). `protocol` (`inference.protocol`) reads
    and routes Zoom-IQA replies; None is `strict` with `prompts`.
    Returns (the keys of the set's items in source order, number of items run now).
    """
    from PIL import Image
    from tqdm.auto import tqdm

    from zoomiqa_jax.data.pipeline import PipelineConfig, iterate, record_key
    from zoomiqa_jax.inference.rounds import ImageItem

    n = len(eval_set.source) if limit is None else min(limit, len(eval_set.source))
    official = task == "zoomiqa" and protocol is not None and protocol.name == "official"
    keys, own = [], []
    for i in range(n):
        record = eval_set.source[i]
        keys.append(record_key(record, i))
        if official:
            # the raw conversations[0] text where the file has one (label files), else the question field (tfds)
            own.append(_text_field(record, "question_raw") or _text_field(record, "question"))
    # official: the authors' question draw runs over the whole set in order (resumed and other shards' items
    # included), and their loader reads the image file itself (no EXIF transpose, its own mode)
    questions = protocol.draw_questions(own) if official else None
    pending = [i for i in range(shard_index, n, shard_count) if (eval_set.name, keys[i]) not in done]
    view = _View(eval_set.source, pending)
    config = PipelineConfig(batch_size=batch_size, shuffle=False, shard_index=0, shard_count=1, patches=False,
                            num_threads=num_threads)
    mine = len(range(shard_index, n, shard_count))
    desc = progress_label or eval_set.name
    with tqdm(total=mine, initial=mine - len(pending), desc=desc, unit="image", disable=not progress) as bar:
        for batch in iterate(view, config):
            items, rows = [], []
            for j, local in enumerate(batch["index"]):
                index = pending[int(local)]
                meta = {"mos": float(batch["mos"][j]), "distortion_class": batch["distortion_class"][j],
                        "severity": batch["severity"][j]}
                if batch["valid"][j]:
                    image = Image.fromarray(batch["images"][j])
                    question, history = batch["question"][j], None
                    if official:
                        question, history = questions[index]
                        raw = batch["path"][j] or _encoded_image(eval_set.source[index])
                        if raw is not None:  # else (an array or a PIL image) the pipeline's RGB image
                            image = protocol.load_image(raw)
                    items.append(ImageItem(batch["path"][j] or keys[index], image, index=index, question=question,
                                           history_question=history))
                    rows.append((index, meta))
                else:
                    row = {"config_hash": digest, "dataset": eval_set.name, "key": keys[index], "index": index,
                           "mos": meta["mos"], "pred": None, "invalid": UNREADABLE,
                           "error": batch["error"][j], "rounds": 0, "zoomed": False, "hit_token_limit": False}
                    _write(sink, done, row)
            trajs = (_infer(model, tokenizer, items, task, settings, max_turns, prompts, generate_fn, protocol)
                     if items else [])
            for traj, (index, meta) in zip(trajs, rows):
                _write(sink, done, _prediction(traj, eval_set.name, keys[index], index, meta, digest))
            bar.update(len(batch["key"]))
    return keys, len(pending)


def _encoded_image(record: Any) -> bytes | None:
    """The encoded file bytes of a record's `image` (a tfds record), None when it holds something else."""
    value = record.get("image") if isinstance(record, dict) else getattr(record, "image", None)
    if hasattr(value, "ndim") and value.ndim == 0:  # a 0-d NumPy bytes / object array
        value = value.item()
    return bytes(value) if isinstance(value, (bytes, bytearray, memoryview)) else None


def _text_field(record: Any, name: str) -> str | None:
    """`record[name]` (a mapping) or `record.name`, bytes decoded; None when absent."""
    value = record.get(name) if isinstance(record, dict) else getattr(record, name, None)
    if isinstance(value, bytes):
        value = value.decode()
    return value if isinstance(value, str) else None


def _write(sink: TextIO, done: dict[tuple[str, str], dict[str, Any]], row: dict[str, Any]) -> None:
    sink.write(json.dumps(row) + "\n")
    sink.flush()
    done[(row["dataset"], row["key"])] = row


# ---------------------------------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of `zoomiqa eval`."""
    p = argparse.ArgumentParser(prog="zoomiqa eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, metavar="DIR", help="HF directory or orbax checkpoint")
    p.add_argument("--tokenizer", metavar="DIR", help="tokenizer directory (default: the checkpoint's own)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--labels", metavar="FILE[,FILE]",
                     help="label files (DeQA-Score metas, VisualQuality-R1 JSONL, Zoom-IQA eval JSON, plain JSONL)")
    src.add_argument("--datasets", metavar="NAMES", help="comma-separated tfds datasets built by zoomiqa_jax.data")
    p.add_argument("--data-dir", metavar="D", help="tfds data directory for --datasets")
    p.add_argument("--split", default="test", help="tfds split for --datasets (default test)")
    p.add_argument("--label-format", default="auto", choices=("auto", "deqa", "vqr1", "zoomiqa", "plain"),
                   help="format of --labels files (default: detected from the first record)")
    p.add_argument("--image-root", metavar="DIR", help="root for relative image paths (default: the file's folder)")
    p.add_argument("--out", default="runs/eval", help="output folder; rerunning into it resumes (default runs/eval)")
    p.add_argument("--prompt", choices=sorted(TASKS), default="zoomiqa",
                   help="zoomiqa (crop-and-zoom reasoning, default), qinsight (score), qinsight-degradation "
                   "(distortion class and level: degradation accuracy), vqr1 (VisualQuality-R1 score)")
    p.add_argument("--max-turns", type=int, choices=(1, 2), default=2, help="rounds per image for zoomiqa (default 2)")
    p.add_argument("--prompt-file", metavar="FILE", help="YAML/JSON file replacing prompt texts by name")
    p.add_argument("--protocol", choices=PROTOCOL_CHOICES, default="official",
                   help="how Zoom-IQA replies are prompted, read, routed and cropped: official (the authors' "
                   "released evaluation, default) or strict (the project's own reading); docs/inference.md")
    p.add_argument("--limit", type=int, metavar="N", help="evaluate only the first N items of each dataset")
    p.add_argument("--batch-size", type=int, default=8, help="images per sampler call (default 8)")
    p.add_argument("--num-threads", type=int, default=4, help="image decoding threads (default 4)")
    p.add_argument("--max-new-tokens", type=int, default=1024, help="new tokens per round (default 1024)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature; 0 is greedy (default 1.0)")
    p.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling mass (default 0.95)")
    p.add_argument("--top-k", type=int, default=50, help="keep the k most likely tokens; 0 disables (default 50)")
    p.add_argument("--seed", type=int, default=0, help="sampling and question-paraphrase seed (default 0)")
    p.add_argument("--dtype", choices=("bfloat16", "float32", "float16"), default="bfloat16",
                   help="compute dtype (default bfloat16)")
    p.add_argument("--min-pixels", type=int, help="smallest image area given to the model (default: checkpoint's)")
    p.add_argument("--max-pixels", type=int, help="largest image area given to the model (default: checkpoint's)")
    p.add_argument("--shard-index", type=int, default=0,
                   help="with --shard-count: run only items shard-index, shard-index + count, ... and write "
                   "predictions-IIIII-of-NNNNN.jsonl; metrics cover every shard's lines found (default: one shard "
                   "per JAX process)")
    p.add_argument("--shard-count", type=int, help="number of shards (default: the JAX process count)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return p


def eval_main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None, *,
              progress_label: str | None = None) -> int:
    """`zoomiqa eval`. Exit status 0 on success, 2 for a bad flag, a missing path, checkpoint, data source or a
    config clash, 130 when interrupted (SIGINT / SIGTERM; the predictions made so far are kept for the resume).
    `progress_label` labels the progress bars (default: each dataset's name; with several datasets the name
    follows the label)."""
    from zoomiqa_jax.score import missing_paths, report_missing, setup_or_report

    out, err = out or sys.stdout, err or sys.stderr
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.batch_size < 1 or (args.limit is not None and args.limit < 1):
        print("error: --batch-size and --limit must be >= 1", file=err)
        return 2
    labels = args.labels.split(",") if args.labels else []
    if report_missing(missing_paths(args, labels + [d for d in (args.image_root, args.data_dir) if d]), err):
        return 2
    try:
        if args.labels:
            sets = load_label_sets(labels, args.label_format, args.image_root)
        else:
            sets = load_tfds_sets([s.strip() for s in args.datasets.split(",")], args.data_dir, args.split)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=err)
        return 2
    setup = setup_or_report(args, err)
    if setup is None:
        return 2
    model, tokenizer, settings, prompts = setup.model, setup.tokenizer, setup.settings, setup.prompts
    task = TASKS[args.prompt]
    sampling = {k: v for k, v in dataclasses.asdict(settings).items() if k != "buckets"}
    config = {"checkpoint": checkpoint_fingerprint(args.checkpoint, exclude=args.out), "tokenizer": args.tokenizer,
              "task": task,
              "max_turns": args.max_turns if task == "zoomiqa" else 1, "dtype": args.dtype, "sampling": sampling,
              "prompts": config_hash(dataclasses.asdict(prompts))}
    from zoomiqa_jax.inference.protocol import Protocol

    protocol = None
    if task == "zoomiqa":  # the protocol changes what a Zoom-IQA run predicts (other tasks keep their hash)
        config["protocol"] = args.protocol
        protocol = Protocol(args.protocol, prompts)
    import jax

    from zoomiqa_jax.eval.report import set_metrics, write_report
    from zoomiqa_jax.eval.runner_devices import data_parallel_generate

    shard_index, shard_count = args.shard_index, args.shard_count
    if shard_count is None:
        shard_index, shard_count = jax.process_index(), jax.process_count()
    if not 0 <= shard_index < shard_count:
        print(f"error: --shard-index must lie in [0, {shard_count}), found {shard_index}", file=err)
        return 2
    out_dir = Path(args.out)
    own = predictions_file(out_dir, shard_index, shard_count)
    try:
        digest, done = open_store(out_dir, config, own)
    except ResumeError as e:
        print(f"error: {e}", file=err)
        return 2
    generate_fn = data_parallel_generate(model)
    extra = {"data_parallel_devices": jax.local_device_count(), "batch_size": args.batch_size, "limit": args.limit,
             "num_threads": args.num_threads,
             "sources": args.labels or args.datasets, "shard": [shard_index, shard_count]}
    if shard_index == 0:
        (out_dir / "environment.json").write_text(json.dumps(environment(argv, extra), indent=2) + "\n")
    ran: dict[str, int] = {}
    keys: dict[str, list[str]] = {}
    from zoomiqa_jax.train.preemption import sigterm_raises_interrupt

    try:  # SIGINT / SIGTERM: the finished predictions stay (one flushed line each), no metrics or report yet
        with sigterm_raises_interrupt(), open(own, "a", encoding="utf-8") as sink:
            for s in sets:
                keys[s.name], ran[s.name] = evaluate_set(
                    s, model, tokenizer, task=task, settings=settings, max_turns=args.max_turns, prompts=prompts,
                    done=done, digest=digest, sink=sink, batch_size=args.batch_size, limit=args.limit,
                    num_threads=args.num_threads, progress=not args.no_progress, shard_index=shard_index,
                    shard_count=shard_count, generate_fn=generate_fn, protocol=protocol,
                    progress_label=None if progress_label is None else (
                        progress_label if len(sets) == 1 else f"{progress_label} {s.name}"))
    except KeyboardInterrupt as e:
        print(f"interrupted ({e or 'SIGINT'}): {len(done)} finished prediction(s) kept in {out_dir}; the same "
              "command resumes the rest", file=err)
        return 130
    if jax.process_count() > 1:  # every host has written its shard; host 0 writes metrics and report
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("zoomiqa-eval-predictions")
        if jax.process_index() != 0:
            return 0
    done = load_predictions(out_dir, digest)  # every shard's lines, this run's included
    metrics: dict[str, Any] = {}
    predictions: dict[str, list[dict[str, Any]]] = {}
    for s in sets:
        rows = [done[(s.name, k)] for k in keys[s.name] if (s.name, k) in done]
        metrics[s.name] = {**set_metrics(rows, task, len(s.bad_labels)), "n_missing": len(keys[s.name]) - len(rows),
                           "n_run_now": ran[s.name], "bad_labels": s.bad_labels}
        predictions[s.name] = rows
    summary = {"config_hash": digest, "task": task, "datasets": metrics}
    (out_dir / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    write_report(out_dir, summary, predictions, config)
    for name, m in metrics.items():
        valid = "n/a" if m["valid_rate"] is None else f"{m['valid_rate']:.1%}"
        if "degradation" in m:
            d = m["degradation"]
            result = f"class acc. {d['mean_class_acc']}, level acc. {d['mean_level_acc']}"
        else:
            result = f"PLCC {m['scores']['plcc']}, SRCC {m['scores']['srcc']}"
        print(f"{name}: {m['n']} items ({m['n_run_now']} run now), valid {valid}, {result}", file=out)
    print(f"report: {out_dir / 'report.md'}", file=out)
    return 0


main = eval_main
