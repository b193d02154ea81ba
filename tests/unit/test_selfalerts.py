"""Alerts about the worker itself: when they open and resolve, what they carry, the heartbeat."""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from driftline.config import ConfigError, PagerDutySettings, Settings, load_settings
from driftline.streams.notifier import Notifier, Router
from driftline.streams.notifier.payload import encode_body, resolve_event, summary, trigger_event
from driftline.streams.selfalerts import (
    CONDITIONS,
    HeartbeatSchedule,
    Reading,
    Rules,
    SelfAlerts,
)
from driftline.streams.telemetry import SelfWatch
from tests.utils.http_receiver import HttpReceiver, pagerduty_errors
from tests.utils.local_server import LocalServer

RULES = Rules(for_s=30, hold_down_s=60, lag_records=1000, dead_letters_per_s=2.0)


def steps(alerts: SelfAlerts, readings: list[Reading]) -> list[tuple[float, str, str]]:
    """(time, transition, condition) of every transition the readings cause."""
    out = []
    for reading in readings:
        for t in alerts.step(reading):
            out.append((reading.at_s, t["transition"], t["metric"]))
    return out


def lag(at_s: float, records: int) -> Reading:
    return Reading(
        at_s,
        lag_records={("otlp_spans", 0): records // 2, ("llm_events", 1): records - records // 2},
    )


# -- when a condition opens and resolves -------------------------------------------------


def test_lag_opens_only_after_it_held_for_the_duration() -> None:
    alerts = SelfAlerts("w1", RULES)
    # Over the bound at 0 .. 25 s, under it at 30 s: the wait starts again at 35 s.
    readings = [lag(t, 5000) for t in range(0, 30, 5)] + [lag(30, 900)]
    readings += [lag(t, 5000) for t in range(35, 70, 5)]
    assert steps(alerts, readings) == [(65, "open", "consumer_lag")]
    assert alerts.open_conditions() == ["consumer_lag"]


def test_no_flapping_around_the_bound_and_resolve_after_the_hold_down() -> None:
    alerts = SelfAlerts("w1", RULES)
    assert steps(alerts, [lag(t, 1500) for t in range(0, 35, 5)]) == [(30, "open", "consumer_lag")]
    # Around the bound (1000) for ten minutes: above half of it, so it stays one open incident.
    wobble = [lag(t, 1200 if (t // 5) % 2 else 800) for t in range(35, 635, 5)]
    assert steps(alerts, wobble) == []
    # At or below half the bound: clear; one reading above it in the hold-down restarts it.
    clear = [lag(t, 400) for t in range(635, 680, 5)] + [lag(680, 600)]
    clear += [lag(t, 100) for t in range(685, 750, 5)]
    assert steps(alerts, clear) == [(745, "resolve", "consumer_lag")]
    assert alerts.open_conditions() == []
    # A new episode is a new alert id under the same dedup key.
    again = SelfAlerts("w1", RULES)
    first = next(t for r in [lag(0, 2000), lag(30, 2000)] for t in again.step(r))
    second = next(t for r in [lag(9000, 2000), lag(9030, 2000)] for t in alerts.step(r))
    assert first["dedup_key"] == second["dedup_key"] == "pipeline/w1/consumer_lag/"
    assert first["alert_id"] != second["alert_id"]


def test_store_failing_opens_resolves_and_carries_what_a_page_needs() -> None:
    alerts = SelfAlerts("w1", RULES, "https://runbooks.example.com/driftline/")
    readings = [Reading(t, store_failures=t // 5 + 1) for t in range(0, 35, 5)]
    out = [t for r in readings for t in alerts.step(r)]
    assert [(t["transition"], t["metric"]) for t in out] == [("open", "store_failing")]
    opened = out[0]
    assert opened["kind"] == "pipeline" and opened["severity"] == "critical"
    assert opened["workflow"] == "driftline"
    assert opened["opened_at"] == 0 and opened["event_ts"] == 30_000_000
    assert opened["current_value"] == 7 and opened["threshold"] == 0
    assert opened["runbook_url"] == "https://runbooks.example.com/driftline/pipeline/store_failing"
    assert opened["evidence"]["worker"] == "w1"
    line = summary(opened)
    assert line == (
        "driftline worker w1: store failing: 7 writes failed in a row; consumption paused, "
        "rows held until it answers"
    )
    body = encode_body(trigger_event(opened), "R0UTINGKEY")
    assert pagerduty_errors(body) == []  # what the Events API v2 would accept
    event = json.loads(body)
    assert event["payload"]["source"] == "w1"
    assert event["payload"]["severity"] == "critical"
    assert event["dedup_key"] == "pipeline/w1/store_failing/"
    # Back: resolves after the hold-down (60 s) of success.
    back = [Reading(t) for t in range(35, 100, 5)]
    resolved = [t for r in back for t in alerts.step(r)]
    assert [(t["transition"], t["event_ts"]) for t in resolved] == [("resolve", 95_000_000)]
    assert resolved[0]["alert_id"] == opened["alert_id"]
    assert resolved[0]["resolved_at"] == 95_000_000 and resolved[0]["state"] == "resolved"
    assert pagerduty_errors(encode_body(resolve_event(resolved[0]), "R0UTINGKEY")) == []


def test_a_store_never_opened_is_failing_and_a_worker_without_store_stages_never() -> None:
    alerts = SelfAlerts("w1", Rules(for_s=0, hold_down_s=0))
    out = alerts.step(Reading(0, store_open=False))
    assert [t["metric"] for t in out] == ["store_failing"]
    assert "store not open" in out[0]["evidence"]["description"]
    assert SelfAlerts("w1", Rules(for_s=0)).step(Reading(0, store_open=None)) == []


def test_dead_letters_are_a_rate_over_the_last_minute() -> None:
    alerts = SelfAlerts("w1", RULES)  # bound 2/s
    # 1 per second for two minutes: under the bound, never opens.
    slow = [Reading(t, dead_letters=t) for t in range(0, 120, 5)]
    assert steps(alerts, slow) == []
    # A burst of 5 per second: the rate over the last minute passes 2/s, then holds for 30 s.
    burst = [Reading(t, dead_letters=115 + 5 * (t - 115)) for t in range(120, 240, 5)]
    opened = steps(alerts, burst)
    assert opened and opened[0][1:] == ("open", "dead_letters")
    assert 150 <= opened[0][0] <= 190
    # None for a while: resolves after the window has emptied and the hold-down passed.
    total = 115 + 5 * (235 - 115)
    quiet = [Reading(t, dead_letters=total) for t in range(240, 420, 5)]
    resolved = steps(alerts, quiet)
    assert [r[1:] for r in resolved] == [("resolve", "dead_letters")]
    assert 300 <= resolved[0][0] <= 360


def test_deliveries_failing_follows_held_routes_and_failed_deliveries() -> None:
    alerts = SelfAlerts("w1", Rules(for_s=10, hold_down_s=20))
    held = [Reading(t, routes_held=("pagerduty[0]",)) for t in range(0, 15, 5)]
    out = [t for r in held for t in alerts.step(r)]
    assert [(t["transition"], t["metric"]) for t in out] == [("open", "deliveries_failing")]
    assert out[0]["evidence"]["routes_held"] == ["pagerduty[0]"]
    assert "route pagerduty[0] held" in summary(out[0])
    # The route recovers; one delivery had failed for good: open until it leaves the minute.
    rest = [Reading(t, deliveries_failed=1 if t >= 20 else 0) for t in range(15, 120, 5)]
    resolved = steps(alerts, rest)
    assert [r[1:] for r in resolved] == [("resolve", "deliveries_failing")]
    assert resolved[0][0] >= 20 + 60  # the failure counts for a minute


def test_conditions_are_independent_and_listed() -> None:
    alerts = SelfAlerts("w1", Rules(for_s=0, hold_down_s=0, lag_records=10))
    out = alerts.step(
        Reading(0, lag_records={("otlp_spans", 0): 11}, store_failures=1, routes_held=("x",))
    )
    assert sorted(t["metric"] for t in out) == [
        "consumer_lag",
        "deliveries_failing",
        "store_failing",
    ]
    assert set(alerts.open_conditions()) <= set(CONDITIONS)
    assert [t["metric"] for t in alerts.step(Reading(1, store_failures=1, routes_held=("x",)))] == [
        "consumer_lag"
    ]


# -- the heartbeat ----------------------------------------------------------------------


def test_heartbeat_every_interval_while_healthy_at_once_when_healthy_again() -> None:
    beat = HeartbeatSchedule(60)
    sent = []
    for t in range(0, 300, 5):
        healthy = not 100 <= t < 200
        if beat.due(t, healthy):
            beat.sent(t)
            sent.append(t)
    assert sent == [0, 60, 200, 260]
    failing = HeartbeatSchedule(60)
    assert failing.due(0, True)  # not marked sent (the ping failed): due at the next check
    assert failing.due(5, True)


class GetReceiver(LocalServer):
    """A local HTTP server that records GET and POST requests and answers ``status``."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []
        self.status = 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                receiver.requests.append((self.command, self.path))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"OK")

            do_GET = do_POST = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        super().__init__(Handler)


@pytest.fixture
def heartbeat_receiver() -> Iterator[GetReceiver]:
    with GetReceiver() as receiver:
        yield receiver


def _watch(url: str | None, state: dict[str, Any], clock: list[float], **kwargs: Any) -> SelfWatch:
    return SelfWatch(
        SelfAlerts("w1", Rules(for_s=0, hold_down_s=0)),
        lambda now: Reading(now, store_failures=state["failures"]),
        lambda: state["ready"],
        state["counters"],
        check_s=1,
        heartbeat_url=url,
        heartbeat_s=60,
        clock=lambda: clock[0],
        **kwargs,
    )


async def test_heartbeat_reaches_the_monitor_only_while_ready_and_not_failing(
    heartbeat_receiver: GetReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    secret_path = "/ping/5bf66975-d4c7-4bf5-bcc8-b8d8a82ea278"
    caplog.set_level(logging.INFO, logger="httpx")  # it logs every request's URL
    state: dict[str, Any] = {"ready": False, "failures": 0, "counters": Counter()}
    clock = [1000.0]
    watch = _watch(heartbeat_receiver.url + secret_path, state, clock)
    try:
        assert not await watch.beat()  # not ready yet: nothing sent
        state["ready"] = True
        assert await watch.beat()
        clock[0] += 30
        assert not await watch.beat()  # not due
        clock[0] += 30
        assert await watch.beat()
        # An alert about itself open: the heartbeat stops (the monitor pages).
        state["failures"] = 2
        await watch.check()
        assert watch.alerts.open_conditions() == ["store_failing"]
        clock[0] += 60
        assert not await watch.beat()
        state["failures"] = 0
        await watch.check()
        assert await watch.beat()  # healthy again: at once
        assert heartbeat_receiver.requests == [("GET", secret_path)] * 3
        assert state["counters"]["heartbeats.sent"] == 3

        # The monitor answers 500: counted, logged by host only, tried again at the next check.
        heartbeat_receiver.status = 500
        clock[0] += 60
        with caplog.at_level(logging.WARNING, logger="driftline.streams.telemetry"):
            assert not await watch.beat()
        assert state["counters"]["heartbeats.failed"] == 1
        assert "heartbeat to 127.0.0.1 failed (HTTP 500)" in caplog.text
        assert "HTTP Request: GET *** " in caplog.text  # logged, and masked
        assert "5bf66975" not in caplog.text
        heartbeat_receiver.status = 200
        clock[0] += 1
        assert await watch.beat()
    finally:
        await watch.stop()


async def test_heartbeat_by_post_on_the_watchs_own_timer(heartbeat_receiver: GetReceiver) -> None:
    state: dict[str, Any] = {"ready": True, "failures": 0, "counters": Counter()}
    watch = SelfWatch(
        SelfAlerts("w1", Rules()),
        lambda now: Reading(now),
        lambda: state["ready"],
        state["counters"],
        check_s=0.05,
        heartbeat_url=heartbeat_receiver.url + "/hb",
        heartbeat_s=1,
        heartbeat_method="POST",
    )
    watch.start()
    try:
        await asyncio.sleep(1.5)
    finally:
        await watch.stop()
    assert heartbeat_receiver.requests == [("POST", "/hb")] * 2  # at 0 s and 1 s


# -- delivery straight to the routes -----------------------------------------------------


async def test_pipeline_alerts_go_straight_to_pagerduty() -> None:
    with HttpReceiver(validate_pagerduty=True) as receiver:
        environ = {"PAGERDUTY_ROUTING_KEY": "R0UTINGKEY", "PAGERDUTY_EVENTS_URL": receiver.url}
        notifier = Notifier(Router.from_settings(PagerDutySettings(), environ))
        state: dict[str, Any] = {"ready": True, "failures": 3, "counters": Counter()}
        clock = [1000.0]
        watch = _watch(None, state, clock, notifier=notifier)
        watch.start()
        try:
            await watch.check()
            state["failures"] = 0
            clock[0] += 5
            await watch.check()
            await asyncio.to_thread(receiver.wait_for, 2)
            for _ in range(100):  # the records of the second delivery, counted after its answer
                if state["counters"]["pages.delivered"] == 2:
                    break
                await asyncio.sleep(0.05)
        finally:
            await watch.stop()
    bodies = receiver.bodies()
    assert [(b["event_action"], b["dedup_key"]) for b in bodies] == [
        ("trigger", "pipeline/w1/store_failing/"),
        ("resolve", "pipeline/w1/store_failing/"),
    ]
    assert [r.answered for r in receiver.requests] == [202, 202]
    assert bodies[0]["payload"]["summary"].startswith("driftline worker w1: store failing: 3 ")
    assert state["counters"]["pipeline_alerts.open"] == 1
    assert state["counters"]["pipeline_alerts.resolve"] == 1
    assert state["counters"]["pages.delivered"] == 2


async def test_an_open_alert_survives_a_restart_and_resolves_under_its_id(
    tmp_path: Path,
) -> None:
    state_file = tmp_path / "self_alerts" / "w1.json"
    state: dict[str, Any] = {"ready": True, "failures": 5, "counters": Counter()}
    clock = [1000.0]
    first = _watch(None, state, clock, state_file=state_file)
    opened = await first.check()
    assert json.loads(state_file.read_text()) == {"open": {"store_failing": 1_000_000_000}}
    # The worker restarts; the store answers again by then.
    state["failures"] = 0
    clock[0] = 1100.0
    second = _watch(None, state, clock, state_file=state_file)
    assert second.resume() == ["store_failing"]
    assert not second.healthy()  # no heartbeat while it is open
    resolved = await second.check()
    assert [(t["transition"], t["alert_id"]) for t in resolved] == [
        ("resolve", opened[0]["alert_id"])
    ]
    assert json.loads(state_file.read_text()) == {"open": {}}
    third = _watch(None, state, clock, state_file=state_file)
    assert third.resume() == []
    state_file.write_text("{not json")
    assert _watch(None, state, clock, state_file=state_file).resume() == []  # logged, not fatal


# -- configuration ----------------------------------------------------------------------


def test_heartbeat_url_is_read_from_the_environment_only(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from driftline.config import missing_secrets

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DRIFTLINE_CONFIG", raising=False)

    settings = Settings(worker={"heartbeat_url_env": "DRIFTLINE_HEARTBEAT_URL"})
    errors, _ = missing_secrets(settings, {"PAGERDUTY_ROUTING_KEY": "k"})
    assert errors == [
        "worker.heartbeat_url_env: DRIFTLINE_HEARTBEAT_URL is not set; the worker would send no "
        "heartbeat, and the monitor expecting it would page"
    ]
    env = {"PAGERDUTY_ROUTING_KEY": "k", "DRIFTLINE_HEARTBEAT_URL": "https://hc-ping.com/x"}
    assert missing_secrets(settings, env)[0] == []
    monkeypatch.setenv("DRIFTLINE_WORKER__HEARTBEAT_URL_ENV", "https://hc-ping.com/abc")
    with pytest.raises(ConfigError) as caught:
        load_settings(None)
    assert "worker.heartbeat_url_env: must name an environment variable" in str(caught.value)
    assert "hc-ping.com/abc" not in str(caught.value)


def test_defaults() -> None:
    worker = Settings().worker
    rules = Rules.from_settings(worker)
    assert (worker.self_alerts, worker.self_alert_check_s) == (True, 5.0)
    assert rules == Rules(for_s=60, hold_down_s=300, lag_records=10_000, dead_letters_per_s=1.0)
    assert (worker.heartbeat_url_env, worker.heartbeat_s, worker.heartbeat_method) == (
        None,
        60.0,
        "GET",
    )
