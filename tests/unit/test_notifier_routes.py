"""Routes are independent: a failing or hanging route never delays a page on another, and an
event on a failing route is kept and redelivered, never given up while the route may recover.

Real local HTTP receivers; the long outage runs on an injected clock.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from driftline.streams.notifier import Notifier, RetryPolicy, Route, Router
from driftline.streams.notifier.routing import ENV_ROUTING_KEY
from tests.unit.test_notifier_delivery import FakeClock, opened, resolved
from tests.unit.test_notifier_payload import KEY
from tests.utils.http_receiver import HttpReceiver, Reply

HOUR_S = 3600.0


def two_routes(pager: HttpReceiver, chat: HttpReceiver, **options: Any) -> Notifier:
    """Critical alerts page PagerDuty; every alert goes to a chat webhook."""
    routes = (
        Route("pager", min_severity="critical", url=pager.url),
        Route("chat", kind="webhook", min_severity="info", url=chat.base_url + "/hook"),
    )
    options.setdefault("rng", random.Random(5))
    return Notifier(Router(routes, environ={ENV_ROUTING_KEY: KEY}), **options)


async def wait_until_idle(notifier: Notifier, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while notifier.pending():
        assert time.monotonic() < deadline, f"{notifier.pending()} events still pending"
        await asyncio.sleep(0.01)


async def test_a_hanging_webhook_does_not_delay_the_next_critical_page() -> None:
    # the reported incident, scaled down: a secondary route that hangs on every request
    with HttpReceiver() as pager, HttpReceiver(Reply(hang_s=30)) as chat:
        notifier = two_routes(
            pager,
            chat,
            timeout_s=0.5,
            retry=RetryPolicy(base_s=0.05, cap_s=0.2, max_elapsed_s=1.0),
        )
        try:
            warning = opened(alert_id="w-1", dedup_key="warn", severity="warning")
            first = await notifier.deliver([warning])  # chat only: held after the budget
            assert first[-1]["outcome"] == "retrying"
            assert "kept for redelivery on route chat" in first[-1]["error"]
            assert notifier.held_routes() == ["chat"]

            critical = opened(alert_id="c-1", dedup_key="crit", severity="critical")
            started = time.perf_counter()
            second = await notifier.deliver([critical])
            took_s = time.perf_counter() - started
            paged = pager.wait_for(1)[0]
            assert paged.json()["dedup_key"] == "crit"
            assert paged.arrived_perf - started < 0.5  # not behind the chat route's timeouts
            assert took_s < 0.5
            outcomes = {(r["target"].split("@")[0], r["outcome"]) for r in second}
            assert outcomes == {("pager", "delivered"), ("chat", "retrying")}
        finally:
            await notifier.aclose()


async def test_a_page_survives_hours_of_pagerduty_errors_and_keeps_its_order() -> None:
    clock = FakeClock()
    with HttpReceiver(503) as pager, HttpReceiver() as chat:
        notifier = two_routes(
            pager,
            chat,
            clock=clock,
            sleep=clock.sleep,
            retry=RetryPolicy(base_s=1, cap_s=60, max_elapsed_s=600),
        )
        try:
            trigger = opened(severity="critical")
            records = await notifier.deliver([trigger])
            assert {r["outcome"] for r in records if r["target"].startswith("chat")} == {
                "delivered"
            }
            paging = [r for r in records if r["target"].startswith("pager")]
            assert paging[-1]["outcome"] == "retrying"  # the page: held, not given up
            later = await notifier.deliver([resolved(severity="critical")])
            assert [r["target"].split("@")[0] for r in later if r["outcome"] == "delivered"] == [
                "chat"
            ]
            while clock.now - records[0]["sent_at"] / 1e6 < 3 * HOUR_S:
                await asyncio.sleep(0.001)  # the held route retries on the injected clock
            pager.respond_with(lambda request: 202)
            await wait_until_idle(notifier)
            late = notifier.take_late_records()
        finally:
            await notifier.aclose()
    assert not [r for r in records + later + late if r["outcome"] == "gave_up"]
    delivered = [r for r in late if r["outcome"] == "delivered"]
    assert [r["event_action"] for r in delivered] == ["trigger", "resolve"]
    accepted = [r.json()["event_action"] for r in pager.requests if r.answered == 202]
    assert accepted == ["trigger", "resolve"]  # the resolve never overtook its trigger
    retried_s = (delivered[0]["sent_at"] - records[0]["sent_at"]) / 1e6
    assert retried_s >= 3 * HOUR_S
    assert len(pager.requests) < 3 * HOUR_S / 10  # backoff capped at 60 s, not a busy loop


async def test_late_records_come_back_with_the_next_delivery() -> None:
    with HttpReceiver() as pager, HttpReceiver(500) as chat:
        notifier = two_routes(
            pager,
            chat,
            retry=RetryPolicy(base_s=0.01, cap_s=0.02, max_attempts=2),
        )
        try:
            first = await notifier.deliver([opened(severity="warning")])
            assert first[-1]["outcome"] == "retrying"
            chat.respond_with(lambda request: 200)
            await wait_until_idle(notifier)
            assert notifier.held_routes() == []
            second = await notifier.deliver([])  # nothing new: what happened meanwhile
        finally:
            await notifier.aclose()
    assert [r["outcome"] for r in second][-1] == "delivered"
    assert notifier.take_late_records() == []
