"""Progressive re-sampling of GRPO images (`data.resampling`): determinism, resume, single-dataset batches,
bin frequencies, validation."""

import json

import numpy as np
import pytest
from scipy.stats import chisquare

from zoomiqa_jax.data.resampling import (
    DEFAULT_STAGES,
    Batch,
    ProgressiveSampler,
    ResampleStage,
)


def long_tailed_datasets():
    """Two datasets on different scales with long-tailed MOS; every non-empty bin has >= 8 records."""
    rng = np.random.default_rng(123)
    a = np.concatenate([rng.uniform(1.0, 1.8, 10), rng.uniform(1.8, 4.2, 400), rng.uniform(4.2, 5.0, 12)])
    # [0, 100] scale with an empty bin: bins of width 20, nothing in [40, 60).
    b = np.concatenate(
        [[0.0, 100.0], rng.uniform(0.0, 20.0, 8), rng.uniform(20.0, 40.0, 60), rng.uniform(60.0, 99.0, 200)]
    )
    return {"koniq": a.tolist(), "spaq": b.tolist()}


def make(batch_size=4, total_steps=100, **kw):
    return ProgressiveSampler(long_tailed_datasets(), batch_size, total_steps, **kw)


def test_default_stages():
    assert DEFAULT_STAGES == (ResampleStage(0.0, 0.0), ResampleStage(0.5, 0.5), ResampleStage(0.75, 1.0))


def test_deterministic_pure_function_of_seed_and_step():
    s1, s2 = make(seed=7), make(seed=7)
    for step in [0, 1, 5, 60, 99, 1000]:
        assert s1.draw(step) == s2.draw(step)
    # order of calls does not matter
    assert s1.draw(3) == make(seed=7).draw(3)
    batches = [s1.draw(step) for step in range(50)]
    assert len({(b.dataset, b.indices) for b in batches}) == 50
    assert make(seed=8).draw(3) != s1.draw(3)


def test_resume_equals_uninterrupted():
    full = make(seed=3)
    uninterrupted = [next(full) for _ in range(15)]

    first = make(seed=3)
    head = [next(first) for _ in range(10)]
    assert head == uninterrupted[:10]
    state = json.loads(json.dumps(first.state_dict()))  # JSON-serialisable
    assert state["next_step"] == 10

    resumed = make(seed=3)
    resumed.load_state_dict(state)
    assert resumed.next_step == 10
    assert [next(resumed) for _ in range(5)] == uninterrupted[10:]


def test_iterator_stops_at_total_steps():
    s = make(total_steps=7)
    batches = list(s)
    assert len(batches) == 7 and s.next_step == 7
    assert batches == [s.draw(i) for i in range(7)]
    assert all(isinstance(b, Batch) for b in batches)


def test_single_dataset_and_no_duplicates():
    s = make(batch_size=8, stages=(ResampleStage(0.0, 2.0),))  # power 2: rare bins of 8-12 records often run out
    mos = long_tailed_datasets()
    seen = set()
    for step in range(2000):
        b = s.draw(step)
        seen.add(b.dataset)
        assert len(b.indices) == 8
        assert len(set(b.indices)) == 8
        assert all(0 <= i < len(mos[b.dataset]) for i in b.indices)
    assert seen == {"koniq", "spaq"}


def test_slot_bins_fast_path_equals_sequential_rule():
    """The vectorised fast path gives the same bins as the plain one-slot-at-a-time rule, bins running out or not."""

    def sequential(u, probs, counts):
        remaining, out = counts.copy(), []
        for ui in u:
            w = np.where(remaining > 0, probs, 0.0)
            b = int(np.searchsorted(np.cumsum(w), ui * w.sum(), side="right"))
            out.append(b)
            remaining[b] -= 1
        return out

    s = ProgressiveSampler({"d": list(range(40))}, 8, 10)
    rng = np.random.default_rng(0)
    for _ in range(3000):
        counts = rng.integers(0, 6, 5)
        counts[rng.integers(5)] += 8  # at least batch_size records in all
        probs = ProgressiveSampler._stage_bin_probs(counts, float(rng.uniform(0.0, 2.0)))
        u = rng.random(8)
        got = s._draw_slot_bins(u, probs, counts)
        assert got.tolist() == sequential(u, probs, counts)
        assert np.all(np.bincount(got, minlength=5) <= counts)


