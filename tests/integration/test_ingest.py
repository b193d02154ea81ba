"""Ingestion end to end: OTel SDK -> rotel -> tansu -> driftline worker -> llm_events / DLQ."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.trace.v1.trace_pb2 import TracesData
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from driftline.config import Settings, load_settings
from driftline.schemas import attributes as a
from driftline.schemas.event import (
    EVENT_FIELD_NAMES,
    TRACE_FIELD_NAMES,
    from_wire,
    internal,
    to_wire,
)
from driftline.stack import EmbeddedStack
from driftline.streams import topics
from driftline.streams.app import OPEN_TRACES_TABLE, target_partition
from driftline.streams.codec import dumps
from driftline.streams.pipeline import OfflinePipeline
from tests.integration.conftest import (
    PARTITIONS,
    TRACE_GRACE_S,
    TRACE_TIMEOUT_S,
    Kafka,
    Record,
    TopicReader,
    write_config,
)
from tests.utils import otlp_factory as f

pytestmark = pytest.mark.integration

SERVICE = "ingest-test"


class Sdk:
    """A real OTel SDK pipeline exporting OTLP/gRPC to the stack's collector, plus an
    in-memory copy of every finished span (the ground truth of what was sent)."""

    def __init__(self, endpoint: str, *, batch: bool) -> None:
        self.memory = InMemorySpanExporter()
        self.provider = TracerProvider(resource=Resource.create({a.SERVICE_NAME: SERVICE}))
        exporter = OTLPSpanExporter(endpoint=endpoint, insecure=True)
        processor = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
        self.provider.add_span_processor(processor)
        self.provider.add_span_processor(SimpleSpanProcessor(self.memory))
        self.tracer = self.provider.get_tracer("driftline.integration")

    def flush(self) -> None:
        assert self.provider.force_flush(10_000)

    def close(self) -> None:
        self.provider.shutdown()


@pytest.fixture
def sdk_batched(stack: EmbeddedStack) -> Iterator[Sdk]:
    assert stack.endpoints is not None
    sdk = Sdk(stack.endpoints.otlp_grpc, batch=True)
    yield sdk
    sdk.close()


@pytest.fixture
def sdk_per_span(stack: EmbeddedStack) -> Iterator[Sdk]:
    assert stack.endpoints is not None
    sdk = Sdk(stack.endpoints.otlp_grpc, batch=False)
    yield sdk
    sdk.close()


def chat_attributes(input_tokens: int, output_tokens: int) -> dict[str, Any]:
    return {
        a.GEN_AI_OPERATION_NAME: a.OP_CHAT,
        a.GEN_AI_PROVIDER_NAME: "openai",
        a.GEN_AI_REQUEST_MODEL: "gpt-4o-mini",
        a.GEN_AI_RESPONSE_MODEL: "gpt-4o-mini-2024-07-18",
        a.GEN_AI_USAGE_INPUT_TOKENS: input_tokens,
        a.GEN_AI_USAGE_OUTPUT_TOKENS: output_tokens,
        a.GEN_AI_RESPONSE_FINISH_REASONS: ("stop",),
    }


def planner_trace(sdk: Sdk, workflow: str, pause_s: float = 0.0) -> None:
    """agent -> chat (planner call) -> tool -> chat (nested call). Depths 1 and 3.

    With ``pause_s`` the spans end (and, with a per-span processor, are exported)
    that far apart, so the collector puts them in separate Kafka messages.
    """
    agent_attrs = {
        a.GEN_AI_OPERATION_NAME: a.OP_INVOKE_AGENT,
        a.GEN_AI_AGENT_NAME: "planner",
        a.DRIFTLINE_WORKFLOW: workflow,
    }
    with sdk.tracer.start_as_current_span("invoke_agent planner", attributes=agent_attrs):
        with sdk.tracer.start_as_current_span(
            "chat gpt-4o-mini", attributes=chat_attributes(120, 30)
        ):
            tool_attrs = {a.GEN_AI_OPERATION_NAME: a.OP_EXECUTE_TOOL, a.GEN_AI_TOOL_NAME: "search"}
            with sdk.tracer.start_as_current_span("execute_tool search", attributes=tool_attrs):
                with sdk.tracer.start_as_current_span(
                    "chat gpt-4o-mini", attributes=chat_attributes(50, 10)
                ):
                    pass
                time.sleep(pause_s)
            time.sleep(pause_s)
        time.sleep(pause_s)


def pick(record: dict[str, Any], *names: str) -> tuple[Any, ...]:
    return tuple(record[name] for name in names)


def hex_trace(span: ReadableSpan) -> str:
    assert span.context is not None
    return f"{span.context.trace_id:032x}"


def closed_records(
    records: list[Record], trace_id: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Events and trace summaries of one trace found in ``llm_events`` records."""
    events: list[dict[str, Any]] = []
    traces: list[dict[str, Any]] = []
    for record in records:
        doc = record.json()
        events += [e for e in doc["events"] if e["trace_id"] == trace_id]
        traces += [t for t in doc["traces"] if t["trace_id"] == trace_id]
    return events, traces


