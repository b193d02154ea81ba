"""OTLP/JSON decodes like protobuf: the same spans give the same normalized result.

The scope rules are keyed by the instrumentation scope's name and version, and a failed
call without ``error.type`` takes its class from the span's ``exception`` event: both live
in parts of the message the lean schema keeps as bytes (the scope, span field 11). Here the
same messages, built with the official protobuf classes, are encoded as OTLP protobuf and as
OTLP/JSON (the protobuf JSON mapping with hex ids, int64 as strings and camelCase keys:
``tests.utils.otlp_factory.to_otlp_json``), and the normalizer must give identical events,
span records, tokenless counts and rejects for both: for the quirk of every scope rule,
for real spans recorded from openlit, and for random mixes of them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.trace.v1.trace_pb2 import Span, TracesData

from driftline.schemas import attributes as a
from driftline.streams.normalize import NormalizedBatch, normalize_message
from tests.fuzz.strategies import ARRIVAL_NS
from tests.fuzz.strategies import traces_message as hostile_message
from tests.utils import otlp_factory as f

TRACE_ID = bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736")
MS = 1_000_000
RECORDINGS = Path(__file__).parent / "data" / "instrumentations"


def span(
    number: int,
    attributes: dict[str, Any],
    *,
    name: str = "chat gpt-4o-mini",
    start_ms: float = 0,
    duration_ms: float = 100,
    status_code: int = f.STATUS_UNSET,
    status_message: str = "",
    events: tuple[tuple[str, dict[str, Any]], ...] = (),
    parent: int = 0,
) -> Span:
    start_ns = f.BASE_TIME_NS + int(start_ms * MS)
    built = f.make_span(
        trace_id=TRACE_ID,
        span_id=number.to_bytes(8, "big"),
        parent_span_id=parent.to_bytes(8, "big") if parent else b"",
        name=name,
        start_ns=start_ns,
        end_ns=start_ns + int(duration_ms * MS),
        attributes=attributes,
        status_code=status_code,
        status_message=status_message,
    )
    for offset, (event_name, event_attributes) in enumerate(events):
        built.events.add(
            name=event_name,
            time_unix_nano=start_ns + offset,
            attributes=f.key_values(event_attributes),
        )
    return built


def message(*groups: tuple[str | None, str, list[Span]]) -> TracesData:
    """One resource; a scope (name, version; ``None``: no scope at all) per group."""
    resource = f.make_resource_spans([], resource_attributes={a.SERVICE_NAME: "chat-app"})
    del resource.scope_spans[:]
    for scope_name, scope_version, spans in groups:
        scope_spans = resource.scope_spans.add()
        if scope_name is not None:
            scope_spans.scope.name = scope_name
            scope_spans.scope.version = scope_version
            scope_spans.scope.attributes.extend(f.key_values({"scope.kind": "library"}))
        scope_spans.spans.extend(spans)
    return f.traces_data(resource)


def both(data: TracesData) -> tuple[NormalizedBatch, NormalizedBatch]:
    return (
        normalize_message(data.SerializeToString()),
        normalize_message(f.to_otlp_json(data)),
    )


def assert_same(proto: NormalizedBatch, json_: NormalizedBatch) -> None:
    assert json_.events == proto.events
    assert json_.spans == proto.spans
    assert json_.tokenless == proto.tokenless
    assert json_.span_count == proto.span_count
    # Dead letters are in the encoding the message came in; what they say is the same.
    assert [(r.reason, r.detail, r.trace_id, r.span_id) for r in json_.rejects] == [
        (r.reason, r.detail, r.trace_id, r.span_id) for r in proto.rejects
    ]


def chat(provider: str = "openai", **extra: Any) -> dict[str, Any]:
    return {
        a.GEN_AI_OPERATION_NAME: "chat",
        a.GEN_AI_PROVIDER_NAME: provider,
        a.GEN_AI_REQUEST_MODEL: "gpt-4o-mini",
        **extra,
    }


USAGE = {a.GEN_AI_USAGE_INPUT_TOKENS: 1200, a.GEN_AI_USAGE_OUTPUT_TOKENS: 7}
ANTHROPIC_UNCACHED = {
    a.GEN_AI_OPERATION_NAME: "chat",
    a.GEN_AI_PROVIDER_NAME: "anthropic",
    a.GEN_AI_REQUEST_MODEL: "claude-sonnet-4-5",
    a.GEN_AI_USAGE_INPUT_TOKENS: 1500,
    a.GEN_AI_USAGE_OUTPUT_TOKENS: 7,
    a.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: 1024,
    a.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS: 297,
    a.GEN_AI_SERVER_TIME_TO_FIRST_TOKEN: 0.0626,
}
EXCEPTION = (
    a.EXCEPTION_EVENT_NAME,
    {a.EXCEPTION_TYPE: "anthropic.InternalServerError", "exception.message": "500"},
)
FAILED = {"status_code": f.STATUS_ERROR, "status_message": "500 stub failure"}
LITELLM_USAGE = (
    "{'prompt_tokens': 2821, 'completion_tokens': 7, "
    "'cache_creation_input_tokens': 297, 'cache_read_input_tokens': 1024}"
)


# Each case: the message, and (field, value) that only the scope or the span events can give,
# so a JSON path that dropped them would not just differ: it would miss the quirk.
CASES: dict[str, tuple[TracesData, list[tuple[int, str, Any]]]] = {
    "logfire stream: the log record is the call": (
        message(
            (
                "logfire.openai",
                "5.4.0",
                [
                    span(1, chat(**{"logfire.span_type": "span"}), duration_ms=6.8),
                    span(
                        2,
                        chat(
                            **USAGE,
                            **{
                                "logfire.span_type": "log",
                                "duration": 0.0756,
                                a.GEN_AI_RESPONSE_FINISH_REASONS: '["stop"]',
                            },
                        ),
                        start_ms=82.4,
                        duration_ms=0,
                    ),
                ],
            )
        ),
        [(0, "latency_ms", 75.6), (0, "finish_reason", "stop")],
    ),
    "openlit anthropic: cache added, TTFT only when streamed": (
        message(("openlit.instrumentation.anthropic", "", [span(1, ANTHROPIC_UNCACHED)])),
        [(0, "input_tokens", 2821), (0, "ttft_ms", None)],
    ),
    "openlit anthropic: a bare failure is read from its name": (
        message(
            (
                "openlit.instrumentation.anthropic",
                "",
                [span(1, {}, name="chat claude-sonnet-4-5", events=(EXCEPTION,), **FAILED)],
            )
        ),
        [(0, "request_model", "claude-sonnet-4-5"), (0, "error_type", "InternalServerError")],
    ),
    "openinference litellm: the provider prefix is dropped": (
        message(
            (
                "openinference.instrumentation.litellm",
                "0.1.51",
                [
                    span(
                        1,
                        {
                            a.OPENINFERENCE_SPAN_KIND: "LLM",
                            a.LLM_PROVIDER: "openai",
                            a.LLM_MODEL_NAME: "openai/gpt-4o-mini",
                            a.LLM_TOKEN_COUNT_PROMPT: 1200,
                            a.LLM_TOKEN_COUNT_COMPLETION: 7,
                        },
                    )
                ],
            )
        ),
        [(0, "request_model", "gpt-4o-mini")],
    ),
    "litellm callback: cache tokens from its usage object": (
        message(
            (
                "litellm",
                "",
                [
                    span(
                        1,
                        chat(
                            "anthropic",
                            **{
                                a.GEN_AI_USAGE_INPUT_TOKENS: 2821,
                                a.GEN_AI_USAGE_OUTPUT_TOKENS: 7,
                                "metadata.usage_object": LITELLM_USAGE,
                            },
                        ),
                    )
                ],
            )
        ),
        [(0, "cache_read_tokens", 1024), (0, "cache_write_tokens", 297)],
    ),
    "pydantic-ai: the error class only in the exception event": (
        message(
            (
                "pydantic-ai",
                "2.68.0",
                [
                    span(
                        1,
                        chat(),
                        events=(
                            ("gen_ai.client.inference.operation.details", {"n": 1}),
                            (
                                a.EXCEPTION_EVENT_NAME,
                                {a.EXCEPTION_TYPE: "pydantic_ai.exceptions.ModelHTTPError"},
                            ),
                        ),
                        **FAILED,
                    )
                ],
            )
        ),
        [(0, "error_type", "ModelHTTPError")],
    ),
    "unknown scope: a tokenless call is counted with its scope": (
        message(("some.library", "1.0", [span(1, chat()), span(2, chat(**USAGE))])),
        [(0, "input_tokens", 0), (1, "input_tokens", 1200)],
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_quirk_decodes_alike_from_json_and_protobuf(case: str) -> None:
    data, expected = CASES[case]
    proto, json_ = both(data)
    assert proto.rejects == [], proto.rejects
    assert_same(proto, json_)
    events = sorted(json_.events, key=lambda e: e["span_id"])
    for index, field, value in expected:
        assert events[index][field] == value, (case, field)


def test_tokenless_counts_keep_the_scope_from_json() -> None:
    data, _ = CASES["unknown scope: a tokenless call is counted with its scope"]
    assert both(data)[1].tokenless == {("no_usage", "some.library"): 1}


@pytest.mark.parametrize("kind", ["chat", "stream", "tool", "error"])
def test_recorded_openlit_spans_decode_alike(kind: str) -> None:
    """openlit 1.45.0's own spans (tests/compat/record_openlit.py): scope-keyed corrections
    for both providers and a failed Anthropic call without attributes."""
    data = TracesData.FromString((RECORDINGS / f"openlit-1.45.0.{kind}.otlp.pb").read_bytes())
    proto, json_ = both(data)
    assert proto.events and proto.rejects == []
    assert_same(proto, json_)


# --- random mixes ------------------------------------------------------------------------------

SCOPES = st.sampled_from(
    [
        (None, ""),
        ("", ""),
        ("logfire.openai", "5.4.0"),
        ("logfire.anthropic", "5.4.0"),
        ("openlit.instrumentation.anthropic", ""),
        ("openlit.instrumentation.openai", "1.45.0"),
        ("openinference.instrumentation.litellm", "0.1.51"),
        ("litellm", ""),
        ("pydantic-ai", "2.68.0"),
        ("some.library", "9.9"),
    ]
)
ATTRIBUTE_SETS = st.sampled_from(
    [
        {},
        chat(),
        chat(**USAGE),
        chat(**{a.GEN_AI_USAGE_INPUT_TOKENS: 0, a.GEN_AI_USAGE_OUTPUT_TOKENS: 0}),
        chat(**{"logfire.span_type": "span"}),
        chat(**USAGE, **{"logfire.span_type": "log", "duration": 0.05}),
        chat(**USAGE, **{a.GEN_AI_RESPONSE_FINISH_REASONS: '["tool_calls"]'}),
        ANTHROPIC_UNCACHED,
        {**ANTHROPIC_UNCACHED, "gen_ai.request.stream": True},
        chat("anthropic", **USAGE, **{"metadata.usage_object": LITELLM_USAGE}),
        {
            a.OPENINFERENCE_SPAN_KIND: "LLM",
            a.LLM_PROVIDER: "openai",
            a.LLM_MODEL_NAME: "openai/gpt-4o-mini",
            a.LLM_TOKEN_COUNT_PROMPT: 5,
        },
        {a.GEN_AI_OPERATION_NAME: a.OP_EXECUTE_TOOL, a.GEN_AI_TOOL_NAME: "get_answer"},
        {a.GEN_AI_REQUEST_MODEL: "gpt-4o-mini", a.GEN_AI_PROVIDER_NAME: "openai"},
        chat(**{a.ERROR_TYPE: "Timeout"}),
    ]
)
EVENT_ATTRIBUTES = st.sampled_from(
    [
        {a.EXCEPTION_TYPE: "anthropic.InternalServerError"},
        {a.EXCEPTION_TYPE: "RateLimitError", "exception.escaped": True},
        {a.EXCEPTION_TYPE: 42},
        {a.EXCEPTION_TYPE: "not a class!"},
        {"exception.message": "no type"},
        {},
    ]
)
SPAN_EVENTS = st.lists(
    st.tuples(st.sampled_from([a.EXCEPTION_EVENT_NAME, "log", ""]), EVENT_ATTRIBUTES),
    max_size=3,
)


@st.composite
def quirky_message(draw: st.DrawFn) -> TracesData:
    groups = []
    number = 0
    for _ in range(draw(st.integers(1, 3))):
        scope_name, scope_version = draw(SCOPES)
        spans = []
        for _ in range(draw(st.integers(0, 4))):
            number += 1
            failed = draw(st.booleans())
            spans.append(
                span(
                    number,
                    draw(ATTRIBUTE_SETS),
                    name=draw(st.sampled_from(["chat claude-sonnet-4-5", "chat gpt-4o", "x"])),
                    start_ms=draw(st.integers(0, 500)),
                    duration_ms=draw(st.sampled_from([0, 6.8, 100])),
                    status_code=f.STATUS_ERROR if failed else draw(st.sampled_from([0, 1])),
                    status_message=draw(st.sampled_from(["", "boom", "Timeout: slow"])),
                    events=tuple(draw(SPAN_EVENTS)),
                    parent=draw(st.integers(0, number - 1)),
                )
            )
        groups.append((scope_name, scope_version, spans))
    return message(*groups)


@settings(max_examples=300, deadline=None)
@given(quirky_message())
def test_any_mix_of_quirks_decodes_alike_from_json_and_protobuf(data: TracesData) -> None:
    assert_same(*both(data))


def test_json_scope_and_event_fields_of_the_wrong_type_are_skipped_not_fatal() -> None:
    data = message(("pydantic-ai", "2.68.0", [span(1, chat(), events=(EXCEPTION,), **FAILED)]))
    proto, _ = both(data)
    doc: dict[str, Any] = json.loads(f.to_otlp_json(data))
    scope_spans = doc["resourceSpans"][0]["scopeSpans"][0]
    scope_spans["scope"]["version"] = 2  # not a string: read as no version
    scope_spans["spans"][0]["events"].insert(0, "not an event")
    scope_spans["spans"][0]["events"].insert(0, {"name": ["odd"], "timeUnixNano": "-1"})
    odd = normalize_message(json.dumps(doc).encode())
    assert odd.rejects == [] and odd.events == proto.events
    assert odd.events[0]["error_type"] == "InternalServerError"


@settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
@given(hostile_message())
def test_hostile_messages_decode_alike_from_json_and_protobuf(data: TracesData) -> None:
    """The fuzz suite's messages (any AnyValue, nested key-value lists with empty and
    repeated keys, odd names and times) give the same result in both encodings."""
    proto = normalize_message(data.SerializeToString(), arrival_ns=ARRIVAL_NS)
    json_ = normalize_message(f.to_otlp_json(data), arrival_ns=ARRIVAL_NS)
    assert_same(proto, json_)
