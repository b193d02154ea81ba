"""Deliveries by route: counted in the notifier, exported by the worker's /metrics (read back
with prometheus_client's parser, not ours)."""

from __future__ import annotations

import asyncio
import random
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from driftline.streams.notifier import Notifier, RetryPolicy, Route, Router
from driftline.streams.notifier.metrics import NO_ROUTE, DeliveryMetrics, route_of
from driftline.streams.notifier.routing import ENV_ROUTING_KEY
from driftline.streams.notifier.transport import TransportResponse
from driftline.streams.telemetry import page_families, render

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.unit.test_notifier_payload import KEY, OPENED, make_alert  # noqa: E402

# -- counted where the notifier sends ----------------------------------------------------


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


class ScriptedTransport:
    """Answers each POST to a URL with the next status scripted for it, after ``took_s``."""

    def __init__(self, script: dict[str, list[int]], clock: Clock, took_s: float) -> None:
        self.script = script
        self.clock = clock
        self.took_s = took_s

    async def post(self, url: str, body: bytes, timeout_s: float) -> TransportResponse:
        await asyncio.sleep(self.took_s)  # the real time each attempt is measured over
        self.clock.now += 0.5  # and the clock the notifier stamps pages with moves on
        return TransportResponse(self.script[url].pop(0), "")

    async def aclose(self) -> None:
        return None


PD, HOOK = "http://pd.example/v2/enqueue", "http://hooks.example/x"


def two_routes(script: dict[str, list[int]], clock: Clock, took_s: float = 0.0) -> Notifier:
    routes = (
        Route("pagerduty[0]", min_severity="error", url=PD),
        Route("webhook[1]", kind="webhook", min_severity="warning", url=HOOK),
    )
    return Notifier(
        Router(routes, environ={ENV_ROUTING_KEY: KEY}),
        transport=ScriptedTransport(script, clock, took_s),
        clock=clock,
        sleep=clock.sleep,
        rng=random.Random(3),
        retry=RetryPolicy(max_attempts=3),
        keep_for_redelivery=False,
    )


def transition(**overrides: Any) -> dict[str, Any]:
    return make_alert(**{"transition": "open", "event_ts": OPENED, **overrides})


async def test_deliveries_are_counted_by_route_and_add_up_to_the_outcomes() -> None:
    clock = Clock(OPENED / 1e6)
    notifier = two_routes({PD: [500, 202, 202], HOOK: [200, 400]}, clock)
    records = await notifier.deliver([transition()])  # error: both routes
    records += await notifier.deliver([transition(alert_id="a-2", dedup_key="k2")])
    records += await notifier.deliver([transition(severity="info", dedup_key="k3")])  # unrouted
    counted = notifier.metrics.deliveries
    assert counted == Counter(
        {
            ("pagerduty[0]", "retrying"): 1,
            ("pagerduty[0]", "delivered"): 2,
            ("webhook[1]", "delivered"): 1,
            ("webhook[1]", "failed_permanent"): 1,
            (NO_ROUTE, "unrouted"): 1,
        }
    )
    # Summed over routes: what the paging stage counts by outcome from the same records.
    by_outcome: Counter[str] = Counter()
    for (_route, outcome), n in counted.items():
        by_outcome[outcome] += n
    assert by_outcome == Counter(r["outcome"] for r in records)

    await notifier.aclose()


async def test_late_records_of_a_held_route_count_when_they_are_taken() -> None:
    clock = Clock(OPENED / 1e6)
    notifier = two_routes({PD: [503, 503, 503, 202], HOOK: [200]}, clock)
    notifier.keep_for_redelivery = True
    first = await notifier.deliver([transition()])
    assert ("pagerduty[0]", "retrying") in notifier.metrics.deliveries
    for _ in range(1000):
        if any(r["outcome"] == "delivered" for r in notifier._late):
            break
        await asyncio.sleep(0)
    before = Counter(notifier.metrics.deliveries)
    late = notifier.take_late_records()
    assert [r["outcome"] for r in late][-1] == "delivered"
    assert notifier.metrics.deliveries - before == Counter(
        (route_of(r), r["outcome"]) for r in late
    )
    total = Counter(r["outcome"] for r in [*first, *late])
    assert sum(notifier.metrics.deliveries.values()) == sum(total.values())
    await notifier.aclose()


def test_route_of_a_record_is_its_targets_route_name() -> None:
    assert route_of({"target": "webhook[1]@hooks.slack.com"}) == "webhook[1]"
    assert route_of({"target": "pagerduty[0]@?"}) == "pagerduty[0]"  # secret missing
    assert route_of({"target": ""}) == NO_ROUTE


# -- exported -------------------------------------------------------------------------------


def fake_notifier(routes: tuple[str, ...], metrics: DeliveryMetrics) -> Any:
    return SimpleNamespace(
        router=SimpleNamespace(routes=[SimpleNamespace(name=name) for name in routes]),
        metrics=metrics,
    )


def test_page_families_add_the_two_notifiers_up_by_route() -> None:
    stage, selfwatch = DeliveryMetrics(), DeliveryMetrics()
    stage.count([{"target": "pagerduty[0]@e", "outcome": "delivered"}] * 3)
    selfwatch.count([{"target": "pagerduty[0]@e", "outcome": "delivered"}])
    selfwatch.count([{"target": "", "outcome": "unrouted"}])
    routes = ("pagerduty[0]", "webhook[1]")
    text = render(
        page_families([fake_notifier(routes, stage), None, fake_notifier(routes, selfwatch)])
    )
    families = {f.name: f for f in text_string_to_metric_families(text)}
    deliveries = {
        (s.labels["route"], s.labels["outcome"]): s.value
        for s in families["driftline_page_deliveries"].samples
    }
    assert deliveries[("pagerduty[0]", "delivered")] == 4
    assert deliveries[(NO_ROUTE, "unrouted")] == 1
    # Every configured route's outcomes are there from the start, at 0.
    assert deliveries[("webhook[1]", "gave_up")] == 0
    assert len(deliveries) == 2 * 6 + 1


def test_without_a_notifier_there_is_no_delivery_series() -> None:
    (counted,) = page_families([None, None])
    assert counted.name == "driftline_page_deliveries_total" and counted.samples == []
