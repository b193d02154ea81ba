"""End to end: simulated traffic through the collector, worker, ClickHouse and PagerDuty.

A stack of its own (tansu, rotel, worker with chdb) and a real local HTTP receiver standing
in for the PagerDuty Events API. The simulator swaps support-chat to an unapproved model
halfway; the worker must store every event exactly once, open one routing alert, page it
once, and log the delivery without the routing key.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from driftline.config import Settings, load_settings
from driftline.simulator import (
    GroundTruth,
    Simulator,
    SimulatorConfig,
    network_exporter,
    parse_incident,
)
from driftline.stack import EmbeddedStack
from driftline.store import open_store
from driftline.streams import topics
from tests.integration.conftest import Kafka, write_config
from tests.utils.http_receiver import HttpReceiver

pytestmark = pytest.mark.integration

ROUTING_KEY = "R0UT1NGKEY-integration-" + uuid.uuid4().hex[:12]
WORKFLOW = "support-chat"
ALLOWED = ["gpt-4o-mini", "gpt-4o", "text-embedding-3-small"]


@dataclass
class Run:
    settings: Settings
    stack: EmbeddedStack
    receiver: HttpReceiver
    truth: GroundTruth
    kafka: Kafka


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    directory = tmp_path_factory.mktemp("governance")
    config_file = write_config(directory, f"driftline-gov-{uuid.uuid4().hex[:8]}")
    with config_file.open("a") as f:
        f.write(
            f"""
[alerts]
hold_down_s = 600

[store]
baseline_snapshot_s = 1.0

[detectors]
warmup_events = 200
window_events = 100
# The default 60 s settle would leave the bundle the incident starts at minute one only
# the run's last seconds to reach its 200 reference calls: freezing would be a race.
settle_s = 10