def test_batch_equal_to_dataset_size_is_a_permutation():
    s = ProgressiveSampler({"tiny": [1.0, 2.0, 3.0, 3.0, 9.0]}, 5, 10, stages=(ResampleStage(0.0, 1.0),))
    for step in range(20):
        assert sorted(s.draw(step).indices) == [0, 1, 2, 3, 4]


def test_power0_is_own_distribution_power1_uniform_over_nonempty():
    s = make(stages=(ResampleStage(0.0, 0.0), ResampleStage(0.5, 1.0)))
    for name in ("koniq", "spaq"):
        counts = s.bin_counts(name)
        np.testing.assert_allclose(s.bin_probabilities(name, 0), counts / counts.sum(), rtol=1e-12)
        nonempty = counts > 0
        expected = np.where(nonempty, 1.0 / nonempty.sum(), 0.0)
        np.testing.assert_allclose(s.bin_probabilities(name, 1), expected, rtol=1e-12)
    assert s.bin_counts("spaq")[2] == 0  # the empty bin gets probability 0
    assert s.bin_probabilities("spaq", 1)[2] == 0.0
    # power 0.5: proportional to sqrt(count)
    half = make(stages=(ResampleStage(0.0, 0.5),))
    c = half.bin_counts("koniq").astype(float)
    np.testing.assert_allclose(half.bin_probabilities("koniq", 0), np.sqrt(c) / np.sqrt(c).sum(), rtol=1e-12)


def test_bins_are_equal_width_per_dataset():
    s = make()
    np.testing.assert_allclose(s.bin_edges("spaq"), [0, 20, 40, 60, 80, 100])
    mos = np.asarray(long_tailed_datasets()["spaq"])
    rb = s.record_bins("spaq")
    assert rb[np.argmax(mos)] == 4 and rb[np.argmin(mos)] == 0
    np.testing.assert_array_equal(rb, np.clip(np.floor(mos / 20).astype(int), 0, 4))
    const = ProgressiveSampler({"c": [3.0] * 6}, 2, 5)
    np.testing.assert_array_equal(const.bin_counts("c"), [6, 0, 0, 0, 0])


@pytest.mark.parametrize("power", [0.0, 0.5, 1.0])
def test_empirical_bin_frequencies_match(power):
    # Every non-empty bin has >= batch_size (4) records, so no bin runs out within a batch and every slot's bin is
    # an independent draw from bin_probabilities. 20000 draws with seed 11; tolerance: max |freq - p| < 0.01 per
    # dataset (each dataset gets >= ~25000 slots, so the std of a frequency is <= 0.0032) and chi-square p > 1e-3.
    s = make(batch_size=4, seed=11, stages=(ResampleStage(0.0, power),))
    bins = {n: s.record_bins(n) for n in s.names}
    counts = {n: np.zeros(5, dtype=np.int64) for n in s.names}
    n_batches = {n: 0 for n in s.names}
    for step in range(20000):
        b = s.draw(step)
        n_batches[b.dataset] += 1
        np.add.at(counts[b.dataset], bins[b.dataset][list(b.indices)], 1)
    for n in s.names:
        p = s.bin_probabilities(n, 0)
        freq = counts[n] / counts[n].sum()
        assert np.max(np.abs(freq - p)) < 0.01, (n, freq, p)
        nz = p > 0
        assert counts[n][~nz].sum() == 0
        assert chisquare(counts[n][nz], counts[n].sum() * p[nz]).pvalue > 1e-3
    # datasets in proportion to their sizes (422 vs 270 records)
    frac = n_batches["koniq"] / 20000
    assert abs(frac - 422 / 692) < 0.015


def test_dataset_weights():
    s = make(dataset_weights={"koniq": 0.0, "spaq": 1.0})
    assert {s.draw(i).dataset for i in range(200)} == {"spaq"}
    assert s.dataset_probabilities() == {"koniq": 0.0, "spaq": 1.0}


def test_stage_boundaries():
    # total_steps 100 with DEFAULT_STAGES: stage 1 starts at step 50 exactly, stage 2 at step 75 exactly.
    s = make(total_steps=100)
    assert s.stage_first_steps == (0, 50, 75)
    assert [s.stage_at(i) for i in (0, 49, 50, 74, 75, 99, 100, 10_000)] == [0, 0, 1, 1, 2, 2, 2, 2]
    assert s.draw(49).stage == 0 and s.draw(50).stage == 1 and s.draw(75).stage == 2
    # start * total_steps not an integer: the stage begins at the next whole step (0.5 * 9 = 4.5 -> step 5)
    s9 = make(total_steps=9)
    assert s9.stage_first_steps == (0, 5, 7)
    assert [s9.stage_at(i) for i in (4, 5, 6, 7)] == [0, 1, 1, 2]
    # float round-off: 0.7 * 10 = 7.000000000000001 still starts at step 7
    s10 = make(total_steps=10, stages=(ResampleStage(0.0, 0.0), ResampleStage(0.7, 1.0)))
    assert s10.stage_at(7) == 1 and s10.stage_at(6) == 0


