"""Bad training data: skipped, counted by category, listed with file:line, and fatal only past a share.

Both training loops read their data through here (SFT: `train.sft_data.load_checked_sft`; GRPO:
`train.grpo_loop.load_datasets`). A record is bad when

    missing_image     its image file does not exist
    unreadable_image  the file exists but PIL cannot decode it (truncated, not an image), or its aspect ratio is
                      past the processor's limit (the category `zoomiqa eval` gives the same image)
    bad_label         the score is not a finite number in the scale [1, 5] (eval's "bad_labels")
    bad_record        anything else about the line: invalid JSON, a missing or malformed field

Bad records are dropped before the data stream is built, so the stream stays a pure function of the position
(bit-identical resume, every host the same batches). The run's log names each one ("file:line: category:
reason", the first `LOG_LIMIT`), and one line of `<out_dir>/metrics.jsonl` holds them all:

    {"step": 0, "event": "bad_data", "source": ..., "n_records": N, "n_bad": k, "bad_fraction": k / N,
     "by_category": {"missing_image": 1, ...}, "max_bad_fraction": x, "bad": [{"where", "category", "reason"}]}

The run stops (`BadDataError`, exit status 2 from `zoomiqa train`) when k / N > `data.max_bad_fraction`.

Images are decoded once, at load time, on a thread pool (PIL releases the GIL while decoding), so a truncated
JPEG is found before step 0, not at step 500. Measured: a 1024x768 JPEG takes 16 ms (an idle core) to 28 ms (the
2-core dev machine under load, where the second thread gained nothing) to load, so 10k images cost 3-5 minutes
on one core, less with free cores; SFT's length grouping already builds every example once at start-up, which
costs more. The verdicts are cached in `<out_dir>/image_check.json` by (path, size, mtime), so a resumed run
re-decodes only files that changed. A file that turns unreadable after
the check (changed during the run) stops the run with the loader's error naming the file, rather than being
skipped on the fly: skipping late would change the batches of the hosts that see the failure but not of the
others, and break the deterministic stream; the checkpoints so far stay valid, so fix the file and resume.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

MISSING_IMAGE = "missing_image"
UNREADABLE_IMAGE = "unreadable_image"  # the name zoomiqa_jax.eval.runner.UNREADABLE gives it
BAD_LABEL = "bad_label"
BAD_RECORD = "bad_record"
CATEGORIES = (MISSING_IMAGE, UNREADABLE_IMAGE, BAD_LABEL, BAD_RECORD)
MAX_BAD_KEY = "data.max_bad_fraction"
LOG_LIMIT = 20  # bad records named in the log (all of them go to metrics.jsonl)
CACHE_NAME = "image_check.json"


class BadDataError(ValueError):
    """More of the training data is bad than `data.max_bad_fraction` allows (or none is usable)."""


@dataclasses.dataclass(frozen=True)
class BadItem:
    """One skipped record: where ("file:line", "file[index]" or the record id), its category, why."""

    where: str
    category: str
    reason: str


@dataclasses.dataclass
class BadRecords:
    """The bad records of one training set (`source` names its files) out of `n_records` read."""

    source: str
    n_records: int = 0
    items: list[BadItem] = dataclasses.field(default_factory=list)

    def add(self, where: str, category: str, reason: str) -> None:
        if category not in CATEGORIES:
            raise ValueError(f"bad-record category {category!r}: expected one of {CATEGORIES}")
        self.items.append(BadItem(where, category, reason))

    def sort(self) -> None:
        """Order the items by file, then line (or index), as a reader looks them up."""
        def key(item: BadItem) -> tuple[str, int, str]:
            for sep, end in ((":", ""), ("[", "]")):
                head, _, tail = item.where.rpartition(sep)
                number = tail.removesuffix(end) if end else tail
                if head and number.isdigit():
                    return head, int(number), item.where
            return item.where, -1, item.where

        self.items.sort(key=key)

    @property
    def n_bad(self) -> int:
        return len(self.items)

    @property
    def fraction(self) -> float:
        return self.n_bad / self.n_records if self.n_records else 0.0

    def counts(self) -> dict[str, int]:
        """{category: count} for the categories that occur, in CATEGORIES order."""
        seen = Counter(item.category for item in self.items)
        return {c: seen[c] for c in CATEGORIES if seen[c]}

    def summary(self) -> str:
        counts = ", ".join(f"{c} {n}" for c, n in self.counts().items())
        return f"{self.n_bad} of {self.n_records} records bad ({self.fraction:.1%}: {counts})"

    def log_lines(self, limit: int = LOG_LIMIT) -> list[str]:
        """The log's report: a summary line, then "file:line: category: reason" for the first `limit`."""
        if not self.items:
            return []
        lines = [f"{self.source}: {self.summary()} skipped:"]
        lines += [f"  {item.where}: {item.category}: {item.reason}" for item in self.items[:limit]]
        if self.n_bad > limit:
            lines.append(f"  ... and {self.n_bad - limit} more (all listed in metrics.jsonl, event bad_data)")
        return lines

    def to_dict(self, max_bad_fraction: float | None = None) -> dict[str, Any]:
        """The metrics.jsonl event (module docstring), without "step" / "event"."""
        out: dict[str, Any] = {"source": self.source, "n_records": self.n_records, "n_bad": self.n_bad,
                               "bad_fraction": self.fraction, "by_category": self.counts()}
        if max_bad_fraction is not None:
            out["max_bad_fraction"] = max_bad_fraction
        out["bad"] = [dataclasses.asdict(item) for item in self.items]
        return out

    def check(self, max_bad_fraction: float, key: str = MAX_BAD_KEY) -> None:
        """Raise BadDataError when the bad share exceeds `max_bad_fraction` or no record is left."""
        example = f"e.g. {self.items[0].where}: {self.items[0].category}: {self.items[0].reason}" if self.items else ""
        if self.fraction > max_bad_fraction:
            raise BadDataError(
                f"{self.source}: {self.n_bad} of {self.n_records} records are bad ({self.fraction:.1%}), more "
                f"than {key} = {max_bad_fraction} allows ({', '.join(f'{c} {n}' for c, n in self.counts().items())}"
                f"; {example}); fix or drop them, or raise {key}")
        if self.n_records - self.n_bad <= 0:
            raise BadDataError(f"{self.source}: no usable records ({self.n_bad} of {self.n_records} bad; {example})")

    def report(self, log: Callable[[str], None], out_dir: str | Path | None = None,
               max_bad_fraction: float | None = None) -> None:
        """Name the bad records in the log and, when there are any, append the bad_data event to
        `<out_dir>/metrics.jsonl` (process 0 only, as every metrics line)."""
        if not self.items:
            return
        for line in self.log_lines():
            log(line)
        if out_dir is not None:
            from zoomiqa_jax.train.metrics_log import MetricsLogger

            with MetricsLogger(out_dir, tensorboard=False) as logger:
                logger.event(0, "bad_data", self.to_dict(max_bad_fraction))

    def finish(self, log: Callable[[str], None], out_dir: str | Path | None, max_bad_fraction: float) -> None:
        """`report`, then `check`: what a training loop does once its data is loaded."""
        self.report(log, out_dir, max_bad_fraction)
        self.check(max_bad_fraction)


