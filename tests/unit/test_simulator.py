"""The traffic simulator: seeded, incidents do what they say, ground truth = pipeline."""

from __future__ import annotations

import json
import math
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent import futures
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from statistics import mean, median
from typing import Any

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1.trace_pb2 import TracesData
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from driftline.cli import main as cli_main
from driftline.schemas.event import EVENT_FIELD_NAMES, from_wire, iso_to_micros
from driftline.simulator import (
    GroundTruth,
    Incident,
    IncidentSpecError,
    Simulator,
    SimulatorConfig,
    network_exporter,
    parse_incident,
)
from driftline.simulator.workflows import agent_planner, support_chat
from driftline.streams.normalize import normalize_message
from driftline.streams.pricing import PriceBook
from driftline.streams.traces import TraceAssembler

START = datetime(2026, 3, 1, tzinfo=UTC)
START_US = iso_to_micros("2026-03-01T00:00:00Z")


def truth(
    rate: float = 20, duration_s: float = 60, seed: int = 1, **kw: Any
) -> list[dict[str, Any]]:
    """Ground truth only (no SDK): fast, and the same ids the SDK path gives."""
    config = SimulatorConfig(
        rate=rate, duration_s=duration_s, seed=seed, clock="simulated", start=START, **kw
    )
    gt = GroundTruth()
    Simulator(config).run([], gt)
    return gt.events


