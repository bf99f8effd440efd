"""The one bucket rule (`inference.engine.Buckets.pick`) that the engine, the SFT collator and the GRPO rollout
batch pad by: the smallest bucket that holds the value, past the largest one the next multiple of it."""

import pytest

from zoomiqa_jax.inference.engine import Buckets


@pytest.mark.parametrize(("value", "expected"), [
    (1, 64), (64, 64), (65, 256), (256, 256), (257, 1024), (1024, 1024),  # inside: the smallest that holds it
    (1025, 2048), (2048, 2048), (2049, 3072), (5000, 5120),  # past the largest: its next multiple
])
def test_pick_smallest_bucket_then_multiples_of_the_largest(value, expected):
    options = (256, 1024, 64)  # unsorted on purpose
    assert Buckets.pick(value, options) == expected


def test_every_pick_holds_the_value_and_stays_on_the_grid():
    options = (16, 48, 128)
    for value in range(1, 1000):
        got = Buckets.pick(value, options)
        assert got >= value
        assert got in options or got % 128 == 0 and got - value < 128
