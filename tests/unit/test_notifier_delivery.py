"""Notifier delivery against a real local HTTP receiver, with time injected (never slept)."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from driftline.streams.notifier import Notifier, RetryPolicy, Route, Router
from driftline.streams.notifier.ledger import SOURCE_OFFSET
from driftline.streams.notifier.records import DELIVERY_FIELDS
from driftline.streams.notifier.routing import ENV_ROUTING_KEY

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # tests.utils is a package of the repository root
    sys.path.insert(0, str(REPO))

from tests.unit.test_notifier_payload import KEY, MIN, OPENED, make_alert  # noqa: E402
from tests.utils.http_receiver import (  # noqa: E402
    HttpReceiver,
    ReceivedRequest,
    Reply,
    pagerduty_errors,
)

START = OPENED / 1e6 + 300  # the fake clock, in seconds


class FakeClock:
    """``clock`` and ``sleep`` for the notifier: sleeping only moves the clock."""

    def __init__(self, now: float = START) -> None:
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


@pytest.fixture
def receiver() -> Any:
    with HttpReceiver(validate_pagerduty=True) as server:
        yield server


def notifier_for(
    receiver: HttpReceiver, clock: FakeClock, *routes: Route, **options: Any
) -> Notifier:
    routes = routes or (Route("default", min_severity="info", url=receiver.url),)
    env = {ENV_ROUTING_KEY: KEY, "HOOK_URL": receiver.base_url + "/services/T0/B0/hooksecret"}
    options.setdefault("rng", random.Random(11))
    options.setdefault("timeout_s", 2.0)
    return Notifier(Router(routes, environ=env), clock=clock, sleep=clock.sleep, **options)


def opened(**overrides: Any) -> dict[str, Any]:
    return make_alert(**{"transition": "open", "event_ts": OPENED, **overrides})


def resolved(**overrides: Any) -> dict[str, Any]:
    fields = {
        "transition": "resolve",
        "state": "resolved",
        "resolved_at": OPENED + 20 * MIN,
        "event_ts": OPENED + 20 * MIN,
    }
    return make_alert(**{**fields, **overrides})


def outcomes(records: list[dict[str, Any]]) -> list[tuple[str, str, int]]:
    return [(r["event_action"], r["outcome"], r["status_code"]) for r in records]


async def test_trigger_then_resolve_payloads_field_by_field(receiver: HttpReceiver) -> None:
    clock = FakeClock()
    notifier = notifier_for(receiver, clock)
    records = await notifier.deliver([opened(), resolved()])
    assert outcomes(records) == [("trigger", "delivered", 202), ("resolve", "delivered", 202)]

    trigger, resolve = receiver.requests
    assert trigger.path == "/v2/enqueue" and trigger.headers["content-type"] == "application/json"
    body = trigger.json()
    assert body["routing_key"] == KEY
    assert body["event_action"] == "trigger"
    assert body["dedup_key"] == "drift:support-bot:output_tokens:3f2a9c0e11"
    assert body["client"] == "driftline"
    p = body["payload"]
    assert p["summary"] == (
        "support-bot: output tokens/request +38% vs baseline (bundle 3f2a..), CUSUM over threshold"
    )
    assert (p["source"], p["component"], p["group"], p["class"], p["severity"]) == (
        "support-bot",
        "support-bot",
        "support-bot",
        "drift",
        "error",
    )
    assert p["timestamp"] == "2026-09-21T14:13:20.000+00:00"
    details = p["custom_details"]
    assert details["alert_id"] == "a-0001" and details["transition"] == "open"
    assert (details["baseline_value"], details["current_value"]) == (400.0, 552.0)
    assert (details["score"], details["threshold"]) == (9.5, 5.0)
    assert details["evidence"]["test"] == "cusum"
    assert details["evidence"]["reference_events"] == 500
    assert details["evidence"]["window_events"] == 212
    assert details["evidence"]["model"] == "gpt-4o-mini"
    assert details["evidence"]["retrieval_index_version"] == "idx-2026-11"
    assert [link["text"] for link in body["links"]] == [
        "Grafana: support-bot output_tokens",
        "Runbook: drift alert",
    ]
    assert "var-workflow=support-bot" in body["links"][0]["href"]
    assert body["client_url"] == body["links"][0]["href"]

    assert resolve.json() == {
        "routing_key": KEY,
        "event_action": "resolve",
        "dedup_key": "drift:support-bot:output_tokens:3f2a9c0e11",
    }
    for record in records:
        assert tuple(record) == DELIVERY_FIELDS
        assert record["attempt"] == 1 and record["alert_id"] == "a-0001"
        assert record["target"] == "default@127.0.0.1"
        assert record["sent_at"] == int(START * 1e6)
        assert record["latency_ms"] > 0


async def test_429_then_202_delivers_once(receiver: HttpReceiver) -> None:
    receiver.script(Reply(429, headers={"Retry-After": "7"}))
    clock = FakeClock()
    records = await notifier_for(receiver, clock).deliver([opened()])
    assert outcomes(records) == [("trigger", "retrying", 429), ("trigger", "delivered", 202)]
    assert [r["attempt"] for r in records] == [1, 2]
    assert "HTTP 429" in records[0]["error"]
    first, second = receiver.requests
    assert first.body == second.body  # the same event, re-sent
    assert [r.answered for r in receiver.requests] == [429, 202]
    assert clock.now - START >= 7  # honoured Retry-After
    assert records[1]["sent_at"] - records[0]["sent_at"] >= 7_000_000


async def test_five_minute_outage_delivers_after_it(receiver: HttpReceiver) -> None:
    clock = FakeClock()
    outage_ends = START + 300

    def during_outage(request: ReceivedRequest) -> int:
        return 503 if clock.now < outage_ends else 202

    receiver.respond_with(during_outage)
    began = time.perf_counter()
    records = await notifier_for(receiver, clock).deliver([opened(), resolved()])
    wall_s = time.perf_counter() - began

    triggers = [r for r in records if r["event_action"] == "trigger"]
    assert {r["outcome"] for r in triggers[:-1]} == {"retrying"}
    assert triggers[-1]["outcome"] == "delivered"
    assert triggers[-1]["sent_at"] >= outage_ends * 1e6
    assert len(triggers) >= 5  # exponential backoff: several attempts across five minutes
    assert outcomes(records)[-1] == ("resolve", "delivered", 202)
    delivered = [r for r in receiver.requests if r.answered == 202]
    assert [r.json()["event_action"] for r in delivered] == ["trigger", "resolve"]
    assert max(clock.slept) <= 60  # capped backoff
    assert wall_s < 5  # time was injected, not slept


async def test_outage_longer_than_the_policy_gives_up_when_not_kept(
    receiver: HttpReceiver,
) -> None:
    # a command that exits when done (replay --notify) gives up; the worker keeps the event
    receiver.respond_with(lambda request: 500)
    clock = FakeClock()
    policy = RetryPolicy(base_s=1, cap_s=30, max_attempts=1000, max_elapsed_s=600)
    notifier = notifier_for(receiver, clock, retry=policy, keep_for_redelivery=False)
    records = await notifier.deliver([opened()])
    assert records[-1]["outcome"] == "gave_up"
    assert "gave up after" in records[-1]["error"]
    assert clock.now - START <= 600
    assert len(receiver.requests) == len(records)


async def test_400_is_not_retried_and_the_reason_is_recorded(receiver: HttpReceiver) -> None:
    clock = FakeClock()
    receiver.script(
        Reply(
            400,
            body={
                "status": "invalid event",
                "message": "Event object is invalid",
                "errors": ["'payload.summary' is missing"],
            },
        )
    )
    records = await notifier_for(receiver, clock).deliver([opened()])
    assert outcomes(records) == [("trigger", "failed_permanent", 400)]
    assert "'payload.summary' is missing" in records[0]["error"]
    assert len(receiver.requests) == 1  # not retried
    assert clock.slept == []
    assert pagerduty_errors(json.dumps({"event_action": "trigger", "payload": {}}).encode())


async def test_hanging_endpoint_times_out_and_is_retried(receiver: HttpReceiver) -> None:
    receiver.script("hang")
    clock = FakeClock()
    records = await notifier_for(receiver, clock, timeout_s=0.3).deliver([opened()])
    assert outcomes(records) == [("trigger", "retrying", 0), ("trigger", "delivered", 202)]
    assert "timed out after 0.3 s" in records[0]["error"]
    assert records[0]["latency_ms"] >= 300


async def test_network_error_is_retried() -> None:
    clock = FakeClock()
    with HttpReceiver() as closed:
        url = closed.url
    route = Route("default", min_severity="info", url=url)  # nothing listens there any more
    notifier = Notifier(
        Router((route,), environ={ENV_ROUTING_KEY: KEY}),
        clock=clock,
        sleep=clock.sleep,
        rng=random.Random(1),
        retry=RetryPolicy(max_attempts=3),
        keep_for_redelivery=False,
    )
    records = await notifier.deliver([opened()])
    assert [r["outcome"] for r in records] == ["retrying", "retrying", "gave_up"]
    assert all(r["status_code"] == 0 and "ConnectError" in r["error"] for r in records)


async def test_routing_key_never_in_logs_records_or_reprs(
    receiver: HttpReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, including httpx and httpcore
    # by name too: a library imported earlier in the run (litellm) turns httpx's logger down
    for name in ("httpx", "httpcore"):
        caplog.set_level(logging.DEBUG, logger=name)
    receiver.script(429, 500, Reply(400, body=f"invalid routing key {KEY}"))
    hook = Route("chat", kind="webhook", min_severity="info", routing_key_env="HOOK_URL")
    pagerduty = Route("default", min_severity="info", url=receiver.url)
    clock = FakeClock()
    notifier = notifier_for(receiver, clock, pagerduty, hook)
    records = await notifier.deliver([opened(), resolved(), opened(alert_id="a-3", dedup_key="k3")])
    assert {r["outcome"] for r in records} >= {"retrying", "failed_permanent", "delivered"}
    assert any("invalid routing key ***" in r["error"] for r in records)  # echoed key scrubbed
    texts = [
        caplog.text,
        json.dumps(records),
        repr(notifier),
        repr(notifier.router),
        json.dumps(notifier.export_state()),
    ]
    assert any("HTTP Request" in r.getMessage() for r in caplog.records)  # httpx did log
    for text in texts:
        assert KEY not in text
        assert "hooksecret" not in text  # the webhook URL's secret path
    assert any(r.headers.get("content-type") == "application/json" for r in receiver.requests)
    assert sum(KEY in r.body.decode() for r in receiver.requests) >= 3  # it was really sent


async def test_routes_sharing_a_routing_key_share_its_rate_limit(receiver: HttpReceiver) -> None:
    """PagerDuty counts events per routing key: two routes to one key are paced together."""
    clock = FakeClock()
    support = Route(
        "support",
        workflow="support-*",
        min_severity="info",
        url=receiver.url,
        routing_key_env="SUPPORT_KEY",
    )
    billing = Route(
        "billing",
        workflow="billing",
        min_severity="info",
        url=receiver.url,
        routing_key_env="BILLING_KEY",
    )
    router = Router((support, billing), environ={"SUPPORT_KEY": KEY, "BILLING_KEY": KEY})
    notifier = Notifier(
        router,
        clock=clock,
        sleep=clock.sleep,
        rng=random.Random(1),
        max_events_per_minute=6,
        burst=1,
    )
    await notifier.deliver([opened(), opened(alert_id="b-1", dedup_key="b", workflow="billing")])
    assert len(receiver.requests) == 2
    assert clock.now - START == pytest.approx(10.0)  # one bucket of 6/min: the second waited


def alertmanager_hook(receiver: HttpReceiver) -> Route:
    receiver.default = Reply(200, body="ok")
    return Route(
        "hook",
        kind="webhook",
        min_severity="info",
        url=receiver.base_url + "/hook",
        webhook_format="alertmanager",
    )


async def test_coalescing_under_the_rate_limit(receiver: HttpReceiver) -> None:
    clock = FakeClock()
    hook = alertmanager_hook(receiver)
    notifier = notifier_for(receiver, clock, hook, max_events_per_minute=6, burst=1)
    transitions = [
        opened(),
        opened(alert_id="b-1", dedup_key="other", workflow="billing"),
        make_alert(current_value=600.0, event_ts=OPENED + 1 * MIN),
        make_alert(current_value=700.0, event_ts=OPENED + 2 * MIN),
        make_alert(current_value=800.0, severity="critical", event_ts=OPENED + 3 * MIN),
        resolved(),
    ]
    records = await notifier.deliver(transitions)
    sent = [r.json()["alerts"][0] for r in receiver.requests]
    assert [(a["labels"]["dedup_key"], a["status"]) for a in sent] == [
        ("drift:support-bot:output_tokens:3f2a9c0e11", "firing"),
        ("other", "firing"),
        ("drift:support-bot:output_tokens:3f2a9c0e11", "firing"),
        ("drift:support-bot:output_tokens:3f2a9c0e11", "resolved"),
    ]
    latest = sent[2]
    assert "current 800.0" in latest["annotations"]["description"]
    assert latest["labels"]["severity"] == "critical"
    assert [r["outcome"] for r in records] == [
        "delivered",
        "delivered",
        "coalesced",
        "coalesced",
        "delivered",
        "delivered",
    ]
    # 4 sends at 6/min with a burst of 1: three waits of 10 s, no more.
    assert clock.now - START == pytest.approx(30.0)


async def test_an_update_never_pages_again(receiver: HttpReceiver) -> None:
    """One PagerDuty trigger per incident: updates, even to a worse severity, are not sent."""
    clock = FakeClock()
    notifier = notifier_for(receiver, clock)
    records = await notifier.deliver(
        [
            opened(),
            make_alert(current_value=900.0, event_ts=OPENED + 1 * MIN),
            make_alert(current_value=990.0, severity="critical", event_ts=OPENED + 2 * MIN),
            resolved(),
        ]
    )
    sent = [r.json()["event_action"] for r in receiver.requests]
    assert sent == ["trigger", "resolve"]
    assert [r["outcome"] for r in records] == ["delivered", "coalesced", "coalesced", "delivered"]
    assert "superseded" in records[1]["error"]  # replaced while queued behind the open
    assert "does not page again" in records[2]["error"]


async def test_an_update_is_the_page_when_the_open_was_not_delivered(
    receiver: HttpReceiver,
) -> None:
    clock = FakeClock()
    answers = iter([400])
    receiver.respond_with(lambda request: next(answers, 202))
    notifier = notifier_for(receiver, clock)
    records = await notifier.deliver([opened(), make_alert(current_value=900.0)])
    assert [r["outcome"] for r in records] == ["failed_permanent", "delivered"]
    assert [r.json()["event_action"] for r in receiver.requests] == ["trigger", "trigger"]


async def test_updates_arriving_during_an_outage_coalesce_behind_it(
    receiver: HttpReceiver,
) -> None:
    clock = FakeClock()
    outage_ends = START + 120
    hook = alertmanager_hook(receiver)
    receiver.respond_with(lambda request: 500 if clock.now < outage_ends else 200)
    notifier = notifier_for(receiver, clock, hook)
    first = asyncio.ensure_future(notifier.deliver([opened()]))
    while not receiver.requests:
        await asyncio.sleep(0.01)
    later = await asyncio.gather(
        notifier.deliver([make_alert(current_value=600.0)]),
        notifier.deliver([make_alert(current_value=900.0)]),
        notifier.deliver([resolved()]),
    )
    await first
    assert [r["outcome"] for batch in later for r in batch] == [
        "coalesced",
        "delivered",
        "delivered",
    ]
    delivered = [r.json()["alerts"][0] for r in receiver.requests if r.answered == 200]
    assert [a["status"] for a in delivered] == ["firing", "firing", "resolved"]
    assert "current 900.0" in delivered[1]["annotations"]["description"]


async def test_restart_neither_pages_twice_nor_retriggers(receiver: HttpReceiver) -> None:
    clock = FakeClock()
    before = notifier_for(receiver, clock)
    await before.deliver([opened(), make_alert(current_value=700.0)])
    assert len(receiver.requests) == 1  # the update does not page again
    state = json.loads(json.dumps(before.export_state()))  # through a changelog as JSON

    # The worker died before committing offsets: the same transitions come again.
    after = notifier_for(receiver, clock)
    after.import_state(state)
    replayed = await after.deliver([opened(), make_alert(current_value=700.0)])
    assert [r["outcome"] for r in replayed] == ["coalesced", "coalesced"]
    assert "already delivered" in replayed[0]["error"]
    assert len(receiver.requests) == 1  # no duplicate trigger

    records = await after.deliver([make_alert(current_value=900.0), resolved()])
    assert [r["outcome"] for r in records] == ["coalesced", "delivered"]
    assert len(receiver.requests) == 2

    third = notifier_for(receiver, clock)
    third.import_state(after.export_state())
    again = await third.deliver([opened(), make_alert(current_value=990.0), resolved()])
    assert [r["outcome"] for r in again] == ["coalesced", "coalesced", "coalesced"]
    assert "already resolved" in again[0]["error"]
    assert len(receiver.requests) == 2  # a resolved alert is not re-triggered
    reopened = await third.deliver([opened(alert_id="a-0002")])  # a new incident, same key
    assert [r["outcome"] for r in reopened] == ["delivered"]


async def test_reread_of_an_older_alert_of_the_same_key_is_not_paged(
    receiver: HttpReceiver,
) -> None:
    """Open a1, resolve a1, open a2 at llm_alerts offsets 3, 4, 7; the topic is read again
    from offset 3 after a crash. The alert-level checks alone would page a1 again (the
    ledger's last event is a2's trigger); the offsets say all three were handled."""
    clock = FakeClock()
    first = notifier_for(receiver, clock)
    checkpointed: list[dict[str, Any]] = []

    async def checkpoint(entry: dict[str, Any]) -> None:
        checkpointed.append(json.loads(json.dumps(entry)))  # as the changelog holds it

    first.on_delivered = checkpoint
    log = [
        {**opened(), SOURCE_OFFSET: 3},
        {**resolved(), SOURCE_OFFSET: 4},
        {**opened(alert_id="a-0002", event_ts=OPENED + 30 * MIN), SOURCE_OFFSET: 7},
    ]
    assert outcomes(await first.deliver(log)) == [
        ("trigger", "delivered", 202),
        ("resolve", "delivered", 202),
        ("trigger", "delivered", 202),
    ]
    assert [next(iter(e.values()))["offset"] for e in checkpointed] == [3, 4, 7]

    after = notifier_for(receiver, clock)
    for entry in checkpointed:
        after.import_state(entry)
    replayed = await after.deliver(log)
    assert [r["outcome"] for r in replayed] == ["coalesced"] * 3
    assert all("handled already" in r["error"] for r in replayed)
    assert len(receiver.requests) == 3
    later = await after.deliver([{**resolved(alert_id="a-0002"), SOURCE_OFFSET: 9}])
    assert outcomes(later) == [("resolve", "delivered", 202)]


async def test_resolve_follows_the_trigger_when_severity_drops(receiver: HttpReceiver) -> None:
    clock = FakeClock()
    page = Route("page", min_severity="critical", url=receiver.url)
    notifier = notifier_for(receiver, clock, page)
    await notifier.deliver([opened(severity="critical")])
    records = await notifier.deliver([resolved(severity="warning")])
    assert outcomes(records) == [("resolve", "delivered", 202)]


async def test_unrouted_and_missing_key_are_recorded(receiver: HttpReceiver) -> None:
    clock = FakeClock()
    only_billing = Route("billing", workflow="billing-*", url=receiver.url)
    no_key = Route("nokey", workflow="support-*", routing_key_env="UNSET_KEY_VAR", url=receiver.url)
    records = await notifier_for(receiver, clock, only_billing, no_key).deliver(
        [opened(workflow="search"), opened()]
    )
    assert [r["outcome"] for r in records] == ["unrouted", "failed_permanent"]
    assert "no route matches workflow 'search'" in records[0]["error"]
    assert "UNSET_KEY_VAR is not set" in records[1]["error"]
    assert receiver.requests == []


async def test_webhook_routes_slack_and_alertmanager(receiver: HttpReceiver) -> None:
    receiver.default = Reply(200, body="ok")
    clock = FakeClock()
    slack = Route("slack", kind="webhook", min_severity="info", url=receiver.base_url + "/slack")
    am = Route(
        "am",
        kind="webhook",
        min_severity="info",
        url=receiver.base_url + "/am",
        webhook_format="alertmanager",
    )
    records = await notifier_for(receiver, clock, slack, am).deliver([opened(), resolved()])
    assert [r["outcome"] for r in records] == ["delivered"] * 4
    by_path: dict[str, list[Any]] = {}
    for request in receiver.requests:
        by_path.setdefault(request.path, []).append(request.json())
    slack_trigger, slack_resolve = by_path["/slack"]
    assert set(slack_trigger) == {"text"}
    assert slack_trigger["text"].startswith(":rotating_light: *ERROR* support-bot: output tokens")
    assert slack_resolve["text"].startswith(":white_check_mark: *RESOLVED after 20 min*")
    am_trigger, am_resolve = by_path["/am"]
    assert (am_trigger["status"], am_resolve["status"]) == ("firing", "resolved")
    assert am_trigger["alerts"][0]["labels"]["workflow"] == "support-bot"
    assert "routing_key" not in json.dumps(by_path)


def test_deliver_sync_for_replay(receiver: HttpReceiver) -> None:
    clock = FakeClock()
    notifier = notifier_for(receiver, clock)
    records = notifier.deliver_sync([opened(), resolved()])
    assert [r["outcome"] for r in records] == ["delivered", "delivered"]
    # a second run gets a fresh event loop and HTTP client
    assert [r["outcome"] for r in notifier.deliver_sync([opened(alert_id="x")])] == ["delivered"]