def split(
    events: list[dict[str, Any]], at_s: float, workflow: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Events of ``workflow`` from requests before and after ``at_s`` (by trace start)."""
    first_start: dict[str, int] = {}
    for e in events:
        first_start[e["trace_id"]] = min(
            first_start.get(e["trace_id"], e["start_ts"]), e["start_ts"]
        )
    cut = START_US + at_s * 1_000_000
    mine = [e for e in events if e["workflow"] == workflow]
    return (
        [e for e in mine if first_start[e["trace_id"]] < cut],
        [e for e in mine if first_start[e["trace_id"]] >= cut],
    )


# --- determinism and shape -----------------------------------------------------------------


def test_same_seed_same_traffic_other_seed_other_traffic() -> None:
    a, b, c = truth(seed=7), truth(seed=7), truth(seed=8)
    assert a == b
    assert len(a) > 500
    assert [e["span_id"] for e in a] != [e["span_id"] for e in c]


def test_sdk_path_and_ground_truth_only_path_agree() -> None:
    config = SimulatorConfig(rate=10, duration_s=30, seed=3, clock="simulated", start=START)
    with_sdk, without = GroundTruth(), GroundTruth()
    memory = InMemorySpanExporter()
    result = Simulator(config).run([memory], with_sdk)
    Simulator(config).run([], without)
    assert with_sdk.events == without.events
    assert result.spans == len(memory.get_finished_spans()) == result.exported[0]
    assert result.failed == [0]


def test_events_have_every_schema_field_and_plausible_values() -> None:
    events = truth(duration_s=120)
    assert all(tuple(e) == EVENT_FIELD_NAMES for e in events)
    workflows = Counter(e["workflow"] for e in events)
    assert set(workflows) == {"support-chat", "rag-search", "agent-planner", "batch-summarizer"}
    for e in events:
        assert e["end_ts"] >= e["start_ts"] >= START_US
        assert (
            0 <= e["cache_read_tokens"] + e["cache_write_tokens"] <= e["input_tokens"]
            or e["error_type"]
        )
        assert e["loop_depth"] >= 1
        if e["kv_cache_usage"] is not None:
            assert 0 <= e["kv_cache_usage"] <= 1
    finish = Counter(e["finish_reason"] for e in events)
    assert {"stop", "length", "tool_calls"} <= set(finish)
    assert {e["provider"] for e in events} == {"openai", "anthropic", "vllm"}
    assert any(e["error_type"] and e["status"] == "error" for e in events)
    assert any(e["retry_attempt"] > 0 for e in events)
    assert any(e["validation_failed"] for e in events)
    assert any(e["ttft_ms"] for e in events if e["workflow"] == "support-chat")
    # Self-hosted Llama is in no price table: unpriced, never a fake zero.
    llama = [e for e in events if e["provider"] == "vllm"]
    assert llama and all(e["cost_usd"] is None and e["price_source"] == "unknown" for e in llama)
    priced = [e for e in events if e["provider"] == "openai" and not e["error_type"]]
    assert all(e["cost_usd"] and e["cost_usd"] > 0 for e in priced)


def test_latency_grows_with_output_tokens() -> None:
    events = [
        e
        for e in truth(duration_s=300)
        if e["workflow"] == "support-chat" and e["operation"] == "chat" and not e["error_type"]
    ]
    short = [e["latency_ms"] for e in events if e["output_tokens"] < 100]
    long = [e["latency_ms"] for e in events if e["output_tokens"] > 400]
    assert median(long) > 3 * median(short)


def test_agent_loop_depth_reaches_three_through_nested_tools() -> None:
    events = truth(duration_s=200, workflows=("agent-planner",))
    depths = Counter(e["loop_depth"] for e in events)
    assert set(depths) == {1, 2, 3}
    assert {e["agent"] for e in events if e["loop_depth"] == 3} == {agent_planner.RESEARCHER}


def test_simulated_clock_covers_the_requested_event_time_quickly() -> None:
    began = time.monotonic()
    events = truth(rate=2, duration_s=3 * 3600)  # three hours of event time
    elapsed = time.monotonic() - began
    span_s = (max(e["end_ts"] for e in events) - START_US) / 1e6
    assert 3 * 3600 - 60 < span_s < 3 * 3600 + 600
    assert elapsed < 30, f"3 h of ground truth took {elapsed:.1f} s"


def test_realtime_clock_paces_to_the_rate_and_stamps_the_present() -> None:
    config = SimulatorConfig(rate=20, duration_s=1.0, seed=2, workflows=("support-chat",))
    gt = GroundTruth()
    before = time.time() * 1e6
    result = Simulator(config).run([InMemorySpanExporter()], gt)
    after = time.time() * 1e6
    assert 0.8 < result.elapsed_s < 3.0
    assert result.traces > 5
    assert all(before - 120e6 < e["start_ts"] and e["end_ts"] <= after for e in gt.events)


# --- incidents -----------------------------------------------------------------------------


def test_parse_incident() -> None:
    assert parse_incident("kv-pressure@30") == Incident("kv-pressure", 30.0, None, 0.93)
    assert parse_incident("token-drift@1.5:rag-search=3") == Incident(
        "token-drift", 1.5, "rag-search", 3.0
    )
    for bad in ("token-drift", "nope@3", "canary@10=1.5", "token-drift@-1", "token-drift@5=0"):
        with pytest.raises(IncidentSpecError):
            parse_incident(bad)
    with pytest.raises(ValueError, match="unknown workflow"):
        SimulatorConfig(incidents=(parse_incident("canary@1:nope"),))


def _chat(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["operation"] == "chat" and not e["error_type"]]


def test_token_drift_scales_output_tokens_of_its_workflow_only() -> None:
    events = truth(duration_s=600, incidents=(parse_incident("token-drift@300:support-chat=2.0"),))
    before, after = split(events, 300, "support-chat")
    ratio = median(e["output_tokens"] for e in _chat(after)) / median(
        e["output_tokens"] for e in _chat(before)
    )
    assert 1.8 < ratio < 2.2
    rag_before, rag_after = split(events, 300, "rag-search")
    rag_ratio = median(e["output_tokens"] for e in _chat(rag_after)) / median(
        e["output_tokens"] for e in _chat(rag_before)
    )
    assert 0.85 < rag_ratio < 1.15


def test_unapproved_model_switches_the_model_after_its_time() -> None:
    events = truth(duration_s=300, incidents=(parse_incident("unapproved-model@150:support-chat"),))
    before, after = split(events, 150, "support-chat")
    chats = lambda es: [e for e in es if e["operation"] == "chat"]  # noqa: E731
    assert {e["request_model"] for e in chats(after)} == {support_chat.UNAPPROVED_MODEL}
    assert support_chat.UNAPPROVED_MODEL not in {e["request_model"] for e in before}
    _, rag_after = split(events, 150, "rag-search")
    assert all(e["request_model"] != support_chat.UNAPPROVED_MODEL for e in rag_after)


def test_retry_storm_multiplies_retries() -> None:
    events = truth(
        duration_s=300,
        workflows=("support-chat",),
        incidents=(parse_incident("retry-storm@150=0.5"),),
    )
    before, after = split(events, 150, "support-chat")
    share = lambda es: mean(e["retry_attempt"] > 0 for e in es)  # noqa: E731
    assert share(before) < 0.05
    assert share(after) > 0.25


def test_kv_pressure_raises_kv_usage_and_queueing() -> None:
    events = truth(
        rate=5,
        duration_s=400,
        workflows=("batch-summarizer",),
        incidents=(parse_incident("kv-pressure@200"),),
    )
    before, after = split(events, 200, "batch-summarizer")
    before = [e for e in before if e["kv_cache_usage"] is not None]  # failed calls report none
    after = [e for e in after if e["kv_cache_usage"] is not None]
    assert mean(e["kv_cache_usage"] for e in before) == pytest.approx(0.4, abs=0.05)
    assert mean(e["kv_cache_usage"] for e in after) == pytest.approx(0.93, abs=0.03)
    assert median(e["queue_ms"] for e in after) > 20 * median(e["queue_ms"] for e in before)


def test_output_length_incident_truncates_outputs() -> None:
    events = truth(
        duration_s=300,
        workflows=("rag-search", "support-chat"),
        incidents=(parse_incident("output-length@150:rag-search"),),
    )
    before, after = split(events, 150, "rag-search")
    length_share = lambda es: mean(e["finish_reason"] == "length" for e in _chat(es))  # noqa: E731
    assert length_share(before) < 0.05 < 0.5 < length_share(after)
    assert median(e["output_chars"] for e in _chat(after)) < 0.6 * median(
        e["output_chars"] for e in _chat(before)
    )


def test_cost_runaway_multiplies_agent_calls_and_cost() -> None:
    events = truth(
        rate=5,
        duration_s=400,
        workflows=("agent-planner",),
        incidents=(parse_incident("cost-runaway@200:agent-planner"),),
    )
    before, after = split(events, 200, "agent-planner")

    def per_trace(es: list[dict[str, Any]]) -> tuple[float, float]:
        traces = {e["trace_id"] for e in es}
        return len(es) / len(traces), sum(e["cost_usd"] or 0 for e in es) / len(traces)

    calls_before, cost_before = per_trace(before)
    calls_after, cost_after = per_trace(after)
    assert calls_after > 2.5 * calls_before
    assert cost_after > 2.5 * cost_before


def test_canary_serves_a_share_from_a_new_bundle() -> None:
    events = truth(
        duration_s=300,
        workflows=("support-chat",),
        incidents=(parse_incident("canary@100:support-chat=0.3"),),
    )
    before, after = split(events, 100, "support-chat")
    assert {e["prompt_version"] for e in before} == {support_chat.PROMPT_VERSION}
    versions = Counter(e["prompt_version"] for e in _chat(after))
    share = versions[support_chat.CANARY_PROMPT_VERSION] / sum(versions.values())
    assert 0.22 < share < 0.38
    chat_bundles = {e["bundle_id"] for e in _chat(after) if e["request_model"] == "gpt-4o-mini"}
    assert len(chat_bundles) == 2


# --- ground truth against the real normalizer ------------------------------------------------


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)
    return bool(a == b)


@pytest.fixture(scope="module")
def exported() -> tuple[list[dict[str, Any]], bytes]:
    """A run with every incident kind, exported by the SDK and encoded as OTLP protobuf."""
    incidents = tuple(
        parse_incident(spec)
        for spec in (
            "retry-storm@40=0.4",
            "canary@20",
            "kv-pressure@30",
            "output-length@50:rag-search",
            "unapproved-model@60:agent-planner",
            "cost-runaway@70:agent-planner",
            "token-drift@10:support-chat",
        )
    )
    config = SimulatorConfig(
        rate=15, duration_s=90, seed=11, clock="simulated", start=START, incidents=incidents
    )
    memory = InMemorySpanExporter()
    gt = GroundTruth()
    Simulator(config).run([memory], gt)
    return gt.events, encode_spans(memory.get_finished_spans()).SerializeToString()


def test_normalizer_fills_what_the_ground_truth_says(
    exported: tuple[list[dict[str, Any]], bytes],
) -> None:
    """Fields the normalizer fills itself (not cost, depth or trace-inherited values)."""
    events, payload = exported
    batch = normalize_message(payload)
    assert batch.rejects == []
    got = {e["span_id"]: e for e in batch.events}
    assert len(got) == len(events)
    later = {"cost_usd", "price_source", "loop_depth", "workflow", "tenant", "route", "session_id"}
    mismatches = Counter(
        name
        for e in events
        for name in EVENT_FIELD_NAMES
        if name not in later and not _close(e[name], got[e["span_id"]][name])
    )
    assert mismatches == Counter()
    # Where the span names its workflow/tenant/route/session itself, the normalizer has it.
    for name in ("workflow", "tenant", "route", "session_id"):
        filled = [e for e in events if got[e["span_id"]][name]]
        assert filled and all(got[e["span_id"]][name] == e[name] for e in filled)


def test_pipeline_reproduces_the_ground_truth_exactly(
    exported: tuple[list[dict[str, Any]], bytes],
) -> None:
    """normalize -> trace assembly -> pricing gives every field of every event."""
    events, payload = exported
    batch = normalize_message(payload)
    assembler = TraceAssembler(grace_s=5, timeout_s=60, max_open_traces=100_000)
    assembler.add(batch.events, batch.spans, now_s=0.0)
    closed = assembler.flush()
    PriceBook(overrides=None).apply(closed.events)
    got = {e["span_id"]: e for e in closed.events}
    mismatches = Counter(
        name
        for e in events
        for name in EVENT_FIELD_NAMES
        if not _close(e[name], got[e["span_id"]][name])
    )
    assert mismatches == Counter()


# --- the command and the exporters -------------------------------------------------------------


def test_command_writes_ground_truth_and_otlp_file(tmp_path: Path) -> None:
    truth_file, otlp_file = tmp_path / "truth.ndjson", tmp_path / "spans.pb"
    code = cli_main(
        [
            "simulate",
            "--no-send",
            "--clock",
            "simulated",
            "--start",
            "2026-03-01T00:00:00Z",
            "--rate",
            "10",
            "--duration",
            "60",
            "--seed",
            "4",
            "--incident",
            "token-drift@30:support-chat",
            "--ground-truth",
            str(truth_file),
            "--otlp-out",
            str(otlp_file),
        ]
    )
    assert code == 0
    lines = [json.loads(line) for line in truth_file.read_text().splitlines()]
    assert lines and all(list(doc) == list(EVENT_FIELD_NAMES) for doc in lines)
    assert lines[0]["start_ts"].startswith("2026-03-01T00:00:")
    data = TracesData.FromString(otlp_file.read_bytes())  # appended exports parse as one
    spans = sum(len(ss.spans) for rs in data.resource_spans for ss in rs.scope_spans)
    batch = normalize_message(otlp_file.read_bytes())
    assert spans == batch.span_count and not batch.rejects
    assert sorted(e["span_id"] for e in batch.events) == sorted(d["span_id"] for d in lines)
    same = truth(
        rate=10, duration_s=60, seed=4, incidents=(parse_incident("token-drift@30:support-chat"),)
    )
    assert [from_wire(d)["span_id"] for d in lines] == [e["span_id"] for e in same]


def test_command_rejects_bad_flags(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        cli_main(
            [
                "simulate",
                "--incident",
                "token-drift@soon",
                "--no-send",
                "--ground-truth",
                "/dev/null",
            ]
        )
        == 2
    )
    assert "KIND@SECONDS" in capsys.readouterr().err
    assert cli_main(["simulate", "--no-send"]) == 2
    assert (
        cli_main(
            [
                "simulate",
                "--start",
                "2026-01-01T00:00:00Z",
                "--no-send",
                "--ground-truth",
                "/dev/null",
            ]
        )
        == 2
    )


class _TraceReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.spans = 0

    def Export(self, request: Any, context: Any) -> Any:
        self.spans += sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture()
def grpc_receiver() -> Iterator[tuple[str, _TraceReceiver]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    receiver = _TraceReceiver()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}", receiver
    server.stop(grace=None)


@pytest.fixture()
def http_receiver() -> Iterator[tuple[str, list[bytes]]]:
    bodies: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_POST(self) -> None:
            bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200 if self.path == "/v1/traces" else 404)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}", bodies
    server.shutdown()
    server.server_close()


def test_grpc_export_reaches_a_real_otlp_receiver(
    grpc_receiver: tuple[str, _TraceReceiver],
) -> None:
    endpoint, receiver = grpc_receiver
    config = SimulatorConfig(rate=20, duration_s=20, seed=5, clock="simulated", start=START)
    result = Simulator(config).run([network_exporter("grpc", endpoint)])
    assert result.failed == [0]
    assert receiver.spans == result.spans == result.exported[0] > 100


def test_http_export_reaches_a_real_otlp_receiver(http_receiver: tuple[str, list[bytes]]) -> None:
    endpoint, bodies = http_receiver
    config = SimulatorConfig(rate=20, duration_s=20, seed=5, clock="simulated", start=START)
    gt = GroundTruth()
    result = Simulator(config).run([network_exporter("http", endpoint)], gt)
    assert result.failed == [0]
    received = [e for body in bodies for e in normalize_message(body).events]
    assert sorted(e["span_id"] for e in received) == sorted(e["span_id"] for e in gt.events)


def test_unreachable_collector_is_counted_as_failed() -> None:
    config = SimulatorConfig(rate=5, duration_s=2, seed=5, clock="simulated", start=START)
    result = Simulator(config).run([network_exporter("http", "127.0.0.1:9", timeout_s=1)])
    assert result.failed[0] == result.spans > 0


def test_pipeline_messages_pass_the_llm_events_checks(
    exported: tuple[list[dict[str, Any]], bytes],
) -> None:
    """Everything decode and assembly publish reads back whole: no record of simulated
    traffic with every incident kind is taken for a hostile one (streams.stages.decode_closed)."""
    from driftline.streams.app import encode_bounded, group_by_workflow
    from driftline.streams.requests import encode_requests
    from driftline.streams.stages import decode_closed

    _, payload = exported
    batch = normalize_message(payload)
    requests = [dict(e) for e in batch.events]
    assembler = TraceAssembler(grace_s=5, timeout_s=60, max_open_traces=100_000)
    assembler.add(batch.events, batch.spans, now_s=0.0)
    closed = assembler.flush()
    PriceBook(overrides=None).apply(closed.events)
    decoded = [
        decode_closed(value)
        for group in group_by_workflow(closed.events, closed.traces).values()
        for value in encode_bounded(group, 1_000_000)
    ] + [decode_closed(value) for value in encode_requests(requests, 1_000_000)]
    assert [d.problem for d in decoded if d.problem] == []
    assert sum(len(d.events) for d in decoded) == len(closed.events)
    assert sum(len(d.traces) for d in decoded) == len(closed.traces)
    assert sum(len(d.requests) for d in decoded) == len(requests)
