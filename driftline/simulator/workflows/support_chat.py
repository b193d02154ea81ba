"""support-chat: a customer-support API calling OpenAI, OTel GenAI current names.

A request is an HTTP server span with, sometimes, an embeddings lookup and then one
chat completion (streamed most of the time, so it records time to first chunk).
The router sends technical questions to gpt-4o more often than the rest.
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

NAME: Final = "support-chat"
SERVICE: Final = "support-api"
SCOPE: Final = "opentelemetry.instrumentation.openai_v2"
APP_SCOPE: Final = "support-api.handlers"
PROVIDER: Final = "openai"
# request model -> the dated snapshot OpenAI answers with
SNAPSHOTS: Final = {
    "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
    "gpt-4o": "gpt-4o-2024-08-06",
    "gpt-4-turbo": "gpt-4-turbo-2024-04-09",
}
APPROVED_MODELS: Final = ("gpt-4o-mini", "gpt-4o", "text-embedding-3-small")
UNAPPROVED_MODEL: Final = "gpt-4-turbo"
EMBEDDING_MODEL: Final = "text-embedding-3-small"
PROMPT_VERSION: Final = "support-v12"
CANARY_PROMPT_VERSION: Final = "support-v13"
ROUTER_VERSION: Final = "router-v3"
ROUTES: Final = ("/chat/billing", "/chat/technical", "/chat/general")
_ROUTE_WEIGHTS: Final = np.array([0.3, 0.25, 0.45])
_DECODE_TOKENS_PER_S: Final = {"gpt-4o-mini": 85.0, "gpt-4o": 55.0, "gpt-4-turbo": 30.0}
MAX_TOKENS: Final = 1024


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
        session_id=traffic.session_id(user, p_continue=0.7),
        user_hash=user,
        prompt_version=CANARY_PROMPT_VERSION if canary else PROMPT_VERSION,
        router_version=ROUTER_VERSION,
    )
    model = _route_model(traffic, effects, route)
    context_attrs = conventions.driftline_context(ctx, workflow=True)
    context_attrs[a.GEN_AI_CONVERSATION_ID] = ctx.session_id
    root = SpanPlan(
        name="POST /v1/chat", start_us=start_us, end_us=start_us, scope=APP_SCOPE, kind="server"
    )
    root.attributes.update(conventions.driftline_context(ctx, workflow=True))
    t = start_us + us(0.004 + 0.01 * traffic.rng.random())
    if traffic.chance(0.25):
        embed = _embeddings(traffic, t, context_attrs)
        root.children.append(embed)
        t = embed.end_us + us(0.002)

    def make_call(begin: int, attempt: int) -> SpanPlan:
        return _chat(traffic, effects, begin, attempt, model, canary, context_attrs)

    def make_failure(begin: int, attempt: int, error_type: str) -> SpanPlan:
        call = failed_call(_base_call(model), error_type, attempt)
        end = begin + us(failure_duration_s(traffic, error_type))
        return _span(call, begin, end, context_attrs)

    attempts, end = retried(traffic, effects, t, make_call, make_failure)
    root.children.extend(attempts)
    root.end_us = end + us(0.003 + 0.01 * traffic.rng.random())
    if attempts[-1].status == "error":
        error_status(root, attempts[-1].status_message)
    return ctx, root


def _route_model(traffic: Traffic, effects: Effects, route: str) -> str:
    if traffic.chance(effects.unapproved_share):
        return UNAPPROVED_MODEL
    if effects.cost_factor > 1:
        return "gpt-4o"
    p_large = 0.6 if route == "/chat/technical" else 0.1
    return "gpt-4o" if traffic.chance(p_large) else "gpt-4o-mini"


def _base_call(model: str) -> LlmCall:
    return LlmCall(
        operation=a.OP_CHAT,
        provider=PROVIDER,
        request_model=model,
        response_model=SNAPSHOTS[model],
        model_version=SNAPSHOTS[model],
    )


def _chat(
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
    prompt = traffic.lognormal_int(900 * effects.cost_factor, 0.6, lo=120, hi=120_000)
    call.input_tokens = prompt
    if prompt >= 1024 and traffic.chance(0.55):
        # OpenAI caches prompt prefixes in 128-token steps from 1024 tokens up.
        cached = int(prompt * (0.5 + 0.4 * traffic.rng.random())) // 128 * 128
        call.cache_read_tokens = cached if cached >= 1024 else 0
    median_out = 170 * (1.3 if canary else 1.0)
    call.output_tokens, truncated = output_tokens(traffic, effects, median_out, 0.7, MAX_TOKENS)
    call.finish_reason = "length" if truncated else traffic.finish_reason(tool_share=0.05)
    if call.finish_reason == "tool_calls":
        call.tool_calls = 1 + int(traffic.chance(0.3))
    call.output_chars = traffic.output_chars(call.output_tokens)
    p_invalid = 0.02 * (4 if canary else 1) + (0.3 if truncated else 0.0)
    call.validation_failed = traffic.chance(p_invalid)
    ttft = traffic.ttft_s(prompt, base_s=0.3)
    if traffic.chance(0.7):
        call.ttft_ms = round(ttft * 1000, 3)
    duration = ttft + traffic.decode_s(call.output_tokens, _DECODE_TOKENS_PER_S[model])
    return _span(call, start_us, start_us + us(duration), context_attrs)


def _embeddings(traffic: Traffic, start_us: int, context_attrs: dict[str, AttrValue]) -> SpanPlan:
    call = LlmCall(
        operation=a.OP_EMBEDDINGS,
        provider=PROVIDER,
        request_model=EMBEDDING_MODEL,
        response_model=EMBEDDING_MODEL,
        input_tokens=traffic.lognormal_int(40, 0.5, lo=3, hi=8000),
    )
    duration = 0.06 + 0.05 * traffic.rng.random()
    return _span(call, start_us, start_us + us(duration), context_attrs)


def _span(
    call: LlmCall, start_us: int, end_us: int, context_attrs: dict[str, AttrValue]
) -> SpanPlan:
    attrs = {**context_attrs, **conventions.genai(call), **conventions.driftline_call(call)}
    if call.operation == a.OP_EMBEDDINGS:
        for key in (a.DRIFTLINE_TOOL_CALLS, a.DRIFTLINE_OUTPUT_VALIDATION_FAILED):
            attrs.pop(key, None)
    span = SpanPlan(
        name=f"{call.operation} {call.request_model}",
        start_us=start_us,
        end_us=end_us,
        scope=SCOPE,
        kind="client",
        attributes=attrs,
        call=call,
    )
    if call.error_type:
        error_status(span, call.error_type)
    return span
