"""What one simulated request looks like before it becomes OpenTelemetry spans.

Workflows build a tree of :class:`SpanPlan` nodes with explicit event-time start
and end (microseconds). LLM-call nodes also carry an :class:`LlmCall`: the true
values of that call, from which a convention module writes span attributes and
the ground-truth module writes the normalized event. Keeping the truth apart from
the attribute names is what lets the ground truth check the normalizer's
precedence rules instead of repeating them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

AttrValue = str | bool | int | float | list[str]
SpanKindName = Literal["internal", "server", "client"]
StatusName = Literal["unset", "ok", "error"]


@dataclass(slots=True)
class TraceContext:
    """Request-wide facts shared by every span of one trace."""

    workflow: str
    service: str
    environment: str
    tenant: str
    route: str
    session_id: str
    user_hash: str
    prompt_version: str
    router_version: str = ""
    retrieval_index_version: str = ""
    model_version: str = ""


@dataclass(slots=True)
class LlmCall:
    """The true values of one model call; conventions turn them into attributes."""

    operation: str
    provider: str
    request_model: str
    response_model: str
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    ttft_ms: float | None = None
    queue_ms: float | None = None
    kv_cache_usage: float | None = None
    retry_attempt: int = 0
    tool_calls: int = 0
    finish_reason: str = ""
    output_chars: int | None = None
    validation_failed: bool = False
    error_type: str = ""
    agent: str = ""
    model_version: str = ""
    # False for a model server's own span (vLLM): it cannot know the app's prompt,
    # router or index versions or the user, so the event does not carry them.
    app_context: bool = True


@dataclass(slots=True)
class SpanPlan:
    """One span to emit. ``counts_for_depth``: an LLM call or a tool execution."""

    name: str
    start_us: int
    end_us: int
    scope: str
    kind: SpanKindName = "internal"
    attributes: dict[str, AttrValue] = field(default_factory=dict)
    status: StatusName = "unset"
    status_message: str = ""
    call: LlmCall | None = None
    is_tool: bool = False
    children: list[SpanPlan] = field(default_factory=list)
    # Filled when the span is emitted.
    trace_id: str = ""
    span_id: str = ""
    parent_span_id: str = ""

    @property
    def counts_for_depth(self) -> bool:
        return self.call is not None or self.is_tool

    def walk(self) -> Iterator[tuple[SpanPlan, int]]:
        """Every node depth-first with its loop depth (LLM calls and tools on its path)."""
        stack: list[tuple[SpanPlan, int]] = [(self, 0)]
        while stack:
            node, above = stack.pop()
            depth = above + (1 if node.counts_for_depth else 0)
            yield node, depth
            stack.extend((child, depth) for child in reversed(node.children))


@dataclass(slots=True)
class TracePlan:
    """One request: its context, its root span, and the event time it arrived."""

    context: TraceContext
    root: SpanPlan
    offset_s: float  # seconds since the simulation started (event time)

    def llm_calls(self) -> list[tuple[SpanPlan, int]]:
        return [(node, depth) for node, depth in self.root.walk() if node.call is not None]

    def span_count(self) -> int:
        return sum(1 for _ in self.root.walk())
