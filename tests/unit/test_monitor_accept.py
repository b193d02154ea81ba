"""``driftline baseline accept``: the monitor re-baselines and resolves with reason accepted."""

from __future__ import annotations

import pytest

from driftline.streams.monitor import Monitor
from driftline.streams.monitor.control import (
    ControlError,
    accept_baseline_message,
    parse_control,
)
from tests.unit.test_monitor import T0, S, event, of, run, settings, token_stream


def drifted(metrics: list[str]) -> tuple[Monitor, list[dict], list[dict]]:
    """A monitor whose chat workflow doubled its tokens for good at event 1000."""
    tokens = token_stream(7, 3000, 1000, 3000, 2.0)
    events = [event(i, T0 + i * S, t) for i, t in enumerate(tokens)]
    monitor = Monitor(settings(metrics, hold_s=20.0))
    return monitor, events, run(monitor, events[:1400])


def test_accepting_resolves_once_and_the_new_level_is_the_reference() -> None:
    monitor, events, before = drifted(["input_tokens"])
    opened = of(before, "drift/chat/input_tokens/b1")
    assert [t["transition"] for t in opened if t["transition"] != "update"] == ["open"]

    control = parse_control(accept_baseline_message("chat", None, None, 0, "ops"))
    assert control is not None
    resolved = monitor.apply_control(control)
    assert [(t["transition"], t["dedup_key"]) for t in resolved] == [
        ("resolve", "drift/chat/input_tokens/b1")
    ]
    assert resolved[0]["evidence"]["resolution"] == "accepted"
    assert resolved[0]["evidence"]["accepted_by"] == "ops"
    assert resolved[0]["resolved_at"] == monitor.clock("chat") == T0 + 1399 * S
    assert monitor.open_alerts() == []

    # The doubled level goes on: measured against the new reference, it is no drift.
    after = run(monitor, events[1400:])
    assert of(after, "drift/chat/input_tokens") == []


def test_accepting_one_metric_leaves_the_others_alone() -> None:
    monitor, _, before = drifted(["input_tokens", "latency"])
    assert {t["metric"] for t in before if t["transition"] == "open"} >= {"input_tokens", "latency"}
    resolved = monitor.accept_baseline("chat", metric="latency")
    assert [t["metric"] for t in resolved] == ["latency"]
    assert [a["metric"] for a in monitor.open_alerts()] == ["input_tokens"]


def test_accepting_another_bundle_or_an_unknown_workflow_changes_nothing() -> None:
    monitor, _, _ = drifted(["input_tokens"])
    assert monitor.accept_baseline("chat", bundle_id="b9") == []
    assert monitor.accept_baseline("nobody") == []
    assert len(monitor.open_alerts()) == 1


def test_accepted_state_survives_a_snapshot() -> None:
    monitor, events, _ = drifted(["input_tokens"])
    monitor.accept_baseline("chat")
    restored = Monitor(settings(["input_tokens"], hold_s=20.0))
    restored.restore("chat", monitor.snapshot("chat"))
    assert run(restored, events[1400:]) == run(monitor, events[1400:])


@pytest.mark.parametrize(
    "value",
    [
        b'{"events": [], "traces": [], "control": {"action": "drop_tables", "workflow": "w"}}',
        b'{"control": {"action": "accept_baseline", "workflow": "", "requested_at": 1}}',
        b'{"control": {"action": "accept_baseline", "workflow": "w", "metric": "x",'
        b' "requested_at": 1}}',
        b"not json",
    ],
)
def test_malformed_control_records_are_refused(value: bytes) -> None:
    with pytest.raises(ControlError):
        parse_control(value)
