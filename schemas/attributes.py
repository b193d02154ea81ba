"""Every span attribute key driftline reads, and the precedence between conventions.

Keys are grouped by convention: OpenTelemetry GenAI semantic conventions (current
and deprecated names), OpenInference (Arize/Phoenix), OpenLLMetry (Traceloop),
Langfuse, vLLM, and driftline's own ``driftline.*`` keys. Code elsewhere refers
to these constants, never to string literals.

Each ``*_KEYS`` tuple is a precedence list: the first key present on a span wins.
"""

from __future__ import annotations

from typing import Final

# --- OpenTelemetry GenAI semantic conventions (>= 1.27) -----------------------
GEN_AI_OPERATION_NAME: Final = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME: Final = "gen_ai.provider.name"
GEN_AI_SYSTEM: Final = "gen_ai.system"  # deprecated in favour of gen_ai.provider.name
GEN_AI_REQUEST_MODEL: Final = "gen_ai.request.model"
GEN_AI_RESPONSE_MODEL: Final = "gen_ai.response.model"
GEN_AI_RESPONSE_FINISH_REASONS: Final = "gen_ai.response.finish_reasons"
GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK: Final = "gen_ai.response.time_to_first_chunk"
GEN_AI_USAGE_INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"
GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: Final = "gen_ai.usage.cache_read.input_tokens"
GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS: Final = "gen_ai.usage.cache_creation.input_tokens"
GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: Final = "gen_ai.usage.reasoning.output_tokens"
GEN_AI_AGENT_NAME: Final = "gen_ai.agent.name"
GEN_AI_CONVERSATION_ID: Final = "gen_ai.conversation.id"
GEN_AI_WORKFLOW_NAME: Final = "gen_ai.workflow.name"
GEN_AI_TOOL_NAME: Final = "gen_ai.tool.name"
ERROR_TYPE: Final = "error.type"

# Deprecated or vendor-specific GenAI names still emitted in the wild.
GEN_AI_USAGE_PROMPT_TOKENS: Final = "gen_ai.usage.prompt_tokens"  # pre-1.27, vLLM
GEN_AI_USAGE_COMPLETION_TOKENS: Final = "gen_ai.usage.completion_tokens"
GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS_OLD: Final = "gen_ai.usage.cache_read_input_tokens"
GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS: Final = "gen_ai.usage.cache_write.input_tokens"
GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS_OLD: Final = "gen_ai.usage.cache_creation_input_tokens"
GEN_AI_USAGE_REASONING_TOKENS: Final = "gen_ai.usage.reasoning_tokens"  # OpenLLMetry
GEN_AI_LATENCY_TIME_TO_FIRST_TOKEN: Final = "gen_ai.latency.time_to_first_token"  # vLLM, seconds
GEN_AI_LATENCY_TIME_IN_QUEUE: Final = "gen_ai.latency.time_in_queue"  # vLLM, seconds
GEN_AI_USAGE_DETAILS_REASONING_TOKENS: Final = (
    "gen_ai.usage.details.reasoning_tokens"  # pydantic-ai
)
# Time to first chunk of a streamed call, seconds: pydantic-ai's name, and openlit's.
GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK: Final = "gen_ai.client.operation.time_to_first_chunk"
GEN_AI_SERVER_TIME_TO_FIRST_TOKEN: Final = "gen_ai.server.time_to_first_token"
GEN_AI_RESPONSE_ID: Final = "gen_ai.response.id"

# The span event an OTel SDK records for an exception, and its class attribute.
EXCEPTION_EVENT_NAME: Final = "exception"
EXCEPTION_TYPE: Final = "exception.type"

