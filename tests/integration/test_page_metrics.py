"""A real worker's page shows in its /metrics by route, counted and timed.

The store is down from the start, so the worker pages about itself (``store_failing``) through
the pipeline alerts' notifier, straight to a local PagerDuty receiver; its scrape then has the
delivery by route (``default``: the route of ``$PAGERDUTY_ROUTING_KEY``), the attempt's time in
``driftline_page_delivery_seconds`` and the time from the alert's decision to the page accepted
in ``driftline_event_to_page_seconds``. The text is read with prometheus_client's parser.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.test_scaling import cluster
from tests.integration.test_self_alerts import wait_for
from tests.integration.test_worker_metrics import free_port

pytestmark = pytest.mark.integration

WORKER = "page-metrics-worker"
KEY = f"pipeline/{WORKER}/store_failing/"


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample by name and sorted labels."""
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_a_page_is_counted_and_timed_by_route(tmp_path: Path) -> None:
    port = free_port()
    metrics = f"http://127.0.0.1:{port}"
    config = (
        f'[worker]\nmetrics_port = {port}\nname = "{WORKER}"\n'
        "self_alert_check_s = 0.5\nself_alert_for_s = 1\nself_alert_hold_down_s = 2\n"
    )
    with cluster(tmp_path, config) as c:
        pager = c.receiver
        c.server.fail_with(210, "simulated outage")
        started = time.time()
        c.start_worker("worker")
        wait_for(
            lambda: [b for b in pager.bodies() if b.get("dedup_key") == KEY],
            "the store_failing page",
        )

        def delivered() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
            samples = scrape(metrics)
            done = (
                "driftline_page_deliveries_total",
                (("outcome", "delivered"), ("route", "default")),
            )
            return samples if samples.get(done, 0) >= 1 else None

        samples = wait_for(delivered, "the delivery in /metrics", 30)
        waited_s = time.time() - started
        route = (("outcome", "delivered"), ("route", "default"))
        attempts = samples[("driftline_page_delivery_seconds_count", route)]
        assert attempts >= 1
        inf = tuple(sorted((*route, ("le", "+Inf"))))
        assert samples[("driftline_page_delivery_seconds_bucket", inf)] == attempts
        # A local receiver answers within a second; the attempt's time is a real one.
        assert 0 < samples[("driftline_page_delivery_seconds_sum", route)] < attempts * 1.0
        unrouted = (("outcome", "unrouted"), ("route", "none"))
        assert samples[("driftline_page_deliveries_total", unrouted)] == 0  # known, at 0

        pages = samples[("driftline_event_to_page_seconds_count", (("route", "default"),))]
        assert pages >= 1
        # The alert was decided after the worker started and paged before this scrape.
        seconds = samples[("driftline_event_to_page_seconds_sum", (("route", "default"),))]
        assert 0 <= seconds <= pages * waited_s
        c.check_alive("worker")
