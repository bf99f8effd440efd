"""Synthetic Zoom-IQA SFT trajectories for the demo: templated reasoning about a KNOWN applied distortion.

Input: degradation labels (`data.degrade.generate_degradation_set`'s labels.jsonl: image, distortion_class,
severity, mos). Output: the trajectory JSONL of `train.sft_data` (format in docs/sft_data.md), one line per
image. Per image, deterministically from (seed, image name):

* the question: one of the prompt paraphrases (`processing.prompts.choose_question`), written into the record;
* the rating, tied to severity: `min(5 - 0.8 k, 4.9) + h / 100` with h uniform in 0..9, k = 0 for "null" and
  1..5 for slight..catastrophic (4.9x, 4.2x, 3.4x, 2.6x, 1.8x, 1.0x): the severity fixes the rating to its
  tenth and only the hundredths vary, so ratings are strictly decreasing in k (`severity_rating` says why);
* stage 1: four sections (Image Quality Summary; Directions for Improvement; Issues to Avoid; Decision &
  Rationale) naming the distortion and its severity, and `{"bbox_2d": [0, 0, 0, 0], "rating": r, "tool":
  "final"}`;
* for `round(crop_fraction * n)` images (a seeded choice) instead a crop trajectory: stage 1 asks for a crop
  of a normalized box (sides 0.45..0.8 of the image, two decimals) with a provisional rating pulled towards 3,
  stage 2 (Crop Inspection Summary; ...; Final Decision & Rationale) confirms the distortion and gives the
  final rating r with tool "final".

Labels with a `scope` (`generate_degradation_set(local_fraction=...)`, the demo's zooming data) decide the crop
themselves instead of the seeded fraction: a trajectory crops exactly when the flaw is local and its patch side is
at most CROP_MAX_SIDE, and the crop box is the patch widened by CROP_PAD on each side (clipped to the image), so
it covers the flaw. Stage 1 then says a patch looks damaged but its severity is unclear at full view and gives
the provisional rating; stage 2 names the severity and gives the right one. A local flaw with a larger patch,
a global flaw and a clean image get one final round that names what they see.

Every text is checked with `processing.answers.check_zoomiqa_format`; a failure is a bug and raises.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoomiqa_jax.data.degrade import LEVELS, NULL, generate_degradation_set
from zoomiqa_jax.data.synthetic import write_scenes
from zoomiqa_jax.processing.answers import STAGE1_SECTIONS, STAGE2_SECTIONS, zoomiqa_format_problems
from zoomiqa_jax.processing.prompts import DEFAULT_PROMPTS, PromptSet, choose_question

HUNDREDTHS = 10  # the hundredths digit of a rating is drawn uniformly from 0..HUNDREDTHS-1
# The distortion of the CPU demo (`zoomiqa demo`, `train.sft_loop` synthetic data): darkening at five severities, the
# one a few-MB model trained from scratch learns to grade within minutes on a CPU (in our runs it did not learn to
# see noise within the budget: its vision tower normalizes each token, which hides noise energy). Real data has
# every kind.
DEMO_KINDS = ("darken",)
# Per distortion class: (what it is, what it damages, what the ideal looks like).
_DESCRIBE = {
    "noise": ("noise grain", "smooth gradients and flat colour fields", "clean, grain-free flat areas"),
    "blur": ("blur", "edges, stripes and fine texture", "crisp edges and resolvable fine stripes"),
    "compression": ("JPEG compression blocking and ringing", "gradients and outlines",
                    "smooth gradients without 8x8 blocks and clean outlines"),
    "darken": ("darkening underexposure", "shadow detail and colour contrast", "balanced exposure with open shadows"),
}
CROP_MAX_SIDE = 0.5  # a local flaw whose patch side (fraction of the image side) is at most this gets a crop turn
CROP_PAD = 0.05  # the crop box is the flaw patch widened by this much (normalized) on each side
_REGIONS = ("the striped patch", "the filled shapes", "the gradient background", "the shape outlines")


def severity_level(severity: str | None) -> int:
    """0 for "null" (undistorted), 1..5 for slight..catastrophic."""
    if severity in (None, NULL):
        return 0
    if severity not in LEVELS:
        raise ValueError(f"unknown severity {severity!r}; expected 'null' or one of {LEVELS}")
    return LEVELS.index(severity) + 1


def severity_rating(level: int, rng: random.Random) -> float:
    """The final rating for severity level k (0 = undistorted): `min(5 - 0.8 k, 4.9)` plus a random hundredth.

    The severity alone fixes every digit but the last (4.9x, 4.2x, 3.4x, 2.6x, 1.8x, 1.0x), so a model that writes
    the rating one character at a time can learn each digit from what it sees. docs/sft_data.md says why the
    earlier jittered-and-clipped rating was replaced."""
    return round(min(5.0 - 0.8 * level, 4.9) + rng.randrange(HUNDREDTHS) / 100, 2)


def _position(box: Sequence[float]) -> str:
    """A region name from the box centre: "upper-left", "central", "lower-right", ..."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    row = "upper" if cy < 0.4 else "lower" if cy > 0.6 else "middle"
    col = "left" if cx < 0.4 else "right" if cx > 0.6 else "centre"
    return "central" if (row, col) == ("middle", "centre") else f"{row}-{col}"


