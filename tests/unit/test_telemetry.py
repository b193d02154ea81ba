"""The worker's own telemetry: exposition format, metric names, readiness, the HTTP server."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from driftline.config import ConfigError, load_settings
from driftline.stack import worker_metrics_url
from driftline.streams.histogram import Histogram
from driftline.streams.notifier.metrics import DeliveryMetrics
from driftline.streams.sink import STORE_WRITE_BUCKETS_S
from driftline.streams.telemetry import (
    ALERT_KINDS,
    CONTENT_TYPE,
    COUNTERS,
    FALLBACK_COUNTER,
    NOT_EXPORTED_PREFIXES,
    CounterSpec,
    Family,
    Probe,
    ReadDelays,
    TelemetryServer,
    counter_families,
    counter_spec,
    render,
    self_reading,
    worker_families,
    worker_health,
    worker_readiness,
)
from tests.utils.prometheus_text import parse

ROOT = Path(__file__).resolve().parents[2]


# -- exposition ---------------------------------------------------------------------------


def test_render_escapes_labels_and_help_and_formats_numbers() -> None:
    text = render(
        [
            Family("a_total", "counter", "back\\slash\nnewline").add(3, k='q"\n\\'),
            Family("b", "gauge", "floats").add(0.25).add(float("nan"), x="1").add(True, x="2"),
        ]
    )
    assert text == (
        "# HELP a_total back\\\\slash\\nnewline\n"
        "# TYPE a_total counter\n"
        'a_total{k="q\\"\\n\\\\"} 3\n'
        "# HELP b floats\n"
        "# TYPE b gauge\n"
        "b 0.25\n"
        'b{x="1"} NaN\n'
        'b{x="2"} 1\n'
    )
    assert parse(text)["a_total"] == {(("k", 'q"\n\\'),): 3.0}


def test_counters_are_exported_by_name_with_bounded_labels() -> None:
    counters = Counter(
        {
            "spans.in": 7,
            "events.decoded": 5,
            "rejects.not_otlp": 1,
            "rejects.negative_tokens:gen_ai.usage.input_tokens": 1,
            "rejects.negative_tokens:gen_ai.usage.output_tokens": 2,
            "rejects.metrics.bad_value": 4,
            "alerts.open.drift": 2,
            "alerts.resolve.engine": 1,
            "alerts.update": 4,  # counted without a kind: still in the sum over kinds
            "pages.delivered": 2,  # exported by route from the notifiers (test_telemetry_pages)
            "store.rejected.events": 1,
            "worker.ready": 1,
            "brand.new": 9,
        }
    )
    samples = parse(render(counter_families(counters)))
    assert samples["driftline_spans_received_total"] == {(): 7}
    assert samples["driftline_events_decoded_total"] == {(): 5}
    assert samples["driftline_traces_published_total"] == {(): 0}  # before its first count
    assert samples["driftline_spans_rejected_total"] == {
        (("reason", "not_otlp"),): 1,
        (("reason", "negative_tokens"),): 3,  # the attribute key is cut off: bounded labels
    }
    assert samples["driftline_engine_metrics_rejected_total"] == {(("reason", "bad_value"),): 4}
    alerts = samples["driftline_alert_transitions_total"]
    assert alerts[(("transition", "open"), ("kind", "drift"))] == 2
    assert alerts[(("transition", "resolve"), ("kind", "engine"))] == 1
    assert alerts[(("transition", "update"), ("kind", "unknown"))] == 4
    # Every known transition and kind from the start, at 0: 3 x 4, and the one unknown kind.
    assert alerts[(("transition", "open"), ("kind", "routing"))] == 0
    assert len(alerts) == 3 * len(ALERT_KINDS) + 1
    by_transition: Counter[str] = Counter()
    for labels, n in alerts.items():
        by_transition[dict(labels)["transition"]] += int(n)
    assert by_transition == {"open": 2, "resolve": 1, "update": 4}  # the series before kinds
    assert "driftline_page_deliveries_total" not in samples
    assert samples["driftline_store_rejected_records_total"] == {(("kind", "events"),): 1}
    # Not silently lost: a counter added later and not named yet.
    assert samples[FALLBACK_COUNTER] == {(("name", "brand.new"),): 9}
    assert not any("ready" in name for name in samples)


def _counter_keys_in_source() -> set[str]:
    """Every literal key, or f-string prefix, the stream code counts under."""
    keys = set()
    for path in (ROOT / "streams").rglob("*.py"):
        text = path.read_text()
        keys |= set(re.findall(r'counters\["([^"]+)"\]\s*(?:\+=|=)', text))
        keys |= {f"{prefix}x" for prefix in re.findall(r'counters\[f"([^"{]+)\{', text)}
    return keys


def test_every_counter_in_the_code_has_a_metric_of_its_own() -> None:
    keys = _counter_keys_in_source()
    assert {"spans.in", "rejects.x", "alerts.x", "pages.x", "store.failures"} <= keys
    unnamed = sorted(
        k
        for k in keys - {"worker.ready"}
        if counter_spec(k) is None and not k.startswith(NOT_EXPORTED_PREFIXES)
    )
    assert unnamed == [], "add these to streams.telemetry.COUNTERS and docs/metrics.md"


def test_alert_counters_carry_the_transition_and_the_kind() -> None:
    found = []
    for path in (ROOT / "streams").rglob("*.py"):
        found += re.findall(r'counters\[f"alerts\.([^"]*)"\]', path.read_text())
    assert len(found) == 2  # the monitor's and the engine conditions'
    assert set(found) == {"{record['transition']}.{record['kind']}"}


def test_every_alert_kind_the_code_raises_is_known() -> None:
    raised = set()
    for path in (ROOT / "streams" / "monitor").rglob("*.py"):
        raised |= set(re.findall(r'\bkind="(\w+)"', path.read_text()))
    assert raised, "no alert kinds found: the pattern no longer matches the monitor's code"
    assert raised <= set(ALERT_KINDS)


def test_a_labelled_counter_is_a_prefix_with_known_values_per_label() -> None:
    with pytest.raises(ValueError, match="prefix"):
        CounterSpec("alerts", "x_total", "", ("transition",))
    with pytest.raises(ValueError, match="per label"):
        CounterSpec("alerts.", "x_total", "", ("transition", "kind"), (("open",),))
    spec = CounterSpec("a.", "x_total", "", ("t", "k"))
    assert spec.label_values("open.") == ("open", "unknown")
    assert spec.label_values("open.a.b:c") == ("open", "a.b")  # the last label takes the rest


# -- the worker's state, read at scrape time --------------------------------------------


@dataclass(frozen=True)
class TP:
    topic: str
    partition: int


@dataclass
class FakeSink:
    store: object | None = "store"
    failures: int = 0
    pending_rows: int = 0
    last_success_s: float | None = None


@dataclass
class FakeConsumer:
    assigned: set[TP]
    highwaters: dict[TP, int]
    _committed_offset: dict[TP, int | None] = field(default_factory=dict)
    _read_offset: dict[TP, int | None] = field(default_factory=dict)

    def assignment(self) -> set[TP]:
        return self.assigned

    def highwater(self, tp: TP) -> int | None:
        return self.highwaters.get(tp)


def fake_worker(**changes: Any) -> Any:
    spans0, spans1, events0 = TP("otlp_spans", 0), TP("otlp_spans", 1), TP("llm_events", 0)
    changelog = TP("driftline-open_traces-changelog", 0)
    consumer = FakeConsumer(
        {spans0, spans1, events0, changelog},
        {spans0: 120, spans1: 7, changelog: 99},
        _committed_offset={spans0: 100, changelog: 1},
        _read_offset={spans1: 6},
    )
    app = SimpleNamespace(
        consumer=consumer,
        rebalancing=False,
        rebalancing_count=2,
        crashed=False,
        crash_reason=None,
        should_stop=False,
        assignor=SimpleNamespace(assigned_actives=lambda: consumer.assigned),
    )
    assemblers = {
        0: SimpleNamespace(open_count=3, closed_counts=Counter({"root_end": 4, "evicted": 1})),
        1: SimpleNamespace(open_count=2, closed_counts=Counter({"timeout": 1})),
    }
    governance = SimpleNamespace(
        monitor=SimpleNamespace(tracked_workflows=2),
        sinks={"events": FakeSink(pending_rows=40), "alerts": FakeSink(pending_rows=2)},
    )
    worker = SimpleNamespace(
        app=app,
        counters=Counter({"worker.ready": 1, "spans.in": 9}),
        assemblers=assemblers,
        closed_elsewhere=Counter({"root_end": 10}),
        governance=governance,
        started_s=1700000000.5,
    )
    for key, value in changes.items():
        setattr(worker, key, value)
    return worker


def test_gauges_read_the_workers_state() -> None:
    samples = parse(render(worker_families(fake_worker())))
    assert samples["driftline_spans_received_total"] == {(): 9}
    assert samples["driftline_worker_ready"] == {(): 1}
    assert samples["driftline_worker_rebalances_total"] == {(): 2}
    assert samples["driftline_worker_start_time_seconds"] == {(): 1700000000.5}
    assert samples["driftline_open_traces"] == {(): 5}
    assert samples["driftline_traces_closed_total"] == {
        (("closed_by", "root_end"),): 14,  # 10 by assemblers of partitions since moved away
        (("closed_by", "timeout"),): 1,
        (("closed_by", "evicted"),): 1,
        (("closed_by", "span_cap"),): 0,
        (("closed_by", "flush"),): 0,
    }
    assert samples["driftline_workflows_tracked"] == {(): 2}
    assert samples["driftline_store_reachable"] == {(): 1}
    assert samples["driftline_store_pending_rows"] == {(): 42}
    assert samples["driftline_store_consecutive_failures"] == {(): 0}
    assert samples["driftline_kafka_assigned_partitions"] == {
        (("topic", "otlp_spans"),): 2,
        (("topic", "llm_spans"),): 0,
        (("topic", "llm_events"),): 1,
        (("topic", "llm_alerts"),): 0,
    }
    # 120 - committed 100; partition 1 not committed yet: 7 - (last read 6 + 1); llm_events/0
    # has no high watermark yet (nothing fetched) and changelogs are not source topics.
    assert samples["driftline_kafka_consumer_lag_records"] == {
        (("topic", "otlp_spans"), ("partition", "0")): 20,
        (("topic", "otlp_spans"), ("partition", "1")): 0,
    }


def test_readiness_names_what_is_missing() -> None:
    assert worker_readiness(fake_worker()) == Probe(True, "ready: 3 partitions assigned")
    assert worker_readiness(fake_worker(counters=Counter())) == Probe(
        False, "not ready: waiting for the first partition assignment"
    )
    rebalancing = fake_worker()
    rebalancing.app.rebalancing = True
    assert worker_readiness(rebalancing) == Probe(False, "not ready: rebalancing")
    opening = fake_worker()
    opening.governance.sinks["alerts"].store = None
    assert worker_readiness(opening).reason == "not ready: store not open yet (see the log)"
    failing = fake_worker()
    failing.governance.sinks["events"].failures = 3
    assert worker_readiness(failing) == Probe(
        False, "not ready: store unavailable (3 failed writes in a row)"
    )
    samples = parse(render(worker_families(failing)))
    assert samples["driftline_worker_ready"] == {(): 0}
    assert samples["driftline_store_reachable"] == {(): 0}
    assert samples["driftline_store_consecutive_failures"] == {(): 3}
    # Without storage stages (with_governance=False) the store is no condition.
    assert worker_readiness(fake_worker(governance=None)).ok
    behind = fake_worker()
    behind.self_watch = SimpleNamespace(
        alerts=SimpleNamespace(open_conditions=lambda: ["consumer_lag"])
    )
    assert worker_readiness(behind) == Probe(
        False, "not ready: behind (the consumer_lag alert is open)"
    )
    other = fake_worker()
    other.self_watch = SimpleNamespace(
        alerts=SimpleNamespace(open_conditions=lambda: ["dead_letters"])
    )
    assert worker_readiness(other).ok  # dead letters are input trouble, not the worker's


def test_self_alerts_read_the_same_state_and_their_gauge_is_exported() -> None:
    from driftline.streams.selfalerts import Reading, Rules, SelfAlerts

    worker = fake_worker()
    worker.counters.update(
        {
            "rejects.not_otlp": 3,
            "store.rejected.events": 2,
            "llm_events.bad_messages": 4,  # dead-lettered too (bad_llm_events)
            "pages.gave_up": 1,
            "alerts.open.drift": 4,
        }
    )
    worker.governance.sinks["events"].failures = 2
    held = SimpleNamespace(
        held_routes=lambda: ["pagerduty[0]"],
        router=SimpleNamespace(routes=()),
        metrics=DeliveryMetrics(),
    )
    worker.governance.notifier = held
    other = SimpleNamespace(held_routes=lambda: ["pagerduty[0]", "webhook[1]"])
    reading = self_reading(worker, 50.0, [other, None])
    assert reading == Reading(
        at_s=50.0,
        lag_records={("otlp_spans", 0): 20, ("otlp_spans", 1): 0},
        store_open=True,
        store_failures=2,
        dead_letters=9,
        deliveries_failed=1,
        routes_held=("pagerduty[0]", "webhook[1]"),
    )
    # A store not open counts only once the worker is assigned (tables may recover for long).
    worker.governance.sinks["alerts"].store = None
    assert self_reading(worker, 0).store_open is False
    worker.counters["worker.ready"] = 0
    assert self_reading(worker, 0).store_open is True

    samples = parse(render(worker_families(worker)))
    assert set(samples["driftline_pipeline_alert_open"].values()) == {0}
    alerts = SelfAlerts("w1", Rules(for_s=0))
    alerts.step(reading)
    worker.self_watch = SimpleNamespace(alerts=alerts)
    samples = parse(render(worker_families(worker)))
    assert samples["driftline_pipeline_alert_open"] == {
        (("condition", "consumer_lag"),): 0,
        (("condition", "store_failing"),): 1,
        (("condition", "dead_letters"),): 0,
        (("condition", "deliveries_failing"),): 1,
    }


def test_health_is_ok_until_the_app_crashes_or_stops() -> None:
    worker = fake_worker()
    assert worker_health(worker) == Probe(True, "ok")
    worker.app.should_stop = True
    assert worker_health(worker) == Probe(False, "stopping")
    worker.app.crashed, worker.app.crash_reason = True, KeyError("x")
    assert worker_health(worker) == Probe(False, "crashed: KeyError")


def test_every_exported_metric_is_documented() -> None:
    doc = (ROOT / "docs" / "metrics.md").read_text()
    documented = set(re.findall(r"^\| `(driftline_[a-z_]+)`", doc, flags=re.MULTILINE))
    worker = fake_worker()
    metrics = DeliveryMetrics()  # a page sent: its histograms have a series to show
    metrics.observe_send("default", "delivered", 0.1)
    metrics.observe_accepted("default", 1_000_000, 3.0)
    worker.governance.notifier = SimpleNamespace(router=SimpleNamespace(routes=()), metrics=metrics)
    worker.governance.sinks["events"].last_success_s = 1_767_225_600.0  # a write went through
    worker.read_delays = ReadDelays()
    timed = {o: Histogram(STORE_WRITE_BUCKETS_S) for o in ("ok", "failed")}
    timed["ok"].observe(0.02)
    worker.governance.sinks["events"].write_seconds = timed
    worker.read_delays.note("otlp_spans", 0, time.time() - 2.0)
    text = render(worker_families(worker))
    exported = set(re.findall(r"^# TYPE (\S+) ", text, flags=re.MULTILINE))
    exported.add("driftline_worker_event_loop_lag_seconds")  # added by the server
    exported.add(FALLBACK_COUNTER)
    assert exported - documented == set(), "document these in docs/metrics.md"
    assert documented - exported == set(), "docs/metrics.md names metrics that do not exist"
    assert {spec.name for spec in COUNTERS} <= documented


# -- the HTTP server ----------------------------------------------------------------------


async def test_server_answers_metrics_and_probes() -> None:
    state = {"ready": Probe(False, "not ready: rebalancing")}
    server = TelemetryServer(
        "127.0.0.1",
        0,
        collect=lambda: [Family("x_total", "counter", "x").add(4)],
        ready=lambda: state["ready"],
    )
    assert await server.start()
    try:
        assert server.port != 0
        async with httpx.AsyncClient(base_url=server.url, timeout=5) as client:
            metrics = await client.get("/metrics")
            assert metrics.status_code == 200
            assert metrics.headers["content-type"] == CONTENT_TYPE
            samples = parse(metrics.text)
            assert samples["x_total"] == {(): 4}
            assert set(samples) == {"x_total", "driftline_worker_event_loop_lag_seconds"}
            ready = await client.get("/readyz")
            assert (ready.status_code, ready.text) == (503, "not ready: rebalancing\n")
            state["ready"] = Probe(True, "ready: 4 partitions assigned")
            ready = await client.get("/readyz")
            assert (ready.status_code, ready.text) == (200, "ready: 4 partitions assigned\n")
            health = await client.get("/healthz")
            assert (health.status_code, health.text) == (200, "ok\n")
            assert (await client.get("/")).status_code == 404
            await asyncio.sleep(0.6)  # one loop probe
            assert server.loop_lag_s >= 0
    finally:
        await server.stop()


async def test_a_failing_collector_is_a_500_not_a_crash(caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> list[Family]:
        raise RuntimeError("boom")

    server = TelemetryServer("127.0.0.1", 0, collect=broken, ready=lambda: 1 / 0)  # type: ignore[arg-type,return-value]
    assert await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=5) as client:
            assert (await client.get("/metrics")).status_code == 500
            ready = await client.get("/readyz")
            assert (ready.status_code, ready.text) == (503, "probe failed: ZeroDivisionError\n")
    finally:
        await server.stop()


async def test_a_taken_port_is_logged_and_the_worker_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = int(sock.getsockname()[1])
        server = TelemetryServer("127.0.0.1", port, collect=list, ready=lambda: Probe(True, ""))
        with caplog.at_level(logging.ERROR, logger="driftline.streams.telemetry"):
            assert await server.start() is False
        await server.stop()
    assert f"cannot listen on 127.0.0.1:{port}" in caplog.text
    assert "worker.metrics_port" in caplog.text


# -- configuration ------------------------------------------------------------------------


def test_metrics_port_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DRIFTLINE_CONFIG", raising=False)
    settings = load_settings()
    assert (settings.worker.metrics_host, settings.worker.metrics_port) == ("127.0.0.1", 9464)
    assert worker_metrics_url(settings) == "http://127.0.0.1:9464"
    monkeypatch.setenv("DRIFTLINE_WORKER__METRICS_PORT", "0")
    assert load_settings().worker.metrics_port == 0
    assert worker_metrics_url(load_settings()) is None  # off: `driftline up` prints no URL
    monkeypatch.setenv("DRIFTLINE_WORKER__METRICS_PORT", "70000")
    with pytest.raises(ConfigError, match=r"worker\.metrics_port"):
        load_settings()


def test_read_delay_is_exported_for_assigned_partitions_only() -> None:
    worker = fake_worker()
    worker.read_delays = ReadDelays(clock=lambda: 1_000.0)
    worker.read_delays.note("otlp_spans", 0, 997.5)  # read 2.5 s after its append
    worker.read_delays.note("otlp_spans", 7, 900.0)  # a partition this worker no longer owns
    worker.read_delays.note("llm_events", 0, 1_000.5)  # clocks apart: never negative
    samples = parse(render(worker_families(worker)))
    assert samples["driftline_kafka_consumer_read_delay_seconds"] == {
        (("topic", "llm_events"), ("partition", "0")): 0.0,
        (("topic", "otlp_spans"), ("partition", "0")): 2.5,
    }
