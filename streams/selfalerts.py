"""Alerts about the worker itself, and when its heartbeat is due (pure: no I/O, no clock).

A broken pipeline must page instead of going quiet. Every ``[worker] self_alert_check_s``
the worker reads a few values it holds anyway (:class:`Reading`: the same ones ``/metrics``
exports) and :meth:`SelfAlerts.step` decides which conditions open or resolve:

========================  ====================================================  ===========
condition                 bad while                                             severity
========================  ====================================================  ===========
``consumer_lag``          records behind on the assigned source partitions      ``error``
                          > ``self_alert_lag_records``
``store_failing``         the store is not open, or its last write failed       ``critical``
``dead_letters``          spans and records dead-lettered per second, over the  ``warning``
                          last minute (a span past a message's first 1,000
                          rejects counts, though the message goes as one),
                          > ``self_alert_dead_letters_per_s``
``deliveries_failing``    a paging route is held (its events kept for           ``error``
                          redelivery), or a delivery failed for good in the
                          last minute
========================  ====================================================  ===========

A condition opens once it has been bad at every reading for ``self_alert_for_s``; one good
reading in between starts the wait again. It then stays open while the value is above half
its bound (hysteresis: a value wandering around the bound is one incident, not a page per
crossing) and resolves once it has been at or below that for ``self_alert_hold_down_s``.

The open alerts are what a restart must not forget (an incident left open in PagerDuty with
nobody to resolve it): :meth:`SelfAlerts.export_open` and :meth:`SelfAlerts.restore_open`,
which the worker keeps in a small file.

Transitions are alert transition records (``schemas.alert.TRANSITION_FIELDS``) of kind
``pipeline``, dedup key ``pipeline/<worker>/<condition>/``, ``workflow`` ``driftline`` (a
route whose ``workflow`` glob matches it receives them: the default ``*`` does), so the
notifier delivers them as it delivers any alert. Their ``evidence.description`` is the line
the page's summary shows.

The heartbeat (:class:`HeartbeatSchedule`) is due every ``heartbeat_s`` while the worker is
ready and no self-alert is open: a monitor that expects it pages when it stops, which covers
what the self-alerts cannot (a route that fails cannot carry the page about itself; a worker
that is dead, wedged or partitioned from the pager sends nothing at all).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from driftline.schemas.alert import alert_id, dedup_key

__all__ = [
    "CONDITIONS",
    "KIND_PIPELINE",
    "PIPELINE_WORKFLOW",
    "HeartbeatSchedule",
    "Reading",
    "Rules",
    "SelfAlerts",
]

KIND_PIPELINE: Final = "pipeline"
PIPELINE_WORKFLOW: Final = "driftline"  # the alerts' workflow: what routes match on
CONSUMER_LAG: Final = "consumer_lag"
STORE_FAILING: Final = "store_failing"
DEAD_LETTERS: Final = "dead_letters"
DELIVERIES_FAILING: Final = "deliveries_failing"
CONDITIONS: Final = (CONSUMER_LAG, STORE_FAILING, DEAD_LETTERS, DELIVERIES_FAILING)
SEVERITY: Final = {
    CONSUMER_LAG: "error",
    STORE_FAILING: "critical",
    DEAD_LETTERS: "warning",
    DELIVERIES_FAILING: "error",
}
CLEAR_RATIO: Final = 0.5  # an open condition clears at or below this share of its bound
RATE_WINDOW_S: Final = 60.0  # dead letters and failed deliveries are counted over this
US: Final = 1_000_000


@dataclass(frozen=True, slots=True)
class Reading:
    """What the worker holds at one instant (``at_s``: Unix seconds).

    ``lag_records``: records behind per ``(topic, partition)`` of its assigned source
    partitions; ``store_open`` None when the worker has no store stages; ``dead_letters``
    and ``deliveries_failed`` are counters since start (spans and records dead-lettered;
    deliveries ended ``failed_permanent`` or ``gave_up``); ``routes_held`` the routes whose
    events are kept for redelivery now.
    """

    at_s: float
    lag_records: Mapping[tuple[str, int], int] = field(default_factory=dict)
    store_open: bool | None = True
    store_failures: int = 0
    dead_letters: int = 0
    deliveries_failed: int = 0
    routes_held: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Rules:
    """Bounds and times (``[worker] self_alert_*``)."""

    for_s: float = 60.0
    hold_down_s: float = 300.0
    lag_records: int = 10_000
    dead_letters_per_s: float = 1.0
    rate_window_s: float = RATE_WINDOW_S

    @classmethod
    def from_settings(cls, worker: Any) -> Rules:
        return cls(
            for_s=worker.self_alert_for_s,
            hold_down_s=worker.self_alert_hold_down_s,
            lag_records=worker.self_alert_lag_records,
            dead_letters_per_s=worker.self_alert_dead_letters_per_s,
        )

    def bound(self, condition: str) -> float:
        """The value above which ``condition`` is bad (0 for the yes/no conditions)."""
        if condition == CONSUMER_LAG:
            return float(self.lag_records)
        if condition == DEAD_LETTERS:
            return self.dead_letters_per_s
        return 0.0


@dataclass(slots=True)
class _State:
    bad_since_s: float | None = None
    clear_since_s: float | None = None
    opened_us: int | None = None  # set while open
    peak: float = 0.0


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 or value == int(value) else f"{value:.2g}"


class SelfAlerts:
    """The four conditions of one worker; :meth:`step` with each new :class:`Reading`.

    >>> alerts = SelfAlerts("w1", Rules(for_s=10, hold_down_s=30))
    >>> alerts.step(Reading(0, store_failures=2))
    []
    >>> [(t["transition"], t["dedup_key"]) for t in alerts.step(Reading(10, store_failures=3))]
    [('open', 'pipeline/w1/store_failing/')]
    >>> alerts.step(Reading(20)), alerts.step(Reading(49))
    ([], [])
    >>> [t["transition"] for t in alerts.step(Reading(50))]
    ['resolve']
    """

    def __init__(self, worker: str, rules: Rules, runbook_base_url: str = "") -> None:
        self.worker = worker
        self.rules = rules
        self.runbook_base_url = runbook_base_url.rstrip("/")
        self._states = {name: _State() for name in CONDITIONS}
        # (at_s, dead letters, failed deliveries) over the last rate window
        self._history: deque[tuple[float, int, int]] = deque()

    def export_open(self) -> dict[str, int]:
        """When each open condition opened (Unix microseconds): what a restart must resume."""
        return {name: s.opened_us for name, s in self._states.items() if s.opened_us is not None}

    def restore_open(self, opened: Mapping[str, Any]) -> list[str]:
        """Resume alerts a previous run of this worker left open (unknown names ignored), so
        each resolves, under its own alert id, once its condition has cleared."""
        resumed = []
        for name, opened_us in opened.items():
            state = self._states.get(str(name))
            if state is not None and isinstance(opened_us, int) and state.opened_us is None:
                state.opened_us = opened_us
                resumed.append(str(name))
        return resumed

    def open_conditions(self) -> list[str]:
        return [name for name, state in self._states.items() if state.opened_us is not None]

    def is_open(self, condition: str) -> bool:
        return self._states[condition].opened_us is not None

    def step(self, reading: Reading) -> list[dict[str, Any]]:
        """The transitions ``reading`` causes (an ``open`` or a ``resolve`` per condition)."""
        self._remember(reading)
        out = []
        for name in CONDITIONS:
            value, description, evidence = self._measure(name, reading)
            transition = self._advance(name, value, reading.at_s, description, evidence)
            if transition is not None:
                out.append(transition)
        return out

    # -- measuring --------------------------------------------------------------------------

    def _remember(self, reading: Reading) -> None:
        self._history.append((reading.at_s, reading.dead_letters, reading.deliveries_failed))
        # Keep the newest reading at or before the window's start: the rate spans the window.
        while len(self._history) > 1 and self._history[1][0] <= reading.at_s - (
            self.rules.rate_window_s
        ):
            self._history.popleft()

    def _increase(self) -> tuple[float, int, int]:
        """(seconds covered, dead letters, failed deliveries) since the window's start."""
        first, last = self._history[0], self._history[-1]
        # A counter that went down (a restart of its source) counts from 0.
        dead = last[1] - first[1] if last[1] >= first[1] else last[1]
        failed = last[2] - first[2] if last[2] >= first[2] else last[2]
        return last[0] - first[0], dead, failed

    def _measure(self, name: str, r: Reading) -> tuple[float, str, dict[str, Any]]:
        rules = self.rules
        if name == CONSUMER_LAG:
            total = sum(r.lag_records.values())
            by_topic: dict[str, int] = {}
            for (topic, _partition), behind in r.lag_records.items():
                by_topic[topic] = by_topic.get(topic, 0) + behind
            worst = sorted(by_topic.items(), key=lambda item: -item[1])
            where = ", ".join(f"{topic} {_fmt(n)}" for topic, n in worst if n)
            text = f"{_fmt(total)} records behind on its source topics" + (
                f" ({where})" if where else ""
            )
            text += f", bound {_fmt(rules.lag_records)}"
            return float(total), text, {"lag_by_topic": by_topic}
        if name == STORE_FAILING:
            if r.store_open is None:
                return 0.0, "no store stages", {}
            if not r.store_open:
                value = float(max(r.store_failures, 1))
                text = "store not open (never reached since the worker started); see its log"
            elif r.store_failures:
                value = float(r.store_failures)
                text = (
                    f"store failing: {r.store_failures} writes failed in a row; consumption "
                    "paused, rows held until it answers"
                )
            else:
                value = 0.0
                text = "store answering: its last write succeeded"
            return value, text, {"store_open": r.store_open, "failures": r.store_failures}
        span_s, dead, failed = self._increase()
        if name == DEAD_LETTERS:
            rate = dead / span_s if span_s > 0 else 0.0
            text = (
                f"{rate:.3g} dead letters/s over the last {span_s:.0f} s ({dead} records to "
                f"otlp_spans_dlq), bound {rules.dead_letters_per_s:g}/s; see their "
                "driftline-reason headers"
            )
            return rate, text, {"dead_letters": dead, "window_s": round(span_s, 3)}
        held = list(r.routes_held)
        parts = []
        if held:
            parts.append(f"route {', '.join(held)} held, pages kept for redelivery")
        if failed:
            parts.append(f"{failed} deliveries failed for good in the last {span_s:.0f} s")
        text = "alert deliveries failing: " + ("; ".join(parts) or "none now")
        evidence = {"routes_held": held, "failed_deliveries": failed}
        return float(len(held) + failed), text, evidence

    # -- deciding ---------------------------------------------------------------------------

    def _advance(
        self, name: str, value: float, now_s: float, description: str, evidence: dict[str, Any]
    ) -> dict[str, Any] | None:
        state = self._states[name]
        bound = self.rules.bound(name)
        if state.opened_us is None:
            if value <= bound:
                state.bad_since_s = None
                return None
            if state.bad_since_s is None:
                state.bad_since_s = now_s
            if now_s - state.bad_since_s < self.rules.for_s:
                return None
            state.opened_us = int(state.bad_since_s * US)
            state.bad_since_s = state.clear_since_s = None
            state.peak = value
            return self._record(name, "open", value, now_s, description, evidence)
        state.peak = max(state.peak, value)
        if value > bound * CLEAR_RATIO:
            state.clear_since_s = None
            return None
        if state.clear_since_s is None:
            state.clear_since_s = now_s
        if now_s - state.clear_since_s < self.rules.hold_down_s:
            return None
        record = self._record(name, "resolve", value, now_s, description, evidence)
        state.opened_us = None
        state.clear_since_s = None
        return record

    def _record(
        self,
        name: str,
        transition: str,
        value: float,
        now_s: float,
        description: str,
        evidence: Mapping[str, Any],
    ) -> dict[str, Any]:
        state = self._states[name]
        assert state.opened_us is not None
        key = dedup_key(KIND_PIPELINE, self.worker, name, "")
        now_us = int(now_s * US)
        resolving = transition == "resolve"
        return {
            "alert_id": alert_id(key, state.opened_us),
            "dedup_key": key,
            "kind": KIND_PIPELINE,
            "severity": SEVERITY[name],
            "state": "resolved" if resolving else "open",
            "opened_at": state.opened_us,
            "resolved_at": now_us if resolving else None,
            "workflow": PIPELINE_WORKFLOW,
            "metric": name,
            "baseline_value": None,
            "current_value": value,
            "score": state.peak,
            "threshold": self.rules.bound(name),
            "bundle_id": "",
            "evidence": {
                "worker": self.worker,
                "service": self.worker,  # PagerDuty's source: the worker's host
                "description": description,
                **evidence,
            },
            "runbook_url": f"{self.runbook_base_url}/{KIND_PIPELINE}/{name}"
            if self.runbook_base_url
            else "",
            "dashboard_url": "",
            "transition": transition,
            "event_ts": now_us,
        }


@dataclass(slots=True)
class HeartbeatSchedule:
    """When the dead man's switch is pinged: every ``interval_s`` while healthy.

    Not healthy: nothing is sent, so the monitor's grace runs out and it pages. Healthy again:
    the next ping goes at once. A ping that failed is not counted as sent, so it is tried
    again at the next check rather than an interval later.

    >>> beat = HeartbeatSchedule(60)
    >>> beat.due(0, healthy=True)
    True
    >>> beat.sent(0); beat.due(30, healthy=True), beat.due(60, healthy=True)
    (False, True)
    >>> beat.due(90, healthy=False)
    False
    """

    interval_s: float
    last_sent_s: float | None = None

    def due(self, now_s: float, healthy: bool) -> bool:
        if not healthy:
            return False
        return self.last_sent_s is None or now_s - self.last_sent_s >= self.interval_s

    def sent(self, now_s: float) -> None:
        self.last_sent_s = now_s


def held_routes(notifiers: Iterable[Any]) -> tuple[str, ...]:
    """Names of the held routes of every notifier given (None skipped), each once."""
    names: dict[str, None] = {}
    for notifier in notifiers:
        if notifier is not None:
            names.update(dict.fromkeys(notifier.held_routes()))
    return tuple(names)
