"""Builders for OTLP trace messages, as collectors put them on the ``otlp_spans`` topic.

Everything is built with the official ``opentelemetry-proto`` classes, so tests exercise
the real wire format. Attribute dicts map keys to plain Python values; :func:`any_value`
turns them into OTLP ``AnyValue`` (str, bool, int, float, bytes, list, dict).

Per-convention helpers (:func:`semconv_chat_attributes`, :func:`openinference_llm_attributes`,
...) give the attributes each instrumentation family puts on one LLM call, and
:func:`realistic_message` mixes them into whole traces for benchmarks and smoke tests.
"""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    InstrumentationScope,
    KeyValue,
    KeyValueList,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import (
    ResourceSpans,
    ScopeSpans,
    Span,
    Status,
    TracesData,
)

from driftline.schemas import attributes as a

AttrValue = str | bool | int | float | bytes | Sequence[Any] | Mapping[str, Any]

BASE_TIME_NS = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z

STATUS_UNSET = Status.STATUS_CODE_UNSET
STATUS_OK = Status.STATUS_CODE_OK
STATUS_ERROR = Status.STATUS_CODE_ERROR


def any_value(value: AttrValue) -> AnyValue:
    """An OTLP AnyValue for a Python value (bool is checked before int on purpose)."""
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, str):
        return AnyValue(string_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if isinstance(value, Mapping):
        return AnyValue(kvlist_value=KeyValueList(values=key_values(value)))
    return AnyValue(array_value=ArrayValue(values=[any_value(v) for v in value]))


def key_values(attrs: Mapping[str, AttrValue]) -> list[KeyValue]:
    return [KeyValue(key=k, value=any_value(v)) for k, v in attrs.items()]


def make_span(
    *,
    trace_id: bytes,
    span_id: bytes,
    parent_span_id: bytes = b"",
    name: str = "chat",
    start_ns: int = BASE_TIME_NS,
    end_ns: int | None = None,
    attributes: Mapping[str, AttrValue] | None = None,
    status_code: int = STATUS_UNSET,
    status_message: str = "",
    kind: int = Span.SPAN_KIND_CLIENT,
) -> Span:
    """One span; ``end_ns`` defaults to 1.5 s after the start."""
    span = Span(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent_span_id,
        name=name,
        kind=kind,  # type: ignore[arg-type]
        start_time_unix_nano=start_ns,
        end_time_unix_nano=start_ns + 1_500_000_000 if end_ns is None else end_ns,
        attributes=key_values(attributes or {}),
    )
    if status_code or status_message:
        span.status.code = status_code  # type: ignore[assignment]
        span.status.message = status_message
    return span


def make_resource_spans(
    spans: Iterable[Span],
    *,
    resource_attributes: Mapping[str, AttrValue] | None = None,
    scope_name: str = "driftline.tests",
    scope_version: str = "1.0",
) -> ResourceSpans:
    """One resource holding one instrumentation scope with ``spans``."""
    attrs = {a.SERVICE_NAME: "checkout-api"} if resource_attributes is None else resource_attributes
    return ResourceSpans(
        resource=Resource(attributes=key_values(attrs)),
        scope_spans=[
            ScopeSpans(
                scope=InstrumentationScope(name=scope_name, version=scope_version),
                spans=list(spans),
            )
        ],
    )


def traces_data(*resource_spans: ResourceSpans) -> TracesData:
    return TracesData(resource_spans=list(resource_spans))


def export_request(*resource_spans: ResourceSpans) -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest(resource_spans=list(resource_spans))


def to_otlp_json(message: TracesData | ExportTraceServiceRequest) -> bytes:
    """OTLP/JSON encoding: camelCase keys, int64 as strings, enums as integers, and
    trace/span ids as hex (the one place OTLP/JSON departs from the protobuf JSON mapping)."""
    doc = MessageToDict(message, use_integers_for_enums=True)
    for rs in doc.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for span in ss.get("spans", []):
                _ids_to_hex(span)
                for link in span.get("links", []):
                    _ids_to_hex(link)
    return json.dumps(doc).encode()


def _ids_to_hex(doc: dict[str, Any]) -> None:
    for key in ("traceId", "spanId", "parentSpanId"):
        if key in doc:
            doc[key] = base64.b64decode(doc[key]).hex()


# --- attributes per instrumentation family -----------------------------------------------


def semconv_chat_attributes(
    *,
    model: str = "gpt-4o-2024-08-06",
    request_model: str = "gpt-4o",
    provider: str = "openai",
    input_tokens: int = 1200,
    output_tokens: int = 300,
    cache_read_tokens: int | None = None,
    finish_reason: str = "stop",
) -> dict[str, AttrValue]:
    """OpenTelemetry GenAI semantic conventions >= 1.27 (gen_ai.provider.name era)."""
    attrs: dict[str, AttrValue] = {
        a.GEN_AI_OPERATION_NAME: a.OP_CHAT,
        a.GEN_AI_PROVIDER_NAME: provider,
        a.GEN_AI_REQUEST_MODEL: request_model,
        a.GEN_AI_RESPONSE_MODEL: model,
        a.GEN_AI_USAGE_INPUT_TOKENS: input_tokens,
        a.GEN_AI_USAGE_OUTPUT_TOKENS: output_tokens,
        a.GEN_AI_RESPONSE_FINISH_REASONS: [finish_reason],
        "gen_ai.response.id": "chatcmpl-9x8y7z",
        "gen_ai.request.temperature": 0.2,
        "gen_ai.request.max_tokens": 1024,
        "gen_ai.request.top_p": 1.0,
        "server.address": "api.openai.com",
        "server.port": 443,
    }
    if cache_read_tokens is not None:
        attrs[a.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] = cache_read_tokens
    return attrs


def deprecated_semconv_attributes(
    *,
    model: str = "claude-3-5-sonnet-20241022",
    system: str = "Anthropic",
    prompt_tokens: int = 900,
    completion_tokens: int = 210,
) -> dict[str, AttrValue]:
    """Pre-1.27 GenAI names: gen_ai.system and prompt/completion token counts."""
    return {
        a.GEN_AI_OPERATION_NAME: a.OP_CHAT,
        a.GEN_AI_SYSTEM: system,
        a.GEN_AI_REQUEST_MODEL: model,
        a.GEN_AI_USAGE_PROMPT_TOKENS: prompt_tokens,
        a.GEN_AI_USAGE_COMPLETION_TOKENS: completion_tokens,
        "gen_ai.request.max_tokens": 2048,
        "gen_ai.prompt.0.role": "user",
        "gen_ai.prompt.0.content": "Summarise the customer's last three orders.",
        "gen_ai.completion.0.content": "The customer ordered ...",
    }


def openinference_llm_attributes(
    *,
    model: str = "gpt-4o-mini",
    provider: str = "openai",
    prompt_tokens: int = 640,
    completion_tokens: int = 96,
    cache_read_tokens: int | None = 128,
) -> dict[str, AttrValue]:
    """OpenInference (Arize Phoenix) LLM span."""
    attrs: dict[str, AttrValue] = {
        a.OPENINFERENCE_SPAN_KIND: "LLM",
        a.LLM_PROVIDER: provider,
        a.LLM_SYSTEM: provider,
        a.LLM_MODEL_NAME: model,
        a.LLM_TOKEN_COUNT_PROMPT: prompt_tokens,
        a.LLM_TOKEN_COUNT_COMPLETION: completion_tokens,
        "llm.token_count.total": prompt_tokens + completion_tokens,
        "llm.invocation_parameters": '{"temperature": 0.1}',
        "input.value": '{"messages": [{"role": "user", "content": "hi"}]}',
        "input.mime_type": "application/json",
        "output.value": "Hello! How can I help?",
        "llm.input_messages.0.message.role": "user",
        "llm.input_messages.0.message.content": "hi",
        "llm.output_messages.0.message.content": "Hello! How can I help?",
    }
    if cache_read_tokens is not None:
        attrs[a.LLM_TOKEN_COUNT_CACHE_READ] = cache_read_tokens
    return attrs


def openllmetry_attributes(
    *,
    model: str = "gpt-4o",
    workflow: str = "support-triage",
    prompt_tokens: int = 800,
    completion_tokens: int = 150,
) -> dict[str, AttrValue]:
    """OpenLLMetry (Traceloop) LLM span: traceloop.* plus pre-1.27 gen_ai names."""
    return {
        a.TRACELOOP_SPAN_KIND: "llm",
        a.TRACELOOP_WORKFLOW_NAME: workflow,
        a.TRACELOOP_SESSION_ID: "sess-traceloop-1",
        a.GEN_AI_SYSTEM: "OpenAI",
        a.GEN_AI_REQUEST_MODEL: model,
        a.GEN_AI_RESPONSE_MODEL: model + "-2024-08-06",
        a.GEN_AI_USAGE_PROMPT_TOKENS: prompt_tokens,
        a.GEN_AI_USAGE_COMPLETION_TOKENS: completion_tokens,
        "llm.usage.total_tokens": prompt_tokens + completion_tokens,
        "llm.request.type": "chat",
        "gen_ai.prompt.0.content": "Classify this ticket.",
        "gen_ai.completion.0.content": "billing",
    }


def langfuse_attributes(*, trace_name: str = "rag-answer") -> dict[str, AttrValue]:
    """Langfuse SDK (OTel based): trace name and session on top of GenAI names."""
    return {
        a.LANGFUSE_TRACE_NAME: trace_name,
        a.LANGFUSE_SESSION_ID: "lf-session-42",
        "langfuse.observation.type": "generation",
        a.GEN_AI_OPERATION_NAME: a.OP_CHAT,
        a.GEN_AI_SYSTEM: "openai",
        a.GEN_AI_REQUEST_MODEL: "gpt-4.1-mini",
        a.GEN_AI_USAGE_INPUT_TOKENS: 500,
        a.GEN_AI_USAGE_OUTPUT_TOKENS: 60,
    }


def vllm_request_attributes(
    *,
    model: str = "meta-llama/Llama-3.1-8B-Instruct",
    prompt_tokens: int = 350,
    completion_tokens: int = 120,
    ttft_s: float = 0.045,
    queue_s: float = 0.003,
) -> dict[str, AttrValue]:
    """vLLM's ``llm_request`` span: old token names, no provider, no operation."""
    return {
        a.GEN_AI_RESPONSE_MODEL: model,
        "gen_ai.request.id": "cmpl-abc123",
        "gen_ai.request.temperature": 0.7,
        "gen_ai.request.top_p": 0.95,
        "gen_ai.request.max_tokens": 512,
        "gen_ai.request.n": 1,
        a.GEN_AI_USAGE_PROMPT_TOKENS: prompt_tokens,
        a.GEN_AI_USAGE_COMPLETION_TOKENS: completion_tokens,
        "gen_ai.usage.num_sequences": 1,
        a.GEN_AI_LATENCY_TIME_IN_QUEUE: queue_s,
        a.GEN_AI_LATENCY_TIME_TO_FIRST_TOKEN: ttft_s,
        "gen_ai.latency.e2e": 1.2,
        "gen_ai.latency.time_in_scheduler": 0.001,
        "gen_ai.latency.time_in_model_forward": 0.9,
        "gen_ai.latency.time_in_model_execute": 1.0,
    }


def driftline_attributes(
    *,
    workflow: str = "support-triage",
    tenant: str = "acme",
    route: str = "/v1/answer",
    prompt_version: str = "p12",
) -> dict[str, AttrValue]:
    """The application's own governance keys."""
    return {
        a.DRIFTLINE_WORKFLOW: workflow,
        a.DRIFTLINE_TENANT: tenant,
        a.DRIFTLINE_ROUTE: route,
        a.DRIFTLINE_USER_HASH: "u-5f2c9a",
        a.DRIFTLINE_PROMPT_VERSION: prompt_version,
        a.DRIFTLINE_RETRIEVAL_INDEX_VERSION: "idx-2026-01",
        a.DRIFTLINE_ROUTER_VERSION: "r3",
        a.DRIFTLINE_MODEL_VERSION: "2024-08-06",
        a.DRIFTLINE_RETRY_ATTEMPT: 0,
        a.DRIFTLINE_KV_CACHE_USAGE: 0.42,
        a.DRIFTLINE_OUTPUT_VALIDATION_FAILED: False,
        a.DRIFTLINE_OUTPUT_CHARS: 1180,
        a.DRIFTLINE_TOOL_CALLS: 1,
    }


# --- whole traces for benchmarks ------------------------------------------------------------


def _llm_attributes(rng: random.Random, workflow: str) -> tuple[str, dict[str, AttrValue]]:
    """Name and attributes of one LLM call in a randomly chosen convention (~25 attributes)."""
    family = rng.randrange(6)
    tokens_in = rng.randint(50, 8000)
    tokens_out = rng.randint(10, 2000)
    extra: dict[str, AttrValue] = {
        "http.request.method": "POST",
        "url.full": "https://api.example.com/v1/chat/completions",
        "thread.id": rng.randint(1, 64),
        "code.function": "answer",
    }
    if family == 0:
        attrs = semconv_chat_attributes(
            input_tokens=tokens_in, output_tokens=tokens_out, cache_read_tokens=tokens_in // 4
        )
        name = "chat gpt-4o"
    elif family == 1:
        attrs = deprecated_semconv_attributes(prompt_tokens=tokens_in, completion_tokens=tokens_out)
        name = "chat claude-3-5-sonnet"
    elif family == 2:
        attrs = openinference_llm_attributes(prompt_tokens=tokens_in, completion_tokens=tokens_out)
        name = "ChatCompletion"
    elif family == 3:
        attrs = openllmetry_attributes(
            workflow=workflow, prompt_tokens=tokens_in, completion_tokens=tokens_out
        )
        name = "openai.chat"
    elif family == 4:
        attrs = langfuse_attributes(trace_name=workflow)
        name = "generation"
    else:
        attrs = vllm_request_attributes(prompt_tokens=tokens_in, completion_tokens=tokens_out)
        name = a.VLLM_REQUEST_SPAN_NAME
    if family != 5:
        attrs.update(driftline_attributes(workflow=workflow))
    attrs.update(extra)
    return name, attrs


def realistic_message(n_spans: int = 1000, *, seed: int = 0, services: int = 3) -> TracesData:
    """A collector-sized message: traces of one agent root, LLM calls in mixed conventions,
    and tool spans, spread over ``services`` resources. About 70% of spans are LLM calls."""
    rng = random.Random(seed)
    per_service: list[list[Span]] = [[] for _ in range(services)]
    made = 0
    while made < n_spans:
        trace_id = rng.randbytes(16)
        root_id = rng.randbytes(8)
        start = BASE_TIME_NS + rng.randrange(10**12)
        workflow = rng.choice(("support-triage", "rag-answer", "code-review"))
        bucket = per_service[rng.randrange(services)]
        bucket.append(
            make_span(
                trace_id=trace_id,
                span_id=root_id,
                name="invoke_agent triage",
                start_ns=start,
                end_ns=start + 9_000_000_000,
                attributes={
                    a.GEN_AI_OPERATION_NAME: a.OP_INVOKE_AGENT,
                    a.GEN_AI_AGENT_NAME: workflow + "-agent",
                    a.GEN_AI_CONVERSATION_ID: f"conv-{rng.randrange(1000)}",
                },
                kind=Span.SPAN_KIND_INTERNAL,
            )
        )
        made += 1
        for i in range(min(rng.randint(2, 8), n_spans - made)):
            span_start = start + (i + 1) * 1_000_000_000
            if rng.random() < 0.15:
                bucket.append(
                    make_span(
                        trace_id=trace_id,
                        span_id=rng.randbytes(8),
                        parent_span_id=root_id,
                        name="execute_tool search",
                        start_ns=span_start,
                        end_ns=span_start + 200_000_000,
                        attributes={
                            a.GEN_AI_OPERATION_NAME: a.OP_EXECUTE_TOOL,
                            a.GEN_AI_TOOL_NAME: "search",
                        },
                        kind=Span.SPAN_KIND_INTERNAL,
                    )
                )
            else:
                name, attrs = _llm_attributes(rng, workflow)
                error = rng.random() < 0.03
                bucket.append(
                    make_span(
                        trace_id=trace_id,
                        span_id=rng.randbytes(8),
                        parent_span_id=root_id,
                        name=name,
                        start_ns=span_start,
                        end_ns=span_start + rng.randint(200, 20_000) * 1_000_000,
                        attributes=attrs,
                        status_code=STATUS_ERROR if error else STATUS_UNSET,
                        status_message="RateLimitError: slow down" if error else "",
                    )
                )
            made += 1
    resources = [
        make_resource_spans(
            spans,
            resource_attributes={
                a.SERVICE_NAME: f"service-{i}",
                a.DEPLOYMENT_ENVIRONMENT_NAME: "prod",
                "service.version": "1.4.2",
                "host.name": f"node-{i}",
                "telemetry.sdk.language": "python",
            },
        )
        for i, spans in enumerate(per_service)
        if spans
    ]
    return traces_data(*resources)
