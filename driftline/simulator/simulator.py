"""The simulator: a seeded arrival process over the workflows, with incidents.

>>> from driftline.simulator import Simulator, SimulatorConfig
>>> sim = Simulator(SimulatorConfig(rate=5, duration_s=10, seed=1, clock="simulated"))
>>> plans = list(sim.plans())
>>> len(plans) > 20 and {p.context.workflow for p in plans} >= {"support-chat", "rag-search"}
True
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

import numpy as np
from opentelemetry.sdk.metrics.export import MetricExporter
from opentelemetry.sdk.trace.export import SpanExporter

from .clock import RealtimeClock, SimulatedClock
from .emitter import IdOnlyEmitter, SpanEmitter
from .engine import EnginePublisher, engine_reports
from .exporters import FanoutExporter
from .ground_truth import GroundTruth
from .incidents import Effects, Incident
from .plan import SpanPlan, TracePlan
from .workflows import WORKFLOW_NAMES, WORKFLOWS, Traffic

ClockName = Literal["realtime", "simulated"]


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    """What to simulate. ``rate`` is requests (traces) per second across workflows."""

    rate: float = 10.0
    duration_s: float = 60.0
    seed: int = 0
    incidents: tuple[Incident, ...] = ()
    clock: ClockName = "realtime"
    start: datetime | None = None  # simulated clock only; default now
    environment: str = "production"
    workflows: tuple[str, ...] = WORKFLOW_NAMES

    def __post_init__(self) -> None:
        if self.rate <= 0:
            raise ValueError(f"rate must be > 0 requests/s, got {self.rate}")
        if self.duration_s <= 0:
            raise ValueError(f"duration must be > 0 seconds, got {self.duration_s}")
        unknown = set(self.workflows) - set(WORKFLOW_NAMES)
        if unknown or not self.workflows:
            raise ValueError(
                f"unknown workflows {sorted(unknown)}; choose from {', '.join(WORKFLOW_NAMES)}"
            )
        for incident in self.incidents:
            if incident.workflow is not None and incident.workflow not in WORKFLOW_NAMES:
                raise ValueError(
                    f"incident {incident.kind} names unknown workflow {incident.workflow!r}; "
                    f"choose from {', '.join(WORKFLOW_NAMES)}"
                )


@dataclass(slots=True)
class SimulationResult:
    traces: int = 0
    spans: int = 0
    events: int = 0
    exported: list[int] = field(default_factory=list)  # spans accepted, per exporter
    failed: list[int] = field(default_factory=list)  # spans refused, per exporter
    elapsed_s: float = 0.0
    first_event_us: int = 0
    last_event_us: int = 0
    stopped: bool = False
    engine_points: int = 0  # engine metric points exported (run with engine_metrics)
    engine_points_failed: int = 0


class Simulator:
    """Generates :class:`TracePlan` requests and emits them through the OTel SDK."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self._stop = threading.Event()

    def stop(self) -> None:
        """Ask a running :meth:`run` (in another thread) to finish early."""
        self._stop.set()

    def plans(self, start_us: int | None = None) -> Iterator[TracePlan]:
        """The seeded sequence of requests; timestamps from ``start_us`` (default: config)."""
        config = self.config
        if start_us is None:
            start_us = SimulatedClock(config.start).start_us
        rng = np.random.default_rng(config.seed)
        traffic = Traffic(rng)
        chosen = [w for w in WORKFLOWS if w.name in config.workflows]
        weights = np.array([w.weight for w in chosen])
        cumulative = np.cumsum(weights / weights.sum())
        offset = 0.0
        while True:
            offset += float(rng.exponential(1.0 / config.rate))
            if offset >= config.duration_s:
                return
            index = int(np.searchsorted(cumulative, rng.random(), "right"))
            workflow = chosen[min(index, len(chosen) - 1)]
            effects = Effects.active(config.incidents, offset, workflow.name)
            arrival = start_us + round(offset * 1_000_000)
            context, root = workflow.build(traffic, effects, arrival, config.environment)
            yield TracePlan(context=context, root=root, offset_s=offset)

    def run(
        self,
        exporters: Sequence[SpanExporter],
        ground_truth: GroundTruth | None = None,
        engine_metrics: MetricExporter | None = None,
    ) -> SimulationResult:
        """Emit every planned request to ``exporters``; fill ``ground_truth`` as it goes.

        With no exporters only the ground truth is made (the ids are the ones the SDK
        would have given), which is much faster. With ``engine_metrics`` the self-hosted
        servers report their KV usage, queue and preemptions there (:mod:`.engine`) before
        each trace's spans are emitted, and their spans no longer carry the KV usage.
        """
        config = self.config
        clock = SimulatedClock(config.start) if config.clock == "simulated" else RealtimeClock()
        fanout = FanoutExporter(exporters)
        emitter: SpanEmitter | IdOnlyEmitter
        if exporters:
            emitter = SpanEmitter(fanout, config.environment, config.seed)
        else:  # ground truth only: same ids, no SDK work
            emitter = IdOnlyEmitter(config.seed)
        engines = EnginePublisher(engine_metrics, config.seed) if engine_metrics else None
        result = SimulationResult()
        began = time.monotonic()
        try:
            for plan in self.plans(clock.start_us):
                if not clock.wait_until(plan.offset_s, self._stop):
                    result.stopped = True
                    break
                shift = clock.end_shift_us(plan.root.end_us)
                if shift:
                    _shift(plan.root, shift)
                if engines is not None:
                    engines.publish(engine_reports(plan))
                emitter.emit(plan)
                if ground_truth is not None:
                    ground_truth.add((plan,))
                    result.events = ground_truth.count
                else:
                    result.events += len(plan.llm_calls())
                result.traces += 1
                result.first_event_us = result.first_event_us or plan.root.start_us
                result.last_event_us = max(result.last_event_us, plan.root.end_us)
        finally:
            emitter.shutdown()
            if engines is not None:
                engines.shutdown()
                result.engine_points = engines.exported_points
                result.engine_points_failed = engines.failed_points
        result.spans = emitter.spans_emitted
        result.exported = list(fanout.exported)
        result.failed = list(fanout.failed)
        result.elapsed_s = time.monotonic() - began
        return result


def _shift(root: SpanPlan, delta_us: int) -> None:
    for node, _ in root.walk():
        node.start_us += delta_us
        node.end_us += delta_us
