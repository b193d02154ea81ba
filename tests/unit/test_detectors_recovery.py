"""The recovery test behind shift_holds: a rate shift that lasts holds its alert."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from driftline.detectors import MetricDetector


def _detected(det: MetricDetector, rng: np.random.Generator, rate: float) -> float:
    """Feed ``rate`` in batches of 100 until a detection; its reference rate."""
    for _ in range(200):
        found = det.update_many(rng.poisson(rate, 100).astype(np.float64))
        if found:
            return float(found[-1].evidence["reference_rate"])
    raise AssertionError("no detection")


@pytest.mark.parametrize("seed", range(6))
def test_rate_shift_at_twice_the_reference_holds(seed: int) -> None:
    # A tripling at a cycle's trough sits at about 2x the reference's upper bound: the
    # 2.5 member finds it (its break-even is 1.64x), and the alert must stay open.
    rng = np.random.default_rng(seed)
    det = MetricDetector("poisson", warmup=500, window=500, arl0=2.7e7)
    det.update_many(rng.poisson(0.03, 3000).astype(np.float64))
    p0 = _detected(det, rng, 0.09)
    for _ in range(60):  # 6,000 events at twice the reference rate
        det.update_many(rng.poisson(2.0 * p0, 100).astype(np.float64))
        assert det.shift_holds()


def test_rate_recovery_after_the_shift_ends() -> None:
    rng = np.random.default_rng(3)
    det = MetricDetector("poisson", warmup=500, window=500, arl0=2.7e7)
    det.update_many(rng.poisson(0.03, 3000).astype(np.float64))
    _detected(det, rng, 0.09)
    back = [det.update_many(rng.poisson(0.03, 100).astype(np.float64)) for _ in range(20)]
    assert not det.shift_holds() and not any(back)


def _clustered(rng: np.random.Generator, n: int) -> np.ndarray:
    """AR(1) at phi 0.35 plus an effect shared by runs of 4 values (the calls of a trace)."""
    innovations = rng.normal(0.0, 1.0, n)
    ar = np.empty(n)
    prev = 0.0
    for i in range(n):
        prev = 0.35 * prev + np.sqrt(1.0 - 0.35**2) * innovations[i]
        ar[i] = prev
    return 0.8 * ar + np.repeat(rng.normal(0.0, 0.5, n // 4 + 1), 4)[:n]


def _found_shift(seed: int) -> tuple[MetricDetector, np.random.Generator, list[Any]]:
    """A clustered stream, then a 0.25 shift fed in batches of 100 until a detection
    (none within 10,000 values: no detections)."""
    rng = np.random.default_rng(seed)
    det = MetricDetector("continuous", warmup=500, window=500, arl0=2.7e7)
    det.update_many(_clustered(rng, 4000))
    for _ in range(100):
        found = det.update_many(0.25 + _clustered(rng, 100))
        if found:
            return det, rng, list(found)
    return det, rng, []


def test_level_shift_that_lasts_holds_whichever_member_found_it() -> None:
    # A 0.25 shift of clustered values can be found by a member larger than it, by
    # chance; the recovery test of that member ("still at half its shift") then sits
    # near break-even and, before a smaller member's detection could take over, resolved
    # the shift while it lasted (seed 19: 6 of 60 checks).
    checked = 0
    for seed in range(10, 40):
        det, rng, found = _found_shift(seed)
        if not found:
            continue  # a small shift, not found within 10,000 values: nothing to hold
        checked += 1
        for _ in range(60):
            det.update_many(0.25 + _clustered(rng, 100))
            assert det.shift_holds(), seed
    assert checked >= 20  # 24 of 30 found it when written


def test_burst_within_a_lasting_shift_does_not_end_it() -> None:
    # A larger member fires on a burst inside a small shift that lasts; its recovery
    # test ("still at half its shift") would sit near break-even once the burst is over
    # and resolve the shift while it lasts (bench/bench_replay.py seed 1: an output x1.2
    # shift resolved 4,763 events in, reopened 580 later; here seeds 18, 27, 31 and 32
    # before). It takes the test over only when the episode since the first detection
    # stands at its shift.
    checked = 0
    for seed in range(10, 40):
        det, rng, found = _found_shift(seed)
        if not found:
            continue
        for _ in range(30):
            det.update_many(0.25 + _clustered(rng, 100))
        burst = det.update_many(1.0 + _clustered(rng, 150))
        first = min(float(d.evidence.get("shift_sd", 0.0)) for d in found)
        if not any(
            float(d.evidence.get("shift_sd", 0.0)) > first for d in burst if d.test == "cusum"
        ):
            continue  # the burst fired no larger member: not the case under test
        checked += 1
        for _ in range(60):
            det.update_many(0.25 + _clustered(rng, 100))
            assert det.shift_holds(), seed
    assert checked >= 18  # 21 of 30 when written


def test_a_decided_recovery_ends_the_window_after_the_detection() -> None:
    # A level shift found near the end of a transient used to hold for a whole window
    # after that detection, whatever the recovery test had decided: on a bundle with a
    # tenth of a workflow's calls, ten windows of the workflow's events. Once the test
    # decides "back", the recent level alone holds it (seeds 0-19: every one cleared a
    # window after, 500-550 values; now a median of 425).
    cleared = []
    for seed in range(20):
        rng = np.random.default_rng(seed)
        det = MetricDetector("continuous", warmup=500, window=500, arl0=2.7e7)
        det.update_many(rng.normal(0.0, 1.0, 3000))
        assert any([det.update_many(1.0 + rng.normal(0.0, 1.0, 50)) for _ in range(8)])
        det.update_many(rng.normal(0.0, 1.0, 50))
        assert det.shift_holds()  # not at once: the level has to come back first
        for n in range(100, 2050, 50):
            det.update_many(rng.normal(0.0, 1.0, 50))
            if not det.shift_holds():
                cleared.append(n)
                break
    assert len(cleared) == 20
    assert float(np.median(cleared)) < 500


def test_a_detection_after_the_decision_keeps_its_window() -> None:
    # A running test kept over a batch decides "back" early in it; a burst later in the
    # same batch fires a larger member. That detection holds for a window after it: the
    # decision came before it (the review's case: seed 3, decided at 467, the 1.5 sd
    # member at 819; shift_holds was False right after the detection).
    rng = np.random.default_rng(3)
    det = MetricDetector("continuous", warmup=500, window=500, arl0=2.7e7)
    det.update_many(rng.normal(0.0, 1.0, 3000))
    for _ in range(4):
        det.update_many(0.7 + rng.normal(0.0, 1.0, 50))
    assert det._recovery[2] > 0.0  # a test is running into the next batch
    x = rng.normal(0.0, 1.0, 820)
    x[800:] += 2.0
    found = det.update_many(x)
    assert found and found[-1].index > 800
    assert det.shift_holds()


def test_a_lasting_rate_shift_holds_when_its_recovery_test_decides_back_by_chance() -> None:
    # For counts the window after a detection outlives a recovery test's "back": their
    # recent level is too noisy to hold a lasting shift alone until the next detection.
    # This is bench/bench_detectors.py seed 9001's 1% -> 3% rate (stream 20 of the
    # family; its generator inlined: a +-20% slow cycle, the tripling at 3,000) that
    # resolved at 4,100 and reopened at 5,956 when the window ended at the decision.
    rng = np.random.default_rng(np.random.SeedSequence(9001, spawn_key=(290,)))
    n, change_at = 7000, 3000
    period = np.exp(rng.uniform(np.log(2_000), np.log(200_000)))
    cycle = 0.2 * np.sin(2 * np.pi * np.arange(n) / period + rng.uniform(0, 2 * np.pi))
    p = 0.01 * (1.0 + cycle) * np.where(np.arange(n) < change_at, 1.0, 3.0)
    x = (rng.random(n) < p).astype(np.float64)
    # The bench's lifecycle: batches of 100, resolved after 300 events without a hold.
    det = MetricDetector("bernoulli", warmup=500, window=500, arl0=2.7e7)
    opened = resolved = None
    quiet = 0
    for start in range(0, n, 100):
        found = det.update_many(x[start : start + 100])
        if found and opened is None:
            opened = start + found[0].index
        elif opened is not None and resolved is None:
            quiet = 0 if (found or det.shift_holds()) else quiet + 100
            if quiet >= 300:
                resolved = start + 100
    assert opened is not None and change_at <= opened < change_at + 1000
    assert resolved is None
