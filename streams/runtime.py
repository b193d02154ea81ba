"""What a running worker's stages share: the Faust app, its topics, tables and counters.

:func:`streams.app.create_app` builds one :class:`Pipeline` and hands it to every stage's
``add_...`` function (decode and assembly in ``streams.app``, storage and monitoring in
``streams.stages``, paging in ``streams.paging``, engine alerts in ``streams.engine_alerts``).
It lives apart from all of them so that each stage can name it without importing the
module that wires the stages together: imports inside ``streams/`` point one way.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import faust

from driftline.config import Settings
from driftline.streams.engine_feed import EngineMetricsFeed
from driftline.streams.positions import SourceMarks

__all__ = ["Pipeline", "RebalanceStep", "Topics"]

# A step run when a rebalance completes; Faust's signal passes its sender.
RebalanceStep = Callable[[Any], Awaitable[None]]


@dataclass(frozen=True)
class Topics:
    otlp_spans: Any
    otlp_spans_dlq: Any
    otlp_metrics: Any
    llm_spans: Any
    llm_events: Any
    llm_alerts: Any


@dataclass
class Pipeline:
    """The app plus what its agents share; tests and commands reach parts through it."""

    settings: Settings
    app: faust.App
    topics: Topics
    open_traces: Any  # faust Table: trace id bytes -> TraceAssembler.export_trace(...)
    tables: dict[str, Any] = field(default_factory=dict)  # every state table, by name
    counters: Counter[str] = field(default_factory=Counter)
    assemblers: dict[int, Any] = field(default_factory=dict)  # llm_spans partition -> assembler
    marks: dict[int, SourceMarks] = field(default_factory=dict)  # llm_spans partition -> marks
    bootstrap_servers: str | None = None  # the explicit --bootstrap-servers, if any
    # Every engine's recent state for the as-of join at decode ([engines]; None when off).
    engine_feed: EngineMetricsFeed | None = None
    # Storage, monitoring, paging (with_governance): a streams.stages.GovernanceState, which
    # is built on this module and so is not named here.
    governance: Any = None
    # Traces closed, by how, by assemblers of partitions this worker no longer owns.
    closed_elsewhere: Counter[str] = field(default_factory=Counter)
    started_s: float = field(default_factory=time.time)
    # Alerts about the worker itself and its heartbeat (streams.telemetry.SelfWatch).
    self_watch: Any = None
    # Per source partition, how long the last record read had waited (streams.telemetry).
    read_delays: Any = None
    # What runs when a rebalance completes (state restores, then readiness), in this order.
    rebalance_steps: list[RebalanceStep] = field(default_factory=list)

    def after_rebalance(self, step: RebalanceStep) -> None:
        """Run ``step`` each time a rebalance completes, after the steps added before it.

        Faust's signal keeps its receivers in a set, so receivers connected to it one by one
        run in an order that changes from one process to the next: the readiness file was
        written before the monitor had restored its state in some runs and after it in
        others. The steps run from one receiver, in the order the stages added them.
        """
        self.rebalance_steps.append(step)
