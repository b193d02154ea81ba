"""Finish-reason mix detector: exact index, pooled categories, budget, range checks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftline.detectors import CategoricalShift
from driftline.detectors.categorical import OTHER, g_statistic, jensen_shannon

REASONS = ["stop", "length", "tool_calls"]


def mix(seed: int, p_after: list[float]) -> list[str]:
    rng = np.random.default_rng(seed)
    before = rng.choice(REASONS, 1500, p=[0.9, 0.07, 0.03])
    after = rng.choice(REASONS, 1500, p=p_after)
    return [str(x) for x in (*before, *after)]


def test_detects_mix_shift_at_known_index() -> None:
    det = CategoricalShift(warmup=500, window=500, stride=50, arl0=1e5)
    assert det.update_many(mix(5, [0.8, 0.17, 0.03]))[:1] == [1849]
    assert (
        det.last_detection["window_mix"]["length"] > det.last_detection["reference_mix"]["length"]
    )


def test_unseen_categories_pool_into_other() -> None:
    det = CategoricalShift(warmup=20, window=20, stride=5, arl0=1e4, max_categories=3)
    det.update_many(["stop"] * 15 + ["length"] * 4 + ["tool_calls"])
    assert det.categories == ["stop", "length", OTHER]
    found = det.update_many(["content_filter"] * 20)
    assert found == [19]


def test_statistics() -> None:
    assert g_statistic(np.array([90.0, 10.0]), np.array([50.0, 50.0])) > 30
    assert jensen_shannon(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"warmup": 1}, "warmup"),
        ({"window": 5}, "window"),
        ({"stride": 0}, "stride"),
        ({"arl0": 10}, "arl0"),
        ({"max_categories": 1}, "max_categories"),
    ],
)
def test_constructor_arguments_are_range_checked(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CategoricalShift(**kwargs)


def _stationary_alarms(seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    labels = [str(x) for x in rng.choice(REASONS, 20_500, p=[0.9, 0.07, 0.03])]
    return CategoricalShift(500, 500, 50, 1e6).update_many(labels)


# Derandomized: the seeds are the same on every run, so CI does not draw a new stream each
# time; seeds found to break the budget are pinned below.
@settings(max_examples=10, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**32 - 1))
def test_stationary_mix_stays_within_false_alarm_budget(seed: int) -> None:
    assert len(_stationary_alarms(seed)) <= 1


def test_stationary_mix_seed_4235_within_false_alarm_budget() -> None:
    # Found by the property above: the warm-up saw tool_calls 4 times in 500 (expected
    # 15, a 1-in-1,000 draw), and against that frozen reference a window of the true mix
    # failed the test at 1e-3 instead of 5e-5: alarms at 3,499 and 18,149. The
    # reference now grows while the mix is quiet and closes on the true shares.
    det = CategoricalShift(500, 500, 50, 1e6)
    rng = np.random.default_rng(4235)
    labels = [str(x) for x in rng.choice(REASONS, 20_500, p=[0.9, 0.07, 0.03])]
    assert det.update_many(labels[:500]) == []
    assert det.reference_counts()[REASONS.index("tool_calls")] == 4
    assert det.update_many(labels[500:]) == []
    shares = det.reference_counts() / det.reference_counts().sum()
    assert shares[REASONS.index("tool_calls")] == pytest.approx(0.03, abs=0.006)


def test_reference_does_not_learn_a_shift() -> None:
    # Windows that test loud keep their labels out of the reference: a lasting shift
    # is found again after each detection, its share never taught as normal.
    det = CategoricalShift(500, 500, 50, 1e6)
    found = det.update_many(mix(7, [0.75, 0.2, 0.05]) + mix(8, [0.75, 0.2, 0.05])[1500:])
    assert len(found) >= 3
    shares = det.reference_counts() / det.reference_counts().sum()
    assert shares[REASONS.index("length")] < 0.09


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_large_mix_shift_is_detected(seed: int) -> None:
    found = CategoricalShift(500, 500, 50, 1e6).update_many(mix(seed, [0.5, 0.4, 0.1]))
    assert found and 1500 <= found[0] < 1800