def wait_for_trace(reader: TopicReader, trace_id: str, timeout_s: float = 30.0) -> Record:
    """The llm_events record carrying the summary of ``trace_id``."""

    def has_summary(records: list[Record]) -> bool:
        return bool(closed_records(records, trace_id)[1])

    reader.wait_for(has_summary, timeout_s)
    return next(r for r in reader.records if closed_records([r], trace_id)[1])


def test_sdk_spans_come_out_as_exact_events(
    stack: EmbeddedStack, settings: Settings, kafka: Kafka, sdk_batched: Sdk
) -> None:
    workflow = f"planner-{uuid.uuid4().hex[:6]}"
    events_reader = kafka.reader(topics.LLM_EVENTS)
    planner_trace(sdk_batched, workflow)
    sdk_batched.flush()
    sent_at = time.time()
    sent = sdk_batched.memory.get_finished_spans()
    trace_id = hex_trace(sent[0])

    record = wait_for_trace(events_reader, trace_id)
    latency_s = record.received_s - sent_at
    assert record.key == workflow.encode()
    assert record.headers[topics.HEADER_RECORD_TYPE] == b"events+traces"
    events, traces = closed_records(events_reader.records, trace_id)

    # Every LLM call sent is one event, with the ids, times and usage the SDK recorded.
    calls = sorted(
        (
            s
            for s in sent
            if s.attributes and s.attributes.get(a.GEN_AI_OPERATION_NAME) == a.OP_CHAT
        ),
        key=lambda s: s.start_time or 0,
    )
    assert [e["span_id"] for e in events] == [
        f"{s.context.span_id:016x}" for s in calls if s.context
    ]
    for event, span in zip(events, calls, strict=True):
        assert tuple(event) == EVENT_FIELD_NAMES
        assert span.parent is not None and span.start_time and span.end_time and span.attributes
        assert event["parent_span_id"] == f"{span.parent.span_id:016x}"
        # Internal form on the topic: the schema's fields, times in integer microseconds.
        assert event["start_ts"] == span.start_time // 1000
        assert event["end_ts"] == span.end_time // 1000
        assert event["service"] == SERVICE
        assert event["workflow"] == workflow
        assert event["provider"] == "openai"
        assert event["request_model"] == "gpt-4o-mini"
        assert event["response_model"] == "gpt-4o-mini-2024-07-18"
        assert event["input_tokens"] == span.attributes[a.GEN_AI_USAGE_INPUT_TOKENS]
        assert event["output_tokens"] == span.attributes[a.GEN_AI_USAGE_OUTPUT_TOKENS]
        assert event["finish_reason"] == "stop"
        assert event["cost_usd"] is not None and event["cost_usd"] > 0
    assert [e["loop_depth"] for e in events] == [1, 3]

    (summary,) = traces
    assert tuple(summary) == TRACE_FIELD_NAMES
    assert pick(summary, "span_count", "llm_call_count", "max_loop_depth") == (4, 2, 3)
    assert pick(summary, "input_tokens", "output_tokens") == (170, 40)
    assert summary["amplification"] == pytest.approx(210 / 150)
    assert summary["closed_by"] == "root_end"
    assert summary["workflow"] == workflow

    # The stream's output equals the offline path over the very bytes the collector wrote.
    raw = kafka.reader(topics.OTLP_SPANS)
    raw.wait_for(lambda rs: any(bytes.fromhex(trace_id) in r.value for r in rs), 10)
    offline = OfflinePipeline.from_settings(settings)
    for message in raw.records:
        offline.feed(message.value)
    expected = [internal(e) for e in offline.finish().events if e["trace_id"] == trace_id]
    assert events == expected
    print(
        f"\nend-to-end latency span -> llm_events: {latency_s:.2f}s "
        f"(includes the {TRACE_GRACE_S:.1f}s trace grace period)"
    )


