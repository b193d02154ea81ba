"""agent-planner: a tool-using agent on OpenAI models, OTel GenAI names (some deprecated).

An ``invoke_agent`` root span holds a plan-act loop: a planner chat call asks for
tools, ``execute_tool`` spans run them, and the loop ends with a final answer.
Some tools call a model themselves (LLM-call depth 2) and ``research`` runs a
sub-agent whose tool calls a model again (depth 3). An older library in the
sub-agent, and some planner calls, still write pre-1.27 names (``gen_ai.system``,
``gen_ai.usage.prompt_tokens``). Failed calls are retried as sibling spans with
``driftline.retry.attempt``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

from driftline.schemas import attributes as a

from .. import conventions
from ..incidents import Effects
from ..plan import AttrValue, LlmCall, SpanPlan, TraceContext
from .common import Traffic, error_status, failed_call, failure_duration_s, us
from .common import with_retries as retried

NAME: Final = "agent-planner"
SERVICE: Final = "planner-agent"
SCOPE: Final = "opentelemetry.instrumentation.openai_v2"
AGENT_SCOPE: Final = "planner-agent.runtime"
PROVIDER: Final = "openai"
PLANNER: Final = "planner"
RESEARCHER: Final = "researcher"
SNAPSHOTS: Final = {
    "gpt-4o": "gpt-4o-2024-08-06",
    "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
    "gpt-4-turbo": "gpt-4-turbo-2024-04-09",
}
PLANNER_MODEL: Final = "gpt-4o"
TOOL_MODEL: Final = "gpt-4o-mini"
APPROVED_MODELS: Final = (PLANNER_MODEL, TOOL_MODEL)
UNAPPROVED_MODEL: Final = "gpt-4-turbo"
PROMPT_VERSION: Final = "planner-v5"
CANARY_PROMPT_VERSION: Final = "planner-v6"
TOOLS: Final = ("web_search", "sql_query", "calculator", "summarize_doc", "research")
_TOOL_WEIGHTS: Final = np.array([0.3, 0.2, 0.15, 0.2, 0.15])
_TOOLS_WITH_LLM: Final = frozenset({"web_search", "summarize_doc"})
_DECODE_TOKENS_PER_S: Final = {"gpt-4o": 55.0, "gpt-4o-mini": 85.0, "gpt-4-turbo": 30.0}
MAX_ITERATIONS: Final = 40


@dataclass(slots=True)
class _Run:
    """One agent run: the shared sampler, incidents, context and a time cursor."""

    traffic: Traffic
    effects: Effects
    context_attrs: dict[str, AttrValue]
    planner_model: str
    t: int

    def call(
        self,
        parent: SpanPlan,
        model: str,
        agent: str,
        prompt: int,
        out_median: float,
        finish: str,
        tool_calls: int,
        deprecated: bool,
    ) -> LlmCall | None:
        """One chat call (with retries) under ``parent``; None when every attempt failed."""
        traffic = self.traffic

        def base(attempt: int) -> LlmCall:
            return LlmCall(
                operation=a.OP_CHAT,
                provider=PROVIDER,
                request_model=model,
                response_model=SNAPSHOTS[model],
                retry_attempt=attempt,
                agent=agent,
                model_version=SNAPSHOTS[model],
            )

        def make_call(begin: int, attempt: int) -> SpanPlan:
            call = base(attempt)
            call.input_tokens = prompt
            if prompt >= 1024:
                call.cache_read_tokens = int(prompt * 0.8) // 128 * 128
            call.output_tokens = traffic.lognormal_int(
                out_median * self.effects.output_token_factor, 0.5, hi=4096
            )
            call.finish_reason = finish
            call.tool_calls = tool_calls
            call.output_chars = traffic.output_chars(call.output_tokens)
            call.validation_failed = finish == "tool_calls" and traffic.chance(0.01)
            duration = traffic.ttft_s(prompt, 0.35) + traffic.decode_s(
                call.output_tokens, _DECODE_TOKENS_PER_S[model]
            )
            return self._span(call, begin, begin + us(duration), deprecated)

        def make_failure(begin: int, attempt: int, error_type: str) -> SpanPlan:
            end = begin + us(failure_duration_s(traffic, error_type))
            return self._span(
                failed_call(base(attempt), error_type, attempt), begin, end, deprecated
            )

        attempts, self.t = retried(traffic, self.effects, self.t, make_call, make_failure)
        parent.children.extend(attempts)
        return (
            None if attempts[-1].call is None or attempts[-1].call.error_type else attempts[-1].call
        )

    def _span(self, call: LlmCall, start: int, end: int, deprecated: bool) -> SpanPlan:
        attrs = {
            **self.context_attrs,
            **conventions.genai(call, deprecated=deprecated),
            **conventions.driftline_call(call),
        }
        span = SpanPlan(
            name=f"chat {call.request_model}",
            start_us=start,
            end_us=end,
            scope=SCOPE,
            kind="client",
            attributes=attrs,
            call=call,
        )
        if call.error_type:
            error_status(span, call.error_type)
        return span

    def tool(self, parent: SpanPlan, name: str) -> SpanPlan:
        span = SpanPlan(
            name=f"execute_tool {name}",
            start_us=self.t,
            end_us=self.t,
            scope=AGENT_SCOPE,
            is_tool=True,
            attributes={
                **self.context_attrs,
                a.GEN_AI_OPERATION_NAME: a.OP_EXECUTE_TOOL,
                a.GEN_AI_TOOL_NAME: name,
            },
        )
        parent.children.append(span)
        return span

    def run_tool(self, parent: SpanPlan, name: str) -> int:
        """Run one tool under ``parent``; returns the tokens its result adds to the context."""
        traffic = self.traffic
        span = self.tool(parent, name)
        self.t += us(0.005 + 0.05 * traffic.rng.random())
        if name in _TOOLS_WITH_LLM:
            prompt = traffic.lognormal_int(1500, 0.6, lo=100, hi=100_000)
            self.call(span, TOOL_MODEL, PLANNER, prompt, 200, "stop", 0, deprecated=False)
        elif name == "research":
            self._research(span)
        else:
            self.t += us(0.01 + 0.2 * traffic.rng.random())
        self.t += us(0.002)
        span.end_us = self.t
        return traffic.lognormal_int(400, 0.7, lo=20, hi=20_000)

    def _research(self, tool_span: SpanPlan) -> None:
        """A sub-agent on an older library: its spans use the pre-1.27 names."""
        traffic = self.traffic
        sub = SpanPlan(
            name=f"invoke_agent {RESEARCHER}",
            start_us=self.t,
            end_us=self.t,
            scope=AGENT_SCOPE,
            attributes={
                **self.context_attrs,
                a.GEN_AI_OPERATION_NAME: a.OP_INVOKE_AGENT,
                a.GEN_AI_AGENT_NAME: RESEARCHER,
                a.GEN_AI_SYSTEM: PROVIDER,
            },
        )
        tool_span.children.append(sub)
        prompt = traffic.lognormal_int(900, 0.5, lo=100, hi=50_000)
        self.call(sub, TOOL_MODEL, RESEARCHER, prompt, 60, "tool_calls", 1, deprecated=True)
        fetch = self.tool(sub, "fetch_page")
        self.t += us(0.1 + 0.4 * traffic.rng.random())
        page = traffic.lognormal_int(3000, 0.6, lo=200, hi=100_000)
        self.call(fetch, TOOL_MODEL, RESEARCHER, page, 250, "stop", 0, deprecated=True)
        fetch.end_us = self.t
        self.call(sub, TOOL_MODEL, RESEARCHER, prompt + 300, 200, "stop", 0, deprecated=True)
        sub.end_us = self.t


def build(
    traffic: Traffic, effects: Effects, start_us: int, environment: str
) -> tuple[TraceContext, SpanPlan]:
    tenant = traffic.tenant()
    user = traffic.user_hash(tenant)
    canary = traffic.chance(effects.canary_share)
    ctx = TraceContext(
        workflow=NAME,
        service=SERVICE,
        environment=environment,
        tenant=tenant,
        route="/agent/tasks",
        session_id=traffic.session_id(user, p_continue=0.3),
        user_hash=user,
        prompt_version=CANARY_PROMPT_VERSION if canary else PROMPT_VERSION,
    )
    context_attrs: dict[str, AttrValue] = {
        **conventions.driftline_context(ctx, workflow=False),
        a.GEN_AI_WORKFLOW_NAME: NAME,
        a.GEN_AI_CONVERSATION_ID: ctx.session_id,
    }
    root = SpanPlan(
        name=f"invoke_agent {PLANNER}",
        start_us=start_us,
        end_us=start_us,
        scope=AGENT_SCOPE,
        attributes={
            **context_attrs,
            a.GEN_AI_OPERATION_NAME: a.OP_INVOKE_AGENT,
            a.GEN_AI_AGENT_NAME: PLANNER,
            a.GEN_AI_PROVIDER_NAME: PROVIDER,
        },
    )
    model = UNAPPROVED_MODEL if traffic.chance(effects.unapproved_share) else PLANNER_MODEL
    run = _Run(traffic, effects, context_attrs, model, start_us + us(0.01))
    iterations = 1 + int(traffic.rng.poisson(1.5 + (0.8 if canary else 0.0)))
    iterations = min(MAX_ITERATIONS, round(min(iterations, 5) * effects.cost_factor))
    context_tokens = traffic.lognormal_int(1800, 0.3, lo=400, hi=20_000)
    for i in range(iterations):
        final = i == iterations - 1
        tool_count = 0 if final else 1 + int(traffic.chance(0.35))
        deprecated = traffic.chance(0.2)
        call = run.call(
            root,
            model,
            PLANNER,
            context_tokens,
            350 if final else 110,
            "stop" if final else "tool_calls",
            tool_count,
            deprecated,
        )
        if call is None:
            error_status(root, root.children[-1].status_message)
            break
        context_tokens += call.output_tokens
        for _ in range(tool_count):
            context_tokens += run.run_tool(root, traffic.pick(TOOLS, _TOOL_WEIGHTS))
    root.end_us = run.t + us(0.005)
    return ctx, root