# --- OpenInference ---------------------------------------------------------------
OPENINFERENCE_SPAN_KIND: Final = "openinference.span.kind"
LLM_TOKEN_COUNT_PROMPT: Final = "llm.token_count.prompt"
LLM_TOKEN_COUNT_COMPLETION: Final = "llm.token_count.completion"
LLM_TOKEN_COUNT_CACHE_READ: Final = "llm.token_count.prompt_details.cache_read"
LLM_TOKEN_COUNT_CACHE_WRITE: Final = "llm.token_count.prompt_details.cache_write"
LLM_TOKEN_COUNT_REASONING: Final = "llm.token_count.completion_details.reasoning"
LLM_PROVIDER: Final = "llm.provider"
LLM_SYSTEM: Final = "llm.system"
LLM_MODEL_NAME: Final = "llm.model_name"
LLM_RESPONSE_MODEL_NAME: Final = "llm.response.model_name"
LLM_FINISH_REASON: Final = "llm.finish_reason"
EMBEDDING_MODEL_NAME: Final = "embedding.model_name"
SESSION_ID: Final = "session.id"

# --- OpenLLMetry (Traceloop) and Langfuse ------------------------------------------
TRACELOOP_SPAN_KIND: Final = "traceloop.span.kind"
TRACELOOP_WORKFLOW_NAME: Final = "traceloop.workflow.name"
TRACELOOP_SESSION_ID: Final = "traceloop.association.properties.session_id"
LANGFUSE_TRACE_NAME: Final = "langfuse.trace.name"
LANGFUSE_SESSION_ID: Final = "langfuse.session.id"

# --- driftline's own keys ------------------------------------------------------
DRIFTLINE_WORKFLOW: Final = "driftline.workflow"
DRIFTLINE_TENANT: Final = "driftline.tenant"
DRIFTLINE_ROUTE: Final = "driftline.route"
DRIFTLINE_USER_HASH: Final = "driftline.user_hash"
DRIFTLINE_PROMPT_VERSION: Final = "driftline.prompt.version"
DRIFTLINE_RETRIEVAL_INDEX_VERSION: Final = "driftline.retrieval.index_version"
DRIFTLINE_ROUTER_VERSION: Final = "driftline.router.version"
DRIFTLINE_MODEL_VERSION: Final = "driftline.model.version"
DRIFTLINE_RETRY_ATTEMPT: Final = "driftline.retry.attempt"
DRIFTLINE_KV_CACHE_USAGE: Final = "driftline.kv_cache.usage"
DRIFTLINE_OUTPUT_VALIDATION_FAILED: Final = "driftline.output.validation_failed"
DRIFTLINE_OUTPUT_CHARS: Final = "driftline.output.chars"
DRIFTLINE_TOOL_CALLS: Final = "driftline.tool_calls"

# --- resource attributes ----------------------------------------------------------
SERVICE_NAME: Final = "service.name"
DEPLOYMENT_ENVIRONMENT_NAME: Final = "deployment.environment.name"
DEPLOYMENT_ENVIRONMENT: Final = "deployment.environment"  # deprecated

# vLLM names its one request span like this; it carries no provider or operation.
VLLM_REQUEST_SPAN_NAME: Final = "llm_request"
VLLM_PROVIDER: Final = "vllm"

