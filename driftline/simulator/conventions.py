"""How each instrumentation convention spells an LLM call as span attributes.

One function per convention in the wild: OpenTelemetry GenAI (current and
pre-1.27 names), OpenInference, and vLLM's ``llm_request`` server span. Plus the
``driftline.*`` keys an application adds for governance. Every key comes from
``schemas.attributes``.
"""

from __future__ import annotations

from driftline.schemas import attributes as a

from .plan import AttrValue, LlmCall, TraceContext


def _seconds(ms: float) -> float:
    return round(ms / 1000.0, 6)


def driftline_context(ctx: TraceContext, *, workflow: bool) -> dict[str, AttrValue]:
    """The request-wide ``driftline.*`` keys; ``workflow`` only where the app names it."""
    attrs: dict[str, AttrValue] = {
        a.DRIFTLINE_TENANT: ctx.tenant,
        a.DRIFTLINE_ROUTE: ctx.route,
        a.DRIFTLINE_USER_HASH: ctx.user_hash,
        a.DRIFTLINE_PROMPT_VERSION: ctx.prompt_version,
    }
    if workflow:
        attrs[a.DRIFTLINE_WORKFLOW] = ctx.workflow
    if ctx.router_version:
        attrs[a.DRIFTLINE_ROUTER_VERSION] = ctx.router_version
    if ctx.retrieval_index_version:
        attrs[a.DRIFTLINE_RETRIEVAL_INDEX_VERSION] = ctx.retrieval_index_version
    return attrs


def driftline_call(call: LlmCall) -> dict[str, AttrValue]:
    """Per-call ``driftline.*`` keys an application records after the response."""
    attrs: dict[str, AttrValue] = {}
    if call.model_version:
        attrs[a.DRIFTLINE_MODEL_VERSION] = call.model_version
    if call.retry_attempt:
        attrs[a.DRIFTLINE_RETRY_ATTEMPT] = call.retry_attempt
    if call.error_type:
        return attrs
    attrs[a.DRIFTLINE_TOOL_CALLS] = call.tool_calls
    attrs[a.DRIFTLINE_OUTPUT_VALIDATION_FAILED] = call.validation_failed
    if call.output_chars is not None:
        attrs[a.DRIFTLINE_OUTPUT_CHARS] = call.output_chars
    return attrs


def genai(call: LlmCall, *, deprecated: bool = False) -> dict[str, AttrValue]:
    """OpenTelemetry GenAI semantic conventions; ``deprecated``: pre-1.27 names."""
    attrs: dict[str, AttrValue] = {
        a.GEN_AI_OPERATION_NAME: call.operation,
        (a.GEN_AI_SYSTEM if deprecated else a.GEN_AI_PROVIDER_NAME): call.provider,
        a.GEN_AI_REQUEST_MODEL: call.request_model,
    }
    if call.agent:
        attrs[a.GEN_AI_AGENT_NAME] = call.agent
    if call.error_type:
        attrs[a.ERROR_TYPE] = call.error_type
        return attrs
    attrs[a.GEN_AI_RESPONSE_MODEL] = call.response_model
    if deprecated:
        attrs[a.GEN_AI_USAGE_PROMPT_TOKENS] = call.input_tokens
        attrs[a.GEN_AI_USAGE_COMPLETION_TOKENS] = call.output_tokens
        if call.cache_read_tokens:
            attrs[a.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS_OLD] = call.cache_read_tokens
    else:
        attrs[a.GEN_AI_USAGE_INPUT_TOKENS] = call.input_tokens
        attrs[a.GEN_AI_USAGE_OUTPUT_TOKENS] = call.output_tokens
        if call.cache_read_tokens:
            attrs[a.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] = call.cache_read_tokens
    if call.reasoning_tokens:
        attrs[a.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] = call.reasoning_tokens
    if call.finish_reason:
        attrs[a.GEN_AI_RESPONSE_FINISH_REASONS] = [call.finish_reason]
    if call.ttft_ms is not None:
        attrs[a.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] = _seconds(call.ttft_ms)
    return attrs


def openinference_llm(call: LlmCall) -> dict[str, AttrValue]:
    """OpenInference LLM span: provider, one model name, token counts with details."""
    attrs: dict[str, AttrValue] = {
        a.OPENINFERENCE_SPAN_KIND: "LLM",
        a.LLM_PROVIDER: call.provider,
        a.LLM_SYSTEM: call.provider,
        a.LLM_MODEL_NAME: call.request_model,
    }
    if call.error_type:
        attrs[a.ERROR_TYPE] = call.error_type
        return attrs
    attrs[a.LLM_TOKEN_COUNT_PROMPT] = call.input_tokens
    attrs[a.LLM_TOKEN_COUNT_COMPLETION] = call.output_tokens
    if call.cache_read_tokens:
        attrs[a.LLM_TOKEN_COUNT_CACHE_READ] = call.cache_read_tokens
    if call.cache_write_tokens:
        attrs[a.LLM_TOKEN_COUNT_CACHE_WRITE] = call.cache_write_tokens
    if call.finish_reason:
        attrs[a.LLM_FINISH_REASON] = call.finish_reason
    return attrs


def vllm_request(call: LlmCall) -> dict[str, AttrValue]:
    """vLLM's ``llm_request`` span: old token names, latencies in seconds, no provider."""
    attrs: dict[str, AttrValue] = {
        a.GEN_AI_RESPONSE_MODEL: call.response_model,
        a.GEN_AI_USAGE_PROMPT_TOKENS: call.input_tokens,
        a.GEN_AI_USAGE_COMPLETION_TOKENS: call.output_tokens,
    }
    if call.ttft_ms is not None:
        attrs[a.GEN_AI_LATENCY_TIME_TO_FIRST_TOKEN] = _seconds(call.ttft_ms)
    if call.queue_ms is not None:
        attrs[a.GEN_AI_LATENCY_TIME_IN_QUEUE] = _seconds(call.queue_ms)
    if call.kv_cache_usage is not None:
        attrs[a.DRIFTLINE_KV_CACHE_USAGE] = call.kv_cache_usage
    if call.error_type:
        attrs[a.ERROR_TYPE] = call.error_type
    return attrs
