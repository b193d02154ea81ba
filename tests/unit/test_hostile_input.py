"""What a span carries cannot poison the numbers, leak content or break a name into SQL.

Each test sends the hostile value through ``normalize_message`` (protobuf and OTLP/JSON) and
checks what comes out: a reject with its reason, or an event whose values are within bounds.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.trace.v1.trace_pb2 import Span, TracesData

from driftline.schemas import attributes as a
from driftline.schemas.event import MAX_CALL_SECONDS, MAX_STEPS, MAX_TOKENS
from driftline.streams.normalize import (
    MAX_SPAN_REJECTS,
    TOO_MANY_REJECTS,
    IngestPolicy,
    NormalizedBatch,
    normalize_message,
    printable,
    safe_name,
)
from tests.utils import otlp_factory as f

TRACE_ID = bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736")
CHAT = {a.GEN_AI_OPERATION_NAME: a.OP_CHAT, a.GEN_AI_REQUEST_MODEL: "gpt-4o"}
DAY_NS = 86_400 * 10**9
HOUR_NS = 3_600 * 10**9
ARRIVAL_NS = f.BASE_TIME_NS + 5 * 10**9


def span(attributes: dict[str, Any] | None = None, **fields: Any) -> Span:
    fields.setdefault("span_id", b"\x0b" * 8)
    return f.make_span(trace_id=TRACE_ID, attributes={**CHAT, **(attributes or {})}, **fields)


def encode(*spans: Span, as_json: bool = False, resource: dict[str, Any] | None = None) -> bytes:
    message = f.traces_data(f.make_resource_spans(spans, resource_attributes=resource))
    return f.to_otlp_json(message) if as_json else message.SerializeToString()


def normalize(*spans: Span, as_json: bool = False, **kwargs: Any) -> NormalizedBatch:
    return normalize_message(encode(*spans, as_json=as_json), **kwargs)


def reasons(batch: NormalizedBatch) -> list[str]:
    return [r.reason for r in batch.rejects]


both_encodings = pytest.mark.parametrize("as_json", [False, True], ids=["proto", "json"])


# --- timestamps --------------------------------------------------------------------------------


@both_encodings
@pytest.mark.parametrize(
    ("start_ns", "reason"),
    [
        (4_102_444_800 * 10**9, "future_timestamp"),  # 2100-01-01: past the TTL's range
        (16_725_225_600 * 10**9, "future_timestamp"),  # 2500
        (2**64 - 2 * 10**9, "future_timestamp"),
        (10**9, "stale_timestamp"),  # 1970
    ],
)
def test_times_no_store_can_keep_are_rejected_without_an_arrival_time(
    start_ns: int, reason: str, as_json: bool
) -> None:
    batch = normalize(span(start_ns=start_ns, end_ns=start_ns + 10**9), as_json=as_json)
    assert reasons(batch) == [reason]
    assert batch.events == [] and batch.spans == []


@both_encodings
@pytest.mark.parametrize(
    ("offset_ns", "reason"),
    [
        (-7 * DAY_NS - 10**9, "stale_timestamp"),
        (-7 * DAY_NS + 10**9, None),
        (HOUR_NS - 2 * 10**9, None),  # ends 1.5 s later, still within the hour
        (HOUR_NS + 10**9, "future_timestamp"),
    ],
)
def test_times_are_checked_against_the_arrival_time(
    offset_ns: int, reason: str | None, as_json: bool
) -> None:
    start = ARRIVAL_NS + offset_ns
    batch = normalize(span(start_ns=start), as_json=as_json, arrival_ns=ARRIVAL_NS)
    assert reasons(batch) == ([reason] if reason else [])
    assert len(batch.events) == (0 if reason else 1)


def test_the_window_is_configurable() -> None:
    policy = IngestPolicy(max_past_s=60.0, max_future_s=0.0)
    late = span(start_ns=ARRIVAL_NS - 120 * 10**9)
    assert reasons(normalize(late, arrival_ns=ARRIVAL_NS, policy=policy)) == ["stale_timestamp"]
    ahead = span(start_ns=ARRIVAL_NS - 10**9)  # ends 0.5 s after arrival
    assert reasons(normalize(ahead, arrival_ns=ARRIVAL_NS, policy=policy)) == ["future_timestamp"]


def test_a_call_lasting_over_a_day_is_rejected_but_a_long_workflow_span_is_not() -> None:
    start = f.BASE_TIME_NS
    long_call = span(start_ns=start, end_ns=start + (MAX_CALL_SECONDS + 1) * 10**9)
    assert reasons(normalize(long_call)) == ["out_of_range:duration"]
    workflow = f.make_span(
        trace_id=TRACE_ID,
        span_id=b"\x0c" * 8,
        start_ns=start,
        end_ns=start + 3 * DAY_NS,
        attributes={a.GEN_AI_OPERATION_NAME: a.OP_INVOKE_AGENT},
    )
    batch = normalize(workflow)
    assert (reasons(batch), len(batch.spans)) == ([], 1)


# --- numbers ---------------------------------------------------------------------------------


@both_encodings
@pytest.mark.parametrize(
    ("key", "value"),
    [
        (a.GEN_AI_USAGE_INPUT_TOKENS, 2**63 - 1),
        (a.GEN_AI_USAGE_OUTPUT_TOKENS, MAX_TOKENS + 1),
        (a.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, 2**62),
        (a.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS, 2**62),
        (a.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS, 2**40),
        (a.DRIFTLINE_OUTPUT_CHARS, 2**63 - 1),
        (a.DRIFTLINE_RETRY_ATTEMPT, MAX_STEPS + 1),
        (a.DRIFTLINE_TOOL_CALLS, 2**40),
        (a.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK, 1e308),
        (a.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK, math.inf),
        (a.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK, math.nan),
        (a.GEN_AI_LATENCY_TIME_TO_FIRST_TOKEN, MAX_CALL_SECONDS + 1.0),
        (a.GEN_AI_LATENCY_TIME_IN_QUEUE, 1e308),
        (a.DRIFTLINE_KV_CACHE_USAGE, math.nan),
        (a.DRIFTLINE_KV_CACHE_USAGE, -math.inf),
    ],
)
def test_numbers_beyond_their_bounds_are_rejected(key: str, value: float, as_json: bool) -> None:
    batch = normalize(span({key: value}), as_json=as_json)
    assert reasons(batch) == [f"out_of_range:{key}"]
    assert batch.events == []


def test_bounds_themselves_are_accepted_and_cached_tokens_cannot_overflow() -> None:
    batch = normalize(
        span(
            {
                a.GEN_AI_USAGE_INPUT_TOKENS: 1,
                a.GEN_AI_USAGE_OUTPUT_TOKENS: MAX_TOKENS,
                a.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: MAX_TOKENS,
                a.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS: MAX_TOKENS,
                a.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK: float(MAX_CALL_SECONDS),
                a.DRIFTLINE_KV_CACHE_USAGE: 1.0,
            }
        )
    )
    assert reasons(batch) == []
    (event,) = batch.events
    # Cached tokens reported exclusive are added: at most three bounds, far below UInt64.
    assert event["input_tokens"] == 1 + 2 * MAX_TOKENS
    assert event["ttft_ms"] == MAX_CALL_SECONDS * 1000.0


@settings(max_examples=200, deadline=None)
@given(
    tokens=st.lists(st.integers(-(2**63), 2**63 - 1), min_size=5, max_size=5),
    seconds=st.lists(
        st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(2**63), 2**63 - 1)),
        min_size=3,
        max_size=3,
    ),
)
def test_whatever_the_numbers_an_event_holds_only_bounded_finite_values(
    tokens: list[int], seconds: list[float]
) -> None:
    keys = (
        a.GEN_AI_USAGE_INPUT_TOKENS,
        a.GEN_AI_USAGE_OUTPUT_TOKENS,
        a.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS,
        a.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS,
        a.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS,
    )
    timing = (
        a.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK,
        a.GEN_AI_LATENCY_TIME_IN_QUEUE,
        a.DRIFTLINE_KV_CACHE_USAGE,
    )
    values = {**dict(zip(keys, tokens, strict=True)), **dict(zip(timing, seconds, strict=True))}
    batch = normalize(span(values))
    for event in batch.events:
        for field in ("output_tokens", "cache_read_tokens", "cache_write_tokens"):
            assert 0 <= event[field] <= MAX_TOKENS
        assert 0 <= event["input_tokens"] <= 3 * MAX_TOKENS
        for field in ("ttft_ms", "queue_ms"):
            assert 0.0 <= event[field] <= MAX_CALL_SECONDS * 1000.0
        assert 0.0 <= event["kv_cache_usage"] <= 1.0
    assert len(batch.events) + len(batch.rejects) == 1


# --- content -----------------------------------------------------------------------------------

SECRET = "the patient's record says"
CONTENT_KEYS = (
    "retrieval.documents.0.document.content",
    "llm.prompt_template.variables",
    "embedding.embeddings.0.embedding.text",
    "langfuse.observation.input",
    "langfuse.observation.output",
    "llm.completions.0.content",
    "message.content",
    "tool.parameters",
    "ai.prompt.messages",
    "gen_ai.tool.definitions",
    "mlflow.spanInputs",
    "Input.Value",
    "gen_ai.prompt.0.content",
    "input.value",
    # Content under the request-parameter prefix (tool definitions, messages, prompts).
    "gen_ai.request.messages",
    "gen_ai.request.prompt",
    "gen_ai.request.tools",
    "gen_ai.request.functions.0.parameters",
    "gen_ai.request.api_key",
)


@both_encodings
def test_content_keys_are_not_stored_unless_asked(as_json: bool) -> None:
    content = {key: f"{SECRET} {key}" for key in CONTENT_KEYS}
    kept_key = "gen_ai.request.temperature"
    payload = encode(span({**content, kept_key: 0.2}), as_json=as_json)
    (event,) = normalize_message(payload).events
    assert event["attributes"] == {kept_key: "0.2"}
    (opted_in,) = normalize_message(payload, policy=IngestPolicy(store_content=True)).events
    assert set(CONTENT_KEYS) <= set(opted_in["attributes"])


@both_encodings
def test_dead_letters_carry_reason_and_ids_not_content(as_json: bool) -> None:
    bad = span(
        {"llm.completions.0.content": SECRET, a.GEN_AI_USAGE_INPUT_TOKENS: -1},
        status_code=f.STATUS_ERROR,
        status_message=f"ContentPolicyViolation: {SECRET}",
    )
    bad.events.add(name="gen_ai.content.prompt").attributes.extend(
        f.key_values({"gen_ai.prompt": SECRET})
    )
    resource = {a.SERVICE_NAME: "checkout", "app.config": SECRET}
    message = f.traces_data(f.make_resource_spans([bad], resource_attributes=resource))
    payload = f.to_otlp_json(message) if as_json else message.SerializeToString()

    (reject,) = normalize_message(payload).rejects
    assert reject.reason == f"negative_tokens:{a.GEN_AI_USAGE_INPUT_TOKENS}"
    assert (reject.trace_id, reject.span_id) == (TRACE_ID.hex(), "0b" * 8)
    assert SECRET.encode() not in reject.payload
    # What is left still reproduces the reject, so a fixed span can be re-produced.
    assert reasons(normalize_message(reject.payload)) == [reject.reason]
    if not as_json:
        kept = TracesData.FromString(reject.payload)
        (dead,) = kept.resource_spans[0].scope_spans[0].spans
        assert (dead.span_id, dead.kind) == (bad.span_id, bad.kind)
        assert (dead.status.code, dead.status.message) == (bad.status.code, "")
        assert {kv.key for kv in dead.attributes} == {*CHAT, a.GEN_AI_USAGE_INPUT_TOKENS}
    else:
        doc = json.loads(reject.payload)
        (dead_doc,) = doc["resourceSpans"][0]["scopeSpans"][0]["spans"]
        assert "events" not in dead_doc

    (whole,) = normalize_message(payload, policy=IngestPolicy(dlq_content=True)).rejects
    assert whole.payload.count(SECRET.encode()) == 4


def test_a_json_dead_letter_keeps_only_the_fields_it_lists() -> None:
    doc = json.loads(encode(span({a.GEN_AI_USAGE_INPUT_TOKENS: -1}), as_json=True))
    (resource_spans,) = doc["resourceSpans"]
    resource_spans["note"] = resource_spans.setdefault("resource", {})["note"] = SECRET
    (scope_spans,) = resource_spans["scopeSpans"]
    scope_spans["note"] = SECRET
    scope_spans.setdefault("scope", {})["attributes"] = [
        {"key": "gen_ai.prompt", "value": {"stringValue": SECRET}}
    ]
    (bad,) = scope_spans["spans"]
    bad["prompt"] = SECRET
    bad["status"] = {"code": 2, "description": SECRET}
    bad["kind"] = {"prompt": SECRET}  # a field it keeps, holding what that field never does
    bad["attributes"][0]["note"] = SECRET  # beside an attribute that is kept
    bad["attributes"][0]["value"]["note"] = SECRET
    bad["attributes"].append(
        {
            "key": "gen_ai.request.stop_sequences",
            "value": {"arrayValue": {"values": [{"stringValue": "x", "note": SECRET}]}},
        }
    )

    (reject,) = normalize_message(json.dumps(doc).encode()).rejects
    assert SECRET.encode() not in reject.payload
    assert reasons(normalize_message(reject.payload)) == [reject.reason]


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    return bytes(out + bytes([n]))


def _field(number: int, wire_type: int, payload: bytes = b"") -> bytes:
    """One protobuf field, written by hand (a group's tags, fields no schema defines)."""
    length = _varint(len(payload)) + payload if wire_type == 2 else b""
    return _varint(number << 3 | wire_type) + length


def test_a_protobuf_dead_letter_keeps_only_the_fields_it_lists() -> None:
    bad = span({a.GEN_AI_USAGE_INPUT_TOKENS: -1})
    bad.events.add(name="gen_ai.content.prompt").attributes.extend(
        f.key_values({"gen_ai.prompt": SECRET})
    )
    # An unknown group before the span's fields: it hid the events from their removal.
    group = _field(20, 3) + _field(20, 4)
    scope = InstrumentationScope(name="s", attributes=f.key_values({"gen_ai.prompt": SECRET}))
    resource = _field(15, 2, SECRET.encode())  # a field Resource does not define
    scope_spans = _field(1, 2, scope.SerializeToString()) + _field(
        2, 2, group + bad.SerializeToString()
    )
    payload = _field(1, 2, _field(1, 2, resource) + _field(2, 2, scope_spans))

    (reject,) = normalize_message(payload, content_type="otlp_proto").rejects
    assert reject.reason == f"negative_tokens:{a.GEN_AI_USAGE_INPUT_TOKENS}"
    assert SECRET.encode() not in reject.payload


def test_a_protobuf_dead_letter_keeps_fields_only_of_their_own_type() -> None:
    bad = span({a.GEN_AI_USAGE_INPUT_TOKENS: -1}).SerializeToString()
    kind_as_bytes = _field(6, 2, SECRET.encode())  # kind is a varint
    # A kept attribute whose AnyValue carries a field AnyValue does not define.
    value = _field(1, 2, b"0.2") + _field(9, 2, SECRET.encode())
    attribute = _field(9, 2, _field(1, 2, b"gen_ai.request.temperature") + _field(2, 2, value))
    payload = _field(1, 2, _field(2, 2, _field(2, 2, bad + kind_as_bytes + attribute)))

    (reject,) = normalize_message(payload, content_type="otlp_proto").rejects
    assert SECRET.encode() not in reject.payload
    assert reasons(normalize_message(reject.payload)) == [reject.reason]


def test_a_dead_letter_for_attributes_not_a_list_is_rejected_for_it_again() -> None:
    doc = json.loads(encode(span(), as_json=True))
    doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"] = {"prompt": SECRET}
    (reject,) = normalize_message(json.dumps(doc).encode()).rejects
    assert reject.reason == "bad_attributes" and SECRET.encode() not in reject.payload
    assert reasons(normalize_message(reject.payload)) == ["bad_attributes"]


@pytest.mark.parametrize("dlq_content", [False, True], ids=["redacted", "content"])
def test_dead_letters_of_one_message_take_a_bounded_multiple_of_it(dlq_content: bool) -> None:
    # A large resource is copied into each span's dead letter: past a budget of twice the
    # message, the message goes once instead.
    timeless = [span(span_id=i.to_bytes(8, "big"), start_ns=0, end_ns=0) for i in range(1, 1001)]
    payload = encode(*timeless, resource={a.SERVICE_NAME: "s" * 500_000})
    batch = normalize_message(payload, policy=IngestPolicy(dlq_content=dlq_content))
    assert sum(len(r.payload) for r in batch.rejects) <= 4 * len(payload)
    assert batch.rejects[-1].reason == TOO_MANY_REJECTS
    assert len(batch.rejects) - 1 + sum(batch.rejected_within_message.values()) == 1000


@both_encodings
def test_past_the_cap_a_message_of_bad_spans_is_dead_lettered_once_whole(as_json: bool) -> None:
    bad = [
        span({a.GEN_AI_USAGE_INPUT_TOKENS: -1}, span_id=i.to_bytes(8, "big"))
        for i in range(1, MAX_SPAN_REJECTS + 501)
    ]
    payload = encode(*bad, as_json=as_json)
    batch = normalize_message(payload)
    assert len(batch.rejects) == MAX_SPAN_REJECTS + 1
    whole = batch.rejects[-1]
    assert (whole.reason, whole.payload) == (TOO_MANY_REJECTS, b"")
    assert "500 more spans" in whole.detail
    # Every span is counted by its reason: one by one, or within the whole message.
    reason = f"negative_tokens:{a.GEN_AI_USAGE_INPUT_TOKENS}"
    assert reasons(batch)[:-1] == [reason] * MAX_SPAN_REJECTS
    assert batch.counters() == {f"rejects.{reason}": 500}
    kept = normalize_message(payload, policy=IngestPolicy(dlq_content=True)).rejects[-1]
    assert kept.payload == payload


# --- names ------------------------------------------------------------------------------------

HOSTILE_NAMES = ("zz\\' ) OR 1=1 --", "a\\", "x' OR 1=throwIf(1) --", "$__timeFilter(x)", "a\nb")


@both_encodings
@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_names_that_could_break_sql_are_made_safe_and_kept_as_attributes(
    name: str, as_json: bool
) -> None:
    hostile = span(
        {
            a.DRIFTLINE_WORKFLOW: name,
            a.DRIFTLINE_TENANT: name,
            a.DRIFTLINE_ROUTE: name,
            a.GEN_AI_RESPONSE_MODEL: name,
        }
    )
    message = f.traces_data(
        f.make_resource_spans(
            [hostile], resource_attributes={a.SERVICE_NAME: name, a.DEPLOYMENT_ENVIRONMENT: name}
        )
    )
    payload = f.to_otlp_json(message) if as_json else message.SerializeToString()
    batch = normalize_message(payload)
    (event,) = batch.events
    fields = ("workflow", "tenant", "route", "response_model", "service", "environment")
    for field in fields:
        assert event[field] == safe_name(name, field, {})
        assert not set(event[field]) & set("'\\$\n")
        # Kept for lookups as free text: a control character (the newline) is replaced.
        assert event["attributes"][f"{a.ORIGINAL_NAME_PREFIX}{field}"] == printable(name)
        assert "\n" not in event["attributes"][f"{a.ORIGINAL_NAME_PREFIX}{field}"]
    (record,) = batch.spans
    assert all(record[field] == event[field] for field in ("workflow", "tenant", "service"))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60), st.text(max_size=60))
def test_safe_names_hold_only_safe_characters_and_stay_distinct(first: str, second: str) -> None:
    safe = {first: safe_name(first, "workflow", {}), second: safe_name(second, "workflow", {})}
    for original, name in safe.items():
        assert all(ch.isalnum() or ch in "_-.:/@+~ " for ch in name), name
        assert safe_name(name, "workflow", {}) == name  # already safe: unchanged
        if all(ch.isalnum() or ch in "_-.:/@+~ " for ch in original):
            assert name == original
    if first != second:
        assert safe[first] != safe[second]