[workflows.{WORKFLOW}]
allowed_models = {ALLOWED!r}
"""
        )
    settings = load_settings(config_file)
    receiver = HttpReceiver()
    receiver.start()
    saved = {k: os.environ.get(k) for k in ("PAGERDUTY_ROUTING_KEY", "PAGERDUTY_EVENTS_URL")}
    os.environ["PAGERDUTY_ROUTING_KEY"] = ROUTING_KEY
    os.environ["PAGERDUTY_EVENTS_URL"] = receiver.url + "/v2/enqueue"
    stack = EmbeddedStack(settings, config_file=config_file)
    try:
        endpoints = stack.start()
        truth = GroundTruth()
        config = SimulatorConfig(
            rate=40.0,
            duration_s=120.0,
            seed=11,
            clock="simulated",
            start=datetime.now(UTC) - timedelta(minutes=10),
            workflows=(WORKFLOW,),
            incidents=(parse_incident(f"unapproved-model@60:{WORKFLOW}"),),
        )
        result = Simulator(config).run([network_exporter("grpc", endpoints.otlp_grpc)], truth)
        assert not any(result.failed), f"spans failed to export: {result.failed}"
        kafka = Kafka(settings, endpoints.bootstrap_servers)
        yield Run(settings, stack, receiver, truth, kafka)
        kafka.close()
    finally:
        stack.stop()
        receiver.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _routing_opens(records: list) -> list[dict]:
    return [
        r.json()
        for r in records
        if r.json()["kind"] == "routing" and r.json()["transition"] == "open"
    ]


def test_unapproved_model_opens_one_routing_alert(run: Run) -> None:
    alerts = run.kafka.reader(topics.LLM_ALERTS)
    alerts.wait_for(lambda rs: bool(_routing_opens(rs)), timeout_s=90)
    time.sleep(3)  # a duplicate open would arrive in the same batches
    alerts.drain()
    opens = _routing_opens(alerts.records)
    # One incident per workflow and condition: the unapproved model runs under several
    # prompt versions (several bundles), all of them one page.
    keys = [o["dedup_key"] for o in opens]
    assert keys == [f"routing/{WORKFLOW}/unallowed_model/"], keys
    (alert,) = opens
    assert alert["workflow"] == WORKFLOW
    assert alert["metric"] == "unallowed_model"
    assert alert["severity"] == "critical"
    assert alert["dashboard_url"] and alert["runbook_url"]
    # Only the swapped-in model: dated snapshot names of allowed models are in policy.
    assert alert["evidence"]["request_model"] not in ALLOWED, alert["evidence"]
    assert alert["evidence"]["offenders"] == [alert["evidence"]["model"]]


def test_alert_is_paged_once_without_leaking_the_key(run: Run) -> None:
    requests = run.receiver.wait_for(1, timeout_s=60)
    time.sleep(3)
    bodies = [r.json() for r in run.receiver.requests]
    triggers = [b for b in bodies if b["event_action"] == "trigger"]
    routing = [b for b in triggers if b["dedup_key"].startswith("routing/")]
    keys = [b["dedup_key"] for b in routing]
    assert routing and len(keys) == len(set(keys)), f"paged twice: {keys}"
    body = routing[0]
    assert body["routing_key"] == ROUTING_KEY
    assert body["payload"]["component"] == WORKFLOW
    assert body["payload"]["class"] == "routing"
    assert len(body["payload"]["summary"]) <= 1024
    assert any("driftline-drift" in link["href"] or "/d/" in link["href"] for link in body["links"])
    assert requests


def test_store_holds_every_event_once_and_the_delivery_log(run: Run) -> None:
    expected = run.truth.events
    # Everything the worker consumed is stored before its offsets commit; wait for the
    # last events to close (trace grace) and be written, then stop the worker to read chdb.
    events = run.kafka.reader(topics.LLM_EVENTS)
    events.wait_for(
        lambda rs: sum(len(r.json()["events"]) for r in rs) >= len(expected), timeout_s=90
    )
    time.sleep(2 * run.settings.store.batch_seconds + 1)
    run.stack.stop()
    store = open_store(run.settings.store.url, run.settings.store)
    try:
        row = store.query(
            "SELECT count() AS n, sum(cost_usd) AS cost, uniqExact(span_id) AS spans"
            " FROM driftline.llm_requests"
        ).to_pylist()[0]
        assert row["n"] == len(expected) == row["spans"]
        cost = sum(e["cost_usd"] or 0.0 for e in expected)
        assert row["cost"] == pytest.approx(cost, rel=1e-9)
        alerts = store.query(
            "SELECT count() AS n FROM driftline.llm_alerts WHERE kind = 'routing'"
        ).to_pylist()[0]
        assert alerts["n"] >= 1
        deliveries = store.query(
            "SELECT outcome, target, error FROM driftline.alert_deliveries"
        ).to_pylist()
        assert any(d["outcome"] == "delivered" for d in deliveries), deliveries
        assert all(ROUTING_KEY not in str(d) for d in deliveries)
        # The worker snapshots the baselines it froze: the reference of each bundle's output
        # tokens is 200 of that bundle's calls, in tokens (not on the log scale).
        baselines = store.query(
            "SELECT bundle_id, argMax(n, snapshot_ts) AS n, argMax(p50, snapshot_ts) AS p50,"
            " argMax(extra, snapshot_ts) AS extra FROM driftline.workflow_baselines"
            f" WHERE frozen AND workflow = '{WORKFLOW}' AND metric = 'output_tokens'"
            " GROUP BY bundle_id"
        ).to_pylist()
        assert baselines, "no frozen baseline was written"
        for b in baselines:
            served = sorted(
                e["output_tokens"]
                for e in expected
                if e["bundle_id"] == b["bundle_id"] and not e["error_type"]
            )
            assert b["n"] == 200 and served[0] <= b["p50"] <= served[-1], (b, served[:5])
            assert '"score"' in b["extra"]
    finally:
        store.close()
    log_text = "".join(
        Path(p.log_path).read_text(errors="replace") for p in run.stack.processes if p.log_path
    )
    assert ROUTING_KEY not in log_text
