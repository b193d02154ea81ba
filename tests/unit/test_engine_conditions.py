"""Engine conditions (streams/monitor/engine_conditions.py) on constructed report series."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from driftline.config import AlertSettings, EngineSettings
from driftline.schemas import engine_metrics as em
from driftline.streams.monitor import SnapshotError
from driftline.streams.monitor.engine_conditions import (
    KV_CACHE_SATURATED,
    PREEMPTIONS_RISING,
    QUEUE_GROWING,
    EngineConditions,
)

S = 1_000_000
ENGINE = ("meta-llama/Llama-3.1-8B-Instruct", "vllm-0.internal:8000")
KV_KEY = f"engine/vllm-0.internal:8000/{KV_CACHE_SATURATED}/meta-llama/Llama-3.1-8B-Instruct"


def conditions(**overrides: Any) -> EngineConditions:
    base: dict[str, Any] = {"condition_for_s": 60, "hold_down_s": 90}
    return EngineConditions(EngineSettings(**{**base, **overrides}), AlertSettings())


def every(step_s: int, values: list[float], start_s: int = 0) -> tuple[list[int], list[float]]:
    return [(start_s + i * step_s) * S for i in range(len(values))], values


def brief(transitions: list[dict[str, Any]]) -> list[tuple[str, int, str]]:
    return [(t["transition"], t["event_ts"] // S, t["metric"]) for t in transitions]


def test_kv_held_near_saturation_opens_once_and_resolves_after_the_hold_down() -> None:
    watch = conditions()
    # 15 s scrapes: 0.5 until 45 s, 0.97 from 60 s to 225 s, 0.4 from 240 s.
    times, kv = every(15, [0.5] * 4 + [0.97] * 12 + [0.4] * 10)
    out = watch.update(ENGINE, em.KV_CACHE_USAGE, times, kv)
    # Bad since 60 s, so open at 120 s; back within bounds at 240 s, resolved 90 s later.
    assert brief(out) == [("open", 120, KV_CACHE_SATURATED), ("resolve", 330, KV_CACHE_SATURATED)]
    opened, resolved = out
    assert opened["dedup_key"] == KV_KEY and opened["kind"] == "engine"
    assert opened["workflow"] == "vllm-0.internal:8000" and opened["bundle_id"] == ENGINE[0]
    assert opened["severity"] == "error" and opened["current_value"] == 0.97
    assert opened["threshold"] == 0.95
    evidence = opened["evidence"]
    assert evidence["bad_since"] == 60 * S and evidence["reports"] == 5
    assert evidence["description"] == (
        "KV cache 97% full (bound 95%) on vllm-0.internal:8000 (meta-llama/Llama-3.1-8B-Instruct)"
    )
    assert opened["dashboard_url"].startswith("http://localhost:3000/d/driftline-sre?from=")
    assert resolved["alert_id"] == opened["alert_id"] and resolved["resolved_at"] == 330 * S
    assert resolved["evidence"]["resolution"] == "recovered"
    assert watch.open_alerts() == []


def test_one_good_report_restarts_the_wait() -> None:
    watch = conditions()
    times, kv = every(15, [0.97, 0.97, 0.97, 0.97, 0.5, 0.97, 0.97, 0.97, 0.97, 0.97])
    assert brief(watch.update(ENGINE, em.KV_CACHE_USAGE, times, kv)) == [
        ("open", 135, KV_CACHE_SATURATED)  # bad again from 75 s: 60 s later
    ]


def test_a_value_wandering_around_the_bound_is_one_incident() -> None:
    watch = conditions(hold_down_s=60)
    wander = [0.97] * 6 + [0.93, 0.96, 0.92, 0.97, 0.91, 0.96] * 5 + [0.85] * 6
    out = watch.update(ENGINE, em.KV_CACHE_USAGE, *every(15, wander))
    assert [t["transition"] for t in out] == ["open", "resolve"]
    # Above the clear bound (0.90) the whole time until the fall at 540 s.
    assert out[1]["event_ts"] == (540 + 60) * S


def test_preemptions_judged_as_a_rate_and_a_counter_reset_is_not_negative() -> None:
    watch = conditions(hold_down_s=30)
    # +3 every 15 s (0.2/s) from 0 to 120 s, then a restart (counter back to 0), then flat.
    counts = [3.0 * i for i in range(9)] + [0.0] * 6
    out = watch.update(ENGINE, em.PREEMPTIONS, *every(15, counts))
    assert brief(out) == [("open", 75, PREEMPTIONS_RISING), ("resolve", 165, PREEMPTIONS_RISING)]
    assert out[0]["current_value"] == pytest.approx(0.2)


def test_a_queue_that_is_draining_does_not_open_one_that_grows_does() -> None:
    draining = conditions()
    waiting = [60.0, 55, 50, 45, 40, 35, 30, 25]
    assert draining.update(ENGINE, em.REQUESTS_WAITING, *every(15, waiting)) == []
    growing = conditions()
    out = growing.update(ENGINE, em.REQUESTS_WAITING, *every(15, [22.0, 25, 30, 28, 35, 41]))
    assert brief(out) == [("open", 60, QUEUE_GROWING)]
    assert out[0]["severity"] == "warning"


def test_an_engine_that_stops_reporting_resolves_by_the_newest_report_elsewhere() -> None:
    watch = conditions()
    watch.update(ENGINE, em.KV_CACHE_USAGE, *every(15, [0.97] * 6))  # open at 60 s, last at 75
    assert watch.review(100 * S) == []
    (resolve,) = watch.review(200 * S)
    assert resolve["transition"] == "resolve" and resolve["resolved_at"] == (75 + 90) * S
    assert resolve["evidence"]["resolution"] == "no_reports"


def test_idle_engines_are_forgotten_unless_an_alert_is_open() -> None:
    watch = conditions()
    quiet, saturated = ("m", "vllm-1:8000"), ENGINE
    watch.update(quiet, em.KV_CACHE_USAGE, *every(15, [0.5] * 4))
    watch.update(saturated, em.KV_CACHE_USAGE, *every(15, [0.97] * 6))
    assert watch.forget_idle(3600 * S, 600 * S) == [quiet]
    assert watch.engines() == [saturated] and watch.open_alerts()


def test_late_reports_are_counted_not_judged() -> None:
    watch = conditions()
    watch.update(ENGINE, em.KV_CACHE_USAGE, *every(15, [0.5] * 4))
    assert watch.update(ENGINE, em.KV_CACHE_USAGE, [30 * S, 45 * S], [0.99, 0.99]) == []
    assert watch.late_reports == 2 and watch.clock(ENGINE, em.KV_CACHE_USAGE) == 45 * S


def test_a_snapshot_that_is_not_one_is_refused() -> None:
    watch = conditions()
    with pytest.raises(SnapshotError, match="not an engine snapshot"):
        watch.restore(ENGINE, b"DLMON1 something else")
    watch.update(ENGINE, em.KV_CACHE_USAGE, *every(15, [0.97] * 6))
    with pytest.raises(SnapshotError, match="a snapshot of engine"):
        conditions().restore(("other", "vllm-9:8000"), watch.snapshot(ENGINE))


def test_kv_clear_bound_must_be_below_the_open_bound() -> None:
    with pytest.raises(ValidationError, match=r"engines\.kv_usage_clear"):
        EngineSettings(kv_usage_high=0.9, kv_usage_clear=0.95)


# -- properties ----------------------------------------------------------------------------

RULE_OF = {em.KV_CACHE_USAGE: KV_CACHE_SATURATED, em.REQUESTS_WAITING: QUEUE_GROWING}
series = st.lists(
    st.tuples(st.integers(1, 40), st.sampled_from([0.2, 0.85, 0.92, 0.96, 0.99])),
    min_size=1,
    max_size=80,
)


def run(pieces: list[list[tuple[int, float]]], restore_between: bool) -> list[dict[str, Any]]:
    """Feed the pieces in order, optionally through a snapshot and a fresh object each time."""
    watch = conditions()
    out: list[dict[str, Any]] = []
    t = 0
    for piece in pieces:
        times, values = [], []
        for gap, value in piece:
            t += gap
            times.append(t * S)
            values.append(value)
        out += watch.update(ENGINE, em.KV_CACHE_USAGE, times, values)
        if restore_between:
            blob = watch.snapshot(ENGINE)
            watch = conditions()
            watch.restore(ENGINE, blob)
    return out


@settings(max_examples=300, deadline=None)
@given(points=series, cuts=st.lists(st.integers(0, 80), max_size=5), restore=st.booleans())
def test_transitions_do_not_depend_on_how_reports_are_batched_or_checkpointed(
    points: list[tuple[int, float]], cuts: list[int], restore: bool
) -> None:
    bounds = sorted({0, len(points), *(c for c in cuts if c <= len(points))})
    pieces = [points[a:b] for a, b in itertools.pairwise(bounds)]
    assert run(pieces, restore) == run([points], False)


@settings(max_examples=300, deadline=None)
@given(points=series)
def test_opens_only_after_the_bound_held_and_alternates_with_resolves(
    points: list[tuple[int, float]],
) -> None:
    out = run([points], False)
    times, t = [], 0
    for gap, _ in points:
        t += gap
        times.append(t)
    values = [v for _, v in points]
    state = "resolved"
    for transition in out:
        if transition["transition"] == "open":
            assert state == "resolved"
            at = times.index(transition["event_ts"] // S)
            since = transition["evidence"]["bad_since"] // S
            # Every report from bad_since to the open was at or above the bound, for >= 60 s.
            window = [v for tt, v in zip(times, values, strict=True) if since <= tt <= times[at]]
            assert min(window) >= 0.95 and times[at] - since >= 60
            state = "open"
        elif transition["transition"] == "resolve":
            assert state == "open"
            state = "resolved"
    if max(values) < 0.95:
        assert out == []