def _answer(box: Sequence[float], rating: float, tool: str) -> str:
    coords = ", ".join(f"{v:g}" for v in box)
    return f'<answer>{{"bbox_2d": [{coords}], "rating": {rating:.2f}, "tool": "{tool}"}}</answer>'


def _flaw(kind: str, severity: str) -> str:
    return "no visible distortion" if kind == NULL else f"{severity} {_DESCRIBE[kind][0]}"


def stage1_text(kind: str, severity: str, rating: float, rng: random.Random, box: Sequence[float] | None) -> str:
    """The stage-1 reply: a crop request of `box` when given, else a final answer."""
    region, other = rng.sample(_REGIONS, 2)
    if kind == NULL:
        summary = "The image shows no visible distortion: edges are sharp, flat areas are clean, exposure is even."
        improve = f"An ideal version keeps {region} as crisp and {other} as clean as they are now."
        issues = f"No noise, blur, compression or darkening is visible; {region} has no artifacts to avoid."
    else:
        what, damages, ideal = _DESCRIBE[kind]
        summary = f"The image suffers from {severity} {what}, which degrades {damages}."
        improve = f"An ideal version would show {ideal} in {region} and in {other}."
        issues = f"The {severity} {what} damages {region}; avoid the loss of {damages} seen there."
    if box is None:
        decision = f"The full view clearly shows {_flaw(kind, severity)}, so I rate it {rating:.2f} and need no crop."
        return _reply(STAGE1_SECTIONS, (summary, improve, issues, decision), _answer([0, 0, 0, 0], rating, "final"))
    decision = (f"My initial rating is {rating:.2f}, but the full view leaves the extent of the damage uncertain; "
                f"I crop the {_position(box)} region to check {region} up close.")
    return _reply(STAGE1_SECTIONS, (summary, improve, issues, decision), _answer(box, rating, "crop"))


def stage2_text(kind: str, severity: str, initial: float, rating: float, rng: random.Random) -> str:
    """The stage-2 reply after a crop: confirms the distortion and its severity, final answer `rating`."""
    detail = rng.choice(("the finest stripes", "the shape edges", "the flat colour fields"))
    if kind == NULL:
        summary = f"The crop confirms that {detail} are clean and sharp: the image has no visible distortion."
        improve = f"An ideal version keeps {detail} exactly as crisp and clean as the crop shows."
        issues = f"The crop shows no noise, blur, blocking or darkening in {detail}."
    else:
        what, damages, ideal = _DESCRIBE[kind]
        summary = f"The crop confirms {severity} {what} in {detail}."
        improve = f"An ideal version would show {ideal}, with {detail} cleanly resolved."
        issues = f"Up close, the {severity} {what} visibly damages {detail} and the {damages}."
    move = "raises" if rating > initial else "lowers" if rating < initial else "confirms"
    decision = (f"My initial rating was {initial:.2f}; I cropped to settle the severity. The crop shows "
                f"{_flaw(kind, severity)}, which {move} the rating to {rating:.2f}.")
    return _reply(STAGE2_SECTIONS, (summary, improve, issues, decision), _answer([0, 0, 0, 0], rating, "final"))


