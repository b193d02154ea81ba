"""A real worker pages about itself: the store fails, a pipeline alert reaches the pager straight
from the worker and resolves once the store is back; its heartbeat reaches a monitor only
while it is ready; ``driftline status`` reads the same worker. Then consumer lag: the store
stage stalls after the worker has committed, records pile up on llm_events past the bound, a
``consumer_lag`` page goes out and resolves once the store is back and the lag drains.

The store is ClickHouse over HTTP served from chdb (switched to failing and back), the pager a
local HTTP receiver checking PagerDuty's Events API v2 rules, the heartbeat monitor another.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from driftline.cli import main
from driftline.streams import topics
from tests.integration.conftest import PARTITIONS, Kafka
from tests.integration.test_scaling import ROUTING_KEY, cluster
from tests.integration.test_worker_metrics import free_port, one_trace, value
from tests.utils.http_receiver import HttpReceiver
from tests.utils.prometheus_text import parse

pytestmark = pytest.mark.integration

WORKER = "it-worker"
KEY = f"pipeline/{WORKER}/store_failing/"
HEARTBEAT_ENV = "DRIFTLINE_TEST_HEARTBEAT_URL"


def wait_for(check: Callable[[], Any], what: str, timeout_s: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.2)


def test_store_outage_pages_and_resolves_and_the_heartbeat_follows_readiness(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    metrics = f"http://127.0.0.1:{port}"
    config = (
        f'[worker]\nmetrics_port = {port}\nname = "{WORKER}"\n'
        "self_alert_check_s = 0.5\nself_alert_for_s = 1\nself_alert_hold_down_s = 2\n"
        f'heartbeat_url_env = "{HEARTBEAT_ENV}"\nheartbeat_s = 1\nheartbeat_method = "POST"\n'
    )
    token = uuid.uuid4().hex
    with HttpReceiver() as monitor, cluster(tmp_path, config) as c:
        pager = c.receiver
        pager.validate_pagerduty = True  # a body the real Events API would refuse gets a 400
        c.env[HEARTBEAT_ENV] = f"{monitor.base_url}/ping/{token}"

        def events(action: str) -> list[dict[str, Any]]:
            return [
                body
                for body in pager.bodies()
                if body.get("dedup_key") == KEY and body.get("event_action") == action
            ]

        def open_gauge() -> float | None:
            text = httpx.get(f"{metrics}/metrics", timeout=5).text
            return value(parse(text), "driftline_pipeline_alert_open", condition="store_failing")

        # Down before the worker starts: assigned, the store never opens. Kafka is fine, but
        # the page does not go through it: the worker sends it straight to the pager.
        c.server.fail_with(210, "simulated outage")
        c.start_worker("worker")
        assigned = time.monotonic()
        trigger = wait_for(lambda: events("trigger"), "the store_failing trigger")[0]
        paged_s = time.monotonic() - assigned
        assert trigger["routing_key"] == ROUTING_KEY
        assert trigger["payload"]["severity"] == "critical"
        assert trigger["payload"]["source"] == WORKER
        assert trigger["payload"]["summary"].startswith(
            f"driftline worker {WORKER}: store not open"
        ), trigger["payload"]["summary"]
        assert trigger["payload"]["custom_details"]["kind"] == "pipeline"
        assert [r.answered for r in pager.requests if r.json().get("dedup_key") == KEY] == [202]
        assert open_gauge() == 1
        # The page leaves while the first assignment's state is still being restored (the
        # readiness reason is "rebalancing" until then); then the reason is the store.
        wait_for(
            lambda: "store not open" in httpx.get(f"{metrics}/readyz", timeout=5).text,
            "/readyz to name the store",
        )
        assert main(["status", "--worker", metrics, "--once"]) == 1
        screen = capsys.readouterr().out
        assert "  ready         NO: not ready: store not open yet (see the log)" in screen
        assert "  self-alerts   OPEN: store_failing" in screen
        time.sleep(2)  # a few heartbeat periods: none while not ready
        assert monitor.requests == []

        recovered = time.monotonic()
        c.server.recover()
        resolve = wait_for(lambda: events("resolve"), "the store_failing resolve")[0]
        resolved_s = time.monotonic() - recovered
        assert resolve == {"routing_key": ROUTING_KEY, "event_action": "resolve", "dedup_key": KEY}
        assert len(events("trigger")) == 1  # one incident, not one per failed check
        assert open_gauge() == 0

        # Ready, nothing open: the heartbeat reaches the monitor every second.
        beats = wait_for(lambda: len(monitor.requests) >= 3 and monitor.requests, "heartbeats", 30)
        assert {(r.method, r.path) for r in beats} == {("POST", f"/ping/{token}")}
        gaps = [b.arrived_at - a.arrived_at for a, b in itertools.pairwise(beats)]
        assert all(0.5 <= gap <= 3.0 for gap in gaps), gaps
        samples = parse(httpx.get(f"{metrics}/metrics", timeout=5).text)
        assert (value(samples, "driftline_heartbeats_sent_total") or 0) >= 3
        transitions = "driftline_pipeline_alert_transitions_total"
        assert value(samples, transitions, transition="open") == 1
        assert value(samples, transitions, transition="resolve") == 1
        assert main(["status", "--worker", metrics, "--once"]) == 0
        screen = capsys.readouterr().out
        assert f"  ready         yes: ready: {4 * PARTITIONS} partitions assigned" in screen
        assert "  self-alerts   none open" in screen
        log = c.workers["worker"].log_path.read_text(errors="replace")
        assert token not in log  # the heartbeat URL is a secret: only its host is logged
        c.check_alive("worker")
    print(
        f"\npaged {paged_s:.1f} s after the assignment, resolved {resolved_s:.1f} s after recovery"
    )


def test_consumer_lag_over_the_bound_pages_and_resolves(tmp_path: Path) -> None:
    """The store goes down after the worker has committed: the store stage stops taking
    llm_events, so records pile up after the committed offset; lag over the bound pages."""
    port = free_port()
    metrics = f"http://127.0.0.1:{port}"
    config = (
        f'[worker]\nmetrics_port = {port}\nname = "{WORKER}"\n'
        "self_alert_check_s = 0.5\nself_alert_for_s = 1\nself_alert_hold_down_s = 2\n"
        "self_alert_lag_records = 4\n"
    )
    lag_key = f"pipeline/{WORKER}/consumer_lag/"
    with cluster(tmp_path, config) as c:
        pager = c.receiver
        pager.validate_pagerduty = True

        def pages(action: str) -> list[dict[str, Any]]:
            return [
                b
                for b in pager.bodies()
                if b.get("dedup_key") == lag_key and b.get("event_action") == action
            ]

        def scrape() -> dict[str, Any]:
            return parse(httpx.get(f"{metrics}/metrics", timeout=5).text)

        c.start_worker("worker")
        kafka = Kafka(c.settings, c.bootstrap)
        # One trace stored and its offsets committed (every few seconds) before the outage.
        kafka.produce(topics.OTLP_SPANS, one_trace(2), partition=0)
        wait_for(
            lambda: (
                value(scrape(), "driftline_events_completed_total") == 2
                and value(scrape(), "driftline_store_pending_rows") == 0
            ),
            "the first trace stored",
        )
        time.sleep(8)
        assert pages("trigger") == []

        c.server.fail_with(210, "simulated outage")
        # One workflow: every llm_events record on one partition. Apart, so each is a record
        # batch of its own: the embedded broker reports a partition's end at the start of its
        # last batch, so records sent in one batch show as one behind.
        for _ in range(6):
            kafka.produce(topics.OTLP_SPANS, one_trace(2), partition=1)
            time.sleep(0.5)
        trigger = wait_for(lambda: pages("trigger"), "the consumer_lag trigger")[0]
        assert trigger["payload"]["severity"] == "error"
        summary = trigger["payload"]["summary"]
        assert summary.startswith(f"driftline worker {WORKER}: "), summary
        # Topics by how far behind, worst first: under load decode and assembly lag too.
        assert "records behind on its source topics (" in summary, summary
        assert "llm_events " in summary.split("(", 1)[1], summary
        assert summary.endswith(", bound 4"), summary
        # The condition sums every source topic (llm_spans and otlp_spans lag a record or two
        # behind their ends too); what paged was over the bound, and the stalled store stage
        # shows on llm_events.
        paged_lag = summary.split(" records behind", 1)[0].rsplit(": ", 1)[1]
        assert float(paged_lag.replace(",", "")) > 4, summary
        lag = scrape()["driftline_kafka_consumer_lag_records"]
        behind = sum(v for k, v in lag.items() if k[0] == ("topic", topics.LLM_EVENTS))
        assert behind >= 3, lag

        c.server.recover()
        resolve = wait_for(lambda: pages("resolve"), "the consumer_lag resolve")[0]
        assert resolve["dedup_key"] == lag_key
        assert len(pages("trigger")) == 1
        assert value(scrape(), "driftline_events_completed_total") == 14  # nothing lost
        c.check_alive("worker")
