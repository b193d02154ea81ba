"""Engine metrics from OTLP: names, decode (protobuf and JSON), rejects, the as-of join."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
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
    Sum,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource as SdkResource

from driftline.config import StoreSettings
from driftline.schemas import engine_metrics as em
from driftline.schemas.tables import ENGINE_METRICS
from driftline.store import open_store
from driftline.streams.engine_attribution import (
    ENGINE_PREEMPTIONS_PER_S,
    ENGINE_REQUESTS_WAITING,
    EngineAttribution,
)
from driftline.streams.engine_metrics import EngineMetricRows, decode_metrics_message
from driftline.streams.engine_stage import MetricsMessage, store_metrics

T0_NS = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z
S = 10**9
TARGET = "vllm-0.internal:8000"
MODEL = "meta-llama/Llama-3.1-8B-Instruct"


def _kv(key: str, value: Any) -> KeyValue:
    if isinstance(value, str):
        return KeyValue(key=key, value=AnyValue(string_value=value))
    return KeyValue(key=key, value=AnyValue(int_value=value))


def point(time_ns: int, value: float, **labels: Any) -> NumberDataPoint:
    return NumberDataPoint(
        time_unix_nano=time_ns,
        as_double=value,
        attributes=[_kv(k, v) for k, v in labels.items()],
    )


def scrape(
    metrics: list[Metric], instance: str = TARGET, job: str = "vllm"
) -> ExportMetricsServiceRequest:
    """A message as the Collector's Prometheus receiver writes one scrape of a target."""
    resource = Resource(attributes=[_kv("service.name", job), _kv("service.instance.id", instance)])
    return ExportMetricsServiceRequest(
        resource_metrics=[
            ResourceMetrics(resource=resource, scope_metrics=[ScopeMetrics(metrics=metrics)])
        ]
    )


def gauge(name: str, *points: NumberDataPoint) -> Metric:
    return Metric(name=name, gauge=Gauge(data_points=points))


def counter(name: str, *points: NumberDataPoint) -> Metric:
    return Metric(name=name, sum=Sum(data_points=points, is_monotonic=True))


def vllm_scrape(time_ns: int, kv: float, waiting: int, preemptions: int) -> bytes:
    labels = {"model_name": MODEL, "engine": "0"}
    return scrape(
        [
            gauge("vllm:kv_cache_usage_perc", point(time_ns, kv, **labels)),
            gauge("vllm:num_requests_waiting", point(time_ns, waiting, **labels)),
            counter("vllm:num_preemptions_total", point(time_ns, preemptions, **labels)),
            gauge("vllm:lora_requests_info", point(time_ns, 1.0, **labels)),  # not read
        ]
    ).SerializeToString()


@pytest.mark.parametrize("as_json", [False, True], ids=["protobuf", "json"])
def test_a_vllm_scrape_becomes_rows_of_canonical_metrics(as_json: bool) -> None:
    payload = vllm_scrape(T0_NS, 0.42, 3, 7)
    if as_json:
        message = ExportMetricsServiceRequest()
        message.ParseFromString(payload)
        payload = json_format.MessageToJson(message).encode()
    rows = decode_metrics_message(payload)
    assert rows.rejects == []
    assert rows.metrics_ignored == 1
    assert list(zip(rows.metric, rows.value, strict=True)) == [
        (em.KV_CACHE_USAGE, 0.42),
        (em.REQUESTS_WAITING, 3.0),
        (em.PREEMPTIONS, 7.0),
    ]
    assert set(rows.engine) == {"vllm"} and set(rows.model) == {MODEL}
    assert set(rows.instance) == {TARGET} and set(rows.time_ns) == {T0_NS}


def test_deprecated_and_other_engines_names_map_to_the_same_metric() -> None:
    rows = decode_metrics_message(
        scrape(
            [
                gauge("vllm:gpu_cache_usage_perc", point(T0_NS, 0.5, model_name="a")),
                gauge("sglang:token_usage", point(T0_NS, 0.6, model_name="b")),
                gauge(
                    "nv_trt_llm_kv_cache_block_metrics",
                    point(T0_NS, 300, kv_cache_block_type="used", model="c"),
                    point(T0_NS, 400, kv_cache_block_type="max", model="c"),
                    point(T0_NS, 100, kv_cache_block_type="free", model="c"),
                ),
            ]
        ).SerializeToString()
    )
    assert rows.rejects == []
    assert rows.metric == [em.KV_CACHE_USAGE] * 3
    assert dict(zip(rows.engine, rows.value, strict=True)) == {
        "vllm": 0.5,
        "sglang": 0.6,
        "trtllm": 0.75,
    }


