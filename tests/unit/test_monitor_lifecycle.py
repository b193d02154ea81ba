"""The alert lifecycle: open while the condition holds, one resolve after it clears,
updates of the same incident, and event time per workflow."""

from __future__ import annotations

from typing import Any

from driftline.schemas.event import TRACE_FIELDS, from_wire
from driftline.streams.monitor import Monitor
from tests.unit.test_monitor import T0, S, event, of, run, settings, token_stream

FAR_FUTURE = 4_102_444_800_000_000  # 2100-01-01


def kinds(transitions: list[dict[str, Any]]) -> list[str]:
    return [t["transition"] for t in transitions]


def test_a_persistent_shift_stays_open_whatever_the_hold_down() -> None:
    # The shift lasts to the end: 40 minutes of it against a 20 s hold-down.
    tokens = token_stream(1, 3400, 1000, 3400, 2.0)
    events = [event(i, T0 + i * S, t) for i, t in enumerate(tokens)]
    out = run(Monitor(settings(["input_tokens"], hold_s=20.0)), events)
    drift = of(out, "drift/chat/input_tokens/b1")
    assert kinds(drift).count("open") == 1
    assert "resolve" not in kinds(drift)


def test_a_transient_shift_resolves_once_after_the_hold_down() -> None:
    tokens = token_stream(2, 2400, 1000, 1300, 2.0)
    events = [event(i, T0 + i * S, t) for i, t in enumerate(tokens)]
    out = of(run(Monitor(settings(["input_tokens"], hold_s=20.0)), events), "drift/chat/input")
    assert kinds(out).count("open") == 1 and kinds(out).count("resolve") == 1
    resolved = out[-1]
    assert resolved["transition"] == "resolve"
    # Clear within a few windows (100 events each) of the shift's end, then 20 s held down.
    assert T0 + 1320 * S <= resolved["resolved_at"] <= T0 + 1820 * S


def test_updates_only_when_the_alert_gets_worse() -> None:
    # Tokens climb in three steps: the alert opens once, updates as the effect grows.
    tokens = token_stream(3, 2200, 1000, 2200, 1.4)
    tokens[1300:] *= 1.6
    tokens[1600:] *= 1.6
    events = [event(i, T0 + i * S, t) for i, t in enumerate(tokens)]
    out = of(run(Monitor(settings(["input_tokens"])), events), "drift/chat/input")
    assert kinds(out)[0] == "open" and "resolve" not in kinds(out)
    updates = [t for t in out if t["transition"] == "update"]
    assert updates and {t["alert_id"] for t in out} == {out[0]["alert_id"]}
    for before, after in zip(out, updates, strict=False):
        worse = after["severity"] != before["severity"] or after["score"] > 1.25 * before["score"]
        assert worse, (before["score"], after["score"])


def test_window_budget_resolves_once_spend_stops_and_stays_open_while_it_runs() -> None:
    cfg = settings(
        ["input_tokens"],
        hold_s=20.0,
        chat={"budgets": {"tokens_per_window": 20_000, "window_s": 120}},
    )
    # 500 tokens a second for 10 minutes (60k per 2-minute window), then 50 a second.
    events = [event(i, T0 + i * S, 400) for i in range(600)]
    events += [event(600 + i, T0 + (600 + i) * S, 40) for i in range(600)]
    out = of(run(Monitor(cfg), events, batch=10), "budget/chat/tokens_per_window")
    out = [t for t in out if t["transition"] != "update"]  # the window fills: updates
    assert kinds(out) == ["open", "resolve"]
    # Below 90% of the limit once the window holds less than about 36 s of the old rate.
    assert T0 + 600 * S < out[1]["resolved_at"] <= T0 + (720 + 20 + 60) * S


def test_far_future_event_moves_no_other_clock_and_resolves_nothing() -> None:
    cfg = settings(["input_tokens"], hold_s=20.0, chat={"budgets": {"max_tokens_per_request": 600}})
    monitor = Monitor(cfg)
    events = [event(i, T0 + i * S, 400, workflow="other") for i in range(30)]
    events += [event(100, T0 + 29 * S, 4000)]  # a breach: opens a budget alert on "chat"
    opened = monitor.process(events, [])
    assert kinds(of(opened, "budget/chat/tokens_per_request")) == ["open"]
    clocks = {w: monitor.clock(w) for w in ("chat", "other")}

    stray = event(101, FAR_FUTURE, 400, workflow="stray")
    ahead = event(102, FAR_FUTURE, 400)  # in the workflow with the open alert
    assert monitor.process([stray], []) == []
    assert monitor.process([ahead], []) == []
    assert {w: monitor.clock(w) for w in ("chat", "other")} == clocks
    assert monitor.clock("stray") <= T0 + 29 * S + 300 * S  # started near everyone else
    assert [a["dedup_key"] for a in monitor.open_alerts()] == ["budget/chat/tokens_per_request/"]

    # Ordinary traffic goes on: the alert resolves 20 s after its last breach, once.
    later = [event(200 + i, T0 + (30 + i) * S, 400) for i in range(40)]
    out = monitor.process(later, [])
    assert kinds(of(out, "tokens_per_request")) == ["resolve"]
    assert out[0]["resolved_at"] == T0 + 49 * S