def test_collector_keeps_every_span_and_its_resource(stack: EmbeddedStack, kafka: Kafka) -> None:
    """One OTLP/HTTP request with 3 resources x 400 spans, as a forwarding agent sends them.

    Nothing may be dropped and every span must keep its own resource: rotel's batcher
    (batch of 1000) lost the resource of the spans it split off, and dropped requests
    larger than the batch.
    """
    assert stack.endpoints is not None
    raw = kafka.reader(topics.OTLP_SPANS)
    events_reader = kafka.reader(topics.LLM_EVENTS)
    services = [f"svc-{i}-{uuid.uuid4().hex[:6]}" for i in range(3)]
    per_resource = 400
    trace_of = {service: uuid.uuid4().bytes for service in services}
    base = time.time_ns()
    request = f.export_request(
        *(
            f.make_resource_spans(
                [
                    f.make_span(
                        trace_id=trace_of[service],
                        span_id=(i + 1).to_bytes(8, "big"),  # span ids must be non-zero
                        parent_span_id=b"" if i == 0 else (1).to_bytes(8, "big"),
                        name="step",
                        start_ns=base + i,
                        end_ns=base + 1_000_000 + i,
                    )
                    for i in range(per_resource)
                ],
                resource_attributes={a.SERVICE_NAME: service},
            )
            for service in services
        )
    )
    response = httpx.post(
        f"{stack.endpoints.otlp_http}/v1/traces",
        content=request.SerializeToString(),
        headers={"content-type": "application/x-protobuf"},
        timeout=10,
    )
    assert response.status_code == 200
    wanted = {trace.hex(): service for service, trace in trace_of.items()}

    def ours(records: list[Record]) -> list[tuple[str, str]]:
        """(trace id, service.name) of every span of ours in the collector's output."""
        found = []
        for record in records:
            for resource_spans in TracesData.FromString(record.value).resource_spans:
                attrs = resource_spans.resource.attributes
                service = next(
                    (kv.value.string_value for kv in attrs if kv.key == a.SERVICE_NAME), ""
                )
                for scope_spans in resource_spans.scope_spans:
                    found += [
                        (span.trace_id.hex(), service)
                        for span in scope_spans.spans
                        if span.trace_id.hex() in wanted
                    ]
        return found

    total = len(services) * per_resource
    raw.wait_for(lambda rs: len(ours(rs)) >= total, timeout_s=20)
    assert len(ours(raw.records)) == total
    assert set(ours(raw.records)) == set(wanted.items())

    def summaries(records: list[Record]) -> list[dict[str, Any]]:
        return [t for r in records for t in r.json()["traces"] if t["trace_id"] in wanted]

    events_reader.wait_for(lambda rs: len(summaries(rs)) == len(services), timeout_s=30)
    assert {(t["service"], t["span_count"]) for t in summaries(events_reader.records)} == {
        (service, per_resource) for service in services
    }


def test_a_request_naming_its_workflow_reaches_llm_events_before_its_trace(
    stack: EmbeddedStack, kafka: Kafka, sdk_per_span: Sdk
) -> None:
    """The monitor gets such a call at once, not after the trace's grace: decode publishes
    it as a request, and the closed trace's message flags it as already monitored."""
    workflow = f"early-{uuid.uuid4().hex[:6]}"
    hold_root_s = 4.0
    events_reader = kafka.reader(topics.LLM_EVENTS)
    root_attrs = {a.GEN_AI_OPERATION_NAME: a.OP_INVOKE_AGENT, a.DRIFTLINE_WORKFLOW: workflow}
    call_attrs = {**chat_attributes(80, 20), a.DRIFTLINE_WORKFLOW: workflow}
    with sdk_per_span.tracer.start_as_current_span("invoke_agent", attributes=root_attrs):
        with sdk_per_span.tracer.start_as_current_span("chat gpt-4o-mini", attributes=call_attrs):
            pass
        time.sleep(hold_root_s)  # the trace stays open: its root has not ended
    root_ended_s = time.time()
    sent = sdk_per_span.memory.get_finished_spans()
    trace_id = hex_trace(sent[0])
    call_id = next(f"{s.context.span_id:016x}" for s in sent if s.parent and s.context)

    summary_record = wait_for_trace(events_reader, trace_id)
    requests = [
        (r, q)
        for r in events_reader.records
        for q in r.json()["requests"]
        if q["trace_id"] == trace_id
    ]
    ((request_record, request),) = requests  # published once
    assert request_record.headers[topics.HEADER_RECORD_TYPE] == b"requests"
    assert request_record.key == workflow.encode()
    assert request_record.json()["events"] == [] == request_record.json()["traces"]
    # Out before the root even ended, and so before the trace closed.
    assert request_record.timestamp_s < root_ended_s
    assert summary_record.timestamp_s - request_record.timestamp_s >= TRACE_GRACE_S
    # The request is the completed event less what only the trace knows (loop depth), and
    # carries its source position.
    events, _ = closed_records(events_reader.records, trace_id)
    (event,) = events
    assert event["span_id"] == call_id and event["loop_depth"] == 1
    position = request.pop("_seq")
    assert len(position) == 3 and position[2] == 0
    # Requests travel in internal form (timestamps in microseconds).
    assert request == {**from_wire(event), "loop_depth": request["loop_depth"]}
    assert not request["loop_depth"]
    closed_doc = summary_record.json()
    assert closed_doc["early"][[e["span_id"] for e in closed_doc["events"]].index(call_id)]