def test_genai_histograms_from_the_otel_sdk_keep_count_and_sum_per_token_type() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(
        metric_readers=[reader], resource=SdkResource.create({"service.instance.id": TARGET})
    )
    usage = provider.get_meter("app").create_histogram(em.CLIENT_TOKEN_USAGE, unit="{token}")
    for tokens, kind in ((100, "input"), (40, "input"), (7, "output")):
        usage.record(tokens, {"gen_ai.request.model": MODEL, "gen_ai.token.type": kind})
    data = reader.get_metrics_data()
    assert data is not None
    rows = decode_metrics_message(encode_metrics(data).SerializeToString())
    got = dict(zip(rows.metric, rows.value, strict=True))
    assert got == {
        "gen_ai.client.token.usage.input:count": 2.0,
        "gen_ai.client.token.usage.input:sum": 140.0,
        "gen_ai.client.token.usage.output:count": 1.0,
        "gen_ai.client.token.usage.output:sum": 7.0,
    }
    assert set(rows.model) == {MODEL} and set(rows.instance) == {TARGET}


@pytest.mark.parametrize(
    ("value", "time_ns", "model", "reason"),
    [
        (math.nan, T0_NS, MODEL, "bad_value"),
        (math.inf, T0_NS, MODEL, "bad_value"),
        (1.5, T0_NS, MODEL, "bad_value"),  # a fraction above 1
        (-0.1, T0_NS, MODEL, "bad_value"),
        (0.5, 4_200_000_000 * S, MODEL, "bad_time"),  # 2103
        (0.5, 5, MODEL, "bad_time"),  # 1970
        (0.5, T0_NS, "m' OR 1=1 --\\", "unsafe_name"),
    ],
)
def test_points_no_store_should_keep_are_rejected_and_the_rest_kept(
    value: float, time_ns: int, model: str, reason: str
) -> None:
    rows = decode_metrics_message(
        scrape(
            [
                gauge(
                    "vllm:kv_cache_usage_perc",
                    point(time_ns, value, model_name=model),
                    point(T0_NS, 0.3, model_name=MODEL),
                )
            ]
        ).SerializeToString()
    )
    assert [r.reason for r in rows.rejects] == [reason]
    assert rows.rejects[0].metric == "vllm:kv_cache_usage_perc"
    assert rows.value == [0.3] and rows.points_read == 2


@pytest.mark.parametrize("payload", [b"", b"not otlp", b"{}", b"[1]", b'{"resourceSpans": []}'])
def test_what_is_not_otlp_metrics_is_one_reject(payload: bytes) -> None:
    rows = decode_metrics_message(payload)
    assert [r.reason for r in rows.rejects] == ["not_otlp_metrics"] and len(rows) == 0


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_arbitrary_bytes_never_raise(payload: bytes) -> None:
    rows = decode_metrics_message(payload)
    assert len(rows) == len(rows.value) == len(rows.model)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(allow_nan=True, allow_infinity=True),
            st.integers(min_value=0, max_value=2**64 - 1),
        ),
        max_size=20,
    )
)
def test_whatever_the_points_rows_hold_only_finite_fractions_and_sane_times(
    points: list[tuple[float, int]],
) -> None:
    metric = gauge("vllm:kv_cache_usage_perc", *(point(t, v, model_name=MODEL) for v, t in points))
    rows = decode_metrics_message(scrape([metric]).SerializeToString())
    assert len(rows) + len(rows.rejects) == len(points) == rows.points_read
    assert all(0.0 <= v <= 1.0 for v in rows.value)
    assert all(em_time_ok(t) for t in rows.time_ns)


def em_time_ok(time_ns: int) -> bool:
    return 946_684_800 * S <= time_ns < 3_786_912_000 * S


# -- the as-of join ---------------------------------------------------------------------------


def book_from(*payloads: bytes, staleness_s: float = 30.0) -> EngineAttribution:
    book = EngineAttribution(staleness_s=staleness_s)
    for payload in payloads:
        book.add(decode_metrics_message(payload))
    return book