def flaw_crop_box(label: dict[str, Any]) -> list[float] | None:
    """The crop box a trajectory for `label` asks for (module docstring), or None when it answers at once."""
    box = label.get("flaw_box")
    if label.get("scope") != "local" or box is None:
        return None
    x1, y1, x2, y2 = (float(v) for v in box)
    if max(x2 - x1, y2 - y1) > CROP_MAX_SIDE + 1e-9:
        return None
    return [round(max(0.0, x1 - CROP_PAD), 2), round(max(0.0, y1 - CROP_PAD), 2),
            round(min(1.0, x2 + CROP_PAD), 2), round(min(1.0, y2 + CROP_PAD), 2)]


def _local_flaw(kind: str, severity: str | None, patch: Sequence[float]) -> str:
    """"serious darkening in a patch at the upper-left"; without `severity`, "darkening of unclear severity"."""
    what = _DESCRIBE[kind][0].split()[0]
    where = f"in a patch at the {_position(patch)}"
    return f"{severity} {what} {where}" if severity else f"{what} of unclear severity {where}"


def compact_local_stage1_text(kind: str, severity: str, rating: float, rng: random.Random,
                              box: Sequence[float] | None, patch: Sequence[float]) -> str:
    """Stage 1 for a local flaw (compact style): a crop request of `box` with the provisional `rating` when
    given, else a final answer naming the flaw's severity."""
    if box is None:
        flaw = _local_flaw(kind, severity, patch)
        bodies = (f"{flaw}.", "the rest is clean.", f"{flaw}.", f"{flaw}, rating {rating:.2f}, no crop needed.")
        return _reply(STAGE1_SECTIONS, bodies, _answer([0, 0, 0, 0], rating, "final"))
    flaw = _local_flaw(kind, None, patch)
    bodies = (f"{flaw}.", "the rest is clean.", f"{flaw}.",
              f"unclear at this scale, rating {rating:.2f}, crop the {_position(box)} region.")
    return _reply(STAGE1_SECTIONS, bodies, _answer(box, rating, "crop"))


def compact_stage1_text(kind: str, severity: str, rating: float, rng: random.Random,
                        box: Sequence[float] | None) -> str:
    """`stage1_text` in the compact style: the same four sections, one short clause each."""
    region = rng.choice(_REGIONS)
    flaw = _flaw(kind, severity)
    ideal = "as it is" if kind == NULL else _DESCRIBE[kind][2].split(" and ")[0]
    decide = f"{flaw}, rating {rating:.2f}, " + ("no crop needed." if box is None else
                                                f"crop the {_position(box)} region.")
    bodies = (f"{flaw}.", f"{ideal}.", f"{flaw} in {region}." if kind != NULL else "nothing to avoid.", decide)
    answer = _answer([0, 0, 0, 0] if box is None else box, rating, "final" if box is None else "crop")
    return _reply(STAGE1_SECTIONS, bodies, answer)


def compact_stage2_text(kind: str, severity: str, initial: float, rating: float, rng: random.Random) -> str:
    """`stage2_text` in the compact style."""
    detail = rng.choice(("the finest stripes", "the shape edges", "the flat colour fields"))
    flaw = _flaw(kind, severity)
    ideal = "as it is" if kind == NULL else _DESCRIBE[kind][2].split(" and ")[0]
    bodies = (f"the crop shows {flaw}.", f"{ideal}.", f"{flaw} in {detail}." if kind != NULL else "nothing to avoid.",
              f"{flaw}, from {initial:.2f} to {rating:.2f}.")
    return _reply(STAGE2_SECTIONS, bodies, _answer([0, 0, 0, 0], rating, "final"))


STYLES = {"full": (stage1_text, stage2_text), "compact": (compact_stage1_text, compact_stage2_text)}


def _reply(labels: Sequence[str], bodies: Sequence[str], answer: str) -> str:
    sections = "\n".join(f"{i}) {label}: {body}" for i, (label, body) in enumerate(zip(labels, bodies), start=1))
    return f"<think>\n{sections}\n</think>\n{answer}"


