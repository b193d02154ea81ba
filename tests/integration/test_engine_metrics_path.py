"""Engine metrics through the real collector and broker: OTLP metrics -> rotel -> otlp_metrics.

Two senders, as in production: an application's OTel SDK exporting GenAI metrics over OTLP,
and a scrape of a vLLM server as the Collector's Prometheus receiver forwards it (metric
names with the ``vllm:`` prefix, which the SDK's instrument-name rules would not allow).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    Gauge,
    Metric,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource as SdkResource

from driftline.schemas import attributes as a
from driftline.schemas import engine_metrics as em
from driftline.stack import EmbeddedStack
from driftline.streams import topics
from driftline.streams.engine_attribution import EngineAttribution
from driftline.streams.engine_feed import EngineMetricsFeed
from driftline.streams.engine_metrics import EngineMetricRows, decode_metrics_message
from driftline.streams.topics import OTLP_METRICS
from tests.integration.conftest import Kafka
from tests.integration.test_ingest import closed_records, wait_for_trace
from tests.utils import otlp_factory as f

pytestmark = pytest.mark.integration

TARGET = "vllm-0.internal:8000"
MODEL = "meta-llama/Llama-3.1-8B-Instruct"


def _kv(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def vllm_scrape(kv_usage: float) -> bytes:
    point = NumberDataPoint(
        time_unix_nano=time.time_ns(), as_double=kv_usage, attributes=[_kv("model_name", MODEL)]
    )
    resource = Resource(
        attributes=[_kv("service.name", "vllm"), _kv("service.instance.id", TARGET)]
    )
    metric = Metric(name="vllm:kv_cache_usage_perc", gauge=Gauge(data_points=[point]))
    return ExportMetricsServiceRequest(
        resource_metrics=[
            ResourceMetrics(resource=resource, scope_metrics=[ScopeMetrics(metrics=[metric])])
        ]
    ).SerializeToString()


def rows_seen(records: list[object]) -> EngineMetricRows:
    merged = EngineMetricRows()
    for record in records:
        rows = decode_metrics_message(record.value)  # type: ignore[attr-defined]
        assert rows.rejects == []
        for name in ("time_ns", "engine", "model", "instance", "metric", "value"):
            getattr(merged, name).extend(getattr(rows, name))
    return merged


def test_engine_and_genai_metrics_reach_otlp_metrics_as_driftline_reads_them(
    stack: EmbeddedStack, kafka: Kafka
) -> None:
    assert stack.endpoints is not None
    reader = kafka.reader(OTLP_METRICS)
    response = httpx.post(
        f"{stack.endpoints.otlp_http}/v1/metrics",
        content=vllm_scrape(0.87),
        headers={"Content-Type": "application/x-protobuf"},
        timeout=10,
    )
    assert response.status_code == 200, response.text

    exporter = OTLPMetricExporter(endpoint=f"{stack.endpoints.otlp_http}/v1/metrics")
    metric_reader = PeriodicExportingMetricReader(exporter, export_interval_millis=60_000)
    provider = MeterProvider(
        metric_readers=[metric_reader],
        resource=SdkResource.create({"service.name": "support-chat"}),
    )
    usage = provider.get_meter("app").create_histogram(em.CLIENT_TOKEN_USAGE, unit="{token}")
    usage.record(120, {"gen_ai.request.model": MODEL, "gen_ai.token.type": "input"})
    usage.record(30, {"gen_ai.request.model": MODEL, "gen_ai.token.type": "output"})
    assert provider.force_flush(10_000)
    provider.shutdown()

    def both_arrived(records: list[object]) -> bool:
        metrics = set(rows_seen(records).metric)
        return em.KV_CACHE_USAGE in metrics and "gen_ai.client.token.usage.input:sum" in metrics

    rows = rows_seen(reader.wait_for(both_arrived, timeout_s=30))  # type: ignore[arg-type]
    kv = [
        (engine, model, instance, value)
        for engine, model, instance, metric, value in zip(
            rows.engine, rows.model, rows.instance, rows.metric, rows.value, strict=True
        )
        if metric == em.KV_CACHE_USAGE
    ]
    assert kv == [("vllm", MODEL, TARGET, 0.87)]
    tokens = dict(zip(rows.metric, rows.value, strict=True))
    assert tokens["gen_ai.client.token.usage.input:sum"] == 120
    assert tokens["gen_ai.client.token.usage.output:sum"] == 30


def test_every_worker_feed_joins_engine_state_onto_requests(
    stack: EmbeddedStack, kafka: Kafka
) -> None:
    assert stack.endpoints is not None
    feed = EngineMetricsFeed(
        kafka.settings.kafka, stack.endpoints.bootstrap_servers, EngineAttribution(staleness_s=30)
    )
    feed.start()
    try:
        started_ns = time.time_ns()
        response = httpx.post(
            f"{stack.endpoints.otlp_http}/v1/metrics",
            content=vllm_scrape(0.64),
            headers={"Content-Type": "application/x-protobuf"},
            timeout=10,
        )
        assert response.status_code == 200
        deadline = time.monotonic() + 30
        event: dict[str, Any] = {}
        while time.monotonic() < deadline:
            event = {
                "start_ts": (started_ns + 2 * 10**9) // 1000,
                "request_model": MODEL,
                "response_model": "",
                "kv_cache_usage": None,
                "attributes": {"server.address": "vllm-0.internal", "server.port": "8000"},
            }
            if feed.attribute([event]) and event["kv_cache_usage"] == 0.64:
                break
            time.sleep(0.2)
        assert event["kv_cache_usage"] == 0.64
        assert feed.counters.messages >= 1 and feed.counters.rejects == 0
    finally:
        feed.stop()


def test_the_worker_joins_engine_state_onto_the_requests_it_decodes(
    stack: EmbeddedStack, kafka: Kafka
) -> None:
    """A scrape through the collector, then a call to that engine: the event carries its KV."""
    assert stack.endpoints is not None
    model = f"org/model-{uuid.uuid4().hex[:6]}"  # an engine no other test reports
    events = kafka.reader(topics.LLM_EVENTS)
    point = NumberDataPoint(
        time_unix_nano=time.time_ns(), as_double=0.91, attributes=[_kv("model_name", model)]
    )
    scrape = ExportMetricsServiceRequest(
        resource_metrics=[
            ResourceMetrics(
                resource=Resource(attributes=[_kv("service.instance.id", "vllm-7.internal:8000")]),
                scope_metrics=[
                    ScopeMetrics(
                        metrics=[
                            Metric(
                                name="vllm:kv_cache_usage_perc", gauge=Gauge(data_points=[point])
                            )
                        ]
                    )
                ],
            )
        ]
    ).SerializeToString()
    response = httpx.post(
        f"{stack.endpoints.otlp_http}/v1/metrics",
        content=scrape,
        headers={"Content-Type": "application/x-protobuf"},
        timeout=10,
    )
    assert response.status_code == 200
    time.sleep(3)  # the worker's feed polls otlp_metrics continuously; give it the scrape
    trace = uuid.uuid4().bytes
    span = f.make_span(
        trace_id=trace,
        span_id=uuid.uuid4().bytes[:8],
        start_ns=time.time_ns(),
        attributes={
            **f.semconv_chat_attributes(model=model, request_model=model, provider="vllm"),
            a.DRIFTLINE_WORKFLOW: "engine-join",
            "server.address": "vllm-7.internal",
            "server.port": 8000,
        },
    )
    kafka.produce(
        topics.OTLP_SPANS,
        f.traces_data(f.make_resource_spans([span])).SerializeToString(),
        partition=0,
    )
    wait_for_trace(events, trace.hex())
    stored, _ = closed_records(events.records, trace.hex())
    (event,) = stored
    assert event["kv_cache_usage"] == 0.91
    assert event["attributes"]["driftline.engine.instance"] == "vllm-7.internal:8000"
