"""The simulated vLLM servers' metrics: what they report, and that the join gives it back."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from statistics import mean
from typing import Any

from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from driftline.schemas import attributes as a
from driftline.schemas import engine_metrics as em
from driftline.simulator import GroundTruth, Simulator, SimulatorConfig, parse_incident
from driftline.simulator.engine import MAX_RUNNING, SERVERS
from driftline.simulator.workflows import batch_summarizer
from driftline.streams.engine_attribution import EngineAttribution
from driftline.streams.engine_metrics import EngineMetricRows, decode_metrics_message
from driftline.streams.normalize import normalize_message

START = datetime(2026, 3, 1, tzinfo=UTC)


class MemoryMetricExporter(MetricExporter):
    def __init__(self) -> None:
        super().__init__()
        self.exports: list[MetricsData] = []

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        self.exports.append(metrics_data)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        pass


def run(**kw: Any) -> tuple[list[dict[str, Any]], Sequence[Any], MemoryMetricExporter, Any]:
    config = SimulatorConfig(
        rate=5,
        duration_s=240,
        seed=3,
        clock="simulated",
        start=START,
        workflows=("batch-summarizer",),
        incidents=(parse_incident("kv-pressure@120"),),
        **kw,
    )
    spans, metrics, truth = InMemorySpanExporter(), MemoryMetricExporter(), GroundTruth()
    result = Simulator(config).run([spans], truth, engine_metrics=metrics)
    return truth.events, spans.get_finished_spans(), metrics, result


def rows_of(exports: list[MetricsData]) -> EngineMetricRows:
    merged = EngineMetricRows()
    for data in exports:
        rows = decode_metrics_message(encode_metrics(data).SerializeToString())
        assert rows.rejects == []
        for name in ("time_ns", "engine", "model", "instance", "metric", "value"):
            getattr(merged, name).extend(getattr(rows, name))
    return merged


def test_vllm_spans_carry_no_kv_and_the_join_gives_each_call_its_ground_truth() -> None:
    truth, spans, metrics, result = run()
    vllm_spans = [s for s in spans if s.name == a.VLLM_REQUEST_SPAN_NAME]
    assert vllm_spans and all(a.DRIFTLINE_KV_CACHE_USAGE not in s.attributes for s in vllm_spans)
    rows = rows_of(metrics.exports)
    assert result.engine_points == len(rows) and result.engine_points_failed == 0
    assert set(rows.instance) == {SERVERS[batch_summarizer.MODEL]}
    assert set(rows.model) == {batch_summarizer.MODEL}

    book = EngineAttribution(staleness_s=60, horizon_s=10**6)
    book.add(rows)
    events = normalize_message(encode_spans(spans).SerializeToString()).events
    calls = [e for e in events if e["provider"] == "vllm"]
    assert all(e["kv_cache_usage"] is None for e in calls)  # not from the span any more
    book.attribute(calls)
    expected = {e["span_id"]: e["kv_cache_usage"] for e in truth if e["provider"] == "vllm"}
    got = {e["span_id"]: e["kv_cache_usage"] for e in calls}
    served = {k: v for k, v in expected.items() if v is not None}
    assert len(served) > 500
    assert {k: got[k] for k in served} == served  # exact: the server reported at each start
    # A failed call was served by no one: the join may still give it its server's state.
    assert all(got[k] is None or 0 <= got[k] <= 1 for k in expected.keys() - served.keys())


def test_kv_pressure_raises_kv_running_queue_and_preemptions() -> None:
    _, _, metrics, _ = run()
    rows = rows_of(metrics.exports)
    at = int(START.timestamp() * 1e9) + 120 * 10**9
    series: dict[str, list[tuple[int, float]]] = {}
    for t, metric, value in zip(rows.time_ns, rows.metric, rows.value, strict=True):
        series.setdefault(metric, []).append((t, value))

    def before_after(metric: str) -> tuple[list[float], list[float]]:
        points = sorted(series[metric])
        return [v for t, v in points if t < at], [v for t, v in points if t >= at + 30 * 10**9]

    kv_before, kv_after = before_after(em.KV_CACHE_USAGE)
    assert mean(kv_before) < 0.45 and mean(kv_after) > 0.9
    running_before, running_after = before_after(em.REQUESTS_RUNNING)
    assert mean(running_after) > 2 * mean(running_before) and max(running_after) <= MAX_RUNNING
    waiting_before, waiting_after = before_after(em.REQUESTS_WAITING)
    assert mean(waiting_before) < 1 and mean(waiting_after) > 10
    preemptions = sorted(series[em.PREEMPTIONS])
    assert [t for t, _ in preemptions] == sorted({t for t, _ in preemptions})  # one per time
    counts = [v for _, v in preemptions]
    assert counts == sorted(counts)  # a counter
    before = [v for t, v in preemptions if t < at]
    assert before[-1] < 5 < counts[-1]


def test_without_a_metrics_exporter_the_span_keeps_the_kv_attribute() -> None:
    config = SimulatorConfig(
        rate=5,
        duration_s=30,
        seed=3,
        clock="simulated",
        start=START,
        workflows=("batch-summarizer",),
    )
    spans = InMemorySpanExporter()
    Simulator(config).run([spans])
    vllm = [s for s in spans.get_finished_spans() if s.name == a.VLLM_REQUEST_SPAN_NAME]
    assert any(a.DRIFTLINE_KV_CACHE_USAGE in s.attributes for s in vllm)


def test_in_real_time_the_reports_are_dated_at_the_shifted_calls() -> None:
    """A real-time run stamps each trace to end when it is sent: the servers report at the
    calls' starts as sent, never in the future, and the join still finds each call's own."""
    config = SimulatorConfig(rate=20, duration_s=2, seed=4, workflows=("batch-summarizer",))
    spans, metrics, truth = InMemorySpanExporter(), MemoryMetricExporter(), GroundTruth()
    sent_before_ns = time.time_ns()
    Simulator(config).run([spans], truth, engine_metrics=metrics)
    rows = rows_of(metrics.exports)
    assert rows.time_ns and max(rows.time_ns) <= time.time_ns()
    assert min(rows.time_ns) < sent_before_ns  # calls ended at sending: they started earlier
    book = EngineAttribution(staleness_s=60, horizon_s=10**6)
    book.add(rows)
    events = normalize_message(encode_spans(spans.get_finished_spans()).SerializeToString()).events
    calls = [e for e in events if e["provider"] == "vllm"]
    book.attribute(calls)
    expected = {e["span_id"]: e["kv_cache_usage"] for e in truth.events if e["kv_cache_usage"]}
    assert (
        expected
        and {e["span_id"]: e["kv_cache_usage"] for e in calls if e["span_id"] in expected}
        == expected
    )