def test_trace_split_across_collector_messages(
    stack: EmbeddedStack, kafka: Kafka, sdk_per_span: Sdk
) -> None:
    workflow = f"split-{uuid.uuid4().hex[:6]}"
    raw = kafka.reader(topics.OTLP_SPANS)
    events_reader = kafka.reader(topics.LLM_EVENTS)
    planner_trace(sdk_per_span, workflow, pause_s=0.4)
    trace_id = hex_trace(sdk_per_span.memory.get_finished_spans()[0])

    wait_for_trace(events_reader, trace_id)

    def carrying(records: list[Record]) -> int:
        return sum(1 for r in records if bytes.fromhex(trace_id) in r.value)

    # The spans of the trace arrived in several collector messages.
    raw.wait_for(lambda rs: carrying(rs) >= 4, timeout_s=10)
    events, (summary,) = closed_records(events_reader.records, trace_id)
    assert [e["loop_depth"] for e in events] == [1, 3]
    assert pick(summary, "span_count", "max_loop_depth", "total_tokens") == (4, 3, 210)


def planner_halves(
    trace: bytes, root: bytes, call: bytes, tool: bytes, nested: bytes, workflow: str
) -> tuple[bytes, bytes]:
    """Raw OTLP of one planner trace in two messages: (tool + nested call), (root + call).

    The first is an ``ExportTraceServiceRequest``, the second a ``TracesData``: both
    wire forms a collector may write. Tokens: call 100+20, nested 300+60.
    """
    base = time.time_ns()
    resource = {a.SERVICE_NAME: "raw-producer"}
    agent_attrs = {a.GEN_AI_OPERATION_NAME: a.OP_INVOKE_AGENT, a.DRIFTLINE_WORKFLOW: workflow}
    parents = f.traces_data(
        f.make_resource_spans(
            [
                f.make_span(
                    trace_id=trace,
                    span_id=root,
                    name="agent",
                    start_ns=base,
                    end_ns=base + 4_000_000_000,
                    attributes=agent_attrs,
                ),
                f.make_span(
                    trace_id=trace,
                    span_id=call,
                    parent_span_id=root,
                    start_ns=base + 1000,
                    attributes=f.semconv_chat_attributes(input_tokens=100, output_tokens=20),
                ),
            ],
            resource_attributes=resource,
        )
    )
    children = f.export_request(
        f.make_resource_spans(
            [
                f.make_span(
                    trace_id=trace,
                    span_id=tool,
                    parent_span_id=call,
                    name="tool",
                    start_ns=base + 2000,
                    attributes={a.GEN_AI_OPERATION_NAME: a.OP_EXECUTE_TOOL},
                ),
                f.make_span(
                    trace_id=trace,
                    span_id=nested,
                    parent_span_id=tool,
                    start_ns=base + 3000,
                    attributes=f.semconv_chat_attributes(input_tokens=300, output_tokens=60),
                ),
            ],
            resource_attributes=resource,
        )
    )
    return children.SerializeToString(), parents.SerializeToString()