# Free attribute keys an event keeps (``ingest.attributes_allow`` replaces the list): request
# parameters, usage, ids and endpoints, never content. fnmatch patterns, case-sensitive, so a
# key nobody listed (``Input.Value``, ``llm.completions.0.content``, ``mlflow.spanInputs``)
# is dropped: prompts, completions, documents and tool payloads land only by opting in
# (``ingest.store_content``).
DEFAULT_ATTRIBUTES_ALLOW: Final = (
    # Request parameters by name, not ``gen_ai.request.*``: instrumentations put content under
    # that prefix too (``gen_ai.request.messages``, ``.prompt``, ``.tools``, ``.functions.*``
    # with tool definitions). The OTel GenAI conventions' parameters, and what OpenLIT, OpenLLMetry
    # and vLLM send beside them; ``gen_ai.request.user`` (an end-user id) is left out.
    "gen_ai.request.model",
    "gen_ai.request.max_tokens",
    "gen_ai.request.temperature",
    "gen_ai.request.top_p",
    "gen_ai.request.top_k",
    "gen_ai.request.frequency_penalty",
    "gen_ai.request.presence_penalty",
    "gen_ai.request.stop_sequences",
    "gen_ai.request.seed",
    "gen_ai.request.choice.count",
    "gen_ai.request.encoding_formats",
    "gen_ai.request.stream",
    "gen_ai.request.is_stream",
    "gen_ai.request.n",
    "gen_ai.request.service_tier",
    "gen_ai.request.reasoning_effort",
    "gen_ai.request.id",  # vLLM's request id
    "gen_ai.response.id",
    "gen_ai.output.type",
    "gen_ai.usage.*",
    "gen_ai.latency.*",
    "gen_ai.openai.request.service_tier",
    "gen_ai.openai.response.service_tier",
    "gen_ai.openai.response.system_fingerprint",
    "gen_ai.agent.id",
    "gen_ai.tool.name",
    "gen_ai.tool.type",
    "gen_ai.tool.call.id",
    "gen_ai.data_source.id",
    "llm.token_count.*",
    "llm.usage.*",
    "llm.request.type",
    "llm.is_streaming",
    "input.mime_type",
    "output.mime_type",
    "tool.name",
    "traceloop.entity.name",
    "traceloop.entity.path",
    "langfuse.observation.type",
    "langfuse.observation.level",
    "server.address",
    "server.port",
    "http.request.method",
    "http.response.status_code",
    "driftline.*",
)

# Where a name that had to be made safe keeps its original: ``driftline.original.workflow``.
ORIGINAL_NAME_PREFIX: Final = "driftline.original."

# --- precedence lists (first present wins) -------------------------------------------
INPUT_TOKENS_KEYS: Final = (
    GEN_AI_USAGE_INPUT_TOKENS,
    GEN_AI_USAGE_PROMPT_TOKENS,
    LLM_TOKEN_COUNT_PROMPT,
)
OUTPUT_TOKENS_KEYS: Final = (
    GEN_AI_USAGE_OUTPUT_TOKENS,
    GEN_AI_USAGE_COMPLETION_TOKENS,
    LLM_TOKEN_COUNT_COMPLETION,
)
CACHE_READ_TOKENS_KEYS: Final = (
    GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS,
    GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS_OLD,
    LLM_TOKEN_COUNT_CACHE_READ,
)
CACHE_WRITE_TOKENS_KEYS: Final = (
    GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS,
    GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS,
    GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS_OLD,
    LLM_TOKEN_COUNT_CACHE_WRITE,
)
REASONING_TOKENS_KEYS: Final = (
    GEN_AI_USAGE_REASONING_OUTPUT_TOKENS,
    GEN_AI_USAGE_REASONING_TOKENS,
    GEN_AI_USAGE_DETAILS_REASONING_TOKENS,
    LLM_TOKEN_COUNT_REASONING,
)
PROVIDER_KEYS: Final = (GEN_AI_PROVIDER_NAME, GEN_AI_SYSTEM, LLM_PROVIDER, LLM_SYSTEM)
MODEL_KEYS: Final = (
    GEN_AI_RESPONSE_MODEL,
    GEN_AI_REQUEST_MODEL,
    LLM_RESPONSE_MODEL_NAME,
    LLM_MODEL_NAME,
    EMBEDDING_MODEL_NAME,
)
# OpenInference's llm.model_name is read as the request model; pricing falls back to it.
REQUEST_MODEL_KEYS: Final = (GEN_AI_REQUEST_MODEL, LLM_MODEL_NAME, EMBEDDING_MODEL_NAME)
RESPONSE_MODEL_KEYS: Final = (GEN_AI_RESPONSE_MODEL, LLM_RESPONSE_MODEL_NAME)
# The root span's gen_ai.agent.name and the resource's service.name are the last
# two workflow fallbacks; they need trace context, so the normalizer adds them.
WORKFLOW_KEYS: Final = (
    DRIFTLINE_WORKFLOW,
    GEN_AI_WORKFLOW_NAME,
    TRACELOOP_WORKFLOW_NAME,
    LANGFUSE_TRACE_NAME,
)
SESSION_KEYS: Final = (
    GEN_AI_CONVERSATION_ID,
    SESSION_ID,
    LANGFUSE_SESSION_ID,
    TRACELOOP_SESSION_ID,
)
FINISH_REASON_KEYS: Final = (GEN_AI_RESPONSE_FINISH_REASONS, LLM_FINISH_REASON)
TTFT_SECONDS_KEYS: Final = (
    GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK,
    GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK,
    GEN_AI_LATENCY_TIME_TO_FIRST_TOKEN,
    GEN_AI_SERVER_TIME_TO_FIRST_TOKEN,
)
QUEUE_SECONDS_KEYS: Final = (GEN_AI_LATENCY_TIME_IN_QUEUE,)
ENVIRONMENT_KEYS: Final = (DEPLOYMENT_ENVIRONMENT_NAME, DEPLOYMENT_ENVIRONMENT)

