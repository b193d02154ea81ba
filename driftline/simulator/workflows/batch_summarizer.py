"""batch-summarizer: nightly document summaries on a self-hosted vLLM server.

OpenLLMetry (Traceloop) names the workflow and task spans; each document's model
call is vLLM's own ``llm_request`` SERVER span with the old token names, latencies
in seconds and the server's KV-cache usage. Queueing and time to first token grow
sharply as the KV cache fills. The model is not in any public price table, so its
cost is unknown by design.
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

NAME: Final = "batch-summarizer"
SERVICE: Final = "batch-summarizer"
SCOPE: Final = "traceloop.sdk"
SERVER_SCOPE: Final = "vllm.llm_engine"
MODEL: Final = "meta-llama/Llama-3.1-8B-Instruct"
APPROVED_MODELS: Final = (MODEL,)
UNAPPROVED_MODEL: Final = "mistralai/Mistral-7B-Instruct-v0.3"
MODEL_VERSION: Final = "llama-3.1-8b-instruct@r1"
CANARY_MODEL_VERSION: Final = "llama-3.1-8b-instruct@r2-awq"
PROMPT_VERSION: Final = "summarize-v3"
MAX_TOKENS: Final = 512


def build(
    traffic: Traffic, effects: Effects, start_us: int, environment: str
) -> tuple[TraceContext, SpanPlan]:
    tenant = traffic.tenant()
    canary = traffic.chance(effects.canary_share)
    ctx = TraceContext(
        workflow=NAME,
        service=SERVICE,
        environment=environment,
        tenant=tenant,
        route="/batch/nightly",
        session_id=f"job-{int(traffic.rng.integers(0, 2**40)):010x}",
        user_hash="",
        prompt_version=PROMPT_VERSION,
        model_version=CANARY_MODEL_VERSION if canary else MODEL_VERSION,
    )
    context_attrs: dict[str, AttrValue] = {
        **conventions.driftline_context(ctx, workflow=False),
        a.TRACELOOP_WORKFLOW_NAME: NAME,
        a.TRACELOOP_SESSION_ID: ctx.session_id,
    }
    del context_attrs[a.DRIFTLINE_USER_HASH]  # a batch job has no end user
    root = SpanPlan(
        name="summarize_batch.workflow",
        start_us=start_us,
        end_us=start_us,
        scope=SCOPE,
        attributes={**context_attrs, a.TRACELOOP_SPAN_KIND: "workflow"},
    )
    model = UNAPPROVED_MODEL if traffic.chance(effects.unapproved_share) else MODEL
    t = start_us + us(0.003)
    for _ in range(3 + int(traffic.rng.integers(0, 6))):
        task = SpanPlan(
            name="summarize_doc.task",
            start_us=t,
            end_us=t,
            scope=SCOPE,
            attributes={**context_attrs, a.TRACELOOP_SPAN_KIND: "task"},
        )

        def make_call(begin: int, attempt: int) -> SpanPlan:
            return _request(traffic, effects, begin, attempt, model, ctx.model_version, canary)

        def make_failure(begin: int, attempt: int, error_type: str) -> SpanPlan:
            call = failed_call(_base_call(model, ctx.model_version), error_type, attempt)
            call.response_model = model
            end = begin + us(failure_duration_s(traffic, error_type))
            return _span(call, begin, end)

        attempts, end = retried(traffic, effects, t + us(0.001), make_call, make_failure)
        task.children.extend(attempts)
        task.end_us = end + us(0.001)
        if attempts[-1].status == "error":
            error_status(task, attempts[-1].status_message)
        root.children.append(task)
        t = task.end_us + us(0.002)
    root.end_us = t
    return ctx, root


def _base_call(model: str, model_version: str) -> LlmCall:
    # vLLM names only the model it served; a request for another model fails.
    return LlmCall(
        operation=a.OP_CHAT,
        provider=a.VLLM_PROVIDER,
        request_model="",
        response_model=model,
        model_version=model_version,
        app_context=False,
    )


def _request(
    traffic: Traffic,
    effects: Effects,
    start_us: int,
    attempt: int,
    model: str,
    model_version: str,
    canary: bool,
) -> SpanPlan:
    call = _base_call(model, model_version)
    call.retry_attempt = attempt
    call.input_tokens = traffic.lognormal_int(4000 * effects.cost_factor, 0.7, lo=100, hi=120_000)
    median_out = 300 * (0.85 if canary else 1.0)
    call.output_tokens, _ = output_tokens(traffic, effects, median_out, 0.5, MAX_TOKENS)
    if effects.kv_pressure is None:
        kv = float(traffic.rng.beta(4.0, 6.0))
    else:
        kv = float(np.clip(effects.kv_pressure + 0.04 * traffic.rng.standard_normal(), 0, 1))
    call.kv_cache_usage = round(kv, 4)
    # Requests wait for KV blocks: the queue explodes as the cache fills.
    queue_s = (
        0.02 * float(np.exp(0.5 * traffic.rng.standard_normal())) * float(np.exp(8 * (kv - 0.4)))
    )
    call.queue_ms = round(queue_s * 1000, 3)
    ttft_s = queue_s + call.input_tokens * 8e-5
    call.ttft_ms = round(ttft_s * 1000, 3)
    speed = (80.0 if canary else 70.0) * (1 - 0.5 * kv**4)
    duration = ttft_s + traffic.decode_s(call.output_tokens, speed)
    return _span(call, start_us, start_us + us(duration))


def _span(call: LlmCall, start_us: int, end_us: int) -> SpanPlan:
    attrs = {**conventions.vllm_request(call), **conventions.driftline_call(call)}
    # The server reports the model build it serves, nothing about the app's bundle.
    for key in (a.DRIFTLINE_TOOL_CALLS, a.DRIFTLINE_OUTPUT_VALIDATION_FAILED):
        attrs.pop(key, None)
    span = SpanPlan(
        name=a.VLLM_REQUEST_SPAN_NAME,
        start_us=start_us,
        end_us=end_us,
        scope=SERVER_SCOPE,
        kind="server",
        attributes=attrs,
        call=call,
    )
    if call.error_type:
        error_status(span, call.error_type)
    return span
