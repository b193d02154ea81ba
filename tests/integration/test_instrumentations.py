"""Real third-party OpenAI instrumentations -> OTel SDK -> OTLP protobuf -> normalizer.

Each instrumentation wraps a real ``openai`` client talking HTTP to a local
OpenAI-compatible server (:mod:`tests.utils.openai_stub`); its spans go through a
``BatchSpanProcessor`` into an in-memory exporter, are encoded with the OTLP
exporter's encoder, and are normalized exactly as messages from the collector are.

The expectations record what each instrumentation actually emits (for example
the OTel contrib instrumentation reports no cached tokens and no finish reason on
streams; OpenInference puts the answering model in ``llm.model_name``). A change
in an instrumentation shows up here as a failure to look at.

Prompt and completion capture is on, the way each library turns it on, so the raw
spans do carry the conversation: the test that no event keeps it is then a real one.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import openai
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from driftline.schemas import attributes as a
from driftline.streams.normalize import normalize_message
from tests.utils import openai_stub as stub

pytestmark = pytest.mark.integration

CHAT_MODEL = "gpt-4o-mini"
SNAPSHOT = CHAT_MODEL + stub.SNAPSHOT_SUFFIX
EMBEDDING_MODEL = "text-embedding-3-small"
SERVICE = "chat-app"


@dataclass(frozen=True)
class Expect:
    """What one instrumentation's spans normalize to (see the module docstring)."""

    module: str
    request_model: str
    response_model: str
    cache_read: int
    stream_finish_reason: str
    ok_status: str
    embedding_model: str
    capture_content: dict[str, str]  # the environment that puts message content on spans


INSTRUMENTATIONS = {
    # opentelemetry-instrumentation-openai-v2 (OTel contrib, GenAI semconv)
    "openai-v2": Expect(
        module="opentelemetry.instrumentation.openai_v2",
        request_model=CHAT_MODEL,
        response_model=SNAPSHOT,
        cache_read=0,  # cached_tokens is not recorded
        stream_finish_reason="",  # not recorded on streamed calls
        ok_status="unset",
        embedding_model=EMBEDDING_MODEL,
        # util-genai's modes; "true" is not one (it warns and captures nothing). The installed
        # util-genai always follows the latest GenAI conventions, where SPAN_ONLY writes
        # gen_ai.input.messages and gen_ai.output.messages on the span.
        capture_content={"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "SPAN_ONLY"},
    ),
    # openinference-instrumentation-openai (Arize)
    "openinference": Expect(
        module="openinference.instrumentation.openai",
        request_model=SNAPSHOT,  # llm.model_name holds the response's model
        response_model="",
        cache_read=stub.CACHED_TOKENS,
        stream_finish_reason="stop",
        ok_status="ok",
        embedding_model=EMBEDDING_MODEL,
        # Shown unless hidden (openinference.instrumentation.config): say so explicitly.
        capture_content={
            "OPENINFERENCE_HIDE_INPUTS": "false",
            "OPENINFERENCE_HIDE_OUTPUTS": "false",
            "OPENINFERENCE_HIDE_INPUT_MESSAGES": "false",
            "OPENINFERENCE_HIDE_OUTPUT_MESSAGES": "false",
            "OPENINFERENCE_HIDE_INPUT_TEXT": "false",
            "OPENINFERENCE_HIDE_OUTPUT_TEXT": "false",
        },
    ),
    # opentelemetry-instrumentation-openai (Traceloop OpenLLMetry)
    "openllmetry": Expect(
        module="opentelemetry.instrumentation.openai",
        request_model=CHAT_MODEL,
        response_model=SNAPSHOT,
        cache_read=stub.CACHED_TOKENS,
        stream_finish_reason="stop",
        ok_status="unset",
        embedding_model=EMBEDDING_MODEL,
        capture_content={"TRACELOOP_TRACE_CONTENT": "true"},
    ),
}
PROMPT = "What is the answer?"
ANSWER = "answer is 42"  # of the stub's completion "The answer is 42."


@dataclass
class Captured:
    spans: list[ReadableSpan]
    events: dict[str, dict[str, Any]]  # by call: chat, stream, embeddings, error
    span_records: list[dict[str, Any]]  # what the normalizer passes on for trace assembly


def _exercise(client: openai.OpenAI) -> list[str]:
    """Make one call of each kind; returns the call names in order."""
    messages: Any = [{"role": "user", "content": PROMPT}]
    client.chat.completions.create(model=CHAT_MODEL, messages=messages)
    stream = client.chat.completions.create(
        model=CHAT_MODEL, messages=messages, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert chunks, "the stub streamed nothing"
    client.embeddings.create(model=EMBEDDING_MODEL, input=["a", "b"])
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model=stub.FAIL_MODEL, messages=messages)
    return ["chat", "stream", "embeddings", "error"]


@pytest.fixture(scope="module")
def openai_server() -> Iterator[stub.OpenAIStub]:
    with stub.OpenAIStub() as server:
        yield server


@pytest.fixture(scope="module", params=sorted(INSTRUMENTATIONS))
def captured(
    request: pytest.FixtureRequest, openai_server: stub.OpenAIStub
) -> Iterator[tuple[Expect, Captured]]:
    expect = INSTRUMENTATIONS[request.param]
    module = importlib.import_module(expect.module)
    memory = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource({a.SERVICE_NAME: SERVICE, a.DEPLOYMENT_ENVIRONMENT_NAME: "test"})
    )
    provider.add_span_processor(BatchSpanProcessor(memory, schedule_delay_millis=50))
    instrumentor = module.OpenAIInstrumentor()
    with pytest.MonkeyPatch.context() as env:
        for name, value in expect.capture_content.items():
            env.setenv(name, value)
        instrumentor.instrument(tracer_provider=provider)
        try:
            client = openai.OpenAI(
                base_url=openai_server.base_url, api_key="test-key", max_retries=0
            )
            names = _exercise(client)
        finally:
            instrumentor.uninstrument()
    provider.force_flush()
    spans = sorted(memory.get_finished_spans(), key=lambda s: s.start_time or 0)
    provider.shutdown()
    batch = normalize_message(encode_spans(spans).SerializeToString())
    assert batch.rejects == []
    assert batch.span_count == len(spans)
    events = sorted(batch.events, key=lambda e: e["start_ts"])
    assert len(events) == len(names), [s.name for s in spans]
    yield expect, Captured(spans, dict(zip(names, events, strict=True)), batch.spans)


