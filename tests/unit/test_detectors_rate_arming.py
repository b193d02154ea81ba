"""A count or rate's tests arm only once its reference holds RATE_MIN_EVENTS events."""

from __future__ import annotations

import numpy as np

from driftline.detectors import MetricDetector
from driftline.detectors.composite import RATE_MIN_EVENTS

ARL0 = 2.7e7  # one metric's share of the monitor's default budget


def feed(det: MetricDetector, values: np.ndarray, step: int = 200) -> list[int]:
    found: list[int] = []
    for start in range(0, values.shape[0], step):
        found.extend(start + d.index for d in det.update_many(values[start : start + step]))
    return found


def quiet_warm_up(rate: float, n: int, seed: int) -> np.ndarray:
    """A stationary Bernoulli stream whose 500-event warm-up saw no event at all."""
    rng = np.random.default_rng(seed)
    values = (rng.random(n) < rate).astype(np.float64)
    values[:500] = 0.0
    return values


def test_a_warm_up_without_events_does_not_alarm_on_the_true_rate() -> None:
    # Before the gate: the reference's bound sat at 0.0038 for good, under the true 1.3%,
    # and the 2.5 member alarmed again and again.
    det = MetricDetector("bernoulli", 500, 500, ARL0)
    assert feed(det, quiet_warm_up(0.013, 24_000, seed=24)) == []
    assert det.reference_size >= 7_000  # it kept growing, to the cap (16 warm-ups)


def test_unarmed_tests_neither_detect_nor_hold() -> None:
    det = MetricDetector("poisson", 500, 500, ARL0)
    values = np.zeros(900)
    values[600:] = 1.0  # far above anything a reference of no events can judge
    assert feed(det, values) == []
    assert not det.shift_holds()
    assert det.reference_size == 500  # blocks join one window (500 events) behind


def test_a_tripling_after_arming_is_found() -> None:
    rng = np.random.default_rng(7)
    values = (rng.random(8_000) < np.r_[np.full(4_000, 0.01), np.full(4_000, 0.03)]).astype(
        np.float64
    )
    det = MetricDetector("bernoulli", 500, 500, ARL0)
    found = feed(det, values)
    assert found and 4_000 <= found[0] < 8_000
    assert RATE_MIN_EVENTS <= 4_000 * 0.01  # the reference was armed before the change
