"""The simulated vLLM servers' own metrics, sent through the OTel SDK's metrics exporter.

KV-cache pressure lives in the serving engine's metrics, not in any span. When
:meth:`~driftline.simulator.Simulator.run` is given a metrics exporter, the self-hosted
(vLLM) calls of each trace no longer carry ``driftline.kv_cache.usage``: their server reports
its state instead, the way a Prometheus scrape of vLLM's ``/metrics`` reaches ``otlp_metrics``
through the collector (the same ``vllm:`` names and ``model_name`` label, the server's
``host:port`` as ``service.instance.id``), and driftline's as-of join gives each call back
the KV usage its server reported when the call started.

One server per model (:data:`SERVERS`); each reports at every request it admits, dated at the
request's start, so the join is exact and the ground truth's ``kv_cache_usage`` is what the
pipeline must find (a real server is scraped every 15-30 s, which the join's staleness bound
covers):

- ``vllm:kv_cache_usage_perc``: the KV usage the request met (load on the server: normal
  traffic keeps it near 0.4, a ``kv-pressure`` incident is a surge to its magnitude);
- ``vllm:num_requests_running``: the sequences holding that much of the cache, KV usage x
  :data:`MAX_RUNNING` (the usage rises with the load);
- ``vllm:num_requests_waiting``: the queue the request waited in, by Little's law its wait
  x :data:`ADMISSIONS_PER_S`;
- ``vllm:num_preemptions_total``: a counter that grows while the cache is nearly full
  (Poisson, :data:`PREEMPTIONS_PER_REPORT` x the usage above 0.9), dated at the latest
  report so far (a counter's times must not go back).

The points are :class:`~opentelemetry.sdk.metrics.export.MetricsData` handed to the SDK
exporter (an instrument's points are stamped at collection, and simulated time is not now).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

import numpy as np
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Metric,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from driftline.schemas import attributes as a
from driftline.schemas import engine_metrics as em

from .plan import TracePlan
from .workflows import batch_summarizer

MAX_RUNNING: Final = 64  # sequences a full KV cache holds (vLLM's max_num_seqs scale)
ADMISSIONS_PER_S: Final = 20.0
PREEMPTIONS_PER_REPORT: Final = 30.0  # expected preemptions per report, per unit of KV > 0.9
PREEMPTION_ONSET: Final = 0.9
SERVICE_NAME: Final = "vllm"
SCOPE: Final = "driftline.simulator.vllm"
# Each model the vLLM workflow calls, on a server of its own.
SERVERS: Final = {
    batch_summarizer.MODEL: "vllm-0.batch.internal:8000",
    batch_summarizer.UNAPPROVED_MODEL: "vllm-1.batch.internal:8000",
}
_NANOS: Final = 1000


@dataclass(frozen=True, slots=True)
class EngineReport:
    """One request admitted by a server: what the server reports at its start."""

    instance: str
    model: str
    start_us: int
    kv: float
    queue_ms: float


def engine_reports(plan: TracePlan, strip: bool = True) -> list[EngineReport]:
    """The reports of ``plan``'s vLLM calls; with ``strip``, their spans lose the KV
    attribute (the server reports it, the span does not)."""
    out = []
    for node, _ in plan.llm_calls():
        call = node.call
        if call is None or node.scope != batch_summarizer.SERVER_SCOPE:
            continue
        if strip:
            node.attributes.pop(a.DRIFTLINE_KV_CACHE_USAGE, None)
        model = call.response_model or call.request_model
        instance = SERVERS.get(model)
        if instance is None or call.kv_cache_usage is None:
            continue
        out.append(
            EngineReport(instance, model, node.start_us, call.kv_cache_usage, call.queue_ms or 0.0)
        )
    return out


@dataclass(slots=True)
class _Server:
    preemptions: int = 0
    counter_start_ns: int = 0
    counter_time_ns: int = 0


@dataclass(slots=True)
class EnginePublisher:
    """Turns :class:`EngineReport` s into vLLM metrics and exports them (seeded)."""

    exporter: MetricExporter
    seed: int = 0
    exported_points: int = 0
    failed_points: int = 0
    _servers: dict[str, _Server] = field(default_factory=dict)
    _rng: np.random.Generator | None = None

    def publish(self, reports: Iterable[EngineReport]) -> None:
        """One export of ``reports`` (nothing when empty)."""
        by_instance: dict[tuple[str, str], list[EngineReport]] = {}
        for report in reports:
            by_instance.setdefault((report.instance, report.model), []).append(report)
        if not by_instance:
            return
        if self._rng is None:
            self._rng = np.random.default_rng([self.seed, 0x7611])
        resource_metrics = [
            self._resource_metrics(instance, model, sorted(group, key=lambda r: r.start_us))
            for (instance, model), group in sorted(by_instance.items())
        ]
        points = sum(
            len(m.data.data_points)
            for rm in resource_metrics
            for sm in rm.scope_metrics
            for m in sm.metrics
        )
        result = self.exporter.export(MetricsData(resource_metrics=resource_metrics))
        if result is MetricExportResult.SUCCESS:
            self.exported_points += points
        else:
            self.failed_points += points

    def shutdown(self) -> None:
        self.exporter.force_flush()
        self.exporter.shutdown()

    def _resource_metrics(
        self, instance: str, model: str, reports: list[EngineReport]
    ) -> ResourceMetrics:
        assert self._rng is not None
        server = self._servers.setdefault(instance, _Server())
        labels = {em.VLLM_MODEL_LABEL: model}
        kv, running, waiting = [], [], []
        for r in reports:
            at = r.start_us * _NANOS
            kv.append(NumberDataPoint(labels, 0, at, round(r.kv, 4)))
            running.append(NumberDataPoint(labels, 0, at, round(r.kv * MAX_RUNNING)))
            waiting.append(
                NumberDataPoint(labels, 0, at, round(r.queue_ms / 1000 * ADMISSIONS_PER_S))
            )
            overload = max(r.kv - PREEMPTION_ONSET, 0.0)
            server.preemptions += int(self._rng.poisson(PREEMPTIONS_PER_REPORT * overload))
        latest = reports[-1].start_us * _NANOS
        server.counter_start_ns = server.counter_start_ns or reports[0].start_us * _NANOS
        metrics = [
            _gauge(em.VLLM_KV_CACHE_USAGE, "1", kv),
            _gauge(em.VLLM_REQUESTS_RUNNING, "1", running),
            _gauge(em.VLLM_REQUESTS_WAITING, "1", waiting),
        ]
        if latest > server.counter_time_ns:  # else the count goes with a later report
            server.counter_time_ns = latest
            preemptions = NumberDataPoint(
                labels, server.counter_start_ns, latest, server.preemptions
            )
            metrics.append(
                Metric(
                    name=f"{em.VLLM_PREEMPTIONS}_total",
                    description="Cumulative number of preemptions from the engine.",
                    unit="1",
                    data=Sum(
                        data_points=[preemptions],
                        aggregation_temporality=AggregationTemporality.CUMULATIVE,
                        is_monotonic=True,
                    ),
                )
            )
        resource = Resource.create({"service.name": SERVICE_NAME, "service.instance.id": instance})
        scope = InstrumentationScope(SCOPE, "0.1.0")
        return ResourceMetrics(resource, [ScopeMetrics(scope, metrics, "")], "")


def _gauge(name: str, unit: str, points: list[NumberDataPoint]) -> Metric:
    return Metric(name=name, description="", unit=unit, data=Gauge(data_points=points))
