"""The instrumentation matrix: real GenAI instrumentations -> OTLP protobuf -> normalizer.

Each library of :data:`instrumentation_matrix.LIBRARIES` is driven against the local
OpenAI/Anthropic stub (or replayed from its recording), one call kind at a time; its spans
are encoded with the OTLP exporter's encoder and normalized as collector messages are. Each
test checks one group of fields for every call kind against the exact expected events, so
``pytest -v`` prints the matrix (library x field group). ``docs/instrumentations.md`` is
rendered from the same table and must match it (``DRIFTLINE_WRITE_DOCS=1`` rewrites it).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.trace.v1.trace_pb2 import TracesData
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from driftline.config import PriceOverride
from driftline.schemas import attributes as a
from driftline.streams.normalize import NormalizedBatch, normalize_message
from driftline.streams.pricing import PriceBook
from driftline.streams.traces import TraceAssembler
from tests.integration import instrumentation_matrix as m
from tests.integration.instrumentation_docs import render
from tests.utils import openai_stub as stub
from tests.utils.otlp_factory import to_otlp_json

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RECORDINGS = ROOT / "tests" / "unit" / "data" / "instrumentations"
DOC = ROOT / "docs" / "instrumentations.md"
SERVICE = "chat-app"

# Round prices for every model name the stub answers with, so expected costs are exact.
RATES = {"input": 1.0, "output": 4.0, "cache_read": 0.1, "cache_write": 1.25}  # USD / Mtok
PRICES = {
    name: PriceOverride(
        input_per_mtok=RATES["input"],
        output_per_mtok=RATES["output"],
        cache_read_per_mtok=RATES["cache_read"],
        cache_write_per_mtok=RATES["cache_write"],
    )
    for model in (m.OPENAI_MODEL, m.REASONING_MODEL, m.ANTHROPIC_MODEL, stub.FAIL_MODEL)
    for name in (model, model + stub.SNAPSHOT_SUFFIX)
}


@dataclass
class Run:
    library: m.Library
    batches: dict[str, NormalizedBatch]  # by call kind
    spans: dict[str, list[ReadableSpan]]  # by call kind (empty when replayed)
    payloads: dict[str, bytes]  # by call kind: the OTLP protobuf message normalized


@pytest.fixture(scope="module")
def server() -> Iterator[stub.OpenAIStub]:
    with stub.OpenAIStub() as running:
        yield running


@pytest.fixture(scope="module")
def logfire_memory() -> InMemorySpanExporter:
    """logfire sends its spans through its own global provider: configured once, it hands
    them to this exporter as well."""
    import logfire

    memory = InMemorySpanExporter()
    logfire.configure(
        send_to_logfire=False,
        console=False,
        service_name=SERVICE,
        environment="test",
        additional_span_processors=[SimpleSpanProcessor(memory)],
    )
    return memory


def _drive(
    library: m.Library, server: stub.OpenAIStub, logfire_memory: InMemorySpanExporter
) -> dict[str, list[ReadableSpan]]:
    assert library.drive is not None
    provider = TracerProvider(
        resource=Resource({a.SERVICE_NAME: SERVICE, a.DEPLOYMENT_ENVIRONMENT_NAME: "test"})
    )
    if library.distribution == "logfire":
        memory = logfire_memory  # fed by logfire's provider; this one's shutdown must not stop it
    else:
        memory = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(memory))
    spans: dict[str, list[ReadableSpan]] = {kind: [] for kind in m.CALL_KINDS}

    def capture(kind: str, run: Any) -> None:
        memory.clear()
        run()
        provider.force_flush()
        spans[kind].extend(memory.get_finished_spans())

    library.drive(m.Session(server, provider, capture, memory.get_finished_spans))
    provider.shutdown()
    return spans


@pytest.fixture(scope="module", params=sorted(m.LIBRARIES))
def run(
    request: pytest.FixtureRequest,
    server: stub.OpenAIStub,
    logfire_memory: InMemorySpanExporter,
) -> Run:
    library = m.LIBRARIES[request.param]
    if library.drive is None:
        payloads = {
            kind: (RECORDINGS / f"{library.recording}.{kind}.otlp.pb").read_bytes()
            for kind in m.CALL_KINDS
        }
        spans: dict[str, list[ReadableSpan]] = {kind: [] for kind in m.CALL_KINDS}
    else:
        spans = _drive(library, server, logfire_memory)
        payloads = {kind: encode_spans(s).SerializeToString() for kind, s in spans.items()}
    batches = {kind: normalize_message(payload) for kind, payload in payloads.items()}
    for kind, batch in batches.items():
        assert batch.rejects == [], (kind, batch.rejects)
    return Run(library, batches, spans, payloads)


def _events(run: Run, kind: str) -> list[dict[str, Any]]:
    return sorted(run.batches[kind].events, key=lambda e: (e["start_ts"], e["end_ts"]))


def _pairs(run: Run) -> Iterator[tuple[str, m.Call, dict[str, Any]]]:
    """(kind, expected call, event), after the call count is checked."""
    for kind in m.CALL_KINDS:
        events = _events(run, kind)
        expected = run.library.expected[kind]
        assert len(events) == len(expected), (kind, [e["span_id"] for e in events])
        for call, event in zip(expected, events, strict=True):
            yield kind, call, event


def test_call_count(run: Run) -> None:
    for kind in m.CALL_KINDS:
        events = _events(run, kind)
        assert len(events) == len(run.library.expected[kind]), kind
        assert {e["operation"] for e in events} <= {a.OP_CHAT}, kind
        assert {e["provider"] for e in events} <= {"openai", "anthropic"}, kind
        # A successful call without tokens would be counted; none is expected here.
        assert run.batches[kind].tokenless == {}, kind
    tool_records = [r for r in run.batches["tool"].spans if r["operation"] == a.OP_EXECUTE_TOOL]
    assert len(tool_records) == run.library.tool_spans


def test_tokens(run: Run) -> None:
    for kind, call, e in _pairs(run):
        got = (
            e["input_tokens"],
            e["output_tokens"],
            e["cache_read_tokens"],
            e["cache_write_tokens"],
            e["reasoning_tokens"],
        )
        want = (
            call.input_tokens,
            call.output_tokens,
            call.cache_read_tokens,
            call.cache_write_tokens,
            call.reasoning_tokens,
        )
        assert got == want, kind


def _expected_cost(call: m.Call) -> float:
    uncached = call.input_tokens - call.cache_read_tokens - call.cache_write_tokens
    return round(
        (
            uncached * RATES["input"]
            + call.cache_read_tokens * RATES["cache_read"]
            + call.cache_write_tokens * RATES["cache_write"]
            + call.output_tokens * RATES["output"]
        )
        / 1e6,
        12,
    )


def test_cost(run: Run) -> None:
    book = PriceBook(PRICES)
    for kind, call, e in _pairs(run):
        priced = dict(e)
        book.apply([priced])
        if call.status == "error" and not (e["request_model"] or e["response_model"]):
            assert priced["cost_usd"] is None, kind  # a failed call naming no model
            continue
        assert priced["price_source"] != "unknown", (kind, e["request_model"], e["response_model"])
        assert priced["cost_usd"] == pytest.approx(_expected_cost(call), abs=1e-12), kind


def test_tool_calls_from_the_trace(run: Run) -> None:
    """Each call's tool executions, as trace assembly counts them from the spans."""
    for kind in m.CALL_KINDS:
        batch = run.batches[kind]
        assembler = TraceAssembler(grace_s=0, timeout_s=60, max_open_traces=100)
        assembler.add(copy.deepcopy(batch.events), copy.deepcopy(batch.spans), now_s=0.0)
        events = sorted(assembler.flush().events, key=lambda e: (e["start_ts"], e["end_ts"]))
        expected = run.library.expected[kind]
        assert [e["tool_calls"] for e in events] == [c.tool_calls for c in expected], kind
    assert sum(c.tool_calls for c in run.library.expected["tool"]) == run.library.tool_spans


