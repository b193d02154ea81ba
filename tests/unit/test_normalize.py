"""streams.normalize: precedence per convention, cached tokens, encodings, rejects, no raising."""

from __future__ import annotations

import hashlib
import json
import lzma
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.trace.v1.trace_pb2 import Span, TracesData

from driftline.schemas import attributes as a
from driftline.schemas import otlp_lean_pb2
from driftline.schemas.event import (
    EARLIEST_TIME_NS,
    EVENT_FIELD_NAMES,
    MAX_ATTRIBUTE_VALUE_CHARS,
    MAX_EVENT_ATTRIBUTES,
    MAX_TOKENS,
    bundle_id,
)
from driftline.streams.decode import sniff_content_type
from driftline.streams.normalize import (
    SPAN_RECORD_FIELDS,
    IngestPolicy,
    NormalizedBatch,
    normalize_message,
    printable,
    safe_name,
)
from tests.utils import otlp_factory as f

TRACE_ID = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")
SPAN_ID = bytes.fromhex("b7ad6b7169203331")
PARENT_ID = bytes.fromhex("00f067aa0ba902b7")


def llm_span(attributes: dict[str, Any] | None = None, **overrides: Any) -> Span:
    fields: dict[str, Any] = {
        "trace_id": TRACE_ID,
        "span_id": SPAN_ID,
        "parent_span_id": PARENT_ID,
        "name": "chat gpt-4o",
        "attributes": attributes or {},
    }
    fields.update(overrides)
    return f.make_span(**fields)


def normalize_spans(*spans: Span, resource: dict[str, Any] | None = None) -> NormalizedBatch:
    message = f.traces_data(f.make_resource_spans(spans, resource_attributes=resource))
    return normalize_message(message.SerializeToString())


