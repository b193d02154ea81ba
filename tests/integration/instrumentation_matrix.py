"""The libraries of the instrumentation matrix: how each is driven, and what its calls must
normalize to.

Every library is driven against the local OpenAI/Anthropic stub (:mod:`tests.utils.openai_stub`)
for four kinds of call: ``chat`` (plain), ``stream``, ``tool`` (a call that asks for a tool and,
for agent frameworks, the whole turn: the tool call, the tool, the answer) and ``error`` (a
500 from the server). :data:`LIBRARIES` holds, per library and kind, the exact events the
normalizer must give; ``test_instrumentation_matrix.py`` checks them and writes
``docs/instrumentations.md`` from this table, so the document says only what a run proved.

openlit cannot share the project's environment (it pins ``openai<3``, ``anthropic<1`` and an
older OpenTelemetry SDK): its spans were recorded once from the real library against the same
stub (``tests/compat/record_openlit.py``) and are replayed from ``tests/unit/data``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import anthropic
import openai
from opentelemetry.sdk.trace import TracerProvider

from tests.utils import openai_stub as stub

CALL_KINDS: Final = ("chat", "stream", "tool", "error")
OPENAI_MODEL: Final = "gpt-4o-mini"
REASONING_MODEL: Final = stub.REASONING_MODEL
ANTHROPIC_MODEL: Final = "claude-sonnet-4-5"
PROMPT: Final = "What is the answer?"
TOOL_NAME: Final = "get_answer"
OPENAI_TOOLS: Final[Any] = [
    {
        "type": "function",
        "function": {"name": TOOL_NAME, "parameters": {"type": "object", "properties": {}}},
    }
]
ANTHROPIC_TOOLS: Final[Any] = [
    {"name": TOOL_NAME, "description": "d", "input_schema": {"type": "object", "properties": {}}}
]
MESSAGES: Final[Any] = [{"role": "user", "content": PROMPT}]

# Whole-token usage the stub reports, as each convention should carry it.
OPENAI_USAGE: Final = {"input": stub.PROMPT_TOKENS, "output": stub.COMPLETION_TOKENS}
ANTHROPIC_INPUT_WITH_CACHE: Final = (
    stub.ANTHROPIC_INPUT_TOKENS
    + stub.ANTHROPIC_CACHE_READ_TOKENS
    + stub.ANTHROPIC_CACHE_WRITE_TOKENS
)


@dataclass(frozen=True)
class Call:
    """One LLM call event a call kind must produce (fields as in the event)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    finish_reason: str = ""
    status: str = "unset"
    error_type: str = ""
    ttft: bool = False  # time to first token emitted (then it lies within the latency)
    tool_calls: int = 0  # tool executions the assembled trace counts for the call


def openai_call(**overrides: Any) -> Call:
    base: dict[str, Any] = {
        "input_tokens": stub.PROMPT_TOKENS,
        "output_tokens": stub.COMPLETION_TOKENS,
        "cache_read_tokens": stub.CACHED_TOKENS,
        "finish_reason": "stop",
    }
    return Call(**{**base, **overrides})


def anthropic_call(**overrides: Any) -> Call:
    base: dict[str, Any] = {
        "input_tokens": ANTHROPIC_INPUT_WITH_CACHE,
        "output_tokens": stub.ANTHROPIC_OUTPUT_TOKENS,
        "cache_read_tokens": stub.ANTHROPIC_CACHE_READ_TOKENS,
        "cache_write_tokens": stub.ANTHROPIC_CACHE_WRITE_TOKENS,
        "finish_reason": "end_turn",
    }
    return Call(**{**base, **overrides})


def failed(error_type: str, status: str = "error") -> Call:
    return Call(status=status, error_type=error_type)


@dataclass
class Session:
    """What a driver gets: the stub and the tracer provider to instrument with."""

    server: stub.OpenAIStub
    tracer_provider: TracerProvider
    capture: Callable[[str, Callable[[], Any]], None]  # (kind, run the calls of that kind)
    finished_spans: Callable[[], Sequence[Any]] = tuple  # what the exporter holds so far

    def openai_client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.server.base_url, api_key="test", max_retries=0)

    def anthropic_client(self) -> anthropic.Anthropic:
        return anthropic.Anthropic(
            base_url=self.server.anthropic_base_url, api_key="test", max_retries=0
        )


