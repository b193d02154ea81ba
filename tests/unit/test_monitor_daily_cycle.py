"""A metric on a daily cycle (latency with load): the monitor learns its level by hour of
day and stops paging on it, and still finds a shift."""

from __future__ import annotations

import math

import numpy as np

from driftline.config import AlertSettings, DetectorSettings, Settings
from driftline.streams.monitor import Monitor
from tests.unit.test_monitor import T0, S, event

DAY_S = 86_400
EVERY_S = 4


def settings() -> Settings:
    return Settings(
        detectors=DetectorSettings(enabled_metrics=["latency"]),
        alerts=AlertSettings(hold_down_s=300.0),
    )


def load_cycle(days: float, seed: int = 5, shift_from_s: float | None = None) -> list[dict]:
    """A call every 4 s; latency's log level on a daily sine of +-20% (sd 0.35), x1.3
    from ``shift_from_s``."""
    rng = np.random.default_rng(seed)
    calls = []
    for i in range(int(days * DAY_S / EVERY_S)):
        at_s = i * EVERY_S
        hour = ((T0 // S + at_s) % DAY_S) / 3600
        latency = math.exp(6.8 + 0.2 * math.sin(2 * math.pi * hour / 24) + 0.35 * rng.normal())
        if shift_from_s is not None and at_s >= shift_from_s:
            latency *= 1.3
        calls.append(event(i, T0 + at_s * S, 400, latency_ms=latency))
    return calls


def feed(monitor: Monitor, calls: list[dict], minutes: int = 1) -> list[dict]:
    out: list[dict] = []
    step = minutes * 60 // EVERY_S
    for start in range(0, len(calls), step):
        out += monitor.process(calls[start : start + step], [])
    return out


def opened(out: list[dict], after_s: float = 0.0) -> list[dict]:
    return [
        t
        for t in out
        if t["transition"] == "open" and t["kind"] == "drift" and t["event_ts"] >= T0 + after_s * S
    ]


def test_a_daily_load_cycle_stops_paging_once_its_hours_are_learned() -> None:
    out = feed(Monitor(settings()), load_cycle(5))
    assert opened(out)  # the first two days page on the cycle, as before
    # Two days are learned by hour; the day after, the reference starts over on corrected
    # values; from then on nothing opens (before: an alert or two a day).
    assert opened(out, after_s=3 * DAY_S) == []


def test_a_shift_once_the_hours_are_learned_is_still_found() -> None:
    shift_s = 3.5 * DAY_S
    out = feed(Monitor(settings()), load_cycle(4, shift_from_s=shift_s))
    found = opened(out, after_s=shift_s)
    assert found and found[0]["evidence"].get("by_hour_of_day") is True
    delay_calls = (found[0]["event_ts"] - T0) / S / EVERY_S - shift_s / EVERY_S
    assert delay_calls < 1_500


def test_the_hours_learned_survive_a_snapshot() -> None:
    calls = load_cycle(4)
    split = int(3 * DAY_S / EVERY_S)
    straight = Monitor(settings())
    feed(straight, calls[:split])
    restored = Monitor(settings())
    restored.restore("chat", straight.snapshot("chat"))
    assert restored.snapshot("chat") == straight.snapshot("chat")
    assert feed(restored, calls[split:]) == feed(straight, calls[split:])