def one_event(attributes: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    batch = normalize_spans(llm_span(attributes, **overrides))
    assert batch.rejects == [], batch.rejects
    assert len(batch.events) == 1
    return batch.events[0]


CHAT = {a.GEN_AI_OPERATION_NAME: a.OP_CHAT}


# --- precedence (DESIGN.md "Attribute precedence"), one test per list -----------------------


def test_input_tokens_current_name_beats_deprecated_and_openinference() -> None:
    attrs = {
        **CHAT,
        a.GEN_AI_USAGE_INPUT_TOKENS: 100,
        a.GEN_AI_USAGE_PROMPT_TOKENS: 200,
        a.LLM_TOKEN_COUNT_PROMPT: 300,
    }
    assert one_event(attrs)["input_tokens"] == 100
    del attrs[a.GEN_AI_USAGE_INPUT_TOKENS]
    assert one_event(attrs)["input_tokens"] == 200
    del attrs[a.GEN_AI_USAGE_PROMPT_TOKENS]
    assert one_event(attrs)["input_tokens"] == 300


def test_output_tokens_precedence() -> None:
    attrs = {
        **CHAT,
        a.GEN_AI_USAGE_OUTPUT_TOKENS: 10,
        a.GEN_AI_USAGE_COMPLETION_TOKENS: 20,
        a.LLM_TOKEN_COUNT_COMPLETION: 30,
    }
    assert one_event(attrs)["output_tokens"] == 10
    del attrs[a.GEN_AI_USAGE_OUTPUT_TOKENS]
    assert one_event(attrs)["output_tokens"] == 20
    del attrs[a.GEN_AI_USAGE_COMPLETION_TOKENS]
    assert one_event(attrs)["output_tokens"] == 30


def test_cache_read_tokens_precedence() -> None:
    attrs = {
        **CHAT,
        a.GEN_AI_USAGE_INPUT_TOKENS: 1000,
        a.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: 11,
        a.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS_OLD: 22,
        a.LLM_TOKEN_COUNT_CACHE_READ: 33,
    }
    for key, expected in zip(a.CACHE_READ_TOKENS_KEYS, (11, 22, 33), strict=True):
        assert one_event(attrs)["cache_read_tokens"] == expected
        del attrs[key]
    assert one_event(attrs)["cache_read_tokens"] == 0


def test_cache_write_tokens_precedence() -> None:
    attrs = {
        **CHAT,
        a.GEN_AI_USAGE_INPUT_TOKENS: 1000,
        a.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS: 1,
        a.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS: 2,
        a.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS_OLD: 3,
        a.LLM_TOKEN_COUNT_CACHE_WRITE: 4,
    }
    for key, expected in zip(a.CACHE_WRITE_TOKENS_KEYS, (1, 2, 3, 4), strict=True):
        assert one_event(attrs)["cache_write_tokens"] == expected
        del attrs[key]


def test_reasoning_tokens_precedence() -> None:
    attrs = {
        **CHAT,
        a.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: 7,
        a.LLM_TOKEN_COUNT_REASONING: 8,
    }
    assert one_event(attrs)["reasoning_tokens"] == 7
    del attrs[a.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS]
    assert one_event(attrs)["reasoning_tokens"] == 8


def test_provider_precedence_and_lower_case() -> None:
    attrs = {
        **CHAT,
        a.GEN_AI_PROVIDER_NAME: "aws.bedrock",
        a.GEN_AI_SYSTEM: "Anthropic",
        a.LLM_PROVIDER: "azure",
        a.LLM_SYSTEM: "OpenAI",
    }
    for key, expected in zip(
        a.PROVIDER_KEYS, ("aws.bedrock", "anthropic", "azure", "openai"), strict=True
    ):
        assert one_event(attrs)["provider"] == expected
        del attrs[key]


def test_model_precedence_and_bundle_uses_response_model() -> None:
    attrs = {
        **CHAT,
        a.GEN_AI_RESPONSE_MODEL: "gpt-4o-2024-08-06",
        a.GEN_AI_REQUEST_MODEL: "gpt-4o",
        a.LLM_RESPONSE_MODEL_NAME: "oi-response",
        a.LLM_MODEL_NAME: "oi-request",
        a.DRIFTLINE_PROMPT_VERSION: "p3",
    }
    event = one_event(attrs)
    assert (event["response_model"], event["request_model"]) == ("gpt-4o-2024-08-06", "gpt-4o")
    assert event["bundle_id"] == bundle_id("gpt-4o-2024-08-06", "", "p3", "", "")
    only_openinference = {**CHAT, a.LLM_RESPONSE_MODEL_NAME: "m-resp", a.LLM_MODEL_NAME: "m-req"}
    event = one_event(only_openinference)
    assert (event["response_model"], event["request_model"]) == ("m-resp", "m-req")
    request_only = one_event({**CHAT, a.GEN_AI_REQUEST_MODEL: "gpt-4o-mini"})
    assert request_only["bundle_id"] == bundle_id("gpt-4o-mini", "", "", "", "")


def test_operation_precedence_across_conventions() -> None:
    span_attrs = {
        a.GEN_AI_OPERATION_NAME: a.OP_EMBEDDINGS,
        a.OPENINFERENCE_SPAN_KIND: "LLM",
        a.TRACELOOP_SPAN_KIND: "llm",
    }
    assert one_event(span_attrs)["operation"] == "embeddings"
    del span_attrs[a.GEN_AI_OPERATION_NAME]
    assert one_event(span_attrs)["operation"] == "chat"  # OpenInference LLM -> chat
    del span_attrs[a.OPENINFERENCE_SPAN_KIND]
    assert one_event(span_attrs)["operation"] == "chat"  # traceloop llm -> chat
    # OpenInference kinds that are not model calls give span records, not events.
    batch = normalize_spans(llm_span({a.OPENINFERENCE_SPAN_KIND: "RETRIEVER"}))
    assert batch.events == []
    assert batch.spans[0]["operation"] == "retrieval"
    assert batch.spans[0]["is_llm_call"] is False


def test_workflow_precedence_span_keys_only() -> None:
    attrs = {
        **CHAT,
        a.DRIFTLINE_WORKFLOW: "wf-driftline",
        a.GEN_AI_WORKFLOW_NAME: "wf-genai",
        a.TRACELOOP_WORKFLOW_NAME: "wf-traceloop",
        a.LANGFUSE_TRACE_NAME: "wf-langfuse",
    }
    for key in a.WORKFLOW_KEYS:
        assert one_event(attrs)["workflow"] == attrs[key]
        del attrs[key]
    # No span-level key: trace assembly falls back to the root agent, then service.name.
    event = one_event({**CHAT, a.GEN_AI_AGENT_NAME: "triage-agent"})
    assert (event["workflow"], event["agent"], event["service"]) == (
        "",
        "triage-agent",
        "checkout-api",
    )


def test_session_precedence() -> None:
    attrs = {
        **CHAT,
        a.GEN_AI_CONVERSATION_ID: "conv-1",
        a.SESSION_ID: "oi-session",
        a.LANGFUSE_SESSION_ID: "lf-session",
        a.TRACELOOP_SESSION_ID: "tl-session",
    }
    for key in a.SESSION_KEYS:
        assert one_event(attrs)["session_id"] == attrs[key]
        del attrs[key]


def test_finish_reason_first_of_array_beats_openinference() -> None:
    attrs = {
        **CHAT,
        a.GEN_AI_RESPONSE_FINISH_REASONS: ["length", "stop"],
        a.LLM_FINISH_REASON: "stop",
    }
    assert one_event(attrs)["finish_reason"] == "length"
    attrs[a.GEN_AI_RESPONSE_FINISH_REASONS] = []  # empty array: not reported
    assert one_event(attrs)["finish_reason"] == "stop"
    attrs[a.GEN_AI_RESPONSE_FINISH_REASONS] = "content_filter"  # a bare string, seen in the wild
    assert one_event(attrs)["finish_reason"] == "content_filter"


def test_ttft_and_queue_seconds_become_milliseconds() -> None:
    attrs = {
        **CHAT,
        a.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK: 0.25,
        a.GEN_AI_LATENCY_TIME_TO_FIRST_TOKEN: 0.5,
        a.GEN_AI_LATENCY_TIME_IN_QUEUE: 0.004,
    }
    event = one_event(attrs)
    assert event["ttft_ms"] == pytest.approx(250.0)
    assert event["queue_ms"] == pytest.approx(4.0)
    del attrs[a.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK]
    assert one_event(attrs)["ttft_ms"] == pytest.approx(500.0)
    assert one_event(CHAT)["ttft_ms"] is None


# --- whole conventions --------------------------------------------------------------------


def test_current_semconv_span() -> None:
    event = one_event(
        {
            **f.semconv_chat_attributes(cache_read_tokens=200),
            **f.driftline_attributes(workflow="support-triage"),
        },
        start_ns=f.BASE_TIME_NS,
        end_ns=f.BASE_TIME_NS + 1_234_567_000,
    )
    assert event["trace_id"] == TRACE_ID.hex()
    assert event["span_id"] == SPAN_ID.hex()
    assert event["parent_span_id"] == PARENT_ID.hex()
    assert event["start_ts"] == f.BASE_TIME_NS // 1000
    assert event["latency_ms"] == pytest.approx(1234.567)
    assert (event["operation"], event["provider"]) == ("chat", "openai")
    assert (event["input_tokens"], event["output_tokens"], event["cache_read_tokens"]) == (
        1200,
        300,
        200,
    )
    assert event["finish_reason"] == "stop"
    assert (event["workflow"], event["tenant"], event["route"]) == (
        "support-triage",
        "acme",
        "/v1/answer",
    )
    assert (event["prompt_version"], event["retrieval_index_version"]) == ("p12", "idx-2026-01")
    assert (event["router_version"], event["model_version"]) == ("r3", "2024-08-06")
    assert event["bundle_id"] == bundle_id(
        "gpt-4o-2024-08-06", "2024-08-06", "p12", "idx-2026-01", "r3"
    )
    assert event["kv_cache_usage"] == pytest.approx(0.42)
    assert (event["retry_attempt"], event["tool_calls"], event["output_chars"]) == (0, 1, 1180)
    assert event["validation_failed"] is False
    assert (event["cost_usd"], event["price_source"], event["loop_depth"]) == (None, "", 0)
    assert event["attributes"] == {
        "gen_ai.response.id": "chatcmpl-9x8y7z",
        "gen_ai.request.temperature": "0.2",
        "gen_ai.request.max_tokens": "1024",
        "gen_ai.request.top_p": "1.0",
        "server.address": "api.openai.com",
        "server.port": "443",
    }
    assert tuple(event) == EVENT_FIELD_NAMES


def test_deprecated_semconv_span_drops_prompt_content() -> None:
    event = one_event(f.deprecated_semconv_attributes())
    assert event["provider"] == "anthropic"
    assert (event["input_tokens"], event["output_tokens"]) == (900, 210)
    assert event["request_model"] == "claude-3-5-sonnet-20241022"
    assert event["attributes"] == {"gen_ai.request.max_tokens": "2048"}


def test_openinference_span() -> None:
    event = one_event(f.openinference_llm_attributes(cache_read_tokens=128))
    assert (event["operation"], event["provider"], event["request_model"]) == (
        "chat",
        "openai",
        "gpt-4o-mini",
    )
    assert (event["input_tokens"], event["output_tokens"], event["cache_read_tokens"]) == (
        640,
        96,
        128,
    )
    # input.value / output.value / llm.*_messages are content, and llm.invocation_parameters
    # is not on the allow list: only allowed keys are stored.
    assert set(event["attributes"]) == {"llm.token_count.total", "input.mime_type"}


def test_openllmetry_span() -> None:
    event = one_event(f.openllmetry_attributes(workflow="triage"))
    assert (event["operation"], event["provider"], event["workflow"]) == (
        "chat",
        "openai",
        "triage",
    )
    assert event["session_id"] == "sess-traceloop-1"
    assert (event["request_model"], event["response_model"]) == ("gpt-4o", "gpt-4o-2024-08-06")
    assert "gen_ai.prompt.0.content" not in event["attributes"]


def test_langfuse_span() -> None:
    event = one_event(f.langfuse_attributes(trace_name="rag-answer"))
    assert (event["workflow"], event["session_id"]) == ("rag-answer", "lf-session-42")
    assert (event["input_tokens"], event["output_tokens"]) == (500, 60)


def test_vllm_request_span_is_a_chat_call_by_vllm() -> None:
    event = one_event(f.vllm_request_attributes(ttft_s=0.045, queue_s=0.003), name="llm_request")
    assert (event["operation"], event["provider"]) == ("chat", "vllm")
    assert event["response_model"] == "meta-llama/Llama-3.1-8B-Instruct"
    assert (event["input_tokens"], event["output_tokens"]) == (350, 120)
    assert event["ttft_ms"] == pytest.approx(45.0)
    assert event["queue_ms"] == pytest.approx(3.0)


def test_span_with_tokens_and_model_but_no_operation_is_an_llm_call() -> None:
    attrs = {a.GEN_AI_REQUEST_MODEL: "gpt-4o", a.GEN_AI_USAGE_INPUT_TOKENS: 5}
    assert one_event(attrs)["operation"] == ""
    batch = normalize_spans(llm_span({a.GEN_AI_USAGE_INPUT_TOKENS: 5}))  # no model
    assert (batch.events, batch.spans[0]["is_llm_call"]) == ([], False)


# --- cached tokens ------------------------------------------------------------------------------


def test_cached_tokens_reported_inclusive_are_left_alone() -> None:
    event = one_event(
        {
            **CHAT,
            a.GEN_AI_USAGE_INPUT_TOKENS: 1000,
            a.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: 600,
            a.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS: 100,
        }
    )
    assert (event["input_tokens"], event["cache_read_tokens"], event["cache_write_tokens"]) == (
        1000,
        600,
        100,
    )


def test_cached_tokens_reported_exclusive_are_added_to_input() -> None:
    # Anthropic's usage: input_tokens excludes cache reads and writes.
    event = one_event(
        {
            **CHAT,
            a.GEN_AI_USAGE_INPUT_TOKENS: 20,
            a.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: 3000,
            a.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS: 500,
        }
    )
    assert (event["input_tokens"], event["cache_read_tokens"], event["cache_write_tokens"]) == (
        3520,
        3000,
        500,
    )


# --- runtime, output and status fields ------------------------------------------------------


def test_status_and_error_type() -> None:
    error = one_event(CHAT, status_code=f.STATUS_ERROR, status_message="RateLimitError: slow down")
    assert (error["status"], error["error_type"]) == ("error", "RateLimitError")
    explicit = one_event(
        {**CHAT, a.ERROR_TYPE: "timeout"}, status_code=f.STATUS_ERROR, status_message="x: y"
    )
    assert explicit["error_type"] == "timeout"
    no_class = one_event(CHAT, status_code=f.STATUS_ERROR, status_message="upstream failed")
    assert no_class["error_type"] == ""
    ok = one_event(CHAT, status_code=f.STATUS_OK)
    assert (ok["status"], ok["error_type"]) == ("ok", "")
    assert one_event(CHAT)["status"] == "unset"


def test_driftline_runtime_keys() -> None:
    event = one_event(
        {
            **CHAT,
            a.DRIFTLINE_RETRY_ATTEMPT: 2,
            a.DRIFTLINE_OUTPUT_VALIDATION_FAILED: True,
            a.DRIFTLINE_KV_CACHE_USAGE: 1,
        }
    )
    assert (event["retry_attempt"], event["validation_failed"], event["kv_cache_usage"]) == (
        2,
        True,
        1.0,
    )
    assert (event["output_chars"], event["tool_calls"]) == (None, 0)


def test_bundle_versions_fall_back_to_resource_attributes() -> None:
    resource = {
        a.SERVICE_NAME: "rag",
        a.DEPLOYMENT_ENVIRONMENT: "staging",
        a.DRIFTLINE_PROMPT_VERSION: "p-resource",
        a.DRIFTLINE_TENANT: "tenant-resource",
    }
    batch = normalize_spans(
        llm_span({**CHAT, a.DRIFTLINE_TENANT: "tenant-span"}), resource=resource
    )
    event = batch.events[0]
    assert (event["service"], event["environment"]) == ("rag", "staging")
    assert (event["prompt_version"], event["tenant"]) == ("p-resource", "tenant-span")


# An allow list that keeps the application's own keys, as a deployment would configure it.
ALLOW_APP = IngestPolicy(attributes_allow=("app.*",))


def test_attributes_map_is_bounded_truncated_and_deterministic() -> None:
    free = {f"app.key{i:02d}": "v" * 400 for i in range(40)}
    message = f.traces_data(f.make_resource_spans([llm_span({**CHAT, **free})]))
    payload = message.SerializeToString()
    attrs = normalize_message(
        payload, max_attributes=5, max_attribute_chars=10, policy=ALLOW_APP
    ).events[0]["attributes"]
    assert attrs == {f"app.key{i:02d}": "v" * 10 for i in range(5)}
    reversed_message = f.traces_data(
        f.make_resource_spans([llm_span({**CHAT, **dict(reversed(free.items()))})])
    )
    again = normalize_message(
        reversed_message.SerializeToString(),
        max_attributes=5,
        max_attribute_chars=10,
        policy=ALLOW_APP,
    )
    assert again.events[0]["attributes"] == attrs


def test_non_scalar_attribute_values_are_rendered_as_json() -> None:
    attrs = {**CHAT, "app.tags": ["a", 1, True], "app.meta": {"k": 2.5}, "app.blob": b"\x01\x02"}
    message = f.traces_data(f.make_resource_spans([llm_span(attrs)]))
    (event,) = normalize_message(message.SerializeToString(), policy=ALLOW_APP).events
    assert event["attributes"] == {
        "app.tags": '["a", 1, true]',
        "app.meta": '{"k": 2.5}',
        "app.blob": "AQI=",
    }


# --- messages: encodings, envelopes, several resources ----------------------------------------


def sample_message() -> TracesData:
    return f.realistic_message(60, seed=3)


def test_json_and_protobuf_give_identical_events_and_spans() -> None:
    message = sample_message()
    from_proto = normalize_message(message.SerializeToString())
    from_json = normalize_message(f.to_otlp_json(message))
    assert from_proto.rejects == [] and from_json.rejects == []
    assert len(from_proto.events) > 20
    assert from_json.events == from_proto.events
    assert from_json.spans == from_proto.spans
    explicit = normalize_message(f.to_otlp_json(message), content_type="otlp_json")
    assert explicit.events == from_proto.events


def test_traces_data_and_export_request_are_both_accepted() -> None:
    message = sample_message()
    request = f.export_request(*message.resource_spans)
    as_traces = normalize_message(message.SerializeToString())
    as_request = normalize_message(request.SerializeToString())
    assert as_request.events == as_traces.events
    assert as_request.span_count == as_traces.span_count == 60


def test_several_resources_and_scopes_per_message() -> None:
    first = f.make_resource_spans(
        [llm_span(CHAT, span_id=b"\x01" * 8)], resource_attributes={a.SERVICE_NAME: "svc-a"}
    )
    first.scope_spans.add().spans.append(llm_span(CHAT, span_id=b"\x02" * 8))
    second = f.make_resource_spans(
        [llm_span(CHAT, span_id=b"\x03" * 8)], resource_attributes={a.SERVICE_NAME: "svc-b"}
    )
    batch = normalize_message(f.traces_data(first, second).SerializeToString())
    assert [(e["span_id"][:2], e["service"]) for e in batch.events] == [
        ("01", "svc-a"),
        ("02", "svc-a"),
        ("03", "svc-b"),
    ]
    assert batch.span_count == 3


def test_span_records_cover_every_span() -> None:
    batch = normalize_message(sample_message().SerializeToString())
    assert len(batch.spans) == batch.span_count == 60
    assert all(tuple(record) == SPAN_RECORD_FIELDS for record in batch.spans)
    llm_ids = {e["span_id"] for e in batch.events}
    assert {r["span_id"] for r in batch.spans if r["is_llm_call"]} == llm_ids
    roots = [r for r in batch.spans if not r["parent_span_id"]]
    assert roots and all(r["operation"] == "invoke_agent" and r["agent"] for r in roots)


def test_empty_message_is_an_empty_batch() -> None:
    assert normalize_message(b"") == NormalizedBatch([], [], [], 0)


# --- rejects ----------------------------------------------------------------------------------


BAD_SPANS: list[tuple[str, dict[str, Any]]] = [
    ("missing_trace_id", {"trace_id": b""}),
    ("missing_trace_id", {"trace_id": bytes(16)}),
    ("missing_span_id", {"span_id": b""}),
    ("bad_id_length", {"trace_id": b"\x01" * 8}),
    ("bad_id_length", {"parent_span_id": b"\x01" * 3}),
    ("bad_timestamps", {"start_ns": f.BASE_TIME_NS, "end_ns": f.BASE_TIME_NS - 1}),
    ("bad_timestamps", {"start_ns": 0}),
    (
        f"negative_tokens:{a.GEN_AI_USAGE_INPUT_TOKENS}",
        {"attributes": {**CHAT, a.GEN_AI_USAGE_INPUT_TOKENS: -5}},
    ),
    (
        f"wrong_type:{a.GEN_AI_USAGE_OUTPUT_TOKENS}",
        {"attributes": {**CHAT, a.GEN_AI_USAGE_OUTPUT_TOKENS: "12"}},
    ),
    (
        f"wrong_type:{a.LLM_TOKEN_COUNT_PROMPT}",
        {"attributes": {**CHAT, a.LLM_TOKEN_COUNT_PROMPT: 12.5}},
    ),
    (
        f"oversize_value:{a.GEN_AI_REQUEST_MODEL}",
        {"attributes": {**CHAT, a.GEN_AI_REQUEST_MODEL: "m" * 513}},
    ),
    (
        f"oversize_value:{a.DRIFTLINE_WORKFLOW}",
        {"attributes": {**CHAT, a.DRIFTLINE_WORKFLOW: "w" * 600}},
    ),
    (
        f"out_of_range:{a.DRIFTLINE_KV_CACHE_USAGE}",
        {"attributes": {**CHAT, a.DRIFTLINE_KV_CACHE_USAGE: 1.5}},
    ),
    (
        f"wrong_type:{a.DRIFTLINE_TENANT}",
        {"attributes": {**CHAT, a.DRIFTLINE_TENANT: ["acme"]}},
    ),
]


@pytest.mark.parametrize(("reason", "overrides"), BAD_SPANS, ids=[r for r, _ in BAD_SPANS])
def test_bad_span_is_rejected_with_its_reason_and_the_rest_survive(
    reason: str, overrides: dict[str, Any]
) -> None:
    good_before = llm_span(CHAT, span_id=b"\x0a" * 8)
    fields = {"attributes": CHAT, "span_id": b"\x0b" * 8, **overrides}
    bad = llm_span(**fields)
    good_after = llm_span(CHAT, span_id=b"\x0c" * 8)
    batch = normalize_spans(good_before, bad, good_after)
    assert [r.reason for r in batch.rejects] == [reason]
    assert [e["span_id"] for e in batch.events] == ["0a" * 8, "0c" * 8]
    assert [s["span_id"] for s in batch.spans] == ["0a" * 8, "0c" * 8]
    assert batch.span_count == 3
    # The dead-letter payload is the bad span with its resource and scope, as OTLP.
    dlq = TracesData.FromString(batch.rejects[0].payload)
    assert dlq.resource_spans[0].resource.attributes[0].value.string_value == "checkout-api"
    assert dlq.resource_spans[0].scope_spans[0].scope.name == "driftline.tests"
    (span,) = dlq.resource_spans[0].scope_spans[0].spans
    assert (span.span_id, span.kind) == (bad.span_id, bad.kind)
    assert sorted(span.attributes, key=lambda kv: kv.key) == sorted(
        bad.attributes, key=lambda kv: kv.key
    )
    assert batch.rejects[0].detail


def test_free_form_oversize_values_are_truncated_not_rejected() -> None:
    message = f.traces_data(f.make_resource_spans([llm_span({**CHAT, "app.note": "n" * 5000})]))
    (event,) = normalize_message(message.SerializeToString(), policy=ALLOW_APP).events
    assert event["attributes"]["app.note"] == "n" * 256


def test_json_reject_payload_is_the_original_json_span() -> None:
    good = llm_span(CHAT, span_id=b"\x0a" * 8)
    bad = llm_span({**CHAT, a.GEN_AI_USAGE_INPUT_TOKENS: -1}, span_id=b"\x0b" * 8)
    payload = f.to_otlp_json(f.traces_data(f.make_resource_spans([good, bad])))
    batch = normalize_message(payload)
    (reject,) = batch.rejects
    assert (reject.trace_id, reject.span_id) == (TRACE_ID.hex(), "0b" * 8)
    doc = json.loads(reject.payload)
    (span_doc,) = doc["resourceSpans"][0]["scopeSpans"][0]["spans"]
    assert span_doc["spanId"] == "0b" * 8
    assert doc["resourceSpans"][0]["scopeSpans"][0]["scope"]["name"] == "driftline.tests"
    assert normalize_message(reject.payload).rejects[0].reason == reject.reason


@pytest.mark.parametrize(
    "payload",
    [b"hello, world", b"\xff\xfe\xfd", b"{not json", b"[1, 2]", b'{"resourceSpans": 3}'],
)
def test_not_otlp_keeps_the_whole_message_only_when_asked(payload: bytes) -> None:
    batch = normalize_message(payload)
    assert [(r.reason, r.payload) for r in batch.rejects] == [("not_otlp", b"")]
    assert (batch.events, batch.spans, batch.span_count) == ([], [], 0)
    kept = normalize_message(payload, policy=IngestPolicy(dlq_content=True))
    assert [(r.reason, r.payload) for r in kept.rejects] == [("not_otlp", payload)]


def test_invalid_utf8_in_one_span_rejects_nothing_else() -> None:
    # proto3 parsers refuse the whole message; the lean proto2 schema keeps the other spans.
    good = llm_span(CHAT, span_id=b"\x0a" * 8)
    odd = llm_span({**CHAT, a.GEN_AI_REQUEST_MODEL: "MODEL"}, span_id=b"\x0b" * 8)
    payload = f.traces_data(f.make_resource_spans([good, odd])).SerializeToString()
    payload = payload.replace(b"MODEL", b"MOD\xffL")
    batch = normalize_message(payload)
    assert batch.rejects == []
    # U+FFFD is not a character a name may hold: the model name is made safe, its original kept.
    assert [e["request_model"] for e in batch.events] == ["", safe_name("MOD\ufffdL", "", {})]
    assert batch.events[1]["attributes"] == {"driftline.original.request_model": "MOD\ufffdL"}


# --- properties ---------------------------------------------------------------------------------

PROPERTY_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@PROPERTY_SETTINGS
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_never_raise(payload: bytes) -> None:
    batch = normalize_message(payload)
    assert isinstance(batch, NormalizedBatch)
    assert all(r.reason != "internal_error" for r in batch.rejects), batch.rejects


@PROPERTY_SETTINGS
@given(st.text(max_size=300).map(lambda t: ("{" + t).encode()))
def test_arbitrary_json_like_text_never_raises(payload: bytes) -> None:
    batch = normalize_message(payload)
    assert all(r.reason != "internal_error" for r in batch.rejects), batch.rejects


_VALID_PROTO = f.realistic_message(12, seed=9).SerializeToString()
_VALID_JSON = f.to_otlp_json(f.realistic_message(6, seed=9))


@PROPERTY_SETTINGS
@given(
    st.sampled_from([_VALID_PROTO, _VALID_JSON]),
    st.lists(st.tuples(st.integers(0, 10**9), st.integers(0, 255)), min_size=1, max_size=8),
    st.integers(0, 10**9),
)
def test_mutated_valid_messages_never_raise(
    payload: bytes, flips: list[tuple[int, int]], cut: int
) -> None:
    mutated = bytearray(payload)
    for position, byte in flips:
        mutated[position % len(mutated)] = byte
    for candidate in (bytes(mutated), bytes(mutated[: cut % len(mutated)])):
        batch = normalize_message(candidate)
        assert all(r.reason != "internal_error" for r in batch.rejects), batch.rejects
        assert len(batch.spans) + sum(r.reason != "not_otlp" for r in batch.rejects) == (
            batch.span_count
        )


identity_text = st.text(st.characters(codec="utf-8"), min_size=1, max_size=40)
token_count = st.integers(0, MAX_TOKENS)


@PROPERTY_SETTINGS
@given(
    model=identity_text,
    workflow=identity_text,
    tenant=identity_text,
    prompt_version=identity_text,
    input_tokens=token_count,
    output_tokens=token_count,
    cache_read=st.integers(0, 2**20),
    ttft=st.floats(0, 1e4, allow_nan=False),
    kv=st.floats(0, 1),
    start=st.integers(EARLIEST_TIME_NS, 3 * 10**18),
    duration=st.integers(0, 10**12),
    as_json=st.booleans(),
)
def test_random_valid_spans_round_trip_field_values(
    model: str,
    workflow: str,
    tenant: str,
    prompt_version: str,
    input_tokens: int,
    output_tokens: int,
    cache_read: int,
    ttft: float,
    kv: float,
    start: int,
    duration: int,
    as_json: bool,
) -> None:
    attrs = {
        **CHAT,
        a.GEN_AI_PROVIDER_NAME: "openai",
        a.GEN_AI_REQUEST_MODEL: model,
        a.DRIFTLINE_WORKFLOW: workflow,
        a.DRIFTLINE_TENANT: tenant,
        a.DRIFTLINE_PROMPT_VERSION: prompt_version,
        a.GEN_AI_USAGE_INPUT_TOKENS: input_tokens,
        a.GEN_AI_USAGE_OUTPUT_TOKENS: output_tokens,
        a.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: cache_read,
        a.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK: ttft,
        a.DRIFTLINE_KV_CACHE_USAGE: kv,
    }
    message = f.traces_data(
        f.make_resource_spans([llm_span(attrs, start_ns=start, end_ns=start + duration)])
    )
    payload = f.to_otlp_json(message) if as_json else message.SerializeToString()
    batch = normalize_message(payload)
    assert batch.rejects == []
    (event,) = batch.events
    # Names are made safe for dashboards; versions are kept but for control characters.
    assert event["request_model"] == safe_name(model, "request_model", {})
    assert (event["workflow"], event["tenant"]) == (
        safe_name(workflow, "", {}),
        safe_name(tenant, "", {}),
    )
    assert event["prompt_version"] == printable(prompt_version)
    expected_input = input_tokens if cache_read <= input_tokens else input_tokens + cache_read
    assert (event["input_tokens"], event["output_tokens"]) == (expected_input, output_tokens)
    assert event["cache_read_tokens"] == cache_read
    assert event["ttft_ms"] == pytest.approx(ttft * 1000)
    assert event["kv_cache_usage"] == kv
    assert (event["start_ts"], event["end_ts"]) == (start // 1000, (start + duration) // 1000)
    assert event["latency_ms"] == pytest.approx(duration / 1e6)
    assert event["bundle_id"] == bundle_id(
        event["request_model"], "", event["prompt_version"], "", ""
    )


@PROPERTY_SETTINGS
@given(
    bad_positions=st.sets(st.integers(0, 11), max_size=12),
    kinds=st.lists(st.integers(0, len(BAD_SPANS) - 1), min_size=12, max_size=12),
    seed=st.integers(0, 2**16),
)
def test_some_bad_spans_are_rejected_exactly_and_good_spans_kept(
    bad_positions: set[int], kinds: list[int], seed: int
) -> None:
    rng = random.Random(seed)
    spans: list[Span] = []
    expected_rejects: list[tuple[str, str]] = []
    expected_events: list[str] = []
    for position in range(12):
        span_id = bytes([position + 1]) * 8
        if position in bad_positions:
            reason, overrides = BAD_SPANS[kinds[position]]
            spans.append(llm_span(**{"attributes": CHAT, "span_id": span_id, **overrides}))
            shown_id = "" if reason == "missing_span_id" else span_id.hex()
            expected_rejects.append((reason, shown_id))
        else:
            attrs = {**CHAT, a.GEN_AI_USAGE_INPUT_TOKENS: rng.randrange(10**6)}
            spans.append(llm_span(attrs, span_id=span_id))
            expected_events.append(span_id.hex())
    batch = normalize_spans(*spans)
    assert [(r.reason, r.span_id) for r in batch.rejects] == expected_rejects
    assert [e["span_id"] for e in batch.events] == expected_events
    assert batch.span_count == 12


# --- reference output: speed work must not change results ---------------------------------------
# A few thousand mixed spans (every convention, odd types, rejects, both encodings, small
# attribute bounds) normalized by the straightforward implementation this module was first
# tested against; its output is stored compressed. Regenerate only for an intended change:
#   python -c "from tests.unit.test_normalize import write_reference; write_reference()"

lean: Any = otlp_lean_pb2  # generated code, no stubs
REFERENCE_FILE = Path(__file__).parent / "data" / "normalize_reference.json.xz"
_ODD_VALUES: tuple[Any, ...] = (
    "",
    "x" * 600,
    "12",
    "Stop",
    "LLM",
    "llm",
    "TOOL",
    "EMBEDDING",
    "chat",
    "embeddings",
    "execute_tool",
    "gpt-4o",
    "über-modell",
    -3,
    0,
    1,
    7,
    2**40,
    2.0,
    2.5,
    0.5,
    1.5,
    -0.1,
    float("nan"),
    float("inf"),
    True,
    False,
    [],
    ["length", "stop"],
    [3],
    {"k": 1},
    b"\x00\x01",
)
_RESOURCE_ODDITIES: tuple[dict[str, Any], ...] = (
    {},
    {a.DRIFTLINE_TENANT: "tenant-r", a.DRIFTLINE_ROUTE: "/r"},
    {a.DRIFTLINE_PROMPT_VERSION: 4, a.DRIFTLINE_MODEL_VERSION: "mv-r"},
    {a.DRIFTLINE_TENANT: ["bad"], a.DRIFTLINE_ROUTER_VERSION: "v" * 700},
    {a.DEPLOYMENT_ENVIRONMENT: "staging", a.DRIFTLINE_RETRIEVAL_INDEX_VERSION: "idx-r"},
    {a.SERVICE_NAME: 5, a.DEPLOYMENT_ENVIRONMENT_NAME: ""},
)
_CONVENTIONS = (
    f.semconv_chat_attributes,
    f.deprecated_semconv_attributes,
    f.openinference_llm_attributes,
    f.openllmetry_attributes,
    f.langfuse_attributes,
    f.vllm_request_attributes,
)
_MAPPED_KEY_LIST = sorted(a.MAPPED_KEYS)


def _mixed_span(rng: random.Random, trace_id: bytes, index: int, parent: bytes) -> Span:
    convention = rng.randrange(len(_CONVENTIONS) + 2)
    if convention < len(_CONVENTIONS):
        attrs: dict[str, Any] = dict(_CONVENTIONS[convention]())
        if rng.random() < 0.7:
            attrs.update(f.driftline_attributes(workflow=rng.choice(("wf-a", "wf-b", ""))))
    elif convention == len(_CONVENTIONS):
        attrs = {a.GEN_AI_OPERATION_NAME: a.OP_EXECUTE_TOOL, a.GEN_AI_TOOL_NAME: "search"}
    else:
        attrs = {a.GEN_AI_OPERATION_NAME: a.OP_INVOKE_AGENT, a.GEN_AI_AGENT_NAME: "agent"}
    if rng.random() < 0.35:
        for _ in range(rng.randint(1, 3)):
            key = rng.choice(_MAPPED_KEY_LIST)
            if rng.random() < 0.2:
                attrs.pop(key, None)
            else:
                attrs[key] = rng.choice(_ODD_VALUES)
    if rng.random() < 0.15:
        for i in range(rng.randint(1, 40)):
            attrs[f"app.k{rng.randrange(60):02d}"] = rng.choice(
                ("v" * rng.randint(0, 300), i, 0.1 * i, True, ["a", 1, 2.5], {"n": i}, b"b")
            )
        attrs["k" * rng.choice((5, 300))] = "long key"
        attrs["gen_ai.prompt.3.content"] = "content is never stored"
    fields: dict[str, Any] = {
        "trace_id": trace_id,
        "span_id": (index + 1).to_bytes(8, "big"),
        "parent_span_id": parent,
        "name": rng.choice(("chat", "llm_request", "ChatCompletion", "tool")),
        "start_ns": f.BASE_TIME_NS + index * 1_000_000_007,
        "end_ns": f.BASE_TIME_NS + index * 1_000_000_007 + rng.randint(0, 9_000_000_000),
        "attributes": attrs,
    }
    if rng.random() < 0.2:
        fields["status_code"] = rng.choice((f.STATUS_OK, f.STATUS_ERROR, f.STATUS_ERROR))
        fields["status_message"] = rng.choice(
            ("RateLimitError: slow down", "timeout", "", "openai.APIError: 500", "ü: x")
        )
    if rng.random() < 0.08:
        fields.update(rng.choice([override for _, override in BAD_SPANS]))
        if "attributes" in fields and fields["attributes"] is not attrs:
            fields["attributes"] = {**attrs, **fields["attributes"]}
    return f.make_span(**fields)


def _mixed_message(rng: random.Random, first_index: int, spans: int) -> TracesData:
    resources = []
    index = first_index
    for r in range(rng.randint(1, 3)):
        resource_attrs = {a.SERVICE_NAME: f"svc-{r}", a.DEPLOYMENT_ENVIRONMENT_NAME: "prod"}
        resource_attrs.update(rng.choice(_RESOURCE_ODDITIES))
        trace_id = (index + 1).to_bytes(16, "big")
        built = []
        for _ in range(spans // 2 if r == 0 else spans // 4):
            parent = b"" if rng.random() < 0.2 else (index // 7 + 1).to_bytes(8, "big")
            built.append(_mixed_span(rng, trace_id, index, parent))
            index += 1
        rs = f.make_resource_spans(built[: len(built) // 2], resource_attributes=resource_attrs)
        rs.scope_spans.add().spans.extend(built[len(built) // 2 :])
        resources.append(rs)
    return f.traces_data(*resources)


def _sequential_ids(message: TracesData) -> TracesData:
    """Counters instead of random ids, so the stored reference compresses well."""
    seen: dict[bytes, bytes] = {}
    for rs in message.resource_spans:
        for ss in rs.scope_spans:
            for span in ss.spans:
                for field, size in (("trace_id", 16), ("span_id", 8), ("parent_span_id", 8)):
                    raw = getattr(span, field)
                    if raw:
                        setattr(
                            span, field, seen.setdefault(raw, (len(seen) + 1).to_bytes(size, "big"))
                        )
    return message


def reference_corpus() -> list[tuple[bytes, int, int]]:
    """(payload, max_attributes, max_attribute_chars) for every corpus message."""
    default = (MAX_EVENT_ATTRIBUTES, MAX_ATTRIBUTE_VALUE_CHARS)
    corpus: list[tuple[bytes, int, int]] = [
        (_sequential_ids(f.realistic_message(1000, seed=seed)).SerializeToString(), *default)
        for seed in (11, 12)
    ]
    rng = random.Random(2026)
    for number in range(24):
        message = _mixed_message(rng, number * 1000, 80)
        payload = f.to_otlp_json(message) if number % 4 == 3 else message.SerializeToString()
        if number % 6 == 5 and number % 4 != 3:
            # Invalid UTF-8 in a key and a value: the lean proto2 schema must keep the span.
            payload = payload.replace(b"gen_ai.response.id", b"gen_ai.resp\xffnse.id")
            payload = payload.replace(b"gpt-4o-mini", b"gpt-4\xff-mini")
        limits = (3, 8) if number % 5 == 4 else default
        corpus.append((payload, *limits))
    return corpus


def _batch_document(batch: NormalizedBatch) -> dict[str, Any]:
    return {
        "events": batch.events,
        "spans": batch.spans,
        "rejects": [
            [r.reason, r.detail, r.trace_id, r.span_id, _payload_digest(r.payload)]
            for r in batch.rejects
        ],
        "span_count": batch.span_count,
    }


def _payload_digest(payload: bytes) -> str:
    if sniff_content_type(payload) == "otlp_proto":
        # Protobuf writes map entries in no fixed order; compare them sorted.
        payload = lean.TracesData.FromString(payload).SerializeToString(deterministic=True)
    return hashlib.sha256(payload).hexdigest()


def _normalized_corpus() -> list[str]:
    # JSON text keeps what == would blur: key order, and 1 vs 1.0 vs true.
    return [
        json.dumps(
            _batch_document(
                normalize_message(payload, max_attributes=most, max_attribute_chars=chars)
            )
        )
        for payload, most, chars in reference_corpus()
    ]


def write_reference() -> None:
    REFERENCE_FILE.parent.mkdir(exist_ok=True)
    with lzma.open(REFERENCE_FILE, "wt", encoding="utf-8", preset=9) as out:
        json.dump([json.loads(text) for text in _normalized_corpus()], out)


def _first_difference(expected: dict[str, Any], actual: dict[str, Any]) -> str:
    for part in ("events", "spans", "rejects"):
        for index, (want, got) in enumerate(zip(expected[part], actual[part], strict=False)):
            if json.dumps(want) != json.dumps(got):
                return f"{part}[{index}]:\n  expected {want}\n  actual   {got}"
        if len(expected[part]) != len(actual[part]):
            return f"{part}: {len(expected[part])} expected, {len(actual[part])} actual"
    return "span_count"


def test_output_matches_the_stored_reference_cold_and_warm() -> None:
    with lzma.open(REFERENCE_FILE, "rt", encoding="utf-8") as stored:
        expected = [json.dumps(doc) for doc in json.load(stored)]
    span_total = sum(json.loads(text)["span_count"] for text in expected)
    assert span_total > 3000
    for _ in range(2):  # the second pass runs on warm caches
        actual = _normalized_corpus()
        assert len(actual) == len(expected)
        for number, (want, got) in enumerate(zip(expected, actual, strict=True)):
            if want != got:
                detail = _first_difference(json.loads(want), json.loads(got))
                pytest.fail(f"message {number} differs from the reference: {detail}")