def random_box(rng: random.Random) -> list[float]:
    """A normalized box with sides 0.45..0.8 of the image, two decimals, inside [0, 1]."""
    w, h = round(rng.uniform(0.45, 0.8), 2), round(rng.uniform(0.45, 0.8), 2)
    x1, y1 = round(rng.uniform(0, 1 - w), 2), round(rng.uniform(0, 1 - h), 2)
    return [x1, y1, round(x1 + w, 2), round(y1 + h, 2)]


def make_trajectory(label: dict[str, Any], image: str, seed: int, crop: bool,
                    prompts: PromptSet = DEFAULT_PROMPTS, style: str = "full") -> dict[str, Any]:
    """One trajectory record (a JSON-ready dict) for a degradation label; `image` is the path to write.
    `style` "compact" writes one short clause per section (the CPU demo: ~4x fewer tokens to learn). A label
    with a `scope` decides the crop itself (`flaw_crop_box`) and `crop` is ignored; the local-flaw texts exist
    in the compact style only."""
    if "scope" in label:
        return _flaw_trajectory(label, image, seed, prompts, style)
    if style not in STYLES:
        raise ValueError(f"style: expected one of {sorted(STYLES)}, found {style!r}")
    first, second = STYLES[style]
    kind = label.get("distortion_class", NULL)
    severity = label.get("severity", NULL)
    if kind != NULL and kind not in _DESCRIBE:
        raise ValueError(f"label {label.get('image')!r}: unknown distortion_class {kind!r}")
    level = severity_level(severity if kind != NULL else NULL)
    rng = random.Random(f"{seed}/{label['image']}")
    rating = severity_rating(level, rng)
    question = choose_question(rng, None, prompts)
    if crop:
        box = random_box(rng)
        initial = round(min(5.0, max(1.0, rating + (3.0 - rating) * rng.uniform(0.2, 0.5))), 2)
        texts = [first(kind, severity, initial, rng, box), second(kind, severity, initial, rating, rng)]
        turns = [{"text": texts[0], "bbox": box}, {"text": texts[1]}]
    else:
        texts = [first(kind, severity, rating, rng, None)]
        turns = [{"text": texts[0]}]
    problems = zoomiqa_format_problems(texts)
    if problems:
        raise AssertionError(f"generated trajectory for {label['image']!r} fails the format: {problems}")
    mos = label.get("mos")
    return {"id": Path(label["image"]).stem, "image": image, "mos": rating if mos is None else float(mos),
            "question": question, "turns": turns,
            "meta": {"distortion_class": kind, "severity": severity, "rating": rating}}


def _flaw_trajectory(label: dict[str, Any], image: str, seed: int, prompts: PromptSet,
                     style: str) -> dict[str, Any]:
    """`make_trajectory` for a label with `scope` and `flaw_box` (module docstring)."""
    scope = label["scope"]
    if scope not in ("local", "global", "none"):
        raise ValueError(f"label {label.get('image')!r}: scope must be 'local', 'global' or 'none', found {scope!r}")
    if scope != "local":
        record = make_trajectory({k: v for k, v in label.items() if k not in ("scope", "flaw_box")}, image, seed,
                                 False, prompts, style)
        return record | {"meta": record["meta"] | _flaw_meta(label)}
    if style != "compact":
        raise ValueError(f"label {label.get('image')!r}: local-flaw trajectories exist in the compact style only")
    kind, severity = label.get("distortion_class", NULL), label.get("severity", NULL)
    if kind not in _DESCRIBE:
        raise ValueError(f"label {label.get('image')!r}: a local flaw needs a distortion_class of "
                         f"{sorted(_DESCRIBE)}, found {kind!r}")
    rng = random.Random(f"{seed}/{label['image']}")
    rating = severity_rating(severity_level(severity), rng)
    question = choose_question(rng, None, prompts)
    patch = [float(v) for v in label["flaw_box"]]
    box = flaw_crop_box(label)
    if box is None:
        texts = [compact_local_stage1_text(kind, severity, rating, rng, None, patch)]
        turns: list[dict[str, Any]] = [{"text": texts[0]}]
    else:
        initial = round(min(5.0, max(1.0, rating + (3.0 - rating) * rng.uniform(0.2, 0.5))), 2)
        texts = [compact_local_stage1_text(kind, severity, initial, rng, box, patch),
                 compact_stage2_text(kind, severity, initial, rating, rng)]
        turns = [{"text": texts[0], "bbox": box}, {"text": texts[1]}]
    problems = zoomiqa_format_problems(texts)
    if problems:
        raise AssertionError(f"generated trajectory for {label['image']!r} fails the format: {problems}")
    mos = label.get("mos")
    return {"id": Path(label["image"]).stem, "image": image, "mos": rating if mos is None else float(mos),
            "question": question, "turns": turns,
            "meta": {"distortion_class": kind, "severity": severity, "rating": rating, **_flaw_meta(label)}}


