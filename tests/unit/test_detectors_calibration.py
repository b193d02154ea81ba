"""Calibration by simulation: thresholds meet the ARL0 budget; references; budgets."""

from __future__ import annotations

import numpy as np
import pytest

from driftline.detectors import (
    CUSUM,
    BurnRate,
    FrozenReference,
    MetricDetector,
    WindowSum,
    cusum_thresholds,
)
from driftline.detectors.burn_rate import BUCKET_US


def test_calibrated_bank_meets_its_run_length_on_reference_like_data() -> None:
    # A reference large enough that its estimation error is negligible, then a
    # measurable budget: the realised run length must not fall short of it.
    rng = np.random.default_rng(12)
    target = 3000.0
    alarms = 0
    events = 0
    for _ in range(4):
        stream = rng.normal(0, 1, 20_000 + 60_000)
        det = CUSUM(warmup=20_000, arl0=target)
        alarms += len(det.update_many(stream))
        events += 60_000
    assert alarms > 0
    assert events / alarms >= 0.7 * target


def test_thresholds_grow_with_budget_and_are_cached() -> None:
    ref = FrozenReference.from_values(np.random.default_rng(0).normal(size=1000))
    dirs, drifts = np.array([1.0, -1.0]), np.array([0.25, 0.25])
    low = cusum_thresholds(ref, dirs, drifts, 1e4)
    high = cusum_thresholds(ref, dirs, drifts, 1e7)
    assert np.all(high > low)
    assert cusum_thresholds(ref, dirs, drifts, 1e4) is low


def test_reference_inflates_scale_for_autocorrelation() -> None:
    rng = np.random.default_rng(1)
    e = rng.normal(size=4000)
    ar = np.empty_like(e)
    ar[0] = e[0]
    for i in range(1, e.shape[0]):
        ar[i] = 0.5 * ar[i - 1] + e[i]
    assert FrozenReference.from_values(ar).inflation == pytest.approx(3.0, rel=0.2)
    assert FrozenReference.from_values(e).inflation == 1.0


def test_rate_reference_without_failures_has_finite_scale() -> None:
    ref = FrozenReference.from_values(np.zeros(500), "bernoulli")
    assert 0 < ref.mean < 0.01 and np.isfinite(ref.scale)


def test_metric_detector_splits_budget_and_reports_evidence() -> None:
    rng = np.random.default_rng(11)
    stream = np.concatenate([rng.normal(6, 0.5, 2000), rng.normal(6.7, 0.5, 500)])
    found = MetricDetector("continuous", warmup=500, window=500, arl0=1e6).update_many(stream)
    first = found[0]
    assert first.index >= 2000 and first.test == "cusum"
    assert first.current_value > first.baseline_value and first.effect > 0


def test_window_sum_expires_old_minutes() -> None:
    w = WindowSum(window_s=300)
    w.add(0, 10.0)
    w.add(4 * BUCKET_US, 1.0)
    assert w.total(4 * BUCKET_US) == 11.0
    assert w.total(6 * BUCKET_US) == 1.0


def test_burn_rate_needs_both_windows() -> None:
    b = BurnRate(monthly_budget=720.0)  # 1 USD per hour
    b.add(0, 5.0)  # a 5-minute spike: short window burns, the hour does not
    assert b.verdict(0) is None
    for minute in range(1, 60):
        b.add(minute * BUCKET_US, 0.5)
    verdict = b.verdict(59 * BUCKET_US)
    assert verdict is not None and verdict.severity == "critical"
    assert b.verdict(3 * 3600 * BUCKET_US // 60) is None  # spend stopped