def test_chat_call(captured: tuple[Expect, Captured]) -> None:
    expect, got = captured
    e = got.events["chat"]
    assert (e["operation"], e["provider"]) == (a.OP_CHAT, "openai")
    assert (e["request_model"], e["response_model"]) == (
        expect.request_model,
        expect.response_model,
    )
    assert (e["input_tokens"], e["output_tokens"]) == (stub.PROMPT_TOKENS, stub.COMPLETION_TOKENS)
    assert e["cache_read_tokens"] == expect.cache_read
    assert e["finish_reason"] == "stop"
    assert (e["status"], e["error_type"]) == (expect.ok_status, "")
    assert (e["service"], e["environment"]) == (SERVICE, "test")
    assert e["latency_ms"] > 0 and e["trace_id"] and e["span_id"]


def test_streamed_chat_call(captured: tuple[Expect, Captured]) -> None:
    expect, got = captured
    e = got.events["stream"]
    assert (e["input_tokens"], e["output_tokens"]) == (stub.PROMPT_TOKENS, stub.COMPLETION_TOKENS)
    assert e["cache_read_tokens"] == expect.cache_read
    assert e["finish_reason"] == expect.stream_finish_reason
    # None of the three records time to first chunk on the span (only as a metric, if at all).
    assert e["ttft_ms"] is None
    # The span covers the whole stream, which the stub delays before the first chunk.
    assert e["latency_ms"] >= stub.FIRST_CHUNK_DELAY_S * 1000


def test_embeddings_call(captured: tuple[Expect, Captured]) -> None:
    expect, got = captured
    e = got.events["embeddings"]
    assert (e["operation"], e["provider"]) == (a.OP_EMBEDDINGS, "openai")
    assert e["input_tokens"] == stub.EMBEDDING_TOKENS and e["output_tokens"] == 0
    assert (e["response_model"] or e["request_model"]) == expect.embedding_model


def test_server_error(captured: tuple[Expect, Captured]) -> None:
    _, got = captured
    e = got.events["error"]
    assert e["status"] == "error"
    assert e["error_type"] == "InternalServerError"
    assert e["output_tokens"] == 0 and e["finish_reason"] == ""


def _with_content(attributes: Any) -> set[str]:
    """Keys of the attributes that hold the prompt or the answer ("42" alone could be part
    of a random port number in a URL attribute)."""
    return {
        str(key)
        for key, value in (attributes or {}).items()
        if PROMPT in str(value) or ANSWER in str(value)
    }


def test_message_content_is_not_kept(captured: tuple[Expect, Captured]) -> None:
    expect, got = captured
    # Capture is on: the spans the instrumentation exported hold both prompt and answer...
    raw = {key for span in got.spans for key in _with_content(span.attributes)}
    assert raw, f"{expect.module} put no message content on its spans: capture is off"
    assert any(PROMPT in str(v) for s in got.spans for v in (s.attributes or {}).values())
    assert any(ANSWER in str(v) for s in got.spans for v in (s.attributes or {}).values())
    # ...and nothing the normalizer passes on keeps any of it, under any key.
    for name, e in got.events.items():
        assert _with_content(e["attributes"]) == set(), (name, sorted(raw))
        assert PROMPT not in repr(e) and ANSWER not in repr(e), name
    assert len(got.span_records) == len(got.spans)
    for record in got.span_records:
        assert PROMPT not in repr(record) and ANSWER not in repr(record), record


def test_report_attribute_names(
    captured: tuple[Expect, Captured], capsys: pytest.CaptureFixture[str]
) -> None:
    """Lists the attribute keys each instrumentation emitted (run with -s to read them)."""
    expect, got = captured
    keys = sorted({key for span in got.spans for key in (span.attributes or {})})
    unmapped = [k for k in keys if k not in a.MAPPED_KEYS]
    with capsys.disabled():
        print(f"\n{expect.module}: mapped={[k for k in keys if k in a.MAPPED_KEYS]}")
        print(f"{expect.module}: unmapped={unmapped}")
    assert any(k in a.MAPPED_KEYS for k in keys)
