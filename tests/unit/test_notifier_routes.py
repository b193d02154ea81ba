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


class ChangelogTable:
    """What the worker's ledger table keeps: per dedup key, the merged ledger entries."""

    def __init__(self) -> None:
        self.values: dict[str, dict[str, Any]] = {}

    async def checkpoint(self, entry: dict[str, Any]) -> None:
        for ledger_key, value in entry.items():
            self.values.setdefault(str(value.get("dedup_key", "")), {})[ledger_key] = value

    def restored(self) -> dict[str, Any]:
        return {k: v for merged in self.values.values() for k, v in merged.items()}


async def test_events_held_when_the_worker_stops_are_resumed_after_a_restart() -> None:
    table = ChangelogTable()
    with HttpReceiver(503) as pager, HttpReceiver() as chat:
        before = two_routes(pager, chat, retry=RetryPolicy(base_s=0.01, cap_s=0.02, max_attempts=2))
        before.on_delivered = table.checkpoint
        trigger = {**opened(severity="critical"), "source_offset": 7}
        resolve = {**resolved(severity="critical"), "source_offset": 8}
        await before.deliver([trigger])
        await before.deliver([resolve])  # queued behind the held trigger
        assert before.held_routes() == ["pager"]
        await before.aclose()  # the worker stops; the offsets 7 and 8 were committed
        tried = len(pager.requests)

        pager.respond_with(lambda request: 202)
        after = two_routes(pager, chat)
        after.on_delivered = table.checkpoint
        after.import_state(table.restored())  # what restore_ledger does: resumed at once
        late = await after.deliver([])
        await wait_until_idle(after)
        late += after.take_late_records()
        await after.aclose()

        again = two_routes(pager, chat)  # a third start finds nothing left to resume
        again.import_state(table.restored())
        assert await again.deliver([]) == [] and again.pending() == 0
        await again.aclose()
    accepted = [r.json()["event_action"] for r in pager.requests[tried:] if r.answered == 202]
    assert accepted == ["trigger", "resolve"]
    assert [(r["event_action"], r["outcome"]) for r in late] == [
        ("trigger", "delivered"),
        ("resolve", "delivered"),
    ]