def test_a_quiet_workflow_resolves_on_the_fleet_clock() -> None:
    cfg = settings(["input_tokens"], hold_s=20.0, chat={"budgets": {"max_tokens_per_request": 600}})
    monitor = Monitor(cfg)
    monitor.process([event(0, T0, 4000)], [])  # chat breaches once, then goes quiet
    busy = [event(1 + i, T0 + i * S, 400, workflow=w) for i in range(60) for w in ("a", "b")]
    out = run(monitor, busy, batch=10)
    assert kinds(out) == ["resolve"] and out[0]["resolved_at"] == T0 + 20 * S


def test_trace_limits_resolve_after_the_hold_down() -> None:
    cfg = settings(["input_tokens"], hold_s=20.0, chat={"budgets": {"max_loop_depth": 3}})
    trace = from_wire({}, TRACE_FIELDS) | {
        "trace_id": "t1",
        "workflow": "chat",
        "end_ts": T0 + 5 * S,
        "max_loop_depth": 7,
    }
    monitor = Monitor(cfg)
    assert kinds(monitor.process([event(0, T0, 400)], [trace])) == ["open"]
    out = monitor.process([event(i, T0 + i * S, 400) for i in range(1, 40)], [])
    assert kinds(out) == ["resolve"] and out[0]["resolved_at"] == T0 + 25 * S


def test_a_retired_bundle_resolves_its_drift_alert() -> None:
    # b1 drifts and stops serving at 1300; b2 takes the traffic from then on.
    tokens = token_stream(4, 3000, 1000, 3000, 2.0)
    events = [
        event(i, T0 + i * S, t, bundle_id="b1" if i < 1300 else "b2") for i, t in enumerate(tokens)
    ]
    cfg = settings(["input_tokens"], hold_s=20.0)
    cfg = cfg.model_copy(
        update={"detectors": cfg.detectors.model_copy(update={"canary_active_s": 120.0})}
    )
    out = of(run(Monitor(cfg), events), "drift/chat/input_tokens/b1")
    assert kinds(out).count("open") == 1
    resolved = [t for t in out if t["transition"] == "resolve"]
    # Idle for canary_active_s (120 s), then held down 20 s.
    assert len(resolved) == 1 and T0 + 1419 * S <= resolved[0]["resolved_at"] <= T0 + 1500 * S


def test_late_evidence_of_a_resolved_incident_opens_nothing() -> None:
    cfg = settings(["input_tokens"], hold_s=20.0, chat={"budgets": {"max_tokens_per_request": 600}})
    monitor = Monitor(cfg)
    breaches = [event(i, T0 + i * S, 4000) for i in range(5)]
    calm = [event(10 + i, T0 + (5 + i) * S, 400) for i in range(40)]
    first = monitor.process(breaches[:3] + calm, [])
    assert kinds(first) == ["open", "resolve"]
    # Two breaching calls from before the resolve arrive late (a lagging partition upstream).
    assert monitor.process(breaches[3:], []) == []
    # A new breach after the resolve is a new incident.
    again = monitor.process([event(99, T0 + 60 * S, 4000)], [])
    assert kinds(again) == ["open"] and again[0]["alert_id"] != first[0]["alert_id"]


def test_a_condition_seen_holding_again_starts_its_clear_time_over() -> None:
    # A shift near the stay-open bar dips under it on noise: the alert resolves only once
    # it has been clear at every review for the hold-down, not from the first dip.
    from driftline.streams.monitor.lifecycle import OpenAlert, review

    hold = 300
    alerts = {"k": OpenAlert({"dedup_key": "k", "state": "open"}, "drift", 0, 1.0, "warning")}
    answers = iter([False, True, False, False])
    assert review(alerts, 100, hold, lambda _: next(answers)) == []  # clear from 100
    assert review(alerts, 200, hold, lambda _: next(answers)) == []  # holds again
    assert review(alerts, 450, hold, lambda _: next(answers)) == []  # clear from 450 on
    (resolved,) = review(alerts, 800, hold, lambda _: next(answers))
    assert resolved["transition"] == "resolve" and resolved["event_ts"] == 450 + hold
    assert alerts == {}
