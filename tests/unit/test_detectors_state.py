"""What the alert lifecycle uses: shift_holds, rebaseline and plain state round trips."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from driftline.detectors import BurnRate, MetricDetector, WindowSum
from driftline.detectors.base import check_plain
from driftline.detectors.metrics import Kind

KINDS: tuple[Kind, ...] = ("continuous", "poisson", "bernoulli", "categorical")
FINISH = np.array(["stop", "length", "tool_calls"])


def stream(kind: Kind, seed: int, n: int, shifted: bool = False) -> Any:
    rng = np.random.default_rng(seed)
    if kind == "continuous":
        return rng.normal(6.0 + (0.6 if shifted else 0.0), 0.5, n)
    if kind == "poisson":
        return rng.poisson(0.3 if shifted else 0.05, n).astype(np.float64)
    if kind == "bernoulli":
        return (rng.random(n) < (0.1 if shifted else 0.02)).astype(np.float64)
    p = [0.6, 0.37, 0.03] if shifted else [0.9, 0.07, 0.03]
    return [str(v) for v in rng.choice(FINISH, n, p=p)]


def feed(det: MetricDetector, values: Any, size: int = 250) -> list[tuple[int, str]]:
    out = []
    for start in range(0, len(values), size):
        out.extend((start + d.index, d.test) for d in det.update_many(values[start : start + size]))
    return out


def only_plain(value: Any, where: str = "state") -> None:
    if isinstance(value, np.ndarray):
        return
    if isinstance(value, dict):
        for k, v in value.items():
            assert isinstance(k, str), where
            only_plain(v, f"{where}.{k}")
    elif isinstance(value, list):
        for v in value:
            only_plain(v, where)
    else:
        check_plain(value, where)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(KINDS),
    seed=st.integers(0, 2**16),
    cut=st.integers(0, 2400),
    shift_at=st.integers(300, 2400),
)
def test_round_trip_continues_exactly(kind: Kind, seed: int, cut: int, shift_at: int) -> None:
    values = stream(kind, seed, 2500)
    tail = stream(kind, seed + 1, 2500 - shift_at, shifted=True)
    if kind == "categorical":
        values = values[:shift_at] + tail
    else:
        values = np.concatenate([values[:shift_at], tail])
    original = MetricDetector(kind, warmup=200, window=100, arl0=1e6)
    feed(original, values[:cut], 173)
    state = original.to_state()
    only_plain(state)
    restored = MetricDetector.from_state(state)
    assert feed(restored, values[cut:], 91) == feed(original, values[cut:], 91)
    assert restored.shift_holds() == original.shift_holds()
    assert restored.summary().keys() == original.summary().keys()
    assert restored.to_state().keys() == original.to_state().keys()


@pytest.mark.parametrize("kind", KINDS)
def test_shift_holds_while_shifted_and_clears_after(kind: Kind) -> None:
    det = MetricDetector(kind, warmup=500, window=500, arl0=1e8)
    assert det.shift_holds() is False  # no reference yet
    found = feed(det, stream(kind, 1, 3000))
    assert not found
    assert det.shift_holds() is False
    shifted = stream(kind, 2, 6000, shifted=True)
    holds, first = [], None
    for start in range(0, 6000, 100):
        if feed(det, shifted[start : start + 100]) and first is None:
            first = start // 100
        holds.append(det.shift_holds())
    assert first is not None, "the shift was not detected"
    assert all(holds[first:]), "a persistent shift stopped holding (flap)"
    back = stream(kind, 3, 2000)
    cleared_at = None
    for start in range(0, 2000, 100):
        feed(det, back[start : start + 100])
        if cleared_at is None and not det.shift_holds():
            cleared_at = start + 100
    assert cleared_at is not None and cleared_at <= 2000
    assert det.shift_holds() is False


@pytest.mark.parametrize("kind", KINDS)
def test_rebaseline_accepts_the_new_level(kind: Kind) -> None:
    det = MetricDetector(kind, warmup=500, window=500, arl0=1e8)
    feed(det, stream(kind, 4, 1500))
    assert feed(det, stream(kind, 5, 3000, shifted=True))
    det.rebaseline()
    assert not det.frozen and det.n_warm == 0
    assert feed(det, stream(kind, 6, 5000, shifted=True)) == []
    assert det.frozen and det.shift_holds() is False


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("_n_warm", -1, "_n_warm"),
        ("_n_warm", 1.5, "_n_warm"),
        ("_recent_mean", float("nan"), "_recent_mean"),
        ("_level", float("inf"), "_level"),
        (
            "args",
            {"kind": "gauge", "warmup": 500, "window": 500, "arl0": 1e6, "ewma_lam": 0.02},
            "kind",
        ),
        ("_cusum", {"class": "CUSUM"}, "CUSUM"),
        ("_warm", np.zeros(3, dtype=np.float32), "_warm"),
        ("_hold", [1.0], "_hold"),
        ("version", 99, "version"),
    ],
)
def test_corrupt_metric_state_is_refused(field: str, value: Any, message: str) -> None:
    det = MetricDetector("continuous", warmup=200, window=100, arl0=1e6)
    feed(det, stream("continuous", 7, 400))
    state = det.to_state()
    if field == "_warm":  # a warm-up buffer only exists before freezing
        state = MetricDetector("continuous", warmup=200, window=100, arl0=1e6).to_state()
    state[field] = value
    with pytest.raises(ValueError, match=message):
        MetricDetector.from_state(state)


def test_corrupt_nested_reference_is_refused() -> None:
    det = MetricDetector("continuous", warmup=200, window=100, arl0=1e6)
    feed(det, stream("continuous", 7, 400))
    state = det.to_state()
    state["_cusum"]["_ref"]["scale"] = -1.0
    with pytest.raises(ValueError, match="scale"):
        MetricDetector.from_state(state)
    with pytest.raises(ValueError, match="must be a dict"):
        MetricDetector.from_state([1, 2])


@given(
    amounts=st.lists(
        st.tuples(st.integers(0, 10**10), st.floats(0, 1e3, allow_nan=False)), max_size=40
    )
)
def test_budget_state_round_trips(amounts: list[tuple[int, float]]) -> None:
    window, burn = WindowSum(3600.0, limit=50.0), BurnRate(720.0)
    for ts, amount in amounts:
        window.add(ts, amount)
        burn.add(ts, amount)
    w2, b2 = WindowSum.from_state(window.to_state()), BurnRate.from_state(burn.to_state())
    now = max((ts for ts, _ in amounts), default=0)
    assert w2.total(now) == window.total(now)
    assert w2.shift_holds() == window.shift_holds()
    assert b2.verdict(now) == burn.verdict(now)
    assert b2.shift_holds(now) == burn.shift_holds(now)
    only_plain(window.to_state())
    only_plain(burn.to_state())


def test_budget_recovers_below_a_lower_bar_than_it_alarms() -> None:
    w = WindowSum(600.0, limit=100.0)
    w.add(0, 95.0)  # under the limit (no alarm) but above the recovery bar
    assert w.shift_holds() is True
    w.add(11 * 60_000_000, 1.0)  # the 95 left the window
    assert w.shift_holds() is False
    assert WindowSum(600.0).shift_holds() is False  # no limit, nothing to hold
    b = BurnRate(720.0)
    for minute in range(60):
        b.add(minute * 60_000_000, 0.5)
    assert b.shift_holds() is True
    b.add(120 * 60_000_000, 0.0)  # spend stopped an hour ago
    assert b.shift_holds() is False
    bad = w.to_state()
    bad["sums"] = bad["sums"][:3]
    with pytest.raises(ValueError, match="sums"):
        WindowSum.from_state(bad)
    with pytest.raises(ValueError, match="monthly_budget"):
        BurnRate.from_state({**b.to_state(), "monthly_budget": float("nan")})