def test_trace_split_across_partitions_assembles(kafka: Kafka, settings: Settings) -> None:
    workflow = f"raw-{uuid.uuid4().hex[:6]}"
    trace = uuid.uuid4().bytes
    root, call, tool, nested = (uuid.uuid4().bytes[:8] for _ in range(4))
    children, parents = planner_halves(trace, root, call, tool, nested, workflow)
    events_reader = kafka.reader(topics.LLM_EVENTS)
    # Children first, on another partition than the root: both halves must still meet.
    kafka.produce(topics.OTLP_SPANS, children, partition=1)
    kafka.produce(topics.OTLP_SPANS, parents, partition=0)

    wait_for_trace(events_reader, trace.hex())
    events, (summary,) = closed_records(events_reader.records, trace.hex())
    assert [(e["span_id"], e["loop_depth"]) for e in events] == [(call.hex(), 1), (nested.hex(), 3)]
    assert all(e["workflow"] == workflow for e in events)
    assert summary["root_span_id"] == root.hex()
    assert (summary["span_count"], summary["llm_call_count"]) == (4, 2)
    assert pick(summary, "input_tokens", "output_tokens", "total_tokens") == (400, 80, 480)
    assert summary["amplification"] == pytest.approx(480 / 120)

    # Spans and checkpoints of the trace share one partition: murmur2 of the trace id,
    # the producer's default partitioner that the checkpoint table's changelog uses.
    partition = target_partition(trace.hex(), PARTITIONS)
    spans_reader = kafka.reader(topics.LLM_SPANS)
    changelog = kafka.reader(f"{settings.kafka.consumer_group}-{OPEN_TRACES_TABLE}-changelog")
    spans_reader.wait_for(lambda rs: any(trace.hex().encode() in r.value for r in rs), 10)
    changelog.wait_for(lambda rs: any(r.key == trace.hex().encode() for r in rs), 10)
    assert {r.partition for r in spans_reader.records if trace.hex().encode() in r.value} == {
        partition
    }
    assert {r.partition for r in changelog.records if r.key == trace.hex().encode()} == {partition}


def test_bad_input_goes_to_the_dlq_and_valid_spans_still_flow(
    stack: EmbeddedStack, kafka: Kafka
) -> None:
    dlq = kafka.reader(topics.OTLP_SPANS_DLQ)
    events_reader = kafka.reader(topics.LLM_EVENTS)
    garbage = b"\x00\xffnot an OTLP message " + uuid.uuid4().bytes
    kafka.produce(topics.OTLP_SPANS, garbage, partition=2)

    trace = uuid.uuid4().bytes
    good, negative, no_id = uuid.uuid4().bytes[:8], uuid.uuid4().bytes[:8], b""
    base = time.time_ns()
    mixed = f.traces_data(
        f.make_resource_spans(
            [
                f.make_span(
                    trace_id=trace,
                    span_id=good,
                    start_ns=base,
                    attributes=f.semconv_chat_attributes(input_tokens=10, output_tokens=5),
                ),
                f.make_span(
                    trace_id=trace,
                    span_id=negative,
                    parent_span_id=good,
                    start_ns=base + 1,
                    attributes=f.semconv_chat_attributes(input_tokens=-3, output_tokens=5),
                ),
                f.make_span(
                    trace_id=trace,
                    span_id=no_id,
                    parent_span_id=good,
                    start_ns=base + 2,
                    attributes=f.semconv_chat_attributes(),
                ),
            ]
        )
    )
    kafka.produce(topics.OTLP_SPANS, mixed.SerializeToString(), partition=3)

    def dead_letters(records: list[Record]) -> list[Record]:
        # Bytes that are not OTLP are dead-lettered without their content: the headers say
        # where they came from.
        return [
            r
            for r in records
            if trace in r.value
            or (
                r.headers[topics.HEADER_REASON] == b"not_otlp"
                and r.headers[topics.HEADER_SOURCE_PARTITION] == b"2"
            )
        ]

    dlq.wait_for(lambda rs: len(dead_letters(rs)) >= 3, timeout_s=30)
    reasons = {r.headers[topics.HEADER_REASON].decode(): r for r in dead_letters(dlq.records)}
    assert "not_otlp" in reasons
    not_otlp = reasons["not_otlp"]
    assert not_otlp.value == b""
    assert not_otlp.headers[topics.HEADER_SOURCE_TOPIC] == topics.OTLP_SPANS.encode()
    assert not_otlp.headers[topics.HEADER_SOURCE_PARTITION] == b"2"
    assert any(reason.startswith("negative_tokens") for reason in reasons), reasons
    assert len(reasons) == 3, sorted(reasons)

    # The valid span of the mixed message is not lost, and the worker kept running.
    wait_for_trace(events_reader, trace.hex())
    events, _ = closed_records(events_reader.records, trace.hex())
    assert [e["span_id"] for e in events] == [good.hex()]
    assert stack.worker is not None and stack.worker.is_running()