def request(
    start_s: float,
    model: str = MODEL,
    address: str | None = "vllm-0.internal",
    port: int | None = 8000,
    kv: float | None = None,
) -> dict[str, Any]:
    attributes: dict[str, str] = {}
    if address is not None:
        attributes["server.address"] = address
    if port is not None:
        attributes["server.port"] = str(port)
    return {
        "start_ts": (T0_NS + int(start_s * S)) // 1000,
        "request_model": model,
        "response_model": "",
        "kv_cache_usage": kv,
        "attributes": attributes,
    }


def test_each_request_gets_the_last_report_at_or_before_its_start() -> None:
    # scrapes every 15 s, delivered out of order
    book = book_from(
        vllm_scrape(T0_NS + 30 * S, 0.9, 12, 10),
        vllm_scrape(T0_NS, 0.2, 0, 4),
        vllm_scrape(T0_NS + 15 * S, 0.5, 2, 7),
    )
    events = [request(s) for s in (-1, 0, 10, 15, 29.999, 30, 59.9, 61)]
    assert book.attribute(events) == 6
    assert [e["kv_cache_usage"] for e in events] == [None, 0.2, 0.2, 0.5, 0.5, 0.9, 0.9, None]
    assert events[3]["attributes"][ENGINE_REQUESTS_WAITING] == "2"
    # preemptions: (7 - 4) over 15 s at the 15 s report, (10 - 7) / 15 at 30 s, none at 0 s
    assert float(events[3]["attributes"][ENGINE_PREEMPTIONS_PER_S]) == pytest.approx(0.2)
    assert ENGINE_PREEMPTIONS_PER_S not in events[1]["attributes"]


def test_the_engine_is_found_by_model_and_instance_or_a_single_instance() -> None:
    other = scrape(
        [gauge("vllm:kv_cache_usage_perc", point(T0_NS, 0.7, model_name=MODEL))],
        instance="vllm-1.internal:8000",
    ).SerializeToString()
    two_servers = book_from(vllm_scrape(T0_NS, 0.2, 0, 0), other)
    named, unnamed, elsewhere = request(1), request(1, address=None), request(1, model="gpt-4o")
    named_other = request(1, address="vllm-1.internal")
    assert two_servers.attribute([named, unnamed, elsewhere, named_other]) == 2
    assert named["kv_cache_usage"] == 0.2 and named_other["kv_cache_usage"] == 0.7
    assert unnamed["kv_cache_usage"] is None  # two servers for the model: no guess
    assert elsewhere["kv_cache_usage"] is None

    one_server = book_from(vllm_scrape(T0_NS, 0.2, 0, 0))
    via_gateway = request(1, address="gateway.internal", port=443)
    assert one_server.attribute([via_gateway]) == 1 and via_gateway["kv_cache_usage"] == 0.2


def test_a_value_the_span_carries_is_kept() -> None:
    event = request(1, kv=0.33)
    book_from(vllm_scrape(T0_NS, 0.2, 0, 0)).attribute([event])
    assert event["kv_cache_usage"] == 0.33


def test_old_points_are_dropped_behind_the_horizon() -> None:
    book = EngineAttribution(staleness_s=30, horizon_s=60)
    book.add(decode_metrics_message(vllm_scrape(T0_NS, 0.2, 0, 0)))
    assert book.engines == 1
    book.add(
        decode_metrics_message(
            scrape(
                [gauge("vllm:kv_cache_usage_perc", point(T0_NS + 120 * S, 0.4, model_name="x"))],
                instance="vllm-9:8000",
            ).SerializeToString()
        )
    )
    assert book.engines == 1 and book.engine_of(MODEL, TARGET) is None


def test_rows_that_are_not_joined_metrics_do_not_make_an_engine() -> None:
    rows = EngineMetricRows()
    rows.time_ns, rows.engine, rows.model = [T0_NS], ["otel"], [MODEL]
    rows.instance, rows.metric, rows.value = [TARGET], ["gen_ai.client.token.usage:sum"], [5.0]
    book = EngineAttribution()
    book.add(rows)
    assert book.engines == 0