# ------------------------------------------------------------------------------------------ images
def image_problem(path: str | Path) -> tuple[str, str] | None:
    """(category, reason) when the image file at `path` is missing or cannot be decoded and processed the way
    training loads it (`processing.image.load_image`, then the processor's size rules), else None."""
    from zoomiqa_jax.processing.image import ImageLoadError, load_image, smart_resize

    name = os.fspath(path)
    if not os.path.isfile(name):
        return MISSING_IMAGE, f"image file {name!r} does not exist"
    try:
        image = load_image(name)
    except (ImageLoadError, ValueError, OSError) as err:
        return UNREADABLE_IMAGE, str(err)
    try:
        smart_resize(image.height, image.width)  # the aspect-ratio limit (ValueError past 200:1)
    except ValueError as err:
        return UNREADABLE_IMAGE, f"image file {name!r} ({image.width}x{image.height}): {err}"
    return None


def _stamp(path: str) -> str | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return f"{st.st_size}:{st.st_mtime_ns}"


def check_images(paths: Iterable[str | Path], *, cache_dir: str | Path | None = None, threads: int | None = None,
                 log: Callable[[str], None] | None = None) -> dict[str, tuple[str, str] | None]:
    """`image_problem` of every distinct path, decoded on `threads` threads (default: the CPU count, at most
    16). With `cache_dir`, verdicts of unchanged files (same size and mtime) come from `cache_dir/CACHE_NAME`
    and the new ones are written back (process 0 only)."""
    unique = sorted({os.fspath(p) for p in paths})
    cache_file = Path(cache_dir) / CACHE_NAME if cache_dir is not None else None
    cached: dict[str, Any] = {}
    if cache_file is not None and cache_file.is_file():
        try:
            cached = json.loads(cache_file.read_text())
        except (OSError, ValueError):
            cached = {}
    stamps = {p: _stamp(p) for p in unique}
    verdicts: dict[str, tuple[str, str] | None] = {}
    todo = []
    for p in unique:
        hit = cached.get(p)
        if stamps[p] is not None and isinstance(hit, dict) and hit.get("stamp") == stamps[p]:
            verdicts[p] = tuple(hit["problem"]) if hit.get("problem") else None  # type: ignore[assignment]
        else:
            todo.append(p)
    t0 = time.perf_counter()
    workers = threads or min(16, os.cpu_count() or 1)
    if todo:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            verdicts.update(zip(todo, pool.map(image_problem, todo)))
    if log is not None and todo:
        log(f"checked {len(todo)} image(s) by decoding ({len(unique) - len(todo)} unchanged since the last check) "
            f"in {time.perf_counter() - t0:.1f} s on {workers} thread(s)")
    if cache_file is not None and todo and _is_main_process():
        entries = {p: {"stamp": stamps[p], "problem": list(v) if v else None} for p, v in verdicts.items()
                   if stamps[p] is not None}
        tmp = cache_file.with_name(cache_file.name + ".tmp")
        tmp.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps({**cached, **entries}))
        tmp.replace(cache_file)
    return verdicts


