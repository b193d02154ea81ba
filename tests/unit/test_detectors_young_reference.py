"""A young reference does not vouch for the long-run variance its smallest tests need.

Until the grown reference reads the variance of its own long means, the level members
aimed under half a standard deviation, the creep EWMA and the spread test take the
long-run variance as larger than the warm-up's lags say (docs/detection.md).
"""

from __future__ import annotations

import numpy as np
import pytest

import driftline.detectors.composite as composite
from driftline.detectors.calibration import cusum_thresholds
from driftline.detectors.composite import (
    PROVISIONAL_UNTIL,
    SHIFTS,
    SLOW_MEMBER_SHIFT,
    MetricDetector,
)
from driftline.detectors.reference import FrozenReference


def test_a_larger_long_run_variance_raises_the_thresholds_of_long_sums_only() -> None:
    ref = FrozenReference.from_values(np.random.default_rng(4).normal(size=500))
    directions = np.array([1.0, 1.0, -1.0, -1.0])
    drifts = np.array([0.1, 0.8, 0.1, 0.8])
    plain = cusum_thresholds(ref, directions, drifts, 1e8)
    wider = cusum_thresholds(ref, directions, drifts, 1e8, long_run=1.5)
    # A small drift's tail is the Gaussian floor's: its log term grows by the factor.
    assert wider[0] > 1.3 * plain[0] and wider[2] > 1.3 * plain[2]
    assert wider[1] >= plain[1] and wider[3] >= plain[3]
    per_member = cusum_thresholds(ref, directions, drifts, 1e8, long_run=(1.5, 1.0, 1.5, 1.0))
    assert per_member.tolist() == [wider[0], plain[1], wider[2], plain[3]]


def _feed(values: np.ndarray) -> MetricDetector:
    det = MetricDetector("continuous", warmup=500, window=500, arl0=1e7)
    for start in range(0, values.shape[0], 100):
        det.update_many(values[start : start + 100])
    return det


def _thresholds(det: MetricDetector) -> tuple[np.ndarray, float, float]:
    assert det._cusum is not None and det._spread is not None and det._ewma is not None
    return det._cusum.thresholds.copy(), det._ewma.limit, float(det._spread.thresholds[0])


def test_the_smallest_tests_of_a_young_reference_wait_for_its_long_means(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    values = 5.0 + np.random.default_rng(8).normal(scale=0.6, size=PROVISIONAL_UNTIL + 1_500)
    young = _feed(values[:900])
    grown = _feed(values)
    monkeypatch.setattr(composite, "PROVISIONAL_LONG_RUN", 1.0)
    young_plain = _feed(values[:900])
    grown_plain = _feed(values)

    assert young.reference_size < PROVISIONAL_UNTIL <= grown.reference_size
    cusum, ewma, spread = _thresholds(young)
    cusum_plain, ewma_plain, spread_plain = _thresholds(young_plain)
    assert young._cusum is not None
    armed = SHIFTS[-len(young._cusum.shifts) :]  # the largest are armed first
    slow = np.tile([s < SLOW_MEMBER_SHIFT for s in armed], 2)  # both sides, in this order
    assert slow.any() and not slow.all(), armed
    assert np.all(cusum[slow] > 1.2 * cusum_plain[slow])
    assert np.array_equal(cusum[~slow], cusum_plain[~slow])
    assert ewma > ewma_plain and spread > spread_plain
    # Grown past it, every test is calibrated on the reference's own long means alone.
    for mine, theirs in zip(_thresholds(grown), _thresholds(grown_plain), strict=True):
        assert np.array_equal(mine, theirs)
