"""The normalized events the simulator sent: what the pipeline should produce.

Built from each call's true values (:class:`~driftline.simulator.plan.LlmCall`)
and the ids the SDK gave its span, never by reading span attributes back, so a
comparison with the normalizer tests its precedence rules. Fields that need the
whole trace follow the trace assembler's definitions: ``loop_depth`` counts the
LLM calls and tool executions from the root to the call, the call included;
``workflow``, ``tenant``, ``route`` and ``session_id`` are the request's.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import IO, Any

from driftline.schemas.event import bundle_id, to_wire
from driftline.streams.pricing import PriceBook

from .plan import LlmCall, SpanPlan, TracePlan


def call_event(trace: TracePlan, span: SpanPlan, depth: int) -> dict[str, Any]:
    """The normalized event of one emitted LLM-call span (cost not yet filled)."""
    call: LlmCall = span.call  # type: ignore[assignment]
    ctx = trace.context
    app = call.app_context
    prompt_version = ctx.prompt_version if app else ""
    index_version = ctx.retrieval_index_version if app else ""
    router_version = ctx.router_version if app else ""
    model_version = call.model_version
    model = call.response_model or call.request_model
    event: dict[str, Any] = {
        "trace_id": span.trace_id,
        "span_id": span.span_id,
        "parent_span_id": span.parent_span_id,
        "start_ts": span.start_us,
        "end_ts": span.end_us,
        "service": ctx.service,
        "environment": ctx.environment,
        "workflow": ctx.workflow,
        "agent": call.agent,
        "tenant": ctx.tenant,
        "user_hash": ctx.user_hash if app else "",
        "session_id": ctx.session_id,
        "route": ctx.route,
        "operation": call.operation,
        "provider": call.provider,
        "request_model": call.request_model,
        "response_model": call.response_model,
        "model_version": model_version,
        "prompt_version": prompt_version,
        "retrieval_index_version": index_version,
        "router_version": router_version,
        "bundle_id": bundle_id(model, model_version, prompt_version, index_version, router_version),
        "input_tokens": call.input_tokens,
        "output_tokens": call.output_tokens,
        "cache_read_tokens": call.cache_read_tokens,
        "cache_write_tokens": call.cache_write_tokens,
        "reasoning_tokens": call.reasoning_tokens,
        "cost_usd": None,
        "price_source": "",
        "latency_ms": (span.end_us - span.start_us) / 1000.0,
        "ttft_ms": call.ttft_ms,
        "queue_ms": call.queue_ms,
        "kv_cache_usage": call.kv_cache_usage,
        "retry_attempt": call.retry_attempt,
        "loop_depth": depth,
        "tool_calls": call.tool_calls,
        "finish_reason": call.finish_reason,
        "output_chars": call.output_chars,
        "validation_failed": call.validation_failed,
        "error_type": call.error_type,
        "status": span.status,
        "attributes": {},
    }
    return event


def trace_events(trace: TracePlan) -> list[dict[str, Any]]:
    return [call_event(trace, span, depth) for span, depth in trace.llm_calls()]


class GroundTruth:
    """Collects (and optionally streams to NDJSON) the events of emitted traces."""

    def __init__(self, out: IO[str] | None = None, keep: bool = True, price: bool = True) -> None:
        self._out = out
        self._keep = keep
        self._prices = PriceBook(overrides=None) if price else None
        self.events: list[dict[str, Any]] = []
        self.count = 0

    @property
    def priced(self) -> bool:
        return self._prices is not None

    def add(self, traces: Iterable[TracePlan]) -> None:
        events = [event for trace in traces for event in trace_events(trace)]
        if self._prices is not None:
            self._prices.apply(events)
        self.count += len(events)
        if self._out is not None:
            self._out.writelines(
                json.dumps(to_wire(e), separators=(",", ":")) + "\n" for e in events
            )
        if self._keep:
            self.events.extend(events)