def _is_main_process() -> bool:
    import jax

    return jax.process_index() == 0


def drop_bad_images(records: Sequence[Any], image_of: Callable[[Any], str | Path], where_of: Callable[[Any], str],
                    bad: BadRecords, **check_kwargs: Any) -> list[Any]:
    """The records whose image passes `check_images`; the others are added to `bad` under their `where_of`."""
    verdicts = check_images((image_of(r) for r in records), **check_kwargs)
    kept = []
    for record in records:
        problem = verdicts[os.fspath(image_of(record))]
        if problem is None:
            kept.append(record)
        else:
            bad.add(where_of(record), *problem)
    return kept


def load_checked_labels(
    paths: Sequence[str | Path], fmt: str = "auto", *, root: str | Path | None = None,
    valid_range: tuple[float, float] | None = (1.0, 5.0), cache_dir: str | Path | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[list[Any], BadRecords]:
    """The usable `data.labels.LabelRecord`s of the label files `paths` (scores in `valid_range`, every image
    present and decoded once) and the report of the others, located by file:line or file[index]."""
    from zoomiqa_jax.data.labels import load_labels

    bad = BadRecords(", ".join(str(p) for p in paths))
    records: list[Any] = []
    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        raise BadDataError(f"grpo.datasets: label file(s) {missing} do not exist")
    for path in paths:
        result = load_labels(path, fmt, root=root, valid_range=valid_range, check_files=True)  # type: ignore[arg-type]
        bad.n_records += len(result.records) + len(result.bad)
        for b in result.bad:
            bad.add(b.source, b.category, b.reason)
        records += result.records
    kept = drop_bad_images(records, lambda r: r.image, lambda r: r.source, bad, cache_dir=cache_dir, log=log)
    bad.sort()
    return kept, bad
