"""The worker's /metrics, /healthz and /readyz, read over HTTP from a real embedded stack.

A stack of its own (its own consumer group and metrics port), so every count is exactly what
this test sent: one message that is not OTLP, and one trace of seven spans of which two are
rejected (negative tokens, no span id). Then a worker writing to ClickHouse over HTTP (served
from chdb, switched to failing and back): /readyz follows the store.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from driftline.config import load_settings
from driftline.stack import EmbeddedStack
from driftline.streams import topics
from tests.integration.conftest import PARTITIONS, Kafka, wait_all_gone, write_config
from tests.integration.test_scaling import cluster
from tests.utils import otlp_factory as f
from tests.utils.prometheus_text import Samples, parse

pytestmark = pytest.mark.integration

GOOD_SPANS = 5


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def metrics_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedStack]:
    directory = tmp_path_factory.mktemp("metrics")
    config = write_config(directory, f"metrics-test-{uuid.uuid4().hex[:8]}")
    with config.open("a") as out:
        out.write(f"\n[worker]\nmetrics_port = {free_port()}\n")
    stack = EmbeddedStack(load_settings(config), config_file=config)
    stack.start()
    pids = {p.pid for p in stack.processes if p.pid is not None}
    try:
        yield stack
    finally:
        stack.stop()
        assert not wait_all_gone(pids), "processes survived the stack"


def get(stack: EmbeddedStack, path: str) -> httpx.Response:
    assert stack.endpoints is not None and stack.endpoints.worker_metrics
    return httpx.get(f"{stack.endpoints.worker_metrics}{path}", timeout=5)


def one_trace(spans: int) -> bytes:
    """An OTLP message: one trace of ``spans`` LLM calls, a root and its children, dated now."""
    trace, root = uuid.uuid4().bytes, uuid.uuid4().bytes[:8]
    base = time.time_ns()
    chat = f.semconv_chat_attributes(input_tokens=10, output_tokens=5)
    out = [f.make_span(trace_id=trace, span_id=root, start_ns=base, attributes=chat)]
    out += [
        f.make_span(
            trace_id=trace,
            span_id=uuid.uuid4().bytes[:8],
            parent_span_id=root,
            start_ns=base + i,
            attributes=chat,
        )
        for i in range(1, spans)
    ]
    return f.traces_data(f.make_resource_spans(out)).SerializeToString()


def scrape(stack: EmbeddedStack) -> Samples:
    response = get(stack, "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return parse(response.text)


def wait_until(
    stack: EmbeddedStack, done: Callable[[Samples], bool], timeout_s: float = 45.0
) -> Samples:
    deadline = time.monotonic() + timeout_s
    while True:
        samples = scrape(stack)
        if done(samples):
            return samples
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s; last scrape: {samples}")
        time.sleep(0.3)


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get(name, {}).get(tuple(labels.items()))


def test_ready_once_partitions_are_assigned(metrics_stack: EmbeddedStack) -> None:
    assert metrics_stack.endpoints is not None
    assert metrics_stack.endpoints.worker_metrics == (
        f"http://127.0.0.1:{metrics_stack.settings.worker.metrics_port}"
    )
    assert "/metrics" in metrics_stack.endpoints.describe()
    # The stack waited for the worker's first assignment; the store opens right after.
    deadline = time.monotonic() + 30
    ready = get(metrics_stack, "/readyz")
    while ready.status_code != 200 and time.monotonic() < deadline:
        assert ready.status_code == 503 and ready.text.startswith("not ready: "), ready.text
        time.sleep(0.2)
        ready = get(metrics_stack, "/readyz")
    # One worker owns every partition of the four topics it reads.
    expected = f"ready: {4 * PARTITIONS} partitions assigned\n"
    assert (ready.status_code, ready.text) == (200, expected)
    health = get(metrics_stack, "/healthz")
    assert (health.status_code, health.text) == (200, "ok\n")
    samples = scrape(metrics_stack)
    assert value(samples, "driftline_worker_ready") == 1
    assert value(samples, "driftline_store_reachable") == 1
    for topic in topics.SOURCE_TOPICS:
        assert value(samples, "driftline_kafka_assigned_partitions", topic=topic) == PARTITIONS
    assert value(samples, "driftline_spans_received_total") == 0  # nothing sent yet
    assert samples.get("driftline_spans_rejected_total", {}) == {}


def test_counts_after_a_known_input(metrics_stack: EmbeddedStack) -> None:
    assert metrics_stack.endpoints is not None
    kafka = Kafka(metrics_stack.settings, metrics_stack.endpoints.bootstrap_servers)
    kafka.produce(topics.OTLP_SPANS, b"\x00\xffnot an OTLP message", partition=2)
    trace, root = uuid.uuid4().bytes, uuid.uuid4().bytes[:8]
    base = time.time_ns()
    chat = f.semconv_chat_attributes(input_tokens=10, output_tokens=5)
    spans = [f.make_span(trace_id=trace, span_id=root, start_ns=base, attributes=chat)]
    spans += [
        f.make_span(
            trace_id=trace,
            span_id=uuid.uuid4().bytes[:8],
            parent_span_id=root,
            start_ns=base + i,
            attributes=chat,
        )
        for i in range(1, GOOD_SPANS)
    ]
    negative = f.semconv_chat_attributes(input_tokens=-3, output_tokens=5)
    spans.append(
        f.make_span(
            trace_id=trace,
            span_id=uuid.uuid4().bytes[:8],
            parent_span_id=root,
            start_ns=base + 9,
            attributes=negative,
        )
    )
    no_id = f.make_span(trace_id=trace, span_id=b"", start_ns=base, attributes=chat)
    spans.append(no_id)
    message = f.traces_data(f.make_resource_spans(spans)).SerializeToString()
    kafka.produce(topics.OTLP_SPANS, message, partition=3)

    def settled(s: Samples) -> bool:
        return (
            value(s, "driftline_traces_published_total") == 1
            and value(s, "driftline_workflows_tracked") == 1
            and (value(s, "driftline_monitor_state_bytes") or 0) > 0  # its checkpoint written
            and value(s, "driftline_store_pending_rows") == 0
        )

    samples = wait_until(metrics_stack, settled)
    assert value(samples, "driftline_spans_received_total") == GOOD_SPANS + 2
    assert samples["driftline_spans_rejected_total"] == {
        (("reason", "missing_span_id"),): 1,
        (("reason", "negative_tokens"),): 1,
        (("reason", "not_otlp"),): 1,
    }
    assert value(samples, "driftline_events_decoded_total") == GOOD_SPANS
    assert value(samples, "driftline_events_completed_total") == GOOD_SPANS
    assert value(samples, "driftline_traces_closed_total", closed_by="root_end") == 1
    assert value(samples, "driftline_traces_closed_total", closed_by="evicted") == 0
    assert value(samples, "driftline_open_traces") == 0
    assert value(samples, "driftline_store_write_failures_total") == 0
    assert value(samples, "driftline_store_consecutive_failures") == 0
    opened = {
        labels: count
        for labels, count in samples["driftline_alert_transitions_total"].items()
        if ("transition", "open") in labels
    }
    assert opened and sum(opened.values()) == 0  # every kind exported, none opened
    assert value(samples, "driftline_worker_counter_total") is None  # every counter is named

    # Once Faust has committed the two source offsets (every few seconds), the partitions that
    # carried the messages show their lag: caught up. The two that carried nothing have no
    # committed or read offset, so no number.
    def committed(s: Samples) -> bool:
        lag = s.get("driftline_kafka_consumer_lag_records", {})
        return all((("topic", topics.OTLP_SPANS), ("partition", p)) in lag for p in ("2", "3"))

    lag = wait_until(metrics_stack, committed)["driftline_kafka_consumer_lag_records"]
    spans_lag = {k: v for k, v in lag.items() if k[0] == ("topic", topics.OTLP_SPANS)}
    assert spans_lag == {
        (("topic", topics.OTLP_SPANS), ("partition", "2")): 0,
        (("topic", topics.OTLP_SPANS), ("partition", "3")): 0,
    }
    # The partitions that carried the messages were read within seconds of their append.
    delays = wait_until(metrics_stack, committed)["driftline_kafka_consumer_read_delay_seconds"]
    spans_delay = {k: v for k, v in delays.items() if k[0] == ("topic", topics.OTLP_SPANS)}
    assert set(spans_delay) == set(spans_lag)
    assert all(0 <= seconds < 30 for seconds in spans_delay.values()), spans_delay
    assert get(metrics_stack, "/readyz").status_code == 200


def test_readyz_follows_the_store(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"

    def ready() -> httpx.Response:
        return httpx.get(f"{url}/readyz", timeout=5)

    def wait_for(status: int, text: str, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        answer = None
        while time.monotonic() < deadline:
            try:
                answer = ready()
            except httpx.TransportError:
                answer = None
            if answer is not None and (answer.status_code, answer.text) == (status, text):
                return
            time.sleep(0.2)
        last = None if answer is None else (answer.status_code, answer.text)
        raise AssertionError(f"/readyz never answered {(status, text)}; last: {last}")

    def metric(name: str) -> float | None:
        return value(parse(httpx.get(f"{url}/metrics", timeout=5).text), name)

    with cluster(tmp_path, f"[worker]\nmetrics_port = {port}\n") as c:
        # Down before the worker starts: assigned, but the store never opened.
        c.server.fail_with(210, "simulated outage")
        c.start_worker("worker")
        wait_for(503, "not ready: store not open yet (see the log)\n")
        assert metric("driftline_store_reachable") == 0
        assert metric("driftline_store_last_success_timestamp_seconds") is None  # none yet
        c.server.recover()
        wait_for(200, f"ready: {4 * PARTITIONS} partitions assigned\n")
        assert metric("driftline_store_reachable") == 1

        # Down while it has something to write: the failed writes say so, nothing is lost.
        c.server.fail_with(210, "simulated outage")
        Kafka(c.settings, c.bootstrap).produce(topics.OTLP_SPANS, one_trace(3), partition=0)
        deadline = time.monotonic() + 60
        while (metric("driftline_store_consecutive_failures") or 0) < 1:
            assert time.monotonic() < deadline, "no failed write while the store was down"
            time.sleep(0.2)
        answer = ready()
        assert answer.status_code == 503, answer.text
        assert answer.text.startswith("not ready: store unavailable ("), answer.text
        assert (metric("driftline_store_pending_rows") or 0) >= 3
        assert (metric("driftline_store_write_failures_total") or 0) >= 1
        assert metric("driftline_worker_ready") == 0
        health = httpx.get(f"{url}/healthz", timeout=5)
        assert (health.status_code, health.text) == (200, "ok\n")  # alive, only not ready

        c.server.recover()
        wait_for(200, f"ready: {4 * PARTITIONS} partitions assigned\n")
        assert metric("driftline_store_pending_rows") == 0
        assert metric("driftline_store_consecutive_failures") == 0
        assert metric("driftline_events_completed_total") == 3
        stored_at = metric("driftline_store_last_success_timestamp_seconds")
        assert stored_at is not None and abs(time.time() - stored_at) < 60
        writes = parse(httpx.get(f"{url}/metrics", timeout=5).text)[
            "driftline_store_write_seconds_count"
        ]
        assert writes[(("outcome", "failed"),)] >= 1  # the writes refused during the outage
        assert writes[(("outcome", "ok"),)] >= 1
        c.check_alive("worker")