def test_open_traces_survive_a_worker_crash(tmp_path: Path) -> None:
    """Half a trace, SIGKILL the worker, restart it, the other half: one whole trace."""
    config = write_config(tmp_path, f"crash-{uuid.uuid4().hex[:8]}")
    # Long enough that the half-trace does not time out while the worker is down.
    config.write_text(
        config.read_text().replace(
            f"trace_timeout_s = {TRACE_TIMEOUT_S}", "trace_timeout_s = 120.0"
        )
    )
    settings = load_settings(config)
    assert settings.streams.trace_timeout_s == 120.0
    trace = uuid.uuid4().bytes
    root, call, tool, nested = (uuid.uuid4().bytes[:8] for _ in range(4))
    children, parents = planner_halves(trace, root, call, tool, nested, "crash-test")
    with EmbeddedStack(settings, config_file=config) as stack:
        assert stack.endpoints is not None and stack.worker is not None
        kafka = Kafka(settings, stack.endpoints.bootstrap_servers)
        spans_reader = kafka.reader(topics.LLM_SPANS)
        events_reader = kafka.reader(topics.LLM_EVENTS)
        kafka.produce(topics.OTLP_SPANS, children, partition=1)
        spans_reader.wait_for(lambda rs: any(trace.hex().encode() in r.value for r in rs))
        # Past one offset commit (Faust commits every 2.8 s) so the restart does not
        # simply re-read the children: they must come back from the checkpoint table.
        time.sleep(3.5)
        os.kill(stack.worker.pid or 0, signal.SIGKILL)
        restart_s = stack.restart_worker()
        kafka.produce(topics.OTLP_SPANS, parents, partition=0)

        wait_for_trace(events_reader, trace.hex())
        events, traces = closed_records(events_reader.records, trace.hex())
        kafka.close()
    assert [(e["span_id"], e["loop_depth"]) for e in events] == [(call.hex(), 1), (nested.hex(), 3)]
    (summary,) = traces
    assert (summary["span_count"], summary["total_tokens"]) == (4, 480)
    assert summary["closed_by"] == "root_end"
    print(f"\nworker restart after SIGKILL: ready again in {restart_s:.2f}s")


def test_a_bad_llm_events_message_is_dead_lettered_and_the_worker_goes_on(
    tmp_path: Path,
) -> None:
    """Anyone who can write llm_events must not stop the store or the monitor agent.

    A stack of its own: the shared stack's other tests read every llm_events record."""
    config = write_config(tmp_path, f"bad-events-{uuid.uuid4().hex[:8]}")
    settings = load_settings(config)
    marker = uuid.uuid4().hex
    good = to_wire(from_wire({"span_id": f"good-{marker}", "workflow": "w", "input_tokens": 3}))
    mistyped = {**good, "span_id": f"bad-{marker}", "input_tokens": "12"}
    sent = {
        0: b"\x00 not JSON " + marker.encode(),
        1: b'["a list", "' + marker.encode() + b'"]',
        2: dumps({"events": [mistyped, good], "early": [], "traces": [], "requests": []}),
    }

    def ours(records: list[Record]) -> dict[int, Record]:
        return {
            int(r.headers[topics.HEADER_SOURCE_PARTITION]): r
            for r in records
            if r.headers.get(topics.HEADER_REASON) == topics.REASON_BAD_LLM_EVENTS.encode()
            and r.headers[topics.HEADER_SOURCE_TOPIC] == topics.LLM_EVENTS.encode()
        }

    with EmbeddedStack(settings, config_file=config) as stack:
        assert stack.endpoints is not None and stack.worker is not None
        kafka = Kafka(settings, stack.endpoints.bootstrap_servers)
        dlq = kafka.reader(topics.OTLP_SPANS_DLQ)
        for partition, value in sent.items():
            kafka.produce(topics.LLM_EVENTS, value, partition=partition)
        dlq.wait_for(lambda rs: set(ours(rs)) >= set(sent), timeout_s=30)
        letters = ours(dlq.records)
        # Both agents that read llm_events went on: the worker runs and logged no crash.
        time.sleep(1.0)
        assert stack.worker.is_running()
        log = stack.worker.log_path.read_text(errors="replace")
        kafka.close()
    detail = {p: letters[p].headers[topics.HEADER_DETAIL].decode() for p in sent}
    assert detail[0] == "not JSON"
    assert detail[1] == "not an object: list"
    assert detail[2] == "events[0]: input_tokens: str where int belongs"
    assert all(letters[p].value == b"" and marker not in detail[p] for p in sent)
    assert "crashed" not in log.lower(), log[-2000:]