# Operation names (gen_ai.operation.name values).
OP_CHAT: Final = "chat"
OP_TEXT_COMPLETION: Final = "text_completion"
OP_GENERATE_CONTENT: Final = "generate_content"
OP_EMBEDDINGS: Final = "embeddings"
OP_EXECUTE_TOOL: Final = "execute_tool"
OP_INVOKE_AGENT: Final = "invoke_agent"
OP_CREATE_AGENT: Final = "create_agent"
OP_RETRIEVAL: Final = "retrieval"
OP_WORKFLOW: Final = "workflow"

# Operations that are one call to a model: each becomes a normalized request event.
LLM_CALL_OPERATIONS: Final = frozenset(
    {OP_CHAT, OP_TEXT_COMPLETION, OP_GENERATE_CONTENT, OP_EMBEDDINGS}
)

OPENINFERENCE_KIND_TO_OPERATION: Final = {
    "LLM": OP_CHAT,
    "TOOL": OP_EXECUTE_TOOL,
    "AGENT": OP_INVOKE_AGENT,
    "EMBEDDING": OP_EMBEDDINGS,
    "RETRIEVER": OP_RETRIEVAL,
    "CHAIN": OP_WORKFLOW,
}
TRACELOOP_KIND_TO_OPERATION: Final = {
    "llm": OP_CHAT,
    "tool": OP_EXECUTE_TOOL,
    "agent": OP_INVOKE_AGENT,
    "workflow": OP_WORKFLOW,
    "task": OP_WORKFLOW,
}

# Every key the normalizer maps to a named event field; anything else is kept in
# the event's bounded ``attributes`` map.
MAPPED_KEYS: Final = frozenset(
    {
        *INPUT_TOKENS_KEYS,
        *OUTPUT_TOKENS_KEYS,
        *CACHE_READ_TOKENS_KEYS,
        *CACHE_WRITE_TOKENS_KEYS,
        *REASONING_TOKENS_KEYS,
        *PROVIDER_KEYS,
        *MODEL_KEYS,
        *WORKFLOW_KEYS,
        *SESSION_KEYS,
        *FINISH_REASON_KEYS,
        *TTFT_SECONDS_KEYS,
        *QUEUE_SECONDS_KEYS,
        GEN_AI_OPERATION_NAME,
        OPENINFERENCE_SPAN_KIND,
        TRACELOOP_SPAN_KIND,
        GEN_AI_AGENT_NAME,
        ERROR_TYPE,
        DRIFTLINE_TENANT,
        DRIFTLINE_ROUTE,
        DRIFTLINE_USER_HASH,
        DRIFTLINE_PROMPT_VERSION,
        DRIFTLINE_RETRIEVAL_INDEX_VERSION,
        DRIFTLINE_ROUTER_VERSION,
        DRIFTLINE_MODEL_VERSION,
        DRIFTLINE_RETRY_ATTEMPT,
        DRIFTLINE_KV_CACHE_USAGE,
        DRIFTLINE_OUTPUT_VALIDATION_FAILED,
        DRIFTLINE_OUTPUT_CHARS,
        DRIFTLINE_TOOL_CALLS,
    }
)