def test_json_decodes_like_protobuf(run: Run) -> None:
    """The same spans as OTLP/JSON (hex ids, int64 as strings, camelCase) normalize to the
    same events: scope rules and exception events included."""
    for kind, payload in run.payloads.items():
        as_json = normalize_message(to_otlp_json(TracesData.FromString(payload)))
        batch = run.batches[kind]
        assert (as_json.events, as_json.spans) == (batch.events, batch.spans), kind
        assert (as_json.tokenless, as_json.rejects) == (batch.tokenless, []), kind


def test_latency_and_ttft(run: Run) -> None:
    for kind, call, e in _pairs(run):
        assert e["latency_ms"] > 0, kind
        if kind == "stream":  # the stub waits before its first chunk
            assert e["latency_ms"] >= stub.FIRST_CHUNK_DELAY_S * 1000, kind
        assert e["end_ts"] - e["start_ts"] == pytest.approx(e["latency_ms"] * 1000, abs=1), kind
        if call.ttft:
            assert e["ttft_ms"] is not None, kind
            assert stub.FIRST_CHUNK_DELAY_S * 1000 <= e["ttft_ms"] <= e["latency_ms"], kind
        else:
            assert e["ttft_ms"] is None, kind


def test_finish_reason(run: Run) -> None:
    for kind, call, e in _pairs(run):
        assert e["finish_reason"] == call.finish_reason, kind


def test_status_and_error_type(run: Run) -> None:
    for kind, call, e in _pairs(run):
        assert (e["status"], e["error_type"]) == (call.status, call.error_type), kind


def test_scope_and_service(run: Run) -> None:
    for kind in m.CALL_KINDS:
        for span in run.spans[kind]:
            if span.attributes and a.GEN_AI_OPERATION_NAME in span.attributes:
                assert span.instrumentation_scope is not None
                assert span.instrumentation_scope.name in run.library.scopes, kind
        for e in _events(run, kind):
            assert e["service"] == SERVICE and e["environment"] == "test", kind


ANSWER = "answer is 42"  # of the stub's reply "The answer is 42."


def test_message_content_is_not_kept(run: Run) -> None:
    for kind in m.CALL_KINDS:
        batch = run.batches[kind]
        for kept in (*batch.events, *batch.spans):
            assert m.PROMPT not in repr(kept) and ANSWER not in repr(kept), (kind, kept)
    if run.library.drive is not None:
        # What the library exported did carry the conversation: the check above is a real one.
        raw = [
            str(value)
            for spans in run.spans.values()
            for span in spans
            for value in (span.attributes or {}).values()
        ]
        assert any(m.PROMPT in value for value in raw), run.library.title


def _versions() -> dict[str, str]:
    return {
        key: library.version or version(library.distribution)
        for key, library in m.LIBRARIES.items()
    }


def test_docs_match_the_matrix() -> None:
    """docs/instrumentations.md is rendered from the table these tests check."""
    text = render(_versions())
    if os.environ.get("DRIFTLINE_WRITE_DOCS") == "1":
        DOC.write_text(text, encoding="utf-8")
    assert DOC.read_text(encoding="utf-8") == text, (
        "docs/instrumentations.md is stale: rerun with DRIFTLINE_WRITE_DOCS=1"
    )
