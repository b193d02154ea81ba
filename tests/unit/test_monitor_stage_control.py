"""The monitor stage's two operator paths: control records applied once, bad snapshots dropped."""

from __future__ import annotations

from collections import Counter

from driftline.streams.monitor import Monitor
from driftline.streams.monitor.control import accept_baseline_message
from driftline.streams.stages import control_transitions, restore_or_rebuild
from tests.unit.test_monitor import T0, S, event, of, run, settings, token_stream


def drifted() -> Monitor:
    tokens = token_stream(7, 1400, 1000, 1400, 2.0)
    monitor = Monitor(settings(["input_tokens"], hold_s=20.0))
    opened = run(monitor, [event(i, T0 + i * S, t) for i, t in enumerate(tokens)])
    assert of(opened, "drift/chat/input_tokens")
    return monitor


def test_a_control_record_is_applied_once_by_offset() -> None:
    monitor, counters = drifted(), Counter[str]()
    value = accept_baseline_message("chat", "input_tokens", None, 1, "ops")
    applied: dict[str, int] = {"chat": 40}
    advanced: dict[str, int] = {}
    assert control_transitions(monitor, value, 40, applied, advanced, counters) == []  # re-read
    resolved = control_transitions(monitor, value, 41, applied, advanced, counters)
    assert [t["evidence"]["resolution"] for t in resolved] == ["accepted"]
    assert advanced == {"chat": 41} and counters["monitor.controls_applied"] == 1


def test_a_bad_control_record_or_an_ordinary_message_changes_nothing() -> None:
    monitor, counters = drifted(), Counter[str]()
    bad = b'{"events": [], "traces": [], "control": {"action": "accept_baseline"}}'
    assert control_transitions(monitor, bad, 5, {}, {}, counters) == []
    empty = b'{"events": [], "traces": []}'
    assert control_transitions(monitor, empty, 6, {}, {}, counters) == []
    assert counters["monitor.controls_refused"] == 1 and len(monitor.open_alerts()) == 1


def test_an_unusable_snapshot_is_dropped_not_fatal() -> None:
    fresh, counters = Monitor(settings(["input_tokens"])), Counter[str]()
    restore_or_rebuild(fresh, "chat", b"DLMON1\n\x80\x04 an old pickle", counters)
    assert fresh.workflows() == [] and counters["monitor.snapshots_dropped"] == 1
    source = drifted()
    restore_or_rebuild(fresh, "chat", source.snapshot("chat"), counters)
    assert fresh.workflows() == ["chat"] and counters["monitor.snapshots_dropped"] == 1
