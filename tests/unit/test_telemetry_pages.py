"""Deliveries by route and the delivery histograms: measured in the notifier, exported by
the worker's /metrics (read back with prometheus_client's parser, not ours)."""

from __future__ import annotations

import asyncio
import math
import random
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from driftline.streams.notifier import Notifier, RetryPolicy, Route, Router
from driftline.streams.notifier.metrics import (
    DELIVERY_BUCKETS_S,
    NO_ROUTE,
    DeliveryMetrics,
    Histogram,
    route_of,
)
from driftline.streams.notifier.routing import ENV_ROUTING_KEY
from driftline.streams.notifier.transport import TransportResponse
from driftline.streams.telemetry import Family, page_families, render

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.unit.test_notifier_payload import KEY, OPENED, make_alert  # noqa: E402

# -- the histogram type -------------------------------------------------------------------


def test_buckets_are_cumulative_and_end_at_inf() -> None:
    h = Histogram((0.01, 0.1, 1.0))
    for value in (0.005, 0.01, 0.02, 0.5, 0.5, 3.0):
        h.observe(value)
    # 0.01 is at its bound: counted in le="0.01" (less or equal), not above it.
    assert h.cumulative() == [(0.01, 2), (0.1, 3), (1.0, 5), (math.inf, 6)]
    assert h.count == 6
    assert h.sum == pytest.approx(4.035)
    h.observe(float("nan"))
    assert h.count == 6 and not math.isnan(h.sum)


def test_an_empty_histogram_has_every_bucket_at_zero() -> None:
    assert Histogram((1.0, 2.0)).cumulative() == [(1.0, 0), (2.0, 0), (math.inf, 0)]


@pytest.mark.parametrize("bounds", [(), (1.0, 1.0), (2.0, 1.0), (1.0, math.inf), (math.nan,)])
def test_bounds_must_be_finite_and_increase(bounds: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="bound"):
        Histogram(bounds)


def test_histograms_add_up_bucket_by_bucket() -> None:
    a, b = Histogram((1.0, 2.0)), Histogram((1.0, 2.0))
    a.observe(0.5)
    b.observe(1.5)
    b.observe(9.0)
    a.add(b)
    assert a.cumulative() == [(1.0, 1), (2.0, 2), (math.inf, 3)]
    assert (a.count, a.sum) == (3, 11.0)
    with pytest.raises(ValueError, match="bounds differ"):
        a.add(Histogram((1.0,)))


def test_render_is_a_histogram_to_prometheus() -> None:
    h = Histogram(DELIVERY_BUCKETS_S)
    for seconds in (0.004, 0.2, 0.2, 12.0, 75.0):
        h.observe(seconds)
    family = Family("x_seconds", "histogram", "x").add_histogram(h, route='a"b', outcome="ok")
    text = render([family])
    assert 'x_seconds_bucket{route="a\\"b",outcome="ok",le="0.005"} 1\n' in text
    assert 'le="1"} 3\n' in text and 'le="60"} 4\n' in text and 'le="+Inf"} 5\n' in text
    (parsed,) = text_string_to_metric_families(text)
    assert parsed.type == "histogram"
    buckets = {s.labels["le"]: s.value for s in parsed.samples if s.name == "x_seconds_bucket"}
    assert len(buckets) == len(DELIVERY_BUCKETS_S) + 1
    assert list(buckets.values()) == sorted(buckets.values())  # cumulative
    assert buckets["+Inf"] == 5
    by_name = {s.name: s for s in parsed.samples if not s.name.endswith("_bucket")}
    assert by_name["x_seconds_count"].value == 5
    assert by_name["x_seconds_sum"].value == pytest.approx(87.404)
    assert by_name["x_seconds_sum"].labels == {"route": 'a"b', "outcome": "ok"}


# -- measured where the notifier sends ----------------------------------------------------


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
    event_s = OPENED / 1e6
    clock = Clock(event_s + 7.0)  # the page leaves 7 s after the event that raised it
    notifier = two_routes({PD: [500, 202, 202], HOOK: [200, 400]}, clock, took_s=0.03)
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

    send = notifier.metrics.send_seconds
    assert {key: h.count for key, h in send.items()} == {
        ("pagerduty[0]", "retrying"): 1,
        ("pagerduty[0]", "delivered"): 2,
        ("webhook[1]", "delivered"): 1,
        ("webhook[1]", "failed_permanent"): 1,
    }
    for histogram in send.values():  # each attempt took 30 ms or a little more
        assert 0.03 <= histogram.sum / histogram.count < 0.5
    latencies = [r["latency_ms"] / 1000 for r in records if r["attempt"]]
    assert sum(h.sum for h in send.values()) == pytest.approx(sum(latencies), abs=1e-5)

    accepted = notifier.metrics.event_to_accepted_seconds
    assert {route: h.count for route, h in accepted.items()} == {
        "pagerduty[0]": 2,
        "webhook[1]": 1,
    }
    # The clock started 7 s after the event and moves on half a second per answer (and by
    # each backoff): every page was accepted 7.5 s after its event or later, none after now.
    for histogram in accepted.values():
        assert 7.5 * histogram.count <= histogram.sum <= (clock.now - event_s) * histogram.count
    assert accepted["pagerduty[0]"].sum > 2 * 7.5  # the first one waited for a retry
    await notifier.aclose()


async def test_late_records_of_a_held_route_count_when_they_are_taken() -> None:
    clock = Clock(OPENED / 1e6)
    notifier = two_routes({PD: [503, 503, 503, 202], HOOK: [200]}, clock)
    notifier.keep_for_redelivery = True
    first = await notifier.deliver([transition()])
    assert ("pagerduty[0]", "retrying") in notifier.metrics.deliveries
    for _ in range(1000):
        if notifier.metrics.event_to_accepted_seconds.get("pagerduty[0]"):
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


def test_an_event_time_missing_or_after_the_page() -> None:
    metrics = DeliveryMetrics()
    metrics.observe_accepted("r", 0, 100.0)  # no event time: not observed
    assert metrics.event_to_accepted_seconds == {}
    metrics.observe_accepted("r", 101_000_000, 100.0)  # the event's clock ahead of ours
    (h,) = metrics.event_to_accepted_seconds.values()
    assert (h.count, h.sum) == (1, 0.0)


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
    stage.observe_send("pagerduty[0]", "delivered", 0.2)
    selfwatch.observe_send("pagerduty[0]", "delivered", 0.02)
    stage.observe_accepted("pagerduty[0]", 1_000_000, 4.0)
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
    delivery = families["driftline_page_delivery_seconds"]
    assert delivery.type == "histogram"
    count = [s for s in delivery.samples if s.name.endswith("_count")]
    assert [(s.labels, s.value) for s in count] == [
        ({"route": "pagerduty[0]", "outcome": "delivered"}, 2)
    ]
    le = {s.labels["le"]: s.value for s in delivery.samples if s.name.endswith("_bucket")}
    assert (le["0.025"], le["0.25"], le["+Inf"]) == (1, 2, 2)
    event_to_page = families["driftline_event_to_page_seconds"]
    assert [s.value for s in event_to_page.samples if s.name.endswith("_sum")] == [3.0]


def test_without_a_notifier_there_is_no_delivery_series_and_no_histogram() -> None:
    (counted,) = page_families([None, None])
    assert counted.name == "driftline_page_deliveries_total" and counted.samples == []
