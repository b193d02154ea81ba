"""The long-run variance of a continuous metric, re-read from its reference's long means.

The warm-up's 500 values show correlations a few lags long; slow parts of a stream (a daily
cycle, a load's slowdown) only show in the spread of means of 500-1,000 values, which the
reference's growth blocks give once it has grown (docs/detection.md).
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from driftline.detectors.composite import MetricDetector
from driftline.detectors.growth import ReferenceGrowth
from driftline.detectors.reference import batch_means_inflation


def test_growth_keeps_the_latest_block_sums_through_its_state() -> None:
    growth = ReferenceGrowth(columns=3, block=10, lag=20, cap=1000, history=5)
    growth.start(np.array([20.0, 0.0, 0.0]), np.array([1.0, 2.0]))
    rows = np.stack([np.ones(300), np.arange(300.0), np.zeros(300)], axis=1)
    growth.push(rows, quiet=True)
    joined = rows[:280, 1].reshape(-1, 10).sum(axis=1)  # the last 20 values wait their lag
    assert growth.block_sums.tolist() == joined[-5:].tolist()
    again = ReferenceGrowth.from_state(growth.to_state())
    assert again.block_sums.tolist() == growth.block_sums.tolist()
    old = growth.to_state()
    del old["history"], old["args"]["history"]  # a snapshot from before history was kept
    assert ReferenceGrowth.from_state(old).block_sums.size == 0


def _grown(values: np.ndarray) -> MetricDetector:
    det = MetricDetector("continuous", warmup=500, window=500, arl0=1e7)
    for start in range(0, values.shape[0], 250):
        det.update_many(values[start : start + 250])
    return det


def test_a_slow_cycle_raises_the_grown_references_inflation_and_iid_values_do_not() -> None:
    n = 9_000
    cycle = 0.04 * np.sin(np.arange(n) * 2 * np.pi / 3_000)  # within the 5% tolerance
    raised = kept = 0
    for seed in range(5):
        rng = np.random.default_rng(seed)
        slow = _grown(5.0 + rng.normal(scale=0.5, size=n) + cycle)
        steady = _grown(5.0 + rng.normal(scale=0.5, size=n))
        for det in (slow, steady):
            assert det.reference_size >= 8_000
            assert det._ref is not None and det._warm_inflation is not None
        assert slow._ref is not None and slow._warm_inflation is not None
        assert steady._ref is not None and steady._warm_inflation is not None
        # The cycle adds about 3x to the variance of 1,000-value means; the warm-up sees none.
        raised += slow._ref.inflation > 1.5 * slow._warm_inflation
        kept += steady._ref.inflation < 1.2 * steady._warm_inflation
    assert raised == 5 and kept >= 4, (raised, kept)


@settings(max_examples=200, deadline=None)
@given(
    sums=st.lists(
        st.floats(min_value=-1e6, max_value=1e6, allow_nan=False), min_size=0, max_size=200
    ),
    block=st.integers(min_value=1, max_value=1000),
    variance=st.floats(min_value=0.0, max_value=1e12, allow_nan=False),
)
def test_the_estimate_is_bounded_whatever_the_sums(
    sums: list[float], block: int, variance: float
) -> None:
    value = batch_means_inflation(np.array(sums), block, variance)
    assert 1.0 <= value <= 10.0
