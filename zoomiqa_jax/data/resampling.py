"""Which training images each GRPO step gets: single-dataset batches with Zoom-IQA's Progressive Re-sampling
(arXiv:2601.02918 Sec. 3.2) of the MOS bins. A data resampler, not the token sampler (`inference.sampling`).

Zoom-IQA trains "first on the original data distribution, and in subsequent stages, we progressively increase
the sampling frequency of these under-represented score intervals". The paper gives no stage boundaries, bin
layout or strengths; everything numeric here (`DEFAULT_STAGES`, `DEFAULT_BINS`) is our choice.

Score bins. Each dataset's MOS range [min MOS, max MOS] is cut into `bins` equal-width bins of its own (datasets
use different scales); bin b holds the records with `min + b * w <= MOS < min + (b + 1) * w`, `w = (max - min) /
bins`, the maximum MOS going to the last bin. A dataset whose MOS are all equal has every record in bin 0.

Stages. A stage `ResampleStage(start, power)` begins at the first optimizer step `s` with
`s >= start * total_steps` (so the step at exactly `start * total_steps` belongs to the new stage) and lasts
until the next stage begins; steps at or past `total_steps` stay in the last stage. Within a stage the
probability of bin b of a dataset is

    P(b) = count_b ** (1 - power) / sum_c count_c ** (1 - power)      (empty bins: P(b) = 0)

i.e. each record of bin b weighs `count_b ** (-power)`: power 0 is the dataset's own distribution, power 1 is
uniform over the non-empty bins, powers in between progressively favour rare bins (powers above 1 favour them
more than uniformly). Records within a bin are equally likely.

Batches. Ranks only mean something within one dataset, so every batch holds the images of ONE dataset (as
VisualQuality-R1 does). A batch for optimizer step `step` is drawn from `np.random.default_rng([seed, step])`
alone, so it is a pure function of (seed, step) and the settings, and resuming at any step reproduces the
uninterrupted run without stored RNG state:

1. the dataset, with probability proportional to its number of records (or to `dataset_weights`);
2. `batch_size` slots, one after another: each slot's bin is drawn with the stage's bin probabilities,
   renormalised over the bins that still have records not yet in this batch;
3. each slot's record, uniformly among the records of its bin not yet in this batch (so within a bin the
   records are drawn uniformly without replacement).

So no record appears twice in a batch, and as long as every non-empty bin has at least `batch_size` records
the bin of every slot follows P(b) exactly; a bin that runs out within a batch hands its remaining share to the
other bins in proportion to their probabilities.

The sampler is also an iterator (`for batch in sampler`) that draws steps `next_step, next_step + 1, ...` up
to `total_steps - 1`; `state_dict()` / `load_state_dict()` save and restore `next_step` with a fingerprint of
the datasets and settings, so a checkpoint cannot be resumed against different data.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

STATE_VERSION = 1
DEFAULT_BINS = 5  # ours; the paper gives no bin layout


@dataclass(frozen=True)
class ResampleStage:
    """One re-sampling stage: begins at fraction `start` of the run's optimizer steps, bin weight exponent `power`.

    The probability of MOS bin b is proportional to `count_b ** (1 - power)` (see the module docstring).
    """

    start: float
    power: float


# Ours: the paper says "multi-stage" and "progressively" but gives no numbers.
DEFAULT_STAGES: tuple[ResampleStage, ...] = (
    ResampleStage(0.0, 0.0),
    ResampleStage(0.5, 0.5),
    ResampleStage(0.75, 1.0),
)


@dataclass(frozen=True)
class Batch:
    """The prompts of one optimizer step: record `indices` (distinct, into the MOS sequence) of one `dataset`."""

    dataset: str
    indices: tuple[int, ...]
    stage: int


def _is_int(x: object) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def _mos_sha256(mos: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(mos, dtype="<f8").tobytes()).hexdigest()


def _json_native(x: Any) -> Any:  # noqa: ANN401 - any JSON value
    """`x` as it comes back from a JSON round trip (tuples become lists), for comparisons with loaded state."""
    return json.loads(json.dumps(x))


class ProgressiveSampler:
    """Draws single-dataset GRPO batches with Progressive Re-sampling over MOS bins; see the module docstring.

    datasets: dataset name -> MOS of each of its records, in record order (batch indices index this order).
    batch_size: records per batch, at least 1 and at most the size of every dataset.
    total_steps: optimizer steps of the run; stage `start` fractions are fractions of it.
    stages: re-sampling stages, strictly increasing `start` in [0, 1], the first at 0.0, every power >= 0.
    bins: equal-width MOS bins per dataset, over that dataset's own [min MOS, max MOS].
    seed: non-negative integer; batch `step` comes from `np.random.default_rng([seed, step])`.
    dataset_weights: dataset name -> non-negative weight (one for every dataset, not all 0); the dataset of a
        batch is drawn with probability proportional to it. Default: proportional to the number of records.
    """

    def __init__(
        self,
        datasets: Mapping[str, Sequence[float]],
        batch_size: int,
        total_steps: int,
        *,
        stages: Sequence[ResampleStage] = DEFAULT_STAGES,
        bins: int = DEFAULT_BINS,
        seed: int = 0,
        dataset_weights: Mapping[str, float] | None = None,
    ) -> None:
        if not _is_int(batch_size) or batch_size < 1:
            raise ValueError(f"ProgressiveSampler: batch_size must be an integer >= 1, got {batch_size!r}")
        if not _is_int(total_steps) or total_steps < 1:
            raise ValueError(f"ProgressiveSampler: total_steps must be an integer >= 1, got {total_steps!r}")
        if not _is_int(bins) or bins < 1:
            raise ValueError(f"ProgressiveSampler: bins must be an integer >= 1, got {bins!r}")
        if not _is_int(seed) or seed < 0:
            raise ValueError(f"ProgressiveSampler: seed must be a non-negative integer, got {seed!r}")
        self.batch_size = int(batch_size)
        self.total_steps = int(total_steps)
        self.bins = int(bins)
        self.seed = int(seed)
        self.stages = self._check_stages(stages)
        # First optimizer step of every stage: the smallest integer s with s >= start * total_steps (rounded to
        # 9 decimals first, so that e.g. 0.7 * 10 = 7.000000000000001 gives step 7).
        self.stage_first_steps: tuple[int, ...] = tuple(
            math.ceil(round(s.start * self.total_steps, 9)) for s in self.stages
        )

        if not isinstance(datasets, Mapping) or len(datasets) == 0:
            raise ValueError("ProgressiveSampler: datasets must be a non-empty mapping of name -> MOS values")
        self.names: tuple[str, ...] = tuple(datasets)
        self._mos: list[np.ndarray] = []
        for name in self.names:
            if not isinstance(name, str):
                raise ValueError(f"ProgressiveSampler: dataset names must be strings, got {name!r}")
            mos = np.asarray(datasets[name], dtype=np.float64)
            if mos.ndim != 1 or mos.size == 0:
                raise ValueError(
                    f"ProgressiveSampler: datasets[{name!r}] must be a non-empty 1-D sequence of MOS values, "
                    f"got shape {mos.shape}"
                )
            bad = np.flatnonzero(~np.isfinite(mos))
            if bad.size:
                raise ValueError(
                    f"ProgressiveSampler: datasets[{name!r}][{int(bad[0])}] is not finite ({mos[bad[0]]}); "
                    f"{bad.size} non-finite MOS value(s) in dataset {name!r}"
                )
            if mos.size < self.batch_size:
                raise ValueError(
                    f"ProgressiveSampler: batch_size {self.batch_size} exceeds the size of dataset {name!r} "
                    f"({mos.size} records); a batch holds distinct records of one dataset"
                )
            self._mos.append(mos)

        sizes = np.array([m.size for m in self._mos], dtype=np.float64)
        if dataset_weights is None:
            self.dataset_weights: dict[str, float] | None = None
            weights = sizes
        else:
            self.dataset_weights = self._check_dataset_weights(dataset_weights)
            weights = np.array([self.dataset_weights[n] for n in self.names], dtype=np.float64)
        self._dataset_probs = weights / weights.sum()
        self._dataset_cum = np.cumsum(self._dataset_probs)

        self._edges: list[np.ndarray] = []
        self._record_bins: list[np.ndarray] = []
        self._bin_records: list[list[np.ndarray]] = []
        self._counts: list[np.ndarray] = []
        for mos in self._mos:
            lo, hi = float(mos.min()), float(mos.max())
            self._edges.append(np.linspace(lo, hi, self.bins + 1))
            if hi > lo:
                b = np.floor((mos - lo) / (hi - lo) * self.bins).astype(np.int64)
                b = np.clip(b, 0, self.bins - 1)
            else:
                b = np.zeros(mos.size, dtype=np.int64)
            self._record_bins.append(b)
            self._bin_records.append([np.flatnonzero(b == k) for k in range(self.bins)])
            self._counts.append(np.bincount(b, minlength=self.bins))
        # _bin_probs[d][s]: bin probabilities of dataset d in stage s.
        self._bin_probs: list[list[np.ndarray]] = [
            [self._stage_bin_probs(counts, stage.power) for stage in self.stages] for counts in self._counts
        ]
        self.next_step = 0

    # ------------------------------------------------------------------ validation helpers

    @staticmethod
    def _check_stages(stages: Sequence[ResampleStage]) -> tuple[ResampleStage, ...]:
        stages = tuple(stages)
        if not stages:
            raise ValueError("ProgressiveSampler: stages must hold at least one ResampleStage")
        for i, s in enumerate(stages):
            if not isinstance(s, ResampleStage):
                raise ValueError(f"ProgressiveSampler: stages[{i}] must be a ResampleStage, got {s!r}")
            if not (math.isfinite(s.start) and 0.0 <= s.start <= 1.0):
                raise ValueError(f"ProgressiveSampler: stages[{i}].start must be in [0, 1], got {s.start!r}")
            if not (math.isfinite(s.power) and s.power >= 0.0):
                raise ValueError(f"ProgressiveSampler: stages[{i}].power must be finite and >= 0, got {s.power!r}")
        if stages[0].start != 0.0:
            raise ValueError(f"ProgressiveSampler: stages[0].start must be 0.0, got {stages[0].start!r}")
        for i in range(1, len(stages)):
            if stages[i].start <= stages[i - 1].start:
                raise ValueError(
                    "ProgressiveSampler: stages must be sorted by strictly increasing start, but "
                    f"stages[{i}].start = {stages[i].start!r} <= stages[{i - 1}].start = {stages[i - 1].start!r}"
                )
        return tuple(ResampleStage(float(s.start), float(s.power)) for s in stages)

    def _check_dataset_weights(self, dataset_weights: Mapping[str, float]) -> dict[str, float]:
        missing = [n for n in self.names if n not in dataset_weights]
        unknown = [n for n in dataset_weights if n not in self.names]
        if missing or unknown:
            raise ValueError(
                "ProgressiveSampler: dataset_weights must name every dataset exactly once; "
                f"missing {missing}, unknown {unknown}"
            )
        out: dict[str, float] = {}
        for n in self.names:
            w = float(dataset_weights[n])
            if not (math.isfinite(w) and w >= 0.0):
                raise ValueError(f"ProgressiveSampler: dataset_weights[{n!r}] must be finite and >= 0, got {w!r}")
            out[n] = w
        if sum(out.values()) <= 0.0:
            raise ValueError("ProgressiveSampler: dataset_weights must not all be 0")
        return out

    @staticmethod
    def _stage_bin_probs(counts: np.ndarray, power: float) -> np.ndarray:
        nonempty = counts > 0
        logw = np.full(counts.shape, -np.inf)
        logw[nonempty] = (1.0 - power) * np.log(counts[nonempty].astype(np.float64))
        w = np.where(nonempty, np.exp(logw - logw[nonempty].max()), 0.0)
        return w / w.sum()

    def _dataset_index(self, dataset: str) -> int:
        try:
            return self.names.index(dataset)
        except ValueError:
            raise KeyError(f"ProgressiveSampler: unknown dataset {dataset!r}; known: {list(self.names)}") from None

    def _check_stage(self, stage: int) -> int:
        if not _is_int(stage) or not 0 <= stage < len(self.stages):
            raise ValueError(f"ProgressiveSampler: stage must be an integer in [0, {len(self.stages)}), got {stage!r}")
        return int(stage)

    @staticmethod
    def _check_step(step: int) -> int:
        if not _is_int(step) or step < 0:
            raise ValueError(f"ProgressiveSampler: step must be a non-negative integer, got {step!r}")
        return int(step)

    # ------------------------------------------------------------------ queries

    def stage_at(self, step: int) -> int:
        """Index of the stage that optimizer step `step` (>= 0) belongs to; see `stage_first_steps`."""
        step = self._check_step(step)
        stage = 0
        for i, first in enumerate(self.stage_first_steps):
            if step >= first:
                stage = i
        return stage

    def bin_probabilities(self, dataset: str, stage: int) -> np.ndarray:
        """Probability of each MOS bin of `dataset` in stage `stage`: float64 `[bins]`, summing to 1."""
        return self._bin_probs[self._dataset_index(dataset)][self._check_stage(stage)].copy()

    def bin_counts(self, dataset: str) -> np.ndarray:
        """Number of records of `dataset` in each MOS bin: int64 `[bins]`."""
        return self._counts[self._dataset_index(dataset)].copy()

    def bin_edges(self, dataset: str) -> np.ndarray:
        """The `bins + 1` MOS bin edges of `dataset`, from its min MOS to its max MOS: float64 `[bins + 1]`."""
        return self._edges[self._dataset_index(dataset)].copy()

    def record_bins(self, dataset: str) -> np.ndarray:
        """The MOS bin of every record of `dataset`, in record order: int64 `[size]`."""
        return self._record_bins[self._dataset_index(dataset)].copy()

    def dataset_probabilities(self) -> dict[str, float]:
        """Probability that a batch comes from each dataset."""
        return {n: float(p) for n, p in zip(self.names, self._dataset_probs)}

    def stage_summary(self, stage: int) -> dict[str, Any]:
        """JSON-serialisable description of stage `stage` for logs: its bounds, power and per-dataset bins.

        Keys: stage, start, power, first_step, and datasets: name -> {probability (of the dataset), size,
        bin_edges, bin_counts, bin_probabilities}.
        """
        stage = self._check_stage(stage)
        s = self.stages[stage]
        return {
            "stage": stage,
            "start": s.start,
            "power": s.power,
            "first_step": self.stage_first_steps[stage],
            "datasets": {
                n: {
                    "probability": float(self._dataset_probs[d]),
                    "size": int(self._mos[d].size),
                    "bin_edges": [float(e) for e in self._edges[d]],
                    "bin_counts": [int(c) for c in self._counts[d]],
                    "bin_probabilities": [float(p) for p in self._bin_probs[d][stage]],
                }
                for d, n in enumerate(self.names)
            },
        }

    # ------------------------------------------------------------------ drawing

    def draw(self, step: int) -> Batch:
        """The batch of optimizer step `step`: a pure function of (seed, step) and the sampler's settings."""
        step = self._check_step(step)
        stage = self.stage_at(step)
        rng = np.random.default_rng([self.seed, step])
        d = int(np.searchsorted(self._dataset_cum, rng.random() * self._dataset_cum[-1], side="right"))
        d = min(d, len(self.names) - 1)
        while self._dataset_probs[d] == 0.0:  # only on a float round-off at the top end
            d -= 1
        slot_bins = self._draw_slot_bins(rng.random(self.batch_size), self._bin_probs[d][stage], self._counts[d])
        # Each slot takes a record uniformly among its bin's records not yet in the batch: position r of the
        # unused ones, found by stepping r past the (sorted) positions already taken from that bin.
        taken: dict[int, list[int]] = {}
        indices = []
        for b, v in zip(slot_bins.tolist(), rng.random(self.batch_size).tolist()):
            records = self._bin_records[d][b]
            used = taken.setdefault(b, [])
            left = records.size - len(used)
            r = min(int(v * left), left - 1)
            for t in used:
                if t > r:
                    break
                r += 1
            bisect.insort(used, r)
            indices.append(int(records[r]))
        return Batch(dataset=self.names[d], indices=tuple(indices), stage=stage)

    def _draw_slot_bins(self, u: np.ndarray, probs: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """The bin of every batch slot from uniforms `u` in [0, 1): slot i takes the bin whose interval of the CDF
        of `probs`, renormalised over the bins that still have records after slots 0 .. i-1, holds `u[i]`."""
        cum = np.cumsum(probs)
        slot_bins = self._invert_cdf(cum, u, probs)
        # Fast path: if no bin is used up by slots 0 .. n-2, every slot saw the full CDF and these bins are exact.
        nonempty = counts > 0
        if np.all(np.bincount(slot_bins[:-1], minlength=self.bins)[nonempty] < counts[nonempty]):
            return slot_bins
        remaining = counts.copy()
        for i, ui in enumerate(u):
            w = np.where(remaining > 0, probs, 0.0)
            b = int(self._invert_cdf(np.cumsum(w), ui, w))
            slot_bins[i] = b
            remaining[b] -= 1
        return slot_bins

    def _invert_cdf(self, cum: np.ndarray, u: np.ndarray | float, w: np.ndarray) -> np.ndarray:
        """Index of the weight interval holding `u * cum[-1]`; zero-weight bins are never returned."""
        b = np.minimum(np.searchsorted(cum, np.asarray(u) * cum[-1], side="right"), self.bins - 1)
        if np.all(w[b] > 0.0):
            return b
        # float round-off at the top end can land past the last bin with weight: take that bin
        return np.where(w[b] > 0.0, b, np.flatnonzero(w > 0.0)[-1])

    def __iter__(self) -> Iterator[Batch]:
        """The sampler itself: an iterator over the batches of steps `next_step` .. `total_steps - 1`."""
        return self

    def __next__(self) -> Batch:
        """The batch of step `next_step`, advancing `next_step`; StopIteration once it reaches `total_steps`."""
        if self.next_step >= self.total_steps:
            raise StopIteration
        batch = self.draw(self.next_step)
        self.next_step += 1
        return batch

    # ------------------------------------------------------------------ checkpoint state

    def fingerprint(self) -> list[dict[str, Any]]:
        """Dataset fingerprint, in dataset order: [{name, size, mos_sha256 (of the float64 MOS values)}]."""
        return [{"name": n, "size": int(m.size), "mos_sha256": _mos_sha256(m)} for n, m in zip(self.names, self._mos)]

    def _settings(self) -> dict[str, Any]:
        return _json_native(
            {
                "seed": self.seed,
                "batch_size": self.batch_size,
                "total_steps": self.total_steps,
                "bins": self.bins,
                "stages": [[s.start, s.power] for s in self.stages],
                "dataset_weights": self.dataset_weights,
                "datasets": self.fingerprint(),
            }
        )

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable checkpoint state: version, next_step, the settings and the dataset fingerprint."""
        return {"version": STATE_VERSION, "next_step": self.next_step, **self._settings()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume from `state_dict()` output: set `next_step` after checking that data and settings match.

        Raises ValueError naming every field that differs (for datasets: which dataset and whether its name, size
        or MOS values differ) and leaves the sampler unchanged.
        """
        state = _json_native(dict(state))
        if state.get("version") != STATE_VERSION:
            raise ValueError(
                f"ProgressiveSampler.load_state_dict: state version {state.get('version')!r}, expected {STATE_VERSION}"
            )
        next_step = state.get("next_step")
        if not _is_int(next_step) or next_step < 0:
            raise ValueError(f"ProgressiveSampler.load_state_dict: bad next_step {next_step!r}")
        current = self._settings()
        diffs: list[str] = []
        for key, value in current.items():
            if key == "datasets":
                continue
            if key not in state:
                diffs.append(f"{key} (missing from the saved state)")
            elif state[key] != value:
                diffs.append(f"{key} (saved {state[key]!r}, current {value!r})")
        saved_ds = state.get("datasets")
        if not isinstance(saved_ds, list):
            diffs.append("datasets (missing from the saved state)")
        else:
            if [d.get("name") for d in saved_ds] != [d["name"] for d in current["datasets"]]:
                diffs.append(
                    f"dataset names/order (saved {[d.get('name') for d in saved_ds]}, current {list(self.names)})"
                )
            for saved, cur in zip(saved_ds, current["datasets"]):
                if saved.get("name") != cur["name"]:
                    continue
                if saved.get("size") != cur["size"]:
                    diffs.append(f"dataset {cur['name']!r} size (saved {saved.get('size')!r}, current {cur['size']})")
                elif saved.get("mos_sha256") != cur["mos_sha256"]:
                    diffs.append(f"dataset {cur['name']!r} MOS values (hash differs)")
        if diffs:
            raise ValueError("ProgressiveSampler.load_state_dict: saved state does not match: " + "; ".join(diffs))
        self.next_step = int(next_step)