def test_stage_summary_json():
    s = make()
    summ = json.loads(json.dumps(s.stage_summary(2)))
    assert summ["stage"] == 2 and summ["power"] == 1.0 and summ["first_step"] == 75
    assert set(summ["datasets"]) == {"koniq", "spaq"}
    np.testing.assert_allclose(summ["datasets"]["spaq"]["bin_probabilities"], s.bin_probabilities("spaq", 2))
    assert summ["datasets"]["koniq"]["bin_counts"] == s.bin_counts("koniq").tolist()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"stages": (ResampleStage(0.1, 0.0),)}, r"stages\[0\]\.start"),
        ({"stages": (ResampleStage(0.0, 0.0), ResampleStage(0.75, 1.0), ResampleStage(0.5, 0.5))}, "sorted"),
        ({"stages": (ResampleStage(0.0, 0.0), ResampleStage(0.5, -1.0))}, r"stages\[1\]\.power"),
        ({"stages": (ResampleStage(0.0, 0.0), ResampleStage(1.5, 1.0))}, r"stages\[1\]\.start"),
        ({"batch_size": 0}, "batch_size"),
        ({"bins": 0}, "bins"),
        ({"seed": -1}, "seed"),
        ({"total_steps": 0}, "total_steps"),
        ({"dataset_weights": {"koniq": 1.0}}, r"dataset_weights.*missing \['spaq'\]"),
        ({"dataset_weights": {"koniq": 1.0, "spaq": -1.0}}, r"dataset_weights\['spaq'\]"),
    ],
)
def test_validation_names_the_field(kwargs, match):
    args = {"batch_size": 4, "total_steps": 100}
    args.update(kwargs)
    batch_size, total_steps = args.pop("batch_size"), args.pop("total_steps")
    with pytest.raises(ValueError, match=match):
        ProgressiveSampler(long_tailed_datasets(), batch_size, total_steps, **args)


def test_validation_names_the_dataset():
    with pytest.raises(ValueError, match=r"batch_size 5 exceeds the size of dataset 'small' \(3 records\)"):
        ProgressiveSampler({"big": list(range(10)), "small": [1.0, 2.0, 3.0]}, 5, 10)
    with pytest.raises(ValueError, match=r"datasets\['live'\]\[2\] is not finite"):
        ProgressiveSampler({"big": list(range(10)), "live": [1.0, 2.0, float("nan"), 4.0]}, 2, 10)
    with pytest.raises(ValueError, match=r"datasets\['live'\]\[0\] is not finite"):
        ProgressiveSampler({"live": [float("inf"), 2.0]}, 1, 10)
    with pytest.raises(ValueError, match="step"):
        make().draw(-1)


def test_fingerprint_and_settings_mismatch_raise():
    state = make(seed=3).state_dict()
    data = long_tailed_datasets()

    changed = dict(data)
    changed["spaq"] = list(data["spaq"])
    changed["spaq"][5] += 0.001
    with pytest.raises(ValueError, match=r"dataset 'spaq' MOS values"):
        ProgressiveSampler(changed, 4, 100, seed=3).load_state_dict(state)

    shorter = dict(data)
    shorter["koniq"] = data["koniq"][:-1]
    with pytest.raises(ValueError, match=r"dataset 'koniq' size"):
        ProgressiveSampler(shorter, 4, 100, seed=3).load_state_dict(state)

    with pytest.raises(ValueError, match=r"dataset names/order"):
        ProgressiveSampler({"spaq": data["spaq"], "koniq": data["koniq"]}, 4, 100, seed=3).load_state_dict(state)

    with pytest.raises(ValueError, match=r"seed \(saved 3, current 4\)"):
        make(seed=4).load_state_dict(state)
    with pytest.raises(ValueError, match=r"bins.*stages|stages"):
        make(seed=3, stages=(ResampleStage(0.0, 1.0),)).load_state_dict(state)
    with pytest.raises(ValueError, match=r"batch_size"):
        make(batch_size=2, seed=3).load_state_dict(state)

    ok = make(seed=3)
    ok.load_state_dict(state)  # matches
    assert ok.next_step == 0
