"""``driftline baseline accept`` against a running worker: re-baseline, resolve as accepted.

One worker, ClickHouse over HTTP, a local PagerDuty receiver (helpers from test_scaling.py).
support-chat warms up, then its answers double for good (an intended prompt change). The
drift alert opens and pages once. The command publishes its control record; the worker that
owns the workflow resolves the alert with ``evidence.resolution = "accepted"``, PagerDuty
gets the resolve, the store keeps the reason, and the doubled answers that keep coming
raise nothing more: they are the new reference.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from driftline.schemas.alert import TRANSITION_FIELDS
from driftline.schemas.event import from_wire
from driftline.simulator import SimulatorConfig, parse_incident
from driftline.streams import topics
from tests.integration.conftest import ROOT, Kafka, Record
from tests.integration.test_scaling import cluster, simulate, stored_totals, wait_until

pytestmark = pytest.mark.integration

WORKFLOW = "support-chat"
METRIC = "output_tokens"


def transitions(records: list[Record]) -> list[dict[str, Any]]:
    return [from_wire(r.json(), TRANSITION_FIELDS) for r in records]


def test_accepting_a_shift_resolves_its_alert_and_makes_it_the_reference(tmp_path: Path) -> None:
    start = datetime.now(UTC) - timedelta(minutes=30)
    base = SimulatorConfig(
        rate=12.0, clock="simulated", seed=41, workflows=(WORKFLOW,), start=start, duration_s=240
    )
    drift = parse_incident(f"token-drift@0:{WORKFLOW}=2.0")
    shifted = dataclasses.replace(
        base, seed=42, start=start + timedelta(seconds=240), incidents=(drift,)
    )
    after = dataclasses.replace(
        shifted, seed=43, start=start + timedelta(seconds=480), duration_s=300
    )
    extra = """
[alerts]
hold_down_s = 60

[detectors]
warmup_events = 100
window_events = 100
max_bundles_per_workflow = 8
settle_s = 10
"""
    with cluster(tmp_path, extra) as c:
        c.start_worker("worker")
        kafka = Kafka(c.settings, c.bootstrap)
        alerts = kafka.reader(topics.LLM_ALERTS)
        store = c.store()
        try:
            sent = simulate(base, c.otlp_grpc).events + simulate(shifted, c.otlp_grpc).events

            def drift_open(records: list[Record]) -> bool:
                return any(
                    t["transition"] == "open" and t["metric"] == METRIC and t["kind"] == "drift"
                    for t in transitions(records)
                )

            alerts.wait_for(drift_open, timeout_s=90)
            opened = next(
                t
                for t in transitions(alerts.records)
                if t["transition"] == "open" and t["metric"] == METRIC
            )
            command = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "driftline.cli",
                    "--config",
                    str(c.config_file),
                    "baseline",
                    "accept",
                    WORKFLOW,
                    "--metric",
                    METRIC,
                    "--bootstrap-servers",
                    c.bootstrap,
                ],
                cwd=ROOT,
                env=c.env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert command.returncode == 0, command.stderr
            accepted_at = time.monotonic()

            def accepted(records: list[Record]) -> bool:
                return any(
                    t["transition"] == "resolve" and t["alert_id"] == opened["alert_id"]
                    for t in transitions(records)
                )

            alerts.wait_for(accepted, timeout_s=60)
            apply_s = time.monotonic() - accepted_at
            sent += simulate(after, c.otlp_grpc).events
            wait_until(lambda: stored_totals(store)[0] >= len(sent), "every event stored", 90)
            time.sleep(3)
            rows = store.query(
                "SELECT state, JSONExtractString(evidence, 'resolution') AS resolution"
                " FROM driftline.llm_alerts_current"
                f" WHERE alert_id = '{opened['alert_id']}'"
            ).to_pylist()
        finally:
            store.close()
        every = transitions(alerts.drain())  # everything published so far, not one poll
        bodies = c.receiver.bodies()
        c.check_alive("worker")
        kafka.close()

    print(f"\nbaseline accept applied {apply_s:.1f}s after the command returned")
    resolve = next(
        t for t in every if t["transition"] == "resolve" and t["alert_id"] == opened["alert_id"]
    )
    assert resolve["evidence"]["resolution"] == "accepted"
    assert rows == [{"state": "resolved", "resolution": "accepted"}]
    # Every bundle's alert on the metric open when the accept was applied resolved as accepted,
    # and the doubled answers that went on for five more minutes opened nothing new on it. An
    # alert that opened and recovered before the accept (a bundle's alert resolving and
    # reopening while its shift lasted: a flap, which the detectors' benches measure; seen once,
    # in a run on a loaded machine) is reported, not counted as accepted.
    on_metric = [t for t in every if t["metric"] == METRIC and t["workflow"] == WORKFLOW]
    opened_ids = {t["alert_id"] for t in on_metric if t["transition"] == "open"}
    resolved = {
        t["alert_id"]: t["evidence"].get("resolution")
        for t in on_metric
        if t["transition"] == "resolve"
    }
    recovered_before = {
        alert for alert, resolution in resolved.items() if resolution == "recovered"
    }
    if recovered_before:
        print(f"alerts on {METRIC} recovered before the accept (flaps): {sorted(recovered_before)}")
    assert set(resolved) == opened_ids  # every one resolved
    open_at_accept = opened_ids - recovered_before
    assert opened["alert_id"] in open_at_accept
    assert {a: resolved[a] for a in open_at_accept} == dict.fromkeys(open_at_accept, "accepted")
    assert all(t["event_ts"] <= resolve["event_ts"] for t in on_metric)  # nothing after it
    # A flap reopened its bundle's incident, and that one was open at the accept.
    key_of = {t["alert_id"]: t["dedup_key"] for t in on_metric}
    assert {key_of[a] for a in recovered_before} <= {key_of[a] for a in open_at_accept}
    paged = [
        (b["event_action"], b.get("payload", {}).get("custom_details", {}).get("alert_id"))
        for b in bodies
        if b["dedup_key"] == opened["dedup_key"]
    ]
    assert paged == [("trigger", opened["alert_id"]), ("resolve", None)]
