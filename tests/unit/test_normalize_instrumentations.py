"""streams.normalize: the corrections for particular instrumentations (schemas.instrumentations)
and for every span (JSON-text finish reasons, aliases, the exception event, tokenless calls).

The spans carry what the named library version emitted against the stub (the attribute
names and shapes; see tests/integration/test_instrumentation_matrix.py for the real runs).
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from driftline.schemas import attributes as a
from driftline.schemas.instrumentations import SCOPE_RULES, rule_for_scope, version_tuple
from driftline.streams import normalize as normalize_module
from driftline.streams.normalize import NormalizedBatch, normalize_message
from tests.utils import otlp_factory as f

TRACE_ID = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")
BASE_NS = f.BASE_TIME_NS
MS = 1_000_000


def span(
    number: int,
    attributes: dict[str, Any],
    *,
    start_ms: float = 0,
    duration_ms: float = 100,
    status_code: int = f.STATUS_UNSET,
    status_message: str = "",
    exception_type: str = "",
) -> Span:
    start_ns = BASE_NS + int(start_ms * MS)
    built = f.make_span(
        trace_id=TRACE_ID,
        span_id=number.to_bytes(8, "big"),
        start_ns=start_ns,
        end_ns=start_ns + int(duration_ms * MS),
        attributes=attributes,
        status_code=status_code,
        status_message=status_message,
    )
    if exception_type:
        event = built.events.add()
        event.name = a.EXCEPTION_EVENT_NAME
        kv = event.attributes.add()
        kv.key, kv.value.string_value = a.EXCEPTION_TYPE, exception_type
    return built


def normalize(
    *spans: Span, scope: str = "driftline.tests", version: str = "1.0"
) -> NormalizedBatch:
    resource = f.make_resource_spans(spans, scope_name=scope, scope_version=version)
    return normalize_message(f.traces_data(resource).SerializeToString())


def chat(provider: str = "openai", **extra: Any) -> dict[str, Any]:
    return {
        a.GEN_AI_OPERATION_NAME: "chat",
        a.GEN_AI_PROVIDER_NAME: provider,
        a.GEN_AI_REQUEST_MODEL: "gpt-4o-mini",
        **extra,
    }


USAGE = {a.GEN_AI_USAGE_INPUT_TOKENS: 1200, a.GEN_AI_USAGE_OUTPUT_TOKENS: 7}


# --- logfire 5.4.0: a streamed call is an opening span and a log record -----------------------


def logfire_stream(duration_s: float = 0.0756) -> tuple[Span, Span]:
    opening = span(1, chat(**{"logfire.span_type": "span"}), duration_ms=6.8)
    record = span(
        2,
        chat(
            **USAGE,
            **{
                "logfire.span_type": "log",
                "duration": duration_s,
                a.GEN_AI_RESPONSE_ID: "chatcmpl-stub2",
                a.GEN_AI_RESPONSE_FINISH_REASONS: '["stop"]',
            },
        ),
        start_ms=82.4,
        duration_ms=0,
    )
    return opening, record


def test_logfire_stream_is_one_call_lasting_its_duration() -> None:
    batch = normalize(*logfire_stream(), scope="logfire.openai", version="5.4.0")
    (event,) = batch.events
    assert event["span_id"] == (2).to_bytes(8, "big").hex()
    assert event["latency_ms"] == 75.6
    assert event["end_ts"] - event["start_ts"] == 75_600
    assert (event["input_tokens"], event["output_tokens"], event["finish_reason"]) == (
        1200,
        7,
        "stop",
    )
    opening, record = batch.spans
    assert opening["is_llm_call"] is False and record["is_llm_call"] is True
    assert record["start_ts"] == event["start_ts"]
    assert batch.tokenless == {} and batch.rejects == []


def test_the_same_spans_under_another_scope_are_two_calls() -> None:
    batch = normalize(*logfire_stream(), scope="some.other.library")
    assert len(batch.events) == 2
    assert [e["latency_ms"] for e in batch.events] == [6.8, 0.0]
    assert batch.tokenless == {("no_usage", "some.other.library"): 1}


def test_a_failed_logfire_call_without_usage_stays_a_call() -> None:
    failed = span(
        1,
        chat(**{"logfire.span_type": "span"}),
        status_code=f.STATUS_ERROR,
        status_message="InternalServerError: Error code: 500 - stub failure",
    )
    (event,) = normalize(failed, scope="logfire.openai", version="5.4.0").events
    assert (event["status"], event["error_type"]) == ("error", "InternalServerError")


def test_a_logfire_duration_beyond_the_bounds_rejects_the_span_and_leaves_nothing() -> None:
    _, record = logfire_stream(duration_s=10**9)
    batch = normalize(record, scope="logfire.anthropic", version="5.4.0")
    assert [r.reason for r in batch.rejects] == ["out_of_range:duration"]
    assert batch.events == [] and batch.spans == []


# --- openlit 1.45.0: Anthropic input without cache, TTFT on every call -------------------------

OPENLIT_ANTHROPIC = chat(
    "anthropic",
    **{
        a.GEN_AI_USAGE_INPUT_TOKENS: 1500,
        a.GEN_AI_USAGE_OUTPUT_TOKENS: 7,
        a.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: 1024,
        a.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS: 297,
        a.GEN_AI_SERVER_TIME_TO_FIRST_TOKEN: 0.0626,
        "gen_ai.request.stream": False,
    },
)


def test_openlit_anthropic_input_tokens_gain_the_cache_reads_and_writes() -> None:
    (event,) = normalize(
        span(1, OPENLIT_ANTHROPIC), scope="openlit.instrumentation.anthropic"
    ).events
    assert (event["input_tokens"], event["cache_read_tokens"], event["cache_write_tokens"]) == (
        2821,
        1024,
        297,
    )
    # Not streamed: its "time to first token" is the latency, which no other library reports.
    assert event["ttft_ms"] is None


def test_openlit_streamed_calls_keep_their_time_to_first_token() -> None:
    streamed = {**OPENLIT_ANTHROPIC, "gen_ai.request.stream": True}
    (event,) = normalize(span(1, streamed), scope="openlit.instrumentation.anthropic").events
    assert event["ttft_ms"] == 62.6


def test_openlit_openai_input_tokens_already_include_the_cache() -> None:
    attributes = chat(**USAGE, **{a.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: 1024})
    (event,) = normalize(span(1, attributes), scope="openlit.instrumentation.openai").events
    assert event["input_tokens"] == 1200


def test_the_generic_rule_alone_leaves_a_smaller_cache_as_part_of_input() -> None:
    # 1024 + 297 < 1500: by the conventions the cache is part of input; only the scope says
    # otherwise.
    (event,) = normalize(span(1, OPENLIT_ANTHROPIC), scope="unknown.library").events
    assert event["input_tokens"] == 1500
    assert event["ttft_ms"] == 62.6


def bare_failure(**overrides: Any) -> Span:
    fields: dict[str, Any] = {
        "status_code": f.STATUS_ERROR,
        "status_message": "InternalServerError: Error code: 500 - {'type': 'error'}",
        "exception_type": "anthropic.InternalServerError",
    }
    fields.update(overrides)
    built = span(1, {}, **fields)
    built.name = "chat claude-sonnet-4-5"
    return built


def test_an_openlit_anthropic_failure_without_attributes_is_read_from_its_name() -> None:
    batch = normalize(bare_failure(), scope="openlit.instrumentation.anthropic")
    (event,) = batch.events
    assert (event["operation"], event["provider"], event["request_model"]) == (
        "chat",
        "anthropic",
        "claude-sonnet-4-5",
    )
    assert (event["status"], event["error_type"]) == ("error", "InternalServerError")
    (record,) = batch.spans
    assert record["is_llm_call"] is True and record["name"] == "chat claude-sonnet-4-5"
    assert batch.tokenless == {} and batch.rejects == []


def test_bare_spans_are_calls_only_when_failed_under_that_scope() -> None:
    assert normalize(bare_failure(), scope="openlit.instrumentation.openai").events == []
    assert normalize(bare_failure(), scope="other").events == []
    ok = bare_failure(status_code=f.STATUS_UNSET, status_message="")
    assert normalize(ok, scope="openlit.instrumentation.anthropic").events == []
    named = bare_failure()
    named.name = "POST /v1/messages"
    assert normalize(named, scope="openlit.instrumentation.anthropic").events == []


def test_litellm_model_names_lose_the_provider_prefix() -> None:
    attributes = {
        a.OPENINFERENCE_SPAN_KIND: "LLM",
        a.LLM_PROVIDER: "openai",
        a.LLM_MODEL_NAME: "openai/gpt-4o-mini",
        a.LLM_TOKEN_COUNT_PROMPT: 1200,
        a.LLM_TOKEN_COUNT_COMPLETION: 7,
    }
    scope = "openinference.instrumentation.litellm"
    (event,) = normalize(span(1, attributes), scope=scope, version="0.1.51").events
    (plain,) = normalize(span(1, {**attributes, a.LLM_MODEL_NAME: "gpt-4o-mini"})).events
    assert event["request_model"] == "gpt-4o-mini"
    assert event["bundle_id"] == plain["bundle_id"]
    # Another provider's prefix is part of the name (a router's model id), and stays.
    other = {**attributes, a.LLM_MODEL_NAME: "azure/gpt-4o-mini"}
    assert normalize(span(1, other), scope=scope).events[0]["request_model"] == "azure/gpt-4o-mini"


LITELLM_ANTHROPIC_USAGE = (
    "{'completion_tokens': 7, 'prompt_tokens': 2821, 'total_tokens': 2828, "
    "'completion_tokens_details': {'reasoning_tokens': 0, 'text_tokens': 7}, "
    "'prompt_tokens_details': {'cached_tokens': 1024, 'cache_creation_tokens': 297}, "
    "'cache_creation_input_tokens': 297, 'cache_read_input_tokens': 1024}"
)


def litellm_span(usage: str, **extra: Any) -> Span:
    attributes = chat(
        "anthropic",
        **{
            a.GEN_AI_USAGE_INPUT_TOKENS: 2821,
            a.GEN_AI_USAGE_OUTPUT_TOKENS: 7,
            "metadata.usage_object": usage,
            **extra,
        },
    )
    return span(1, attributes)


def test_litellm_callback_cache_tokens_come_from_its_usage_object() -> None:
    (event,) = normalize(litellm_span(LITELLM_ANTHROPIC_USAGE), scope="litellm").events
    assert (event["input_tokens"], event["cache_read_tokens"], event["cache_write_tokens"]) == (
        2821,
        1024,
        297,
    )
    assert "metadata.usage_object" not in event["attributes"]


def test_litellm_reasoning_tokens_and_exclusive_counts() -> None:
    usage = (
        "{'prompt_tokens': 100, 'completion_tokens_details': {'reasoning_tokens': 64}, "
        "'cache_read_input_tokens': 150}"
    )
    span_ = litellm_span(usage, **{a.GEN_AI_USAGE_INPUT_TOKENS: 100})
    (event,) = normalize(span_, scope="litellm").events
    assert (event["reasoning_tokens"], event["cache_read_tokens"]) == (64, 150)
    assert event["input_tokens"] == 250  # a cache larger than the input is exclusive


def test_the_span_s_own_counts_win_over_the_usage_object() -> None:
    own = {a.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: 5}
    (event,) = normalize(litellm_span(LITELLM_ANTHROPIC_USAGE, **own), scope="litellm").events
    assert (event["cache_read_tokens"], event["cache_write_tokens"]) == (5, 297)


@given(st.text(max_size=300))
def test_any_usage_text_is_read_or_ignored_never_run(text: str) -> None:
    batch = normalize(litellm_span(text), scope="litellm")
    (event,) = batch.events
    assert event["input_tokens"] >= 2821 and event["output_tokens"] == 7


def test_usage_text_that_is_not_a_plain_literal_adds_nothing() -> None:
    for text in (
        "__import__('os').system('true')",
        "{'cache_read_input_tokens': -5}",
        "{'cache_read_input_tokens': 10**12}",
        "[1, 2]",
        "{" * 3000,
    ):
        (event,) = normalize(litellm_span(text), scope="litellm").events
        assert (event["cache_read_tokens"], event["cache_write_tokens"]) == (0, 0), text


# --- rules and versions -----------------------------------------------------------------------


def test_every_rule_names_its_library_version_and_scopes() -> None:
    for rule in SCOPE_RULES:
        assert rule.library and rule.scope_names and version_tuple(rule.seen_version)
        assert rule.deviation and rule.handling
        for name in rule.scope_names:
            assert rule_for_scope(name, rule.seen_version) is rule


def test_a_rule_stops_at_the_version_that_fixed_it(monkeypatch: Any) -> None:
    from driftline.schemas import instrumentations

    fixed = instrumentations.ScopeRule(
        library="lib",
        scope_names=("lib.scope",),
        seen_version="1.2.0",
        fixed_in=(1, 3),
        deviation="d",
        handling="h",
    )
    monkeypatch.setattr(instrumentations, "SCOPE_RULES", (fixed,))
    instrumentations.rule_for_scope.cache_clear()
    try:
        assert instrumentations.rule_for_scope("lib.scope", "1.2.9") is fixed
        assert instrumentations.rule_for_scope("lib.scope", "1.3.0") is None
        assert instrumentations.rule_for_scope("lib.scope", "") is fixed  # unknown: assume old
    finally:
        instrumentations.rule_for_scope.cache_clear()


@given(st.lists(st.integers(min_value=0, max_value=10**6), min_size=1, max_size=5), st.text())
def test_version_tuple_reads_the_leading_numbers(parts: list[int], suffix: str) -> None:
    text = ".".join(map(str, parts))
    assert version_tuple(text) == tuple(parts)
    if not suffix[:1].isdigit() and not suffix.startswith("."):
        assert version_tuple(text + suffix) == tuple(parts)


# --- for every span ----------------------------------------------------------------------------


@given(
    st.lists(
        st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=0x2FF), max_size=40),
        max_size=4,
    )
)
def test_finish_reasons_as_json_text_read_like_the_array(reasons: list[str]) -> None:
    as_text = span(1, chat(**USAGE, **{a.GEN_AI_RESPONSE_FINISH_REASONS: json.dumps(reasons)}))
    as_array = span(1, chat(**USAGE, **{a.GEN_AI_RESPONSE_FINISH_REASONS: reasons}))
    from_text, from_array = normalize(as_text), normalize(as_array)
    assert [r.reason for r in from_text.rejects] == [r.reason for r in from_array.rejects]
    assert [e["finish_reason"] for e in from_text.events] == [
        e["finish_reason"] for e in from_array.events
    ]


def test_text_that_only_looks_like_json_stays_as_it_is() -> None:
    for text in ('["stop"', "[1, 2]", "[]x"):
        attributes = chat(**USAGE, **{a.GEN_AI_RESPONSE_FINISH_REASONS: text})
        (event,) = normalize(span(1, attributes)).events
        assert event["finish_reason"] == text


def test_pydantic_ai_reasoning_tokens_and_time_to_first_chunk() -> None:
    attributes = chat(
        **USAGE,
        **{
            a.GEN_AI_USAGE_DETAILS_REASONING_TOKENS: 64,
            a.GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK: 0.0565,
        },
    )
    (event,) = normalize(span(1, attributes), scope="pydantic-ai", version="2.68.0").events
    assert (event["reasoning_tokens"], event["ttft_ms"]) == (64, 56.5)


def failed_span(status_message: str, exception_type: str, **extra: Any) -> Span:
    return span(
        1,
        chat(**extra),
        status_code=f.STATUS_ERROR,
        status_message=status_message,
        exception_type=exception_type,
    )


def test_the_error_class_comes_from_the_exception_event_without_its_module() -> None:
    # OpenInference Anthropic 3.1.0: no error.type, a status message without the class.
    failed = failed_span("500 stub failure (path: /v1/messages)", "anthropic.InternalServerError")
    (event,) = normalize(failed).events
    assert event["error_type"] == "InternalServerError"


def test_error_type_and_the_status_message_come_before_the_exception_event() -> None:
    (event,) = normalize(failed_span("x", "a.B", **{a.ERROR_TYPE: "Timeout"})).events
    assert event["error_type"] == "Timeout"
    (event,) = normalize(failed_span("ModelServerError: 500", "pkg.Other")).events
    assert event["error_type"] == "ModelServerError"


def test_no_exception_event_or_an_odd_class_gives_no_error_type() -> None:
    assert normalize(failed_span("boom", "")).events[0]["error_type"] == ""
    assert normalize(failed_span("boom", "not a class!")).events[0]["error_type"] == ""


def test_successful_calls_without_tokens_are_counted_by_reason_and_scope() -> None:
    batch = normalize(
        span(1, chat()),
        span(2, chat(**{a.GEN_AI_USAGE_INPUT_TOKENS: 0, a.GEN_AI_USAGE_OUTPUT_TOKENS: 0})),
        span(3, chat(**USAGE)),
        span(4, chat(), status_code=f.STATUS_ERROR, status_message="Timeout: slow"),
        scope="some.library",
    )
    assert len(batch.events) == 4  # still calls: they happened
    assert batch.tokenless == {("no_usage", "some.library"): 1, ("zero_usage", "some.library"): 1}
    assert batch.counters() == {"decode.tokenless.no_usage": 1, "decode.tokenless.zero_usage": 1}


def test_a_span_naming_a_model_without_operation_or_tokens_is_counted_not_called() -> None:
    # A Langfuse generation (or any unknown instrumentation) that reports no usage: nothing
    # says it is a call, so it is no event, but it is counted with its reason and scope.
    generation = {"langfuse.observation.type": "generation", a.GEN_AI_REQUEST_MODEL: "gpt-4o"}
    batch = normalize(span(1, generation), span(2, generation), scope="langfuse.sdk")
    assert batch.events == [] and batch.rejects == []
    assert [r["is_llm_call"] for r in batch.spans] == [False, False]
    assert batch.tokenless == {("not_a_call", "langfuse.sdk"): 2}
    assert batch.counters() == {"decode.tokenless.not_a_call": 2}
    # With token counts it is a call; with an operation it is what the operation says.
    (event,) = normalize(span(1, {**generation, **USAGE})).events
    assert event["input_tokens"] == 1200
    for operation in (a.OP_INVOKE_AGENT, a.OP_EXECUTE_TOOL):
        agent = normalize(span(1, {**generation, a.GEN_AI_OPERATION_NAME: operation}))
        assert (agent.events, agent.tokenless) == ([], {})
    assert normalize(span(1, {"langfuse.observation.type": "span"})).tokenless == {}


def test_counted_alike_by_the_fast_and_the_exact_path(monkeypatch: Any) -> None:
    spans = (
        span(1, {a.GEN_AI_REQUEST_MODEL: "gpt-4o"}),
        span(2, chat()),
        span(3, {a.LLM_MODEL_NAME: "m", a.OPENINFERENCE_SPAN_KIND: "RERANKER"}),
    )
    fast = normalize(*spans, scope="s")

    def doubt(*args: Any) -> bool:
        raise RuntimeError("the exact path decides")

    monkeypatch.setattr(normalize_module, "_normalize_span_fast", doubt)
    exact = normalize(*spans, scope="s")
    assert exact.tokenless == fast.tokenless == {("not_a_call", "s"): 1, ("no_usage", "s"): 1}
    assert (exact.events, exact.spans) == (fast.events, fast.spans)


@given(
    st.sampled_from(["logfire.openai", "openlit.instrumentation.anthropic", "other"]),
    st.dictionaries(
        st.sampled_from(
            [
                "logfire.span_type",
                "duration",
                "gen_ai.request.stream",
                a.GEN_AI_USAGE_INPUT_TOKENS,
                a.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS,
                a.GEN_AI_RESPONSE_ID,
                a.GEN_AI_PROVIDER_NAME,
            ]
        ),
        st.one_of(
            st.integers(-5, 5000),
            st.floats(allow_nan=True),
            st.booleans(),
            st.sampled_from(["log", "span", "anthropic", ""]),
        ),
    ),
)
def test_scope_rules_never_raise_and_leave_events_and_records_paired(
    scope: str, attributes: dict[str, Any]
) -> None:
    batch = normalize(span(1, chat(**attributes)), scope=scope)
    assert len(batch.events) + len(batch.rejects) <= 1
    assert len(batch.spans) + len(batch.rejects) == 1
    if batch.events:
        assert batch.spans[0]["is_llm_call"] is True
        event = batch.events[0]
        assert event["input_tokens"] >= event["cache_read_tokens"] + event["cache_write_tokens"]
        assert event["latency_ms"] >= 0 and event["end_ts"] >= event["start_ts"]


@given(st.text(max_size=200))
@example("A\u00b2")  # a superscript digit: a word character, not an identifier's
def test_any_exception_type_gives_a_class_name_or_nothing(exception_type: str) -> None:
    batch = normalize(failed_span("no class here", exception_type))
    (event,) = batch.events
    name = event["error_type"]
    assert name == "" or (name.isidentifier() and name == exception_type.rsplit(".", 1)[-1])
