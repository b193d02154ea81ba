"""rag-search: retrieval-augmented answers from Anthropic models, OpenInference names.

A request is a CHAIN span with a RETRIEVER span (the index version it read) and an
LLM span. The prompt is a cached instruction prefix plus retrieved passages, so
most calls read the prefix from Anthropic's prompt cache and a few write it. The
app names no workflow: the workflow comes from the resource's ``service.name``.
"""

from __future__ import annotations

from typing import Final

import numpy as np

from driftline.schemas import attributes as a

from .. import conventions
from ..incidents import Effects
from ..plan import AttrValue, LlmCall, SpanPlan, TraceContext
from .common import Traffic, error_status, failed_call, failure_duration_s, output_tokens, us
from .common import with_retries as retried

NAME: Final = "rag-search"
SERVICE: Final = "rag-search"
SCOPE: Final = "openinference.instrumentation.anthropic"
APP_SCOPE: Final = "rag-search.pipeline"
PROVIDER: Final = "anthropic"
SONNET: Final = "claude-3-5-sonnet-20241022"
HAIKU: Final = "claude-3-5-haiku-20241022"
APPROVED_MODELS: Final = (SONNET, HAIKU)
UNAPPROVED_MODEL: Final = "claude-3-opus-20240229"
PROMPT_VERSION: Final = "rag-v8"
INDEX_VERSION: Final = "kb-2024.11.1"
CANARY_INDEX_VERSION: Final = "kb-2024.12.0"
ROUTES: Final = ("/search/quick", "/search/deep")
_ROUTE_WEIGHTS: Final = np.array([0.7, 0.3])
_DECODE_TOKENS_PER_S: Final = {SONNET: 60.0, HAIKU: 110.0, UNAPPROVED_MODEL: 28.0}
CACHED_PREFIX_TOKENS: Final = 1536
MAX_TOKENS: Final = 2048


def build(
    traffic: Traffic, effects: Effects, start_us: int, environment: str
) -> tuple[TraceContext, SpanPlan]:
    tenant = traffic.tenant()
    user = traffic.user_hash(tenant)
    route = traffic.pick(ROUTES, _ROUTE_WEIGHTS)
    canary = traffic.chance(effects.canary_share)
    ctx = TraceContext(
        workflow=NAME,
        service=SERVICE,
        environment=environment,
        tenant=tenant,
        route=route,
        session_id=traffic.session_id(user, p_continue=0.5),
        user_hash=user,
        prompt_version=PROMPT_VERSION,
        retrieval_index_version=CANARY_INDEX_VERSION if canary else INDEX_VERSION,
    )
    context_attrs: dict[str, AttrValue] = {
        **conventions.driftline_context(ctx, workflow=False),
        a.SESSION_ID: ctx.session_id,
    }
    root = SpanPlan(name="rag_pipeline", start_us=start_us, end_us=start_us, scope=APP_SCOPE)
    root.attributes.update({a.OPENINFERENCE_SPAN_KIND: "CHAIN", **context_attrs})
    retrieve_start = start_us + us(0.002)
    retrieve = SpanPlan(
        name="retrieve",
        start_us=retrieve_start,
        end_us=retrieve_start + us(0.04 + 0.11 * traffic.rng.random()),
        scope=APP_SCOPE,
        attributes={a.OPENINFERENCE_SPAN_KIND: "RETRIEVER", **context_attrs},
        status="ok",
    )
    root.children.append(retrieve)
    model = _pick_model(traffic, effects, route)

    def make_call(begin: int, attempt: int) -> SpanPlan:
        return _llm(traffic, effects, begin, attempt, model, canary, context_attrs)

    def make_failure(begin: int, attempt: int, error_type: str) -> SpanPlan:
        call = failed_call(_base_call(model), error_type, attempt)
        end = begin + us(failure_duration_s(traffic, error_type))
        return _span(call, begin, end, context_attrs)

    attempts, end = retried(traffic, effects, retrieve.end_us + us(0.001), make_call, make_failure)
    root.children.extend(attempts)
    root.end_us = end + us(0.002)
    if attempts[-1].status == "error":
        error_status(root, attempts[-1].status_message)
    else:
        root.status = "ok"
    return ctx, root


def _pick_model(traffic: Traffic, effects: Effects, route: str) -> str:
    if traffic.chance(effects.unapproved_share):
        return UNAPPROVED_MODEL
    if effects.cost_factor > 1 or route == "/search/deep":
        return SONNET
    return HAIKU if traffic.chance(0.85) else SONNET


def _base_call(model: str) -> LlmCall:
    # OpenInference records one model name (``llm.model_name``); the precedence table
    # reads it as the request model, and nothing says which model answered.
    return LlmCall(
        operation=a.OP_CHAT,
        provider=PROVIDER,
        request_model=model,
        response_model="",
        model_version=model,
    )


def _llm(
    traffic: Traffic,
    effects: Effects,
    start_us: int,
    attempt: int,
    model: str,
    canary: bool,
    context_attrs: dict[str, AttrValue],
) -> SpanPlan:
    call = _base_call(model)
    call.retry_attempt = attempt
    passages = traffic.lognormal_int(2500 * (1.4 if canary else 1.0), 0.5, lo=200, hi=150_000)
    call.input_tokens = round((CACHED_PREFIX_TOKENS + passages + 60) * effects.cost_factor)
    if traffic.chance(0.8):
        call.cache_read_tokens = CACHED_PREFIX_TOKENS
    elif traffic.chance(0.5):
        call.cache_write_tokens = CACHED_PREFIX_TOKENS
    call.output_tokens, truncated = output_tokens(traffic, effects, 280, 0.6, MAX_TOKENS)
    call.finish_reason = "length" if truncated else traffic.finish_reason(tool_share=0.0)
    call.output_chars = traffic.output_chars(call.output_tokens)
    call.validation_failed = traffic.chance(
        0.015 * (2 if canary else 1) + (0.3 if truncated else 0)
    )
    uncached = call.input_tokens - call.cache_read_tokens
    duration = traffic.ttft_s(uncached, base_s=0.5) + traffic.decode_s(
        call.output_tokens, _DECODE_TOKENS_PER_S[model]
    )
    span = _span(call, start_us, start_us + us(duration), context_attrs)
    span.status = "ok"
    return span


def _span(
    call: LlmCall, start_us: int, end_us: int, context_attrs: dict[str, AttrValue]
) -> SpanPlan:
    attrs = {
        **context_attrs,
        **conventions.openinference_llm(call),
        **conventions.driftline_call(call),
    }
    span = SpanPlan(
        name="Messages", start_us=start_us, end_us=end_us, scope=SCOPE, attributes=attrs, call=call
    )
    if call.error_type:
        error_status(span, call.error_type)
    return span
