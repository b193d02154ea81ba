"""Properties of every metric detector on generated streams: quiet when stationary, loud on a shift.

Streams are drawn by hypothesis from the structures the detectors must be robust to:
AR(1) autocorrelation up to phi 0.5, trace clusters, Student t tails, rare large
outliers, a slow cycle of a few percent, and low base rates. The budget is the
monitor's (1e6 events per workflow split over every test, about 6.75e6 events per
continuous metric): a stationary stream of 20,000 events may not alarm beyond it (at
most one episode: two would have probability below 1e-5 within the budget), and a
large shift must be found within 1,000 events.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from driftline.detectors import MetricDetector, ReferenceGrowth
from driftline.detectors.metrics import Kind

ARL0 = 1e6 * 27 / 4  # a continuous metric's share of the monitor's default budget
N = 20_000
CHANGE = 5_000


@st.composite
def continuous_streams(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "seed": draw(st.integers(0, 2**32 - 1)),
        "sd": draw(st.floats(0.3, 1.0)),
        "phi": draw(st.floats(0.0, 0.5)),
        "icc": draw(st.floats(0.0, 0.5)),
        "tails": draw(st.sampled_from(["normal", "t3"])),
        "outliers": draw(st.floats(0.0, 0.005)),
        "cycle": draw(st.floats(0.0, 0.04)),
    }


def log_values(p: dict[str, Any], n: int, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """log1p of lognormal counts with the drawn structure; ``shift`` (log) from CHANGE on."""
    rng = np.random.default_rng(p["seed"])
    e = rng.standard_t(3, n) / math.sqrt(3.0) if p["tails"] == "t3" else rng.normal(size=n)
    for i in range(1, n):  # AR(1); n is small enough for a loop in a test
        e[i] += p["phi"] * e[i - 1]
    e *= math.sqrt(1.0 - p["phi"] ** 2)
    traces = np.repeat(np.arange(n), rng.integers(1, 9, n))[:n]
    e = math.sqrt(1 - p["icc"]) * e + math.sqrt(p["icc"]) * rng.normal(size=n)[traces]
    y = math.log(400.0) + p["sd"] * e
    y += p["cycle"] * np.sin(2 * math.pi * np.arange(n) / rng.uniform(2_000, 200_000))
    y[CHANGE:] += shift
    out = np.exp(y)
    hit = rng.random(n) < p["outliers"]
    out[hit] *= 30.0
    return np.log1p(np.round(out)), traces


def run(kind: Kind, values: Any, traces: np.ndarray | None = None) -> list[int]:
    det = MetricDetector(kind, 500, 500, ARL0 if kind == "continuous" else ARL0 * 4)
    found: list[int] = []
    for start in range(0, len(values), 250):
        groups = None if traces is None or det.frozen else traces[start : start + 250]
        found.extend(start + d.index for d in det.update_many(values[start : start + 250], groups))
    return found


SLOW = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def episodes(alarms: list[int]) -> int:
    """Alarms more than a window apart (the tests of one metric often fire together)."""
    return sum(1 for i, a in enumerate(alarms) if i == 0 or a - alarms[i - 1] > 500)


@SLOW
@given(continuous_streams())
def test_no_alarm_on_a_stationary_continuous_stream_beyond_the_budget(p: dict[str, Any]) -> None:
    values, traces = log_values(p, N)
    assert episodes(run("continuous", values, traces)) <= 1


@SLOW
@given(continuous_streams(), st.sampled_from([-0.5, 0.5]))
def test_a_large_level_shift_is_found(p: dict[str, Any], shift: float) -> None:
    values, traces = log_values(p, N, shift * p["sd"] * 3)  # 1.5 sd or more
    found = [a for a in run("continuous", values, traces) if a >= CHANGE]
    assert found and found[0] < CHANGE + 1_000


@SLOW
@given(
    st.integers(0, 2**32 - 1),
    st.sampled_from(["bernoulli", "poisson"]),
    st.floats(0.005, 0.05),
    st.floats(0.0, 0.2),
)
def test_rates_quiet_when_stationary_and_found_when_tripled(
    seed: int, kind: Kind, rate: float, cycle: float
) -> None:
    rng = np.random.default_rng(seed)
    p = rate * (1 + cycle * np.sin(2 * math.pi * np.arange(N) / rng.uniform(2_000, 200_000)))
    draw = (lambda q: rng.random(N) < q) if kind == "bernoulli" else (lambda q: rng.poisson(q))
    assert episodes(run(kind, np.asarray(draw(p), dtype=np.float64))) <= 1
    tripled = p.copy()
    tripled[CHANGE:] *= 3.0 if rate >= 0.01 else 6.0
    shifted = np.asarray(draw(tripled), dtype=np.float64)
    # The smallest rate ratio watched is 2.5 (RATE_RATIOS): a tripling drawn as less than
    # that over the horizon, against the rate drawn before the change, is beyond what the
    # tests promise (docs/detection.md, "Known limits": a 1% rate realised as x2 is found
    # late or missed). Seed 2264: 1.34% before, 2.98% after (x2.2), found at +7,717.
    before = float(shifted[:CHANGE].mean())
    assume(float(shifted[CHANGE : CHANGE + 4_000].mean()) >= 2.5 * before > 0.0)
    found = [a for a in run(kind, shifted) if a >= CHANGE]
    assert found and found[0] < CHANGE + 4_000


@given(st.lists(st.integers(1, 700), min_size=1, max_size=30))
def test_growth_waits_while_a_test_builds_then_follows(sizes: list[int]) -> None:
    # While a test builds up evidence, blocks wait ``wait`` events past their lag; the
    # ones older than that join anyway (what moves that slowly is followed). A reference
    # of two lags: a younger one waits a quarter of its length at most
    # (tests/unit/test_detectors_growth_gate.py).
    growth = ReferenceGrowth(columns=2, block=100, lag=500, cap=50_000, wait=1_000)
    growth.start(np.array([1000.0, 0.0]))
    seen = 0
    for size in sizes:
        growth.push(np.c_[np.ones(size), np.zeros(size)], quiet=False, building=True)
        seen += size
        assert growth.totals[0] - 1000 == max(0, seen // 100 - 15) * 100


@given(
    st.lists(st.integers(1, 700), min_size=1, max_size=30),
    st.lists(st.booleans(), min_size=30, max_size=30),
)
def test_growth_never_absorbs_what_came_within_the_lag(sizes: list[int], quiet: list[bool]) -> None:
    growth = ReferenceGrowth(columns=2, block=100, lag=500, cap=5_000)
    growth.start(np.array([500.0, 0.0]))
    seen = 0
    for size, q in zip(sizes, quiet, strict=False):
        rows = np.c_[np.ones(size), np.arange(seen, seen + size, dtype=np.float64)]
        growth.push(rows, quiet=q)
        seen += size
        n = growth.totals[0]
        assert n <= 5_000 + 1e-6
        # What joined is at least ``lag`` events old: never more than seen - 500 values.
        assert n - 500 <= max(0, seen - 500) + 1e-6


def test_rate_quiet_after_an_unlucky_warm_up_seed_641() -> None:
    """Found by the property above: a stationary 1.56% Bernoulli rate whose 500-event
    warm-up drew 1 event (expected 7.8) alarmed 5 times in 20,000 events, its reference
    stuck at that draw while the alert held. The rate tests now arm once the reference
    holds ``RATE_MIN_EVENTS`` events (it grows freely until then)."""
    rng = np.random.default_rng(641)
    rng.uniform(2_000, 200_000)  # the property's cycle period draw, kept for the same stream
    draws = np.asarray(rng.random(N) < 0.015625, dtype=np.float64)
    assert draws[:500].sum() == 1
    assert episodes(run("bernoulli", draws)) <= 1
