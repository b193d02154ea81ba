"""Turn planned traces into real OpenTelemetry spans through the Python SDK.

One ``TracerProvider`` per service (its own resource: ``service.name`` and the
deployment environment), one tracer per instrumentation scope, and a single
``BatchSpanProcessor`` shared by all providers, so one export thread batches
spans of every service the way a collector sees several apps. Span and trace
ids come from a seeded generator, so a seed fixes the ids too.
"""

from __future__ import annotations

import random
from typing import Final

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import SpanKind, Status, StatusCode

from driftline.schemas import attributes as a

from .plan import SpanPlan, TracePlan

_KINDS: Final = {
    "internal": SpanKind.INTERNAL,
    "server": SpanKind.SERVER,
    "client": SpanKind.CLIENT,
}
_NANOS_PER_MICRO: Final = 1000
SCOPE_VERSION: Final = "0.1.0"


class SeededIdGenerator(IdGenerator):
    """Trace and span ids from a seeded PRNG (never zero, as the spec requires)."""

    def __init__(self, seed: int) -> None:
        self._random = random.Random(seed)

    def generate_span_id(self) -> int:
        return self._random.getrandbits(64) or 1

    def generate_trace_id(self) -> int:
        return self._random.getrandbits(128) or 1


class SpanEmitter:
    """Emits :class:`TracePlan` trees as SDK spans and records the ids they got."""

    def __init__(
        self,
        exporter: SpanExporter,
        environment: str,
        seed: int,
        max_queue_size: int = 32_768,
        schedule_delay_ms: float = 500,
        max_export_batch_size: int = 512,
    ) -> None:
        self.environment = environment
        self.max_queue_size = max_queue_size
        self._ids = SeededIdGenerator(seed)
        self._processor = BatchSpanProcessor(
            exporter,
            max_queue_size=max_queue_size,
            schedule_delay_millis=schedule_delay_ms,
            max_export_batch_size=max_export_batch_size,
        )
        self._providers: dict[str, TracerProvider] = {}
        self._tracers: dict[tuple[str, str], trace.Tracer] = {}
        self._unflushed = 0
        self.spans_emitted = 0

    def _tracer(self, service: str, scope: str) -> trace.Tracer:
        tracer = self._tracers.get((service, scope))
        if tracer is None:
            provider = self._providers.get(service)
            if provider is None:
                resource = Resource(
                    {a.SERVICE_NAME: service, a.DEPLOYMENT_ENVIRONMENT_NAME: self.environment}
                )
                provider = TracerProvider(
                    resource=resource, id_generator=self._ids, shutdown_on_exit=False
                )
                provider.add_span_processor(self._processor)
                self._providers[service] = provider
            tracer = provider.get_tracer(scope, SCOPE_VERSION)
            self._tracers[(service, scope)] = tracer
        return tracer

    def emit(self, plan: TracePlan) -> None:
        self._emit(plan.root, plan.context.service, Context(), "")
        # The SDK drops spans when its queue is full; generating faster than it exports
        # (simulated clock) must wait for the exporter instead.
        if self._unflushed > self.max_queue_size // 2:
            self.flush()

    def _emit(self, node: SpanPlan, service: str, parent: Context, parent_id: str) -> None:
        span = self._tracer(service, node.scope).start_span(
            node.name,
            context=parent,
            kind=_KINDS[node.kind],
            attributes=node.attributes,
            start_time=node.start_us * _NANOS_PER_MICRO,
        )
        span_context = span.get_span_context()
        node.trace_id = trace.format_trace_id(span_context.trace_id)
        node.span_id = trace.format_span_id(span_context.span_id)
        node.parent_span_id = parent_id
        if node.children:
            child_context = trace.set_span_in_context(span, Context())
            for child in node.children:
                self._emit(child, service, child_context, node.span_id)
        if node.status == "error":
            span.set_status(Status(StatusCode.ERROR, node.status_message or None))
        elif node.status == "ok":
            span.set_status(Status(StatusCode.OK))
        span.end(end_time=node.end_us * _NANOS_PER_MICRO)
        self._unflushed += 1
        self.spans_emitted += 1

    def flush(self, timeout_ms: int = 60_000) -> bool:
        self._unflushed = 0
        return self._processor.force_flush(timeout_ms)

    def shutdown(self) -> None:
        """Export what is queued, then close the exporter."""
        self._processor.force_flush()
        self._processor.shutdown()


class IdOnlyEmitter:
    """Assigns the ids :class:`SpanEmitter` would, without creating spans.

    For runs that only want the ground truth: the SDK draws a trace id and then a
    span id for a root span and a span id for every other span, in creation order,
    which is exactly what this does with the same seeded generator.
    """

    def __init__(self, seed: int) -> None:
        self._ids = SeededIdGenerator(seed)
        self.spans_emitted = 0

    def emit(self, plan: TracePlan) -> None:
        trace_id = trace.format_trace_id(self._ids.generate_trace_id())
        self._assign(plan.root, trace_id, "")

    def _assign(self, node: SpanPlan, trace_id: str, parent_id: str) -> None:
        node.trace_id = trace_id
        node.span_id = trace.format_span_id(self._ids.generate_span_id())
        node.parent_span_id = parent_id
        self.spans_emitted += 1
        for child in node.children:
            self._assign(child, trace_id, node.span_id)

    def shutdown(self) -> None:
        return None
