"""What the pipeline publishes, read back live for the demo's view.

One confluent-kafka consumer, assigned every partition of ``llm_events`` (request events
and trace summaries) and ``llm_alerts`` (alert lifecycle transitions) from the beginning,
so no group join is waited for. It counts events, requests and cost per workflow and keeps
the current state of every alert.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Final

from driftline.config import Settings
from driftline.streams import topics
from driftline.streams.kafka import consumer_config

MAX_MESSAGES_PER_POLL: Final = 500


@dataclass(slots=True)
class AlertState:
    """One alert (one ``alert_id``) as the view shows it; times are wall clock seconds."""

    alert_id: str
    dedup_key: str
    kind: str
    workflow: str
    metric: str
    severity: str
    bundle_id: str
    opened_at_us: int
    seen_open_s: float
    record: dict[str, Any]
    resolved_at_us: int | None = None
    seen_resolve_s: float | None = None

    @property
    def is_open(self) -> bool:
        return self.resolved_at_us is None


@dataclass(slots=True)
class WorkflowTotals:
    requests: int = 0
    events: int = 0
    cost_usd: float = 0.0


@dataclass
class PipelineWatch:
    """Counts of what reached ``llm_events`` and the alerts on ``llm_alerts``."""

    settings: Settings
    bootstrap_servers: str
    events: int = 0
    requests: int = 0
    workflows: dict[str, WorkflowTotals] = field(
        default_factory=lambda: defaultdict(WorkflowTotals)
    )
    # (workflow, bundle_id) -> wall clock second its first event was read
    bundle_first_seen: dict[tuple[str, str], float] = field(default_factory=dict)
    alerts: dict[str, AlertState] = field(default_factory=dict)  # by alert_id, in open order
    new_alerts: list[AlertState] = field(default_factory=list)  # opened since last drain
    new_resolves: list[AlertState] = field(default_factory=list)
    _consumer: Any = None

    def start(self) -> PipelineWatch:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        config = consumer_config(
            self.settings.kafka,
            f"driftline-demo-view-{uuid.uuid4().hex[:8]}",
            self.bootstrap_servers,
            **{"enable.auto.commit": False},
        )
        self._consumer = Consumer(config)
        partitions = self.settings.kafka.partitions
        self._consumer.assign(
            [
                TopicPartition(topic, p, OFFSET_BEGINNING)
                for topic in (topics.LLM_EVENTS, topics.LLM_ALERTS)
                for p in range(partitions)
            ]
        )
        return self

    def poll(self, timeout_s: float) -> int:
        """Read what arrived (waiting at most ``timeout_s``); returns messages read."""
        if self._consumer is None:
            return 0
        messages = self._consumer.consume(MAX_MESSAGES_PER_POLL, timeout=timeout_s)
        for message in messages:
            if message.error() is not None or message.value() is None:
                continue
            try:
                doc = json.loads(message.value())
            except ValueError:
                continue
            if message.topic() == topics.LLM_EVENTS:
                self._count(doc)
            elif message.topic() == topics.LLM_ALERTS:
                self._transition(doc)
        return len(messages)

    def drain_news(self) -> tuple[list[AlertState], list[AlertState]]:
        """Alerts opened and resolved since the previous call."""
        opened, resolved = self.new_alerts, self.new_resolves
        self.new_alerts, self.new_resolves = [], []
        return opened, resolved

    def open_alerts(self) -> list[AlertState]:
        return [a for a in self.alerts.values() if a.is_open]

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    def _count(self, doc: dict[str, Any]) -> None:
        now = time.time()
        for event in doc.get("events", ()):
            workflow = str(event.get("workflow") or "")
            self.bundle_first_seen.setdefault((workflow, str(event.get("bundle_id") or "")), now)
            totals = self.workflows[workflow]
            totals.events += 1
            self.events += 1
        for trace in doc.get("traces", ()):
            totals = self.workflows[str(trace.get("workflow") or "")]
            totals.requests += 1
            totals.cost_usd += float(trace.get("cost_usd") or 0.0)
            self.requests += 1

    def _transition(self, doc: dict[str, Any]) -> None:
        from driftline.schemas.alert import TRANSITION_FIELDS
        from driftline.schemas.event import from_wire

        record = from_wire(doc, TRANSITION_FIELDS)
        alert_id = str(record["alert_id"])
        now = time.time()
        alert = self.alerts.get(alert_id)
        if alert is None:
            alert = AlertState(
                alert_id=alert_id,
                dedup_key=str(record["dedup_key"]),
                kind=str(record["kind"]),
                workflow=str(record["workflow"]),
                metric=str(record["metric"]),
                severity=str(record["severity"]),
                bundle_id=str(record["bundle_id"]),
                opened_at_us=int(record["opened_at"] or 0),
                seen_open_s=now,
                record=record,
            )
            self.alerts[alert_id] = alert
            self.new_alerts.append(alert)
        alert.severity = str(record["severity"]) or alert.severity
        alert.record = record
        if record["transition"] == "resolve" and alert.resolved_at_us is None:
            alert.resolved_at_us = int(record["resolved_at"] or record["event_ts"] or 0)
            alert.seen_resolve_s = now
            self.new_resolves.append(alert)