def test_a_flood_of_engine_names_is_counted_not_tracked() -> None:
    rows = EngineMetricRows()
    names = [f"invented-{n}:8000" for n in range(5_000)]
    rows.time_ns, rows.engine, rows.model = [T0_NS] * 5_000, ["vllm"] * 5_000, [MODEL] * 5_000
    rows.instance, rows.metric, rows.value = names, ["kv_cache_usage"] * 5_000, [0.99] * 5_000
    book = EngineAttribution(max_engines=100)
    book.add(rows)
    assert book.engines == 100 and book.untracked_points == 4_900
    # Engines already tracked keep taking points.
    book.add(decode_metrics_message(vllm_scrape(T0_NS + S, 0.5, 0, 0)))
    assert book.untracked_points == 4_900 + 3  # one more engine: its KV, queue and preemptions
    more = EngineMetricRows()
    more.time_ns, more.engine, more.model = [T0_NS + S], ["vllm"], [MODEL]
    more.instance, more.metric, more.value = [names[0]], ["kv_cache_usage"], [0.5]
    book.add(more)
    assert book.points_after((MODEL, names[0]), "kv_cache_usage", T0_NS) == ([T0_NS + S], [0.5])


# -- storage ----------------------------------------------------------------------------------


def test_rows_are_stored_once_with_their_rollup(tmp_path: Path) -> None:
    store = open_store(f"chdb://{tmp_path}", StoreSettings(ttl_days=3650))
    try:
        rows = decode_metrics_message(vllm_scrape(T0_NS, 0.42, 3, 7))
        rows_later = decode_metrics_message(vllm_scrape(T0_NS + 15 * S, 0.8, 5, 9))
        for batch in (rows, rows_later, rows):  # the first message delivered twice
            store.insert_arrow(ENGINE_METRICS.name, batch.to_arrow(), batch.dedup_token())
        stored = store.query(
            "SELECT metric, groupArray(value) AS values FROM"
            " (SELECT metric, value FROM driftline.engine_metrics ORDER BY time)"
            " GROUP BY metric ORDER BY metric"
        ).to_pylist()
        assert stored == [
            {"metric": em.KV_CACHE_USAGE, "values": [0.42, 0.8]},
            {"metric": em.PREEMPTIONS, "values": [7.0, 9.0]},
            {"metric": em.REQUESTS_WAITING, "values": [3.0, 5.0]},
        ]
        rollup = store.query(
            "SELECT instance, min(value_min) AS low, max(value_max) AS peak,"
            " argMaxMerge(value_last) AS last FROM driftline.rollup_engine_1m"
            " WHERE metric = 'kv_cache_usage' GROUP BY instance"
        ).to_pylist()
        assert rollup == [{"instance": TARGET, "low": 0.42, "peak": 0.8, "last": 0.8}]
    finally:
        store.close()


def test_a_batch_of_messages_is_stored_once_and_stale_points_rejected(tmp_path: Path) -> None:
    now_ns = time.time_ns() // S * S
    messages = [
        MetricsMessage(vllm_scrape(now_ns - 30 * S, 0.3, 1, 2), ("otlp_metrics", 0, 10), now_ns),
        MetricsMessage(vllm_scrape(now_ns, 0.6, 2, 3), ("otlp_metrics", 1, 4), now_ns),
        # a point dated 30 days before its message arrived
        MetricsMessage(
            vllm_scrape(now_ns - 30 * 86_400 * S, 0.9, 0, 0), ("otlp_metrics", 0, 11), now_ns
        ),
    ]
    store = open_store(f"chdb://{tmp_path}", StoreSettings(ttl_days=90))
    try:
        first = store_metrics(messages, store, max_past_s=7 * 86_400, max_future_s=3600)
        again = store_metrics(messages, store, max_past_s=7 * 86_400, max_future_s=3600)
        assert first.rows == again.rows == 6
        assert [(p, r.reason) for p, r in first.rejects] == [
            (("otlp_metrics", 0, 11), "bad_time")
        ] * 3
        stored = store.query(
            "SELECT groupArray(value) AS kv FROM"
            " (SELECT value FROM driftline.engine_metrics WHERE metric = 'kv_cache_usage'"
            " ORDER BY time)"
        ).to_pylist()
        assert stored == [{"kv": [0.3, 0.6]}]  # the batch read twice is stored once
    finally:
        store.close()
