"""A worker killed and restarted resumes its baselines and its alerts.

One worker, ClickHouse over HTTP, a local PagerDuty receiver (helpers from test_scaling.py).
Before the kill: baselines warm up, two routing alerts open (support-chat and rag-search pick
unapproved models) and the rag-search one resolves when its incident stops. The worker is then
SIGKILLed and started again, and traffic continues with an output-token drift in support-chat.

After the restart: the drift is detected against the baseline frozen before the kill (no new
warm-up), at the same point as an uninterrupted offline run of the same events through
:class:`streams.monitor.Monitor`; the open alert is neither re-opened nor paged again, and the
resolved one is not triggered again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from driftline.config import Settings
from driftline.schemas.alert import TRANSITION_FIELDS
from driftline.schemas.event import TRACE_FIELDS, from_wire
from driftline.simulator import SimulatorConfig, parse_incident
from driftline.streams import topics
from driftline.streams.monitor import Monitor
from tests.integration.conftest import Kafka, Record
from tests.integration.test_scaling import (
    cluster,
    models_by_workflow,
    repeated_pages,
    simulate,
    stored_totals,
    wait_until,
)

pytestmark = pytest.mark.integration

WARMUP = 100
# Longer than the event-time disorder of a simulated burst (minutes of event time sent in
# seconds, read from four partitions at uneven pace), so only a real gap resolves an alert.
HOLD_DOWN_S = 300
DRIFTING = "support-chat"
RESOLVING = "rag-search"
PHASE_S = (150.0, 500.0, 200.0)  # warm-up with both incidents, rag-search calm, drift
PHASE_RATE = (12.0, 4.0, 12.0)


def phases(start: datetime) -> list[SimulatorConfig]:
    base = SimulatorConfig(
        rate=12.0, clock="simulated", seed=31, workflows=(DRIFTING, RESOLVING), start=start
    )
    unapproved = parse_incident(f"unapproved-model@0:{DRIFTING}=0.5")
    incidents = (
        (unapproved, parse_incident(f"unapproved-model@0:{RESOLVING}=0.5")),
        (unapproved,),
        (unapproved, parse_incident(f"token-drift@0:{DRIFTING}=2.0")),
    )
    out = []
    offset = 0.0
    for i, (duration, found) in enumerate(zip(PHASE_S, incidents, strict=True)):
        out.append(
            dataclasses.replace(
                base,
                rate=PHASE_RATE[i],
                seed=base.seed + i,
                duration_s=duration,
                start=start + timedelta(seconds=offset),
                incidents=found,
            )
        )
        offset += duration
    return out


def transitions(records: list[Record]) -> list[dict[str, Any]]:
    """Alert transitions from ``llm_alerts``, timestamps in microseconds."""
    return [from_wire(r.json(), TRANSITION_FIELDS) for r in records]


def details(body: dict[str, Any]) -> dict[str, Any]:
    """``custom_details`` of a trigger (a resolve carries no payload)."""
    return dict(body.get("payload", {}).get("custom_details", {}))


def replay_opens(settings: Settings, records: list[Record], workflow: str) -> list[dict]:
    """Opens of an uninterrupted run over ``workflow``'s llm_events messages, in log order.

    As the worker's monitor reads them: each call once, from its request (published at
    decode, maybe twice when decode ran again after the kill) or else from its closed trace.
    """
    monitor = Monitor(settings)
    out = []
    seen: set[str] = set()
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        if record.key != workflow.encode():
            continue
        doc = record.json()
        early = doc["early"]
        late = [from_wire(e) for i, e in enumerate(doc["events"]) if not early[i]]
        requests = [from_wire(e) for e in doc["requests"] if e["span_id"] not in seen]
        seen.update(e["span_id"] for e in requests)
        traces = [from_wire(t, TRACE_FIELDS) for t in doc["traces"]]
        transitions = monitor.process(late + requests, traces)
        out += [t for t in transitions if t["transition"] == "open"]
    return out


def test_restarted_worker_resumes_baselines_and_alerts(tmp_path: Path) -> None:
    start = datetime.now(UTC) - timedelta(hours=1)
    plan = phases(start)
    calm = simulate(dataclasses.replace(plan[0], incidents=()), endpoint=None).events
    allowed = models_by_workflow(calm)
    extra = f"""