def _flaw_meta(label: dict[str, Any]) -> dict[str, Any]:
    return {"scope": label["scope"], "flaw_box": label.get("flaw_box")}


@dataclass(frozen=True)
class TrajectoryReport:
    """What `write_trajectories` wrote."""

    path: str
    n_records: int
    n_crop: int
    seed: int


def read_labels(labels_path: str | Path) -> list[dict[str, Any]]:
    """The records of a degradation labels.jsonl (each needs "image"; the rest is optional)."""
    out = []
    with Path(labels_path).open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if line.strip():
                record = json.loads(line)
                if not isinstance(record, dict) or "image" not in record:
                    raise ValueError(f"{labels_path}:{number}: expected an object with an 'image' field")
                out.append(record)
    return out


def write_trajectories(
    labels_path: str | Path, out_path: str | Path, *, seed: int = 0, crop_fraction: float = 0.3,
    prompts: PromptSet = DEFAULT_PROMPTS, style: str = "full",
) -> TrajectoryReport:
    """Write one trajectory per label of `labels_path` to `out_path` (JSONL; image paths relative to its folder).

    Exactly `round(crop_fraction * n)` records, chosen with `seed`, carry a crop turn, except that a label with a
    `scope` decides for itself (`flaw_crop_box`; the report counts the crops written).
    """
    if not 0.0 <= crop_fraction <= 1.0:
        raise ValueError(f"crop_fraction must lie in [0, 1], found {crop_fraction}")
    labels_path, out_path = Path(labels_path), Path(out_path)
    labels = read_labels(labels_path)
    order = list(range(len(labels)))
    random.Random(f"{seed}/crop").shuffle(order)
    cropped = set(order[: round(crop_fraction * len(labels))])
    out_path.parent.mkdir(parents=True, exist_ok=True)
    n_crop = 0
    with out_path.open("w", encoding="utf-8") as f:
        for i, label in enumerate(labels):
            image = os.path.relpath(labels_path.parent / label["image"], out_path.parent)
            record = make_trajectory(label, Path(image).as_posix(), seed, i in cropped, prompts, style)
            n_crop += len(record["turns"]) > 1
            f.write(json.dumps(record) + "\n")
    return TrajectoryReport(str(out_path), len(labels), n_crop, seed)


def build_demo_set(
    out_dir: str | Path, n_scenes: int, *, seed: int = 0, crop_fraction: float = 0.3, image_size: int | None = None,
    progress: bool = False, style: str = "full", kinds: Sequence[str] | None = None, local_fraction: float = 0.0,
) -> TrajectoryReport:
    """Procedural scenes -> one random degradation each -> `out_dir/trajectories.jsonl` (the demo's SFT data).

    Writes `out_dir/scenes/`, `out_dir/degraded/` (images + labels.jsonl) and the trajectory file.
    `image_size` downsizes the short side of every degraded image (None keeps the scene size). `local_fraction` > 0
    makes that share of the distorted images local flaws whose trajectories crop by the flaw (module docstring),
    on light scenes (`data.synthetic.make_scene(light=True)`: the patch is the only dark region).
    """
    out = Path(out_dir)
    write_scenes(out / "scenes", n_scenes, seed=seed, light=bool(local_fraction))
    extra: dict[str, Any] = {} if kinds is None else {"kinds": tuple(kinds)}
    if local_fraction:
        extra["local_fraction"] = local_fraction
    generate_degradation_set(out / "scenes", out / "degraded", seed, resize_short=image_size, progress=progress,
                             **extra)
    return write_trajectories(out / "degraded" / "labels.jsonl", out / "trajectories.jsonl", seed=seed,
                              crop_fraction=crop_fraction, style=style)