@dataclass(frozen=True)
class Library:
    """One instrumentation of the matrix."""

    title: str  # as the docs show it
    distribution: str  # the package whose version is reported
    provider: str
    scopes: tuple[str, ...]  # InstrumentationScope names its LLM spans carry
    expected: dict[str, tuple[Call, ...]]  # call kind -> the events, in order
    reads: str  # the keys driftline reads from it (docs)
    notes: str = ""  # what it emits that is worth knowing (docs)
    drive: Callable[[Session], None] | None = None  # None: replayed from a recording
    # Replayed from tests/unit/data/instrumentations/<recording>.<kind>.otlp.pb when not
    # driven here (recorded by tests/compat/record_openlit.py).
    recording: str = ""
    tool_spans: int = 0  # execute_tool spans its tool turn emits (each counted for a call)
    version: str = ""  # the recorded version, for a replayed library


# --- drivers: the plain SDK calls -------------------------------------------------------------


def _openai_calls(session: Session, client: openai.OpenAI) -> None:
    session.capture(
        "chat", lambda: client.chat.completions.create(model=OPENAI_MODEL, messages=MESSAGES)
    )

    def stream() -> None:
        chunks = client.chat.completions.create(
            model=OPENAI_MODEL,
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
        assert list(chunks), "the stub streamed nothing"

    session.capture("stream", stream)
    session.capture(
        "tool",
        lambda: client.chat.completions.create(
            model=REASONING_MODEL, messages=MESSAGES, tools=OPENAI_TOOLS
        ),
    )

    def error() -> None:
        try:
            client.chat.completions.create(model=stub.FAIL_MODEL, messages=MESSAGES)
        except openai.InternalServerError:
            return
        raise AssertionError("the stub did not fail")

    session.capture("error", error)


def _anthropic_calls(session: Session, client: anthropic.Anthropic) -> None:
    def create(**kwargs: Any) -> Any:
        return client.messages.create(max_tokens=100, messages=MESSAGES, **kwargs)

    session.capture("chat", lambda: create(model=ANTHROPIC_MODEL))

    def stream() -> None:
        with client.messages.stream(
            model=ANTHROPIC_MODEL, max_tokens=100, messages=MESSAGES
        ) as events:
            assert "".join(events.text_stream), "the stub streamed nothing"

    session.capture("stream", stream)
    session.capture("tool", lambda: create(model=ANTHROPIC_MODEL, tools=ANTHROPIC_TOOLS))

    def error() -> None:
        try:
            create(model=stub.FAIL_MODEL)
        except anthropic.InternalServerError:
            return
        raise AssertionError("the stub did not fail")

    session.capture("error", error)


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """``values`` set in ``os.environ`` for the block (how libraries turn capture on)."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _openai_instrumentor(module: str, capture: dict[str, str]) -> Callable[[Session], None]:
    """A driver for an ``OpenAIInstrumentor`` of ``module``, with its content capture on."""

    def drive(session: Session) -> None:
        instrumentor = importlib.import_module(module).OpenAIInstrumentor()
        with _environment(capture):
            instrumentor.instrument(tracer_provider=session.tracer_provider)
            try:
                _openai_calls(session, session.openai_client())
            finally:
                instrumentor.uninstrument()

    return drive


def drive_openllmetry_anthropic(session: Session) -> None:
    from opentelemetry.instrumentation.anthropic import AnthropicInstrumentor

    instrumentor = AnthropicInstrumentor()
    instrumentor.instrument(tracer_provider=session.tracer_provider)
    try:
        _anthropic_calls(session, session.anthropic_client())
    finally:
        instrumentor.uninstrument()


def drive_openinference_anthropic(session: Session) -> None:
    from openinference.instrumentation.anthropic import AnthropicInstrumentor

    instrumentor = AnthropicInstrumentor()
    instrumentor.instrument(tracer_provider=session.tracer_provider)
    try:
        _anthropic_calls(session, session.anthropic_client())
    finally:
        instrumentor.uninstrument()


def drive_logfire_openai(session: Session) -> None:
    import logfire

    client = session.openai_client()
    logfire.instrument_openai(client)
    _openai_calls(session, client)


def drive_logfire_anthropic(session: Session) -> None:
    import logfire

    client = session.anthropic_client()
    logfire.instrument_anthropic(client)
    _anthropic_calls(session, client)


# --- pydantic-ai: agent runs ------------------------------------------------------------------


def _pydantic_ai_calls(session: Session, make_model: Callable[[str], Any], chat: str) -> None:
    """An agent per kind; the tool turn runs on ``REASONING_MODEL`` for OpenAI (the stub's
    one model with reasoning tokens) and on ``chat`` otherwise."""
    from pydantic_ai import Agent
    from pydantic_ai.capabilities.instrumentation import Instrumentation
    from pydantic_ai.exceptions import ModelHTTPError
    from pydantic_ai.models.instrumented import InstrumentationSettings

    settings = InstrumentationSettings(tracer_provider=session.tracer_provider)

    def agent(model_name: str) -> Any:
        return Agent(make_model(model_name), capabilities=[Instrumentation(settings=settings)])

    session.capture("chat", lambda: agent(chat).run_sync(PROMPT))

    def stream() -> None:
        with agent(chat).run_stream_sync(PROMPT) as result:
            assert "".join(result.stream_text(delta=True)), "the stub streamed nothing"

    session.capture("stream", stream)

    def tool() -> None:
        tool_agent = agent(REASONING_MODEL if chat == OPENAI_MODEL else chat)

        @tool_agent.tool_plain
        def get_answer() -> str:
            return "42"

        tool_agent.run_sync(PROMPT)

    session.capture("tool", tool)

    def error() -> None:
        try:
            agent(stub.FAIL_MODEL).run_sync(PROMPT)
        except ModelHTTPError:
            return
        raise AssertionError("the stub did not fail")

    session.capture("error", error)


def drive_pydantic_ai_openai(session: Session) -> None:
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    def model(name: str) -> Any:
        client = openai.AsyncOpenAI(base_url=session.server.base_url, api_key="t", max_retries=0)
        return OpenAIChatModel(name, provider=OpenAIProvider(openai_client=client))

    _pydantic_ai_calls(session, model, OPENAI_MODEL)


def drive_pydantic_ai_anthropic(session: Session) -> None:
    from pydantic_ai.models.anthropic import AnthropicModel
    from pydantic_ai.providers.anthropic import AnthropicProvider

    def model(name: str) -> Any:
        client = anthropic.AsyncAnthropic(
            base_url=session.server.anthropic_base_url, api_key="t", max_retries=0
        )
        return AnthropicModel(name, provider=AnthropicProvider(anthropic_client=client))

    _pydantic_ai_calls(session, model, ANTHROPIC_MODEL)


def _import_litellm() -> Any:
    # Else LiteLLM fetches its model price map over the network when imported.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.suppress_debug_info = True
    return litellm


def _litellm_calls(session: Session) -> None:
    """``litellm.completion`` to both APIs of the stub: each kind runs on OpenAI, then on
    Anthropic."""
    litellm = _import_litellm()
    targets = (
        ("openai", OPENAI_MODEL, session.server.base_url),
        ("anthropic", ANTHROPIC_MODEL, session.server.anthropic_base_url),
    )

    def each(model_of: Callable[[str, str], str], **kwargs: Any) -> list[Any]:
        return [
            litellm.completion(
                model=f"{provider}/{model_of(provider, model)}",
                messages=MESSAGES,
                api_base=base,
                api_key="test",
                num_retries=0,
                **kwargs,
            )
            for provider, model, base in targets
        ]

    def stream() -> None:
        for chunks in each(
            lambda _, model: model, stream=True, stream_options={"include_usage": True}
        ):
            assert list(chunks), "the stub streamed nothing"

    def error() -> None:
        for provider, _, base in targets:
            try:
                litellm.completion(
                    model=f"{provider}/{stub.FAIL_MODEL}",
                    messages=MESSAGES,
                    api_base=base,
                    api_key="test",
                    num_retries=0,
                )
            except litellm.InternalServerError:
                continue
            raise AssertionError("the stub did not fail")

    def tool_model(provider: str, model: str) -> str:
        return REASONING_MODEL if provider == "openai" else model

    session.capture("chat", lambda: each(lambda _, model: model))
    session.capture("stream", stream)
    session.capture("tool", lambda: each(tool_model, tools=OPENAI_TOOLS))
    session.capture("error", error)


def drive_openinference_litellm(session: Session) -> None:
    _import_litellm()
    from openinference.instrumentation.litellm import LiteLLMInstrumentor

    instrumentor = LiteLLMInstrumentor()
    instrumentor.instrument(tracer_provider=session.tracer_provider)
    try:
        _litellm_calls(session)
    finally:
        instrumentor.uninstrument()


def drive_litellm_callback(session: Session) -> None:
    """LiteLLM's own OpenTelemetry callback (``callbacks=["otel"]``), on our provider."""
    litellm = _import_litellm()
    from litellm.integrations.opentelemetry import OpenTelemetry, OpenTelemetryConfig
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    # The exporter is unused (the provider given has its own); without one LiteLLM would
    # configure a console exporter.
    config = OpenTelemetryConfig(exporter=InMemorySpanExporter())
    callback = OpenTelemetry(config=config, tracer_provider=session.tracer_provider)

    def settled(kind: str, run: Callable[[], Any]) -> None:
        """LiteLLM ends its spans on a thread pool after the call returns: wait for both."""

        def run_and_wait() -> None:
            run()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and (
                sum(span.name == "litellm_request" for span in session.finished_spans()) < 2
            ):
                time.sleep(0.01)

        session.capture(kind, run_and_wait)

    litellm.callbacks = [callback]
    try:
        _litellm_calls(dataclasses.replace(session, capture=settled))
    finally:
        litellm.callbacks = []


def drive_openlit(session: Session) -> None:
    """openlit instruments every library it finds, through the global tracer provider
    (only in its own environment: see the module docstring)."""
    import openlit

    openlit.init(
        disable_metrics=True, disable_events=True, capture_message_content=False, disable_batch=True
    )
    _anthropic_calls(session, session.anthropic_client())
    _openai_calls(session, session.openai_client())


# --- LangChain: chat models, each kind on OpenAI then on Anthropic ----------------------------


def _langchain_calls(session: Session) -> None:
    """``ChatOpenAI`` and ``ChatAnthropic`` against the stub: each kind runs on OpenAI, then on
    Anthropic. The tool turn is a chain (a ``RunnableLambda``) that asks the bound model,
    runs the tool LangChain's way (``tool.invoke(tool_call)``) and asks again with its
    result; the tool turn runs on ``REASONING_MODEL`` for OpenAI."""
    from langchain_anthropic import ChatAnthropic
    from langchain_core.messages import BaseMessage, HumanMessage
    from langchain_core.runnables import RunnableLambda
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    @tool(TOOL_NAME)
    def get_answer() -> str:
        """The answer."""
        return "42"

    def models(openai_model: str, anthropic_model: str) -> list[Any]:
        # stream_usage: else ChatOpenAI asks a base_url of its own for no usage when streaming.
        return [
            ChatOpenAI(
                model=openai_model,
                base_url=session.server.base_url,
                api_key="test",  # type: ignore[arg-type]
                max_retries=0,
                stream_usage=True,
            ),
            ChatAnthropic(  # type: ignore[call-arg]
                model=anthropic_model,
                base_url=session.server.anthropic_base_url,
                api_key="test",  # type: ignore[arg-type]
                max_retries=0,
                max_tokens=100,
            ),
        ]

    def chat() -> None:
        for model in models(OPENAI_MODEL, ANTHROPIC_MODEL):
            model.invoke(PROMPT)

    def stream() -> None:
        for model in models(OPENAI_MODEL, ANTHROPIC_MODEL):
            assert [chunk.content for chunk in model.stream(PROMPT)], "the stub streamed nothing"

    def turn(model: Any) -> Any:
        bound = model.bind_tools([get_answer])
        messages: list[BaseMessage] = [HumanMessage(PROMPT)]
        asked = bound.invoke(messages)
        assert asked.tool_calls, "the stub asked for no tool"
        messages.append(asked)
        messages += [get_answer.invoke(call) for call in asked.tool_calls]
        return bound.invoke(messages)

    def tool_turns() -> None:
        for model in models(REASONING_MODEL, ANTHROPIC_MODEL):
            RunnableLambda(turn, name="tool_turn").invoke(model)

    def error() -> None:
        for model in models(stub.FAIL_MODEL, stub.FAIL_MODEL):
            try:
                model.invoke(PROMPT)
            except (openai.InternalServerError, anthropic.InternalServerError):
                continue
            raise AssertionError("the stub did not fail")

    session.capture("chat", chat)
    session.capture("stream", stream)
    session.capture("tool", tool_turns)
    session.capture("error", error)


def drive_openinference_langchain(session: Session) -> None:
    from openinference.instrumentation.langchain import LangChainInstrumentor

    instrumentor = LangChainInstrumentor()
    instrumentor.instrument(tracer_provider=session.tracer_provider)
    try:
        _langchain_calls(session)
    finally:
        instrumentor.uninstrument()


def drive_openllmetry_langchain(session: Session) -> None:
    """With OpenLLMetry's OpenAI and Anthropic instrumentations on as well, as Traceloop's SDK
    sets them up: the LangChain one keeps them from recording the calls a second time."""
    from opentelemetry.instrumentation.anthropic import AnthropicInstrumentor
    from opentelemetry.instrumentation.langchain import LangchainInstrumentor
    from opentelemetry.instrumentation.openai import OpenAIInstrumentor

    instrumentors = [LangchainInstrumentor(), OpenAIInstrumentor(), AnthropicInstrumentor()]
    with _environment({"TRACELOOP_TRACE_CONTENT": "true"}):
        for instrumentor in instrumentors:
            instrumentor.instrument(tracer_provider=session.tracer_provider)
        try:
            _langchain_calls(session)
        finally:
            for instrumentor in instrumentors:
                instrumentor.uninstrument()


# --- the matrix -------------------------------------------------------------------------------

_PYDANTIC_AI_READS: Final = (
    "`gen_ai.operation.name`, `gen_ai.provider.name`, `gen_ai.request.model`, "
    "`gen_ai.response.model`, `gen_ai.usage.input_tokens`/`output_tokens`, "
    "`gen_ai.usage.cache_read.input_tokens`, `gen_ai.usage.cache_creation.input_tokens`, "
    "`gen_ai.usage.details.reasoning_tokens`, `gen_ai.client.operation.time_to_first_chunk`, "
    "`gen_ai.response.finish_reasons`, the status message's exception class"
)
_LOGFIRE_READS: Final = (
    "`gen_ai.*` (operation, provider, models, usage incl. cache), "
    "`gen_ai.response.finish_reasons` as JSON text, `duration` of the stream's log record, "
    "the status message's exception class"
)

LIBRARIES: Final[dict[str, Library]] = {
    "openai-v2": Library(
        title="OTel `opentelemetry-instrumentation-openai-v2`",
        distribution="opentelemetry-instrumentation-openai-v2",
        provider="openai",
        scopes=("opentelemetry.util.genai.handler",),  # its spans come from util-genai
        # util-genai's modes; "true" is not one (it warns and captures nothing).
        drive=_openai_instrumentor(
            "opentelemetry.instrumentation.openai_v2",
            {"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "SPAN_ONLY"},
        ),
        expected={
            # Cached and reasoning tokens are not recorded: the call is priced as uncached.
            "chat": (openai_call(cache_read_tokens=0),),
            "stream": (openai_call(cache_read_tokens=0, finish_reason=""),),
            "tool": (openai_call(cache_read_tokens=0, finish_reason="tool_calls"),),
            "error": (failed("InternalServerError"),),
        },
        reads="`gen_ai.*` (operation, provider, models, input/output tokens, finish reasons), "
        "`error.type`",
        notes=(
            "no cached or reasoning tokens, and no finish reason on streamed calls: not on "
            "the span, so not recoverable"
        ),
    ),
    "openinference-openai": Library(
        title="OpenInference `openinference-instrumentation-openai`",
        distribution="openinference-instrumentation-openai",
        provider="openai",
        scopes=("openinference.instrumentation.openai",),
        drive=_openai_instrumentor("openinference.instrumentation.openai", {}),
        expected={
            "chat": (openai_call(status="ok"),),
            "stream": (openai_call(status="ok"),),
            "tool": (
                openai_call(
                    status="ok",
                    finish_reason="tool_calls",
                    reasoning_tokens=stub.REASONING_MODEL_TOKENS,
                ),
            ),
            "error": (failed("InternalServerError"),),
        },
        reads=(
            "`openinference.span.kind`, `llm.provider`, `llm.model_name` (the answering "
            "model), `llm.token_count.*` incl. cache and reasoning details, "
            "`llm.finish_reason`, the status message's exception class"
        ),
    ),
    "openllmetry-openai": Library(
        title="OpenLLMetry `opentelemetry-instrumentation-openai`",
        distribution="opentelemetry-instrumentation-openai",
        provider="openai",
        scopes=("opentelemetry.instrumentation.openai.v1",),
        drive=_openai_instrumentor(
            "opentelemetry.instrumentation.openai", {"TRACELOOP_TRACE_CONTENT": "true"}
        ),
        expected={
            "chat": (openai_call(),),
            "stream": (openai_call(status="ok"),),
            "tool": (
                openai_call(
                    finish_reason="tool_call", reasoning_tokens=stub.REASONING_MODEL_TOKENS
                ),
            ),
            "error": (failed("InternalServerError"),),
        },
        reads=(
            "`gen_ai.*` (operation, provider, models, usage incl. cache), "
            "`gen_ai.usage.reasoning_tokens`, `gen_ai.response.finish_reasons`, `error.type`"
        ),
        notes="streamed calls end with status OK, others with status unset",
    ),
    "pydantic-ai-openai": Library(
        title="pydantic-ai (OpenAI model)",
        distribution="pydantic-ai-slim",
        provider="openai",
        scopes=("pydantic-ai",),
        drive=drive_pydantic_ai_openai,
        expected={
            "chat": (openai_call(),),
            "stream": (openai_call(ttft=True),),
            # The agent run: the call asking for the tool, the tool (an execute_tool span
            # beside the calls, under invoke_agent), the answer.
            "tool": (
                openai_call(
                    reasoning_tokens=stub.REASONING_MODEL_TOKENS,
                    finish_reason="tool_call",
                    tool_calls=1,
                ),
                openai_call(reasoning_tokens=stub.REASONING_MODEL_TOKENS),
            ),
            "error": (failed("ModelServerError"),),
        },
        tool_spans=1,
        reads=_PYDANTIC_AI_READS,
        notes=(
            "reasoning tokens only under `gen_ai.usage.details.reasoning_tokens`; time to first "
            "chunk as `gen_ai.client.operation.time_to_first_chunk`; no `error.type` on failed "
            "calls (the class is in the status message and the `exception` event)"
        ),
    ),
    "pydantic-ai-anthropic": Library(
        title="pydantic-ai (Anthropic model)",
        distribution="pydantic-ai-slim",
        provider="anthropic",
        scopes=("pydantic-ai",),
        drive=drive_pydantic_ai_anthropic,
        expected={
            "chat": (anthropic_call(finish_reason="stop"),),
            "stream": (anthropic_call(finish_reason="stop", ttft=True),),
            "tool": (
                anthropic_call(finish_reason="tool_call", tool_calls=1),
                anthropic_call(finish_reason="stop"),
            ),
            "error": (failed("ModelServerError"),),
        },
        tool_spans=1,
        reads=_PYDANTIC_AI_READS,
        notes="input tokens include cache reads and writes, as the conventions ask",
    ),
    "logfire-openai": Library(
        title="logfire `instrument_openai`",
        distribution="logfire",
        provider="openai",
        scopes=("logfire.openai",),
        drive=drive_logfire_openai,
        expected={
            "chat": (openai_call(),),
            "stream": (openai_call(),),
            "tool": (openai_call(finish_reason="tool_calls"),),
            "error": (failed("InternalServerError"),),
        },
        reads=_LOGFIRE_READS,
        notes="no reasoning tokens (`gen_ai.usage.raw` only)",
    ),
    "logfire-anthropic": Library(
        title="logfire `instrument_anthropic`",
        distribution="logfire",
        provider="anthropic",
        scopes=("logfire.anthropic",),
        drive=drive_logfire_anthropic,
        expected={
            "chat": (anthropic_call(),),
            "stream": (anthropic_call(),),
            "tool": (anthropic_call(finish_reason="tool_use"),),
            "error": (failed("InternalServerError"),),
        },
        reads=_LOGFIRE_READS,
    ),
    "openllmetry-anthropic": Library(
        title="OpenLLMetry `opentelemetry-instrumentation-anthropic`",
        distribution="opentelemetry-instrumentation-anthropic",
        provider="anthropic",
        scopes=("opentelemetry.instrumentation.anthropic",),
        drive=drive_openllmetry_anthropic,
        expected={
            "chat": (anthropic_call(finish_reason="stop", status="ok"),),
            # Its stream handler adds message_start's output_tokens (1) to the final count.
            "stream": (
                anthropic_call(
                    finish_reason="stop",
                    status="ok",
                    output_tokens=stub.ANTHROPIC_OUTPUT_TOKENS + 1,
                ),
            ),
            "tool": (anthropic_call(finish_reason="tool_call", status="ok"),),
            "error": (failed("InternalServerError"),),
        },
        reads=(
            "`gen_ai.*` (operation, provider, models, usage incl. cache), "
            "`gen_ai.response.finish_reasons`, `error.type`"
        ),
        notes=(
            "a streamed call's output tokens are one too many (it adds `message_start`'s "
            "count to the final one): on the span, not corrected"
        ),
    ),
    "openinference-anthropic": Library(
        title="OpenInference `openinference-instrumentation-anthropic`",
        distribution="openinference-instrumentation-anthropic",
        provider="anthropic",
        scopes=("openinference.instrumentation.anthropic",),
        drive=drive_openinference_anthropic,
        expected={
            "chat": (anthropic_call(status="ok"),),
            "stream": (anthropic_call(status="ok"),),
            "tool": (anthropic_call(finish_reason="tool_use", status="ok"),),
            "error": (failed("InternalServerError"),),
        },
        reads=(
            "`openinference.span.kind`, `llm.provider`, `llm.model_name`, "
            "`llm.response.model_name`, `llm.token_count.*` incl. `prompt_details.cache_*`, "
            "`llm.finish_reason`, the `exception` event's `exception.type`"
        ),
        notes=(
            "a failed call has no `error.type` and a status message without the class: the "
            "class comes from the `exception` event"
        ),
    ),
    "litellm-otel": Library(
        title="LiteLLM OpenTelemetry callback (OpenAI and Anthropic)",
        distribution="litellm",
        provider="openai",
        scopes=("litellm",),
        drive=drive_litellm_callback,
        expected={
            # Each kind ran on OpenAI, then on Anthropic (LiteLLM maps `end_turn` to `stop`).
            "chat": (openai_call(status="ok"), anthropic_call(status="ok", finish_reason="stop")),
            "stream": (
                openai_call(status="ok"),
                anthropic_call(status="ok", finish_reason="stop"),
            ),
            "tool": (
                openai_call(
                    status="ok",
                    finish_reason="tool_calls",
                    reasoning_tokens=stub.REASONING_MODEL_TOKENS,
                ),
                anthropic_call(status="ok", finish_reason="tool_calls"),
            ),
            "error": (failed("InternalServerError"), failed("InternalServerError")),
        },
        reads=(
            "`gen_ai.*` (operation, `gen_ai.system`, models, input/output tokens), "
            "`gen_ai.response.finish_reasons` as JSON text, `error.type`, and cache and "
            "reasoning tokens from `metadata.usage_object`"
        ),
        notes="LiteLLM's own cost (`gen_ai.cost.*`) is not read: driftline prices calls itself",
    ),
    "openinference-litellm": Library(
        title="OpenInference `openinference-instrumentation-litellm` (OpenAI and Anthropic)",
        distribution="openinference-instrumentation-litellm",
        provider="openai",
        scopes=("openinference.instrumentation.litellm",),
        drive=drive_openinference_litellm,
        expected={
            # Each kind ran on OpenAI, then on Anthropic (LiteLLM maps `end_turn` to `stop`).
            "chat": (openai_call(status="ok"), anthropic_call(status="ok", finish_reason="stop")),
            "stream": (
                openai_call(status="ok"),
                anthropic_call(status="ok", finish_reason="stop"),
            ),
            "tool": (
                openai_call(
                    status="ok",
                    finish_reason="tool_calls",
                    reasoning_tokens=stub.REASONING_MODEL_TOKENS,
                ),
                anthropic_call(status="ok", finish_reason="tool_calls"),
            ),
            "error": (failed("InternalServerError"), failed("InternalServerError")),
        },
        reads=(
            "`openinference.span.kind`, `llm.provider`, `llm.model_name` (without LiteLLM's "
            "provider prefix), `llm.token_count.*` incl. cache and reasoning details, "
            "`llm.finish_reason`, the status message's exception class"
        ),
        notes="LiteLLM's own cost (`llm.cost.total`) is not read: driftline prices calls itself",
    ),
    "openlit": Library(
        title="openlit (OpenAI and Anthropic)",
        distribution="openlit",
        provider="anthropic",
        scopes=("openlit.instrumentation.anthropic", "openlit.instrumentation.openai"),
        recording="openlit-1.45.0",
        expected={
            # Each kind ran on Anthropic, then on OpenAI.
            "chat": (
                anthropic_call(status="ok"),
                openai_call(status="ok"),
            ),
            # openlit's Anthropic stream reports no cache tokens: nothing to add them from.
            "stream": (
                anthropic_call(
                    status="ok",
                    ttft=True,
                    input_tokens=stub.ANTHROPIC_INPUT_TOKENS,
                    cache_read_tokens=0,
                    cache_write_tokens=0,
                ),
                openai_call(status="ok", ttft=True),
            ),
            "tool": (
                anthropic_call(status="ok", finish_reason="tool_use"),
                openai_call(status="ok", finish_reason="tool_calls"),
            ),
            # The failed Anthropic call's span has no attributes: read from its name.
            "error": (failed("InternalServerError"), failed("InternalServerError")),
        },
        reads=(
            "`gen_ai.*` (operation, provider, models, usage incl. cache), "
            "`gen_ai.server.time_to_first_token` on streamed calls, `error.type`"
        ),
        notes=(
            "no reasoning tokens; installs only beside `openai<3` and `anthropic<1`, so it is "
            "replayed from a recording of version 1.45.0"
        ),
        version="1.45.0",
    ),
    "openinference-langchain": Library(
        title=(
            "OpenInference `openinference-instrumentation-langchain` (ChatOpenAI, ChatAnthropic)"
        ),
        distribution="openinference-instrumentation-langchain",
        provider="openai",
        scopes=("openinference.instrumentation.langchain",),
        drive=drive_openinference_langchain,
        expected={
            "chat": (openai_call(status="ok"), anthropic_call(status="ok")),
            "stream": (openai_call(status="ok"), anthropic_call(status="ok")),
            "tool": (
                openai_call(
                    status="ok",
                    finish_reason="tool_calls",
                    reasoning_tokens=stub.REASONING_MODEL_TOKENS,
                    tool_calls=1,
                ),
                openai_call(status="ok", reasoning_tokens=stub.REASONING_MODEL_TOKENS),
                anthropic_call(status="ok", finish_reason="tool_use", tool_calls=1),
                anthropic_call(status="ok"),
            ),
            "error": (failed("OpenAIAPIError"), failed("AnthropicAPIError")),
        },
        tool_spans=2,
        reads=(
            "`openinference.span.kind` (the `LLM` span is the call; the chain's `CHAIN` span and "
            "the `TOOL` span are not), `llm.provider`, `llm.model_name`, `llm.token_count.*` "
            "incl. cache and reasoning details, `llm.finish_reason`, the `exception` event's "
            "`exception.type`"
        ),
        notes=(
            "one `LLM` span per model call (named `ChatOpenAI` / `ChatAnthropic`), no span from "
            "the provider SDK underneath; `llm.model_name` is the answering model on plain "
            "calls and the requested one on streamed calls (the request model is only in the "
            "`llm.invocation_parameters` JSON); a "
            "failed call's status message is the exception's repr and a traceback, so the "
            "class (LangChain's wrapper, `OpenAIAPIError` / `AnthropicAPIError`) comes from the "
            "`exception` event. Turned on together with OpenInference's OpenAI instrumentation, "
            "a ChatOpenAI call is two `LLM` spans in two separate traces (the LangChain span is "
            "not made current), which driftline counts as two calls: turn on one of the two"
        ),
    ),
    "openllmetry-langchain": Library(
        title="OpenLLMetry `opentelemetry-instrumentation-langchain` (ChatOpenAI, ChatAnthropic)",
        distribution="opentelemetry-instrumentation-langchain",
        provider="openai",
        scopes=("opentelemetry.instrumentation.langchain",),
        drive=drive_openllmetry_langchain,
        expected={
            # No finish reason on ChatAnthropic's calls, no reasoning tokens on ChatOpenAI's.
            "chat": (openai_call(), anthropic_call(finish_reason="")),
            "stream": (openai_call(), anthropic_call(finish_reason="")),
            "tool": (
                openai_call(finish_reason="tool_call", tool_calls=1),
                openai_call(),
                anthropic_call(finish_reason="", tool_calls=1),
                anthropic_call(finish_reason=""),
            ),
            "error": (failed("OpenAIAPIError"), failed("AnthropicAPIError")),
        },
        tool_spans=2,
        reads=(
            "the `<Model>.chat` span's `gen_ai.*` (operation, provider, models, usage incl. "
            "cache), `gen_ai.response.finish_reasons`, `error.type`; the chain's workflow span "
            "and the `execute_tool` span are not calls"
        ),
        notes=(
            "no finish reason on ChatAnthropic's calls (it reads LangChain's `finish_reason`, "
            "which ChatAnthropic names `stop_reason`) and no reasoning tokens: not on the span, "
            "so not recoverable; driven with OpenLLMetry's OpenAI and Anthropic instrumentations "
            "on as well: the LangChain one suppresses them inside its calls, so each call is "
            "one span"
        ),
    ),
}