[alerts]
hold_down_s = {HOLD_DOWN_S}

[detectors]
warmup_events = {WARMUP}
window_events = {WARMUP}
max_bundles_per_workflow = 8

[workflows.{DRIFTING}]
allowed_models = {allowed[DRIFTING]!r}

[workflows.{RESOLVING}]
allowed_models = {allowed[RESOLVING]!r}
"""
    with cluster(tmp_path, extra) as c:
        c.start_worker("worker")
        kafka = Kafka(c.settings, c.bootstrap)
        alerts = kafka.reader(topics.LLM_ALERTS)
        store = c.store()
        try:
            sent: list[dict[str, Any]] = []
            for config in plan[:2]:
                sent += simulate(config, c.otlp_grpc).events

            def resolved_before_kill(records: list[Record]) -> bool:
                return any(
                    t["workflow"] == RESOLVING and t["transition"] == "resolve"
                    for t in transitions(records)
                )

            alerts.wait_for(resolved_before_kill, timeout_s=90)
            wait_until(lambda: stored_totals(store)[0] >= len(sent), "phase 1-2 stored", 60)
            wait_until(
                lambda: any(b["event_action"] == "resolve" for b in c.receiver.bodies()),
                "the resolve to be paged",
                30,
            )
            # Everything the monitor published before the kill (it may still be finishing
            # the backlog when the store and the pager already have what they need).
            before = transitions(alerts.drain())
            pages_before = len(c.receiver.bodies())

            c.kill_worker("worker")  # no wait for an offset commit: the tail is re-delivered
            restart_s = c.start_worker("worker")
            killed_at_us = int((start + timedelta(seconds=sum(PHASE_S[:2]))).timestamp() * 1e6)
            sent += simulate(plan[2], c.otlp_grpc).events
            wait_until(
                lambda: stored_totals(store)[0] >= len(sent),
                f"phase 3 stored ({len(sent)} events in all)",
                90,
            )
            time.sleep(3)
            count, cost, spans = stored_totals(store)
        finally:
            store.close()
        events_reader = kafka.reader(topics.LLM_EVENTS)
        events_reader.wait_for(
            lambda rs: sum(len(r.json()["events"]) for r in rs) >= len(sent), timeout_s=30
        )

        # The monitor reads llm_events apart from the store and may still be working
        # through phase 3 (restored state, then the burst): wait for the drift it must
        # find, then read everything it published (asserted below either way).
        def drift_after_kill(records: list[Record]) -> bool:
            return any(
                t["transition"] == "open"
                and t["workflow"] == DRIFTING
                and t["metric"] == "output_tokens"
                and t["opened_at"] >= killed_at_us
                for t in transitions(records)
            )

        with contextlib.suppress(AssertionError):
            alerts.wait_for(drift_after_kill, timeout_s=60)
        after = transitions(alerts.drain())
        bodies = c.receiver.bodies()
        receiver = c.receiver
        c.check_alive("worker")
        kafka.close()

    assert count == len(sent) == spans
    assert cost == pytest.approx(sum(e["cost_usd"] or 0.0 for e in sent), rel=1e-9)

    # What the restart may change is what came after the kill: the new transitions and pages.
    # (Before it, an alert may resolve and reopen on its own: a simulated burst sends minutes
    # of event time in seconds and the partitions are read at uneven pace.)
    seen_before = {(t["alert_id"], t["transition"], t["event_ts"]) for t in before}
    new_transitions = [
        t for t in after if (t["alert_id"], t["transition"], t["event_ts"]) not in seen_before
    ]
    new_pages = bodies[pages_before:]

    # Routing alerts of support-chat open at the kill, still hit after it: not opened again,
    # not paged again, no resolve.
    state_at_kill: dict[str, dict[str, Any]] = {}
    for t in before:
        state_at_kill[t["dedup_key"]] = t
    open_at_kill = {
        key: t["alert_id"]
        for key, t in state_at_kill.items()
        if t["workflow"] == DRIFTING and t["kind"] == "routing" and t["transition"] != "resolve"
    }
    assert open_at_kill
    for key, alert in open_at_kill.items():
        lifecycle = [
            (t["transition"], (t["event_ts"] - killed_at_us) / 1e6, t["alert_id"][:6])
            for t in new_transitions
            if t["dedup_key"] == key
        ]
        assert all(t == "update" for t, *_ in lifecycle), (key, lifecycle)
        paged_again = [
            details(b).get("transition")
            for b in new_pages
            if b["dedup_key"] == key and b["event_action"] == "trigger"
        ]
        assert "open" not in paged_again, (key, paged_again)
        assert (
            sum(
                1
                for b in bodies
                if details(b).get("alert_id") == alert and details(b).get("transition") == "open"
            )
            == 1
        ), key

    # The rag-search alerts resolved before the kill (their incident ended with phase 1):
    # nothing new after it, neither published nor paged.
    resolved_at_kill = {
        key
        for key, t in state_at_kill.items()
        if t["workflow"] == RESOLVING and t["transition"] == "resolve"
    }
    assert resolved_at_kill
    for key in resolved_at_kill:
        again = [
            (t["transition"], (t["event_ts"] - killed_at_us) / 1e6, t["alert_id"][:6])
            for t in new_transitions
            if t["dedup_key"] == key
        ]
        assert not again, (key, again)
        assert not [b["event_action"] for b in new_pages if b["dedup_key"] == key], key

    # No alert state, open, update or resolve, is published or paged twice.
    states = [(t["alert_id"], t["transition"], t["event_ts"]) for t in after]
    assert len(states) == len(set(states))
    repeated = repeated_pages(receiver)
    assert not repeated, (
        pages_before,
        [
            (i, details(b).get("alert_id", "")[:6], details(b).get("transition"))
            for i, b in enumerate(bodies)
            if any(details(b).get("alert_id") == r[2] for r in repeated)
        ],
    )

    # The drift after the restart is measured against the baseline frozen before the kill.
    drift = [
        t
        for t in after
        if t["transition"] == "open"
        and t["kind"] == "drift"
        and t["workflow"] == DRIFTING
        and t["metric"] == "output_tokens"
        and t["opened_at"] >= killed_at_us
    ]
    assert drift, (
        "the output-token drift after the restart was not detected",
        [
            (
                t["transition"],
                (t["event_ts"] - killed_at_us) / 1e6,
                t["alert_id"][:6],
                t["bundle_id"],
            )
            for t in after
            if t["workflow"] == DRIFTING and t["metric"] == "output_tokens"
        ],
    )
    first = min(drift, key=lambda t: t["opened_at"])
    evidence = first["evidence"]
    assert evidence["reference_end"] < killed_at_us, evidence  # frozen before the kill
    offline = [
        t
        for t in replay_opens(c.settings, events_reader.records, DRIFTING)
        if t["kind"] == "drift"
        and t["metric"] == "output_tokens"
        and t["opened_at"] >= killed_at_us
    ]
    assert offline, "the uninterrupted replay detects no drift"
    reference = min(offline, key=lambda t: t["opened_at"])
    drift_events = sorted(
        e["end_ts"]
        for e in sent
        if e["workflow"] == DRIFTING and e["bundle_id"] == first["bundle_id"]
    )
    apart = abs(
        sum(1 for ts in drift_events if ts <= first["opened_at"])
        - sum(1 for ts in drift_events if ts <= reference["opened_at"])
    )
    assert first["dedup_key"] == reference["dedup_key"]
    assert apart <= WARMUP // 10, (first["opened_at"], reference["opened_at"], apart)
    delay = sum(1 for ts in drift_events if killed_at_us <= ts <= first["opened_at"])
    print(
        f"\nrestart: {len(sent)} events, worker ready {restart_s:.1f}s after SIGKILL; "
        f"{pages_before} pages before the kill, {len(bodies)} after all; drift detected "
        f"{delay} events into the drift (uninterrupted replay: {apart} events apart)"
    )
