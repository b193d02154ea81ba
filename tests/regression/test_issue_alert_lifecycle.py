"""Alerts an on-call engineer can trust: the demo's scripted incidents through the monitor.

The demo's two-minute timeline (its configuration, its 20 s hold-down) on a simulated
clock, fed to the monitor in stream-sized batches. Before the state-based lifecycle the
cost runaway's drift alerts opened and resolved every ~20 s; now every dedup key opens once,
the incidents that end within the run resolve, the one that lasts stays open, and a span
dated 2100 in one workflow changes nothing anywhere.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from driftline.config import Settings, load_settings
from driftline.demo.config import HOLD_DOWN_S, demo_config_text
from driftline.demo.timeline import scripted_timeline, segments
from driftline.simulator import GroundTruth, Simulator, SimulatorConfig
from driftline.streams.monitor import Monitor, event_time

START = datetime(2026, 1, 5, tzinfo=UTC)
DURATION_S = 120.0
MESSAGE_EVENTS = 64  # about one llm_events message of the demo's traffic
FAR_FUTURE = 4_102_444_800_000_000  # 2100-01-01


def demo_settings(tmp_path: Path) -> Settings:
    path = tmp_path / "driftline.toml"
    path.write_text(demo_config_text(tmp_path / "var"))
    settings = load_settings(path)
    assert settings.alerts.hold_down_s == HOLD_DOWN_S == 20.0  # short, as in the demo
    return settings


@pytest.fixture(scope="module")
def demo_events() -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for i, segment in enumerate(segments(scripted_timeline(DURATION_S), DURATION_S)):
        truth = GroundTruth()
        config = SimulatorConfig(
            rate=50.0,
            duration_s=segment.duration_s,
            seed=7000 + i,
            clock="simulated",
            start=START + timedelta(seconds=segment.start_s),
            incidents=segment.incidents,
        )
        Simulator(config).run([], truth)
        events += truth.events
    return sorted(events, key=lambda e: (event_time(e), e["trace_id"], e["span_id"]))


def run(
    settings: Settings, events: list[dict[str, Any]], stray: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Transitions of ``events`` in message-sized batches; ``stray`` alone in the middle."""
    monitor = Monitor(settings)
    out: list[dict[str, Any]] = []
    middle = len(events) // MESSAGE_EVENTS // 2 * MESSAGE_EVENTS
    for start in range(0, len(events), MESSAGE_EVENTS):
        if stray is not None and start == middle:
            out += monitor.process([stray], [])
        out += monitor.process(events[start : start + MESSAGE_EVENTS], [])
    return out


def at_s(ts: int) -> float:
    return (ts - int(START.timestamp() * 1e6)) / 1e6


def test_each_dedup_key_opens_once_ended_incidents_resolve_lasting_ones_stay_open(
    demo_events: list[dict[str, Any]], tmp_path: Path
) -> None:
    out = run(demo_settings(tmp_path), demo_events)
    opens = Counter(t["dedup_key"] for t in out if t["transition"] == "open")
    assert opens and max(opens.values()) == 1, opens
    resolves = Counter(t["dedup_key"] for t in out if t["transition"] == "resolve")
    assert max(resolves.values()) == 1, resolves
    resolved = {t["dedup_key"]: at_s(t["event_ts"]) for t in out if t["transition"] == "resolve"}
    # The retry storm ends at 48 s, the shadow routing at 60 s (batch jobs started before
    # then still finish on the unapproved model for a while): both resolve.
    storm = "budget/rag-search/retries_per_request/"
    assert storm in opens and 48.0 + HOLD_DOWN_S <= resolved[storm] <= 120.0, resolved
    routing = [k for k in opens if k.startswith("routing/batch-summarizer/unallowed_model/")]
    assert routing and all(resolved[k] >= 60.0 + HOLD_DOWN_S for k in routing), resolved
    # The cost runaway starts at 60 s and lasts: nothing of it resolves while traffic
    # arrives (after 120 s only the tails of long agent traces end).
    runaway = [k for k in opens if k.split("/")[1] == "agent-planner"]
    assert len(runaway) >= 3
    assert not [k for k in runaway if resolved.get(k, 1e9) <= 120.0], resolved


def test_a_span_dated_2100_changes_nothing(
    demo_events: list[dict[str, Any]], tmp_path: Path
) -> None:
    settings = demo_settings(tmp_path)
    middle = demo_events[len(demo_events) // 2]
    stray = dict(middle, end_ts=FAR_FUTURE, start_ts=FAR_FUTURE - 1000, span_id="stray")
    plain, disturbed = run(settings, demo_events), run(settings, demo_events, stray)
    assert all(t["event_ts"] < FAR_FUTURE // 2 for t in disturbed)
    assert [t for t in disturbed if t["workflow"] != stray["workflow"]] == [
        t for t in plain if t["workflow"] != stray["workflow"]
    ]
    assert [t["dedup_key"] for t in disturbed if t["transition"] == "resolve"] == [
        t["dedup_key"] for t in plain if t["transition"] == "resolve"
    ]
