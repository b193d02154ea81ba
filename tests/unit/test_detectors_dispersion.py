"""Bursty counts: the rate CUSUMs run on the counts over their dispersion."""

from __future__ import annotations

import numpy as np

from driftline.detectors import MetricDetector
from driftline.detectors.composite import DISPERSION_CAP, rate_rows

ARL0 = 2.7e7  # one metric's share of the monitor's default budget


def feed(det: MetricDetector, values: np.ndarray, step: int = 200) -> list[int]:
    found: list[int] = []
    for start in range(0, values.shape[0], step):
        found.extend(start + d.index for d in det.update_many(values[start : start + step]))
    return found


def bursty_retries(rng: np.random.Generator, n: int, rate: float) -> np.ndarray:
    """retry_attempt per event: an incident is attempts 1, or 1 then 2 (a second failure),
    a few events apart; the incidents' odds wander slowly (a provider's bad minutes)."""
    odds = np.exp(0.3 * np.convolve(rng.standard_normal(n + 99), np.ones(100) / 10, "valid"))
    values = np.zeros(n)
    for at in np.flatnonzero(rng.random(n) < rate * odds / odds.mean()):
        values[at] += 1.0
        if rng.random() < 0.3 and at + 3 < n:
            values[at + 3] += 2.0
    return values


def dispersion_of(values: np.ndarray) -> float:
    det = MetricDetector("poisson", 500, 500, ARL0)
    feed(det, values)
    return det._dispersion()


def test_rate_rows_count_lagged_products_within_a_batch() -> None:
    rows = rate_rows(np.array([1.0, 0.0, 2.0]))
    assert rows[:, 3].tolist() == [0.0, 0.0, 4.0]  # 2 * x_t * (x_{t-1} + x_{t-2})
    assert rows[:, 4].tolist() == [0.0, 2.0, 4.0]  # twice the pairs looked at


def test_the_dispersion_does_not_depend_on_the_batches() -> None:
    # The monitor feeds what one step brought: a few events or thousands.
    values = bursty_retries(np.random.default_rng(4), 12_000, 0.012)
    by_batch = []
    for step in (3, 50, 2_000):
        det = MetricDetector("poisson", 500, 500, ARL0)
        feed(det, values, step)
        by_batch.append(det._dispersion())
    assert max(by_batch) - min(by_batch) < 0.01  # growth joins at batch ends: not exact


def test_independent_counts_are_not_discounted() -> None:
    rng = np.random.default_rng(3)
    for values in (rng.random(12_000) < 0.02, rng.poisson(0.08, 12_000)):
        assert 1.0 <= dispersion_of(np.asarray(values, dtype=np.float64)) < 1.3


def test_bursty_counts_are_discounted_and_stay_quiet() -> None:
    alarms = 0
    for seed in range(12):
        values = bursty_retries(np.random.default_rng(seed), 24_000, 0.012)
        det = MetricDetector("poisson", 500, 500, ARL0)
        alarms += len(feed(det, values))
        assert 1.3 < det._dispersion() <= DISPERSION_CAP
    assert alarms == 0


def test_a_bursty_rate_that_triples_is_found() -> None:
    rng = np.random.default_rng(5)
    values = np.r_[bursty_retries(rng, 6_000, 0.012), bursty_retries(rng, 4_000, 0.036)]
    det = MetricDetector("poisson", 500, 500, ARL0)
    found = feed(det, values)
    assert found and 6_000 <= found[0] < 10_000


def test_a_snapshot_without_the_dispersion_columns_restores_and_runs() -> None:
    rng = np.random.default_rng(9)
    det = MetricDetector("poisson", 500, 500, ARL0)
    feed(det, rng.poisson(0.05, 3_000).astype(np.float64))
    state = det.to_state()
    del state["_tail"]  # as written before the dispersion was kept
    growth = state["_growth"]
    growth["args"]["columns"] = 2
    for name in ("totals", "partial"):
        growth[name] = growth[name][:2].copy()
    growth["pending"] = growth["pending"][:, :2].copy()
    old = MetricDetector.from_state(state)
    assert old._dispersion() == 1.0
    assert feed(old, rng.poisson(0.05, 3_000).astype(np.float64)) == []
    assert old.reference_size > det.reference_size
