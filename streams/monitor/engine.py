"""The monitor: one workflow's records through every rule, then the alert lifecycle."""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from driftline.config import Settings, WorkflowSettings
from driftline.detectors.metrics import Metric
from driftline.streams.monitor import budgets, lifecycle, snapshot
from driftline.streams.monitor.clock import WorkflowClock, fleet_time
from driftline.streams.monitor.control import check_control
from driftline.streams.monitor.drift import Bundle, DriftRules
from driftline.streams.monitor.hits import (
    CAP_METRICS,
    OPEN_ALERTS,
    TRACKED_WORKFLOWS,
    Hit,
    cap_warning,
    event_time,
    record_order,
)
from driftline.streams.monitor.lifecycle import OpenAlert
from driftline.streams.monitor.routing import (
    MAX_LISTED_OFFENDERS,
    routing_hits_of,
    with_offenders_of,
)
from driftline.streams.monitor.snapshot import SnapshotError
from driftline.streams.monitor.untracked import Sighting

_US: Final = 1_000_000
_DEFAULT_WORKFLOW = WorkflowSettings()
# Resolves are remembered this many hold-downs (or clock steps) to recognise late evidence.
LATE_HORIZON_HOLDS: Final = 4
# Where the monitor keeps its own capacity alert: "*" never survives ingestion in a
# workflow name (schemas.event.UNSAFE_NAME_CHAR), so no real workflow can share it.
UNTRACKED: Final = "*"
# A workflow with fewer records than this so far is the first to give up its place at
# detectors.max_workflows (see Monitor._admit).
PROBATION_RECORDS: Final = 10


@dataclass(slots=True)
class WorkflowState:
    """Everything the monitor keeps for one workflow (one snapshot)."""

    bundles: dict[str, Bundle] = field(default_factory=dict)
    scopes: dict[str, budgets.Scope] = field(default_factory=dict)
    alerts: dict[str, OpenAlert] = field(default_factory=dict)
    clock: WorkflowClock = field(default_factory=WorkflowClock)
    # dedup key -> when its last alert resolved, while late evidence may still arrive
    resolved: dict[str, int] = field(default_factory=dict)
    # bundles serving without a place (detectors.max_bundles_per_workflow)
    left_out: dict[str, Sighting] = field(default_factory=dict)


class Monitor:
    """Detectors, budgets, routing checks and the alert lifecycle for many workflows."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._drift = DriftRules(settings.detectors)
        self._hold_us = int(settings.alerts.hold_down_s * _US)
        self._step_us = int(settings.alerts.max_clock_step_s * _US)
        # Conditions are re-tested at least every half hold-down of a workflow's event time,
        # so a replay's large batches resolve alerts when the stream's small ones would.
        self._slice_us = max(self._hold_us // 2, _US)
        self._states: dict[str, WorkflowState] = {}
        self._dirty: set[str] = set()
        self._alerting: set[str] = set()  # workflows with open alerts
        self._fleet: int | None = None
        # Cardinality (detectors.max_workflows): records of workflows not tracked, and
        # workflows pushed out to make room; the worker exports both as counters.
        self.untracked_records = 0
        self.evicted_workflows = 0
        # Alerts not opened because their workflow had alerts.max_open_per_workflow_kind of
        # their kind open (exported as a counter).
        self.alerts_over_cap = 0
        self._seen: OrderedDict[str, None] = OrderedDict()  # tracked, least recent first
        # Of those, the ones with fewer than PROBATION_RECORDS records so far and how many,
        # least recent first: a flood of one-off names gives up its own places first.
        self._probation: OrderedDict[str, int] = OrderedDict()
        self._no_room = False  # this batch found no workflow to replace

    # --- public API ---------------------------------------------------------

    @property
    def untracked_bundle_records(self) -> int:
        """Events of bundles past ``detectors.max_bundles_per_workflow``, not monitored."""
        return self._drift.untracked_bundle_records

    def process(self, events: list[dict[str, Any]], traces: list[dict[str, Any]]) -> list[dict]:
        """Feed a batch; return the alert transitions it caused, in event-time order."""
        by_workflow: dict[str, tuple[list[dict], list[dict]]] = {}
        for event in events:
            by_workflow.setdefault(str(event.get("workflow") or ""), ([], []))[0].append(event)
        for trace in traces:
            by_workflow.setdefault(str(trace.get("workflow") or ""), ([], []))[1].append(trace)
        out: list[dict] = []
        untracked: list[tuple[str, list[dict], list[dict]]] = []
        self._no_room = False
        for workflow in sorted(by_workflow):
            wf_events, wf_traces = by_workflow[workflow]
            if not self._admit(workflow, len(wf_events) + len(wf_traces)):
                untracked.append((workflow, wf_events, wf_traces))
                continue
            for part, part_times, part_traces in _slices(wf_events, wf_traces, self._slice_us):
                out.extend(self._step(workflow, part, part_times, part_traces))
        # A workflow of this batch may have made room for a later one: no longer tracked.
        touched = {w for w in by_workflow if w in self._states}
        if untracked:
            out.extend(self._refuse(untracked))
            touched.add(UNTRACKED)
        out.extend(self._review_idle(touched))
        return _time_order(out)

    def accept_baseline(
        self, workflow: str, metric: str | None = None, bundle_id: str | None = None, by: str = ""
    ) -> list[dict]:
        """Make ``workflow``'s current behaviour its reference (``driftline baseline accept``).

        Every detector of the workflow (only ``metric``'s and/or ``bundle_id``'s when given)
        forgets its reference and re-warms from the next values, and the drift alerts on
        them resolve now (the workflow's clock) with ``evidence.resolution = "accepted"``.
        Returns those resolves. A workflow this monitor has not seen is left alone.
        """
        state = self._states.get(workflow)
        if state is None:
            return []
        for bid, bundle in state.bundles.items():
            if bundle_id is not None and bid != bundle_id:
                continue
            for name, detector in bundle.detectors.items():
                if metric is None or name == metric:
                    detector.rebaseline()
                    bundle.frozen_at.pop(name, None)
        out = []
        for key in sorted(state.alerts):
            record = state.alerts[key].record
            accepted = (
                record["kind"] == "drift"
                and (metric is None or str(record["metric"]).split(":")[0] == metric)
                and (bundle_id is None or record["bundle_id"] == bundle_id)
            )
            if accepted:
                resolve = lifecycle.resolve_now(
                    state.alerts, key, state.clock.now, lifecycle.RESOLVED_ACCEPTED
                )
                resolve["evidence"]["accepted_by"] = by
                out.append(resolve)
        self._dirty.add(workflow)
        return out

    def apply_control(self, control: dict[str, Any]) -> list[dict]:
        """Apply an operator command (:mod:`.control`); returns the transitions it caused."""
        check_control(control)
        return self.accept_baseline(
            str(control["workflow"]),
            control.get("metric"),
            control.get("bundle_id"),
            str(control.get("requested_by") or ""),
        )

    def dirty_workflows(self) -> set[str]:
        """Workflows changed since the previous call (the call clears the set)."""
        dirty, self._dirty = self._dirty, set()
        return dirty

    def open_alerts(self) -> list[dict]:
        """Current records of all open alerts, ordered by dedup key."""
        records = [dict(a.record) for s in self._states.values() for a in s.alerts.values()]
        return sorted(records, key=lambda r: str(r["dedup_key"]))

    def snapshot(self, workflow: str) -> bytes:
        """Everything the monitor keeps for ``workflow`` (baselines, budgets, open alerts,
        clock), as versioned plain data (:mod:`.snapshot`)."""
        state = self._states.get(workflow, WorkflowState())
        doc = {
            "clock": {"now": state.clock.now, "ahead": state.clock.ahead},
            "bundles": {b: snapshot.bundle_state(s) for b, s in sorted(state.bundles.items())},
            "scopes": {k: snapshot.scope_state(s) for k, s in sorted(state.scopes.items())},
            "alerts": {k: snapshot.alert_state(a) for k, a in sorted(state.alerts.items())},
            "resolved": dict(sorted(state.resolved.items())),
        }
        if state.left_out:  # only with bundles left out: else as before
            doc["left_out"] = {
                b: snapshot.sighting_state(s) for b, s in sorted(state.left_out.items())
            }
        return snapshot.dumps(workflow, doc)

    def restore(self, workflow: str, blob: bytes) -> None:
        """Continue ``workflow`` from a :meth:`snapshot`; :class:`SnapshotError` (and nothing
        restored) when it is not one this version and these detector settings can use."""
        doc = snapshot.loads(workflow, blob)
        det = self._settings.detectors
        metrics = {m.name: (det.warmup_events, det.window_events) for m in self._drift.metrics}
        where = f"snapshot of {workflow!r}"
        parts: dict[str, dict[str, Any]] = {}
        for name in ("bundles", "scopes", "alerts"):
            part = doc.get(name)
            if not isinstance(part, dict):
                raise SnapshotError(f"{where}.{name}: expected an object")
            parts[name] = part
        state = WorkflowState(
            bundles={
                b: snapshot.bundle_from_state(v, f"{where}.bundles.{b}", metrics, det.window_events)
                for b, v in parts["bundles"].items()
            },
            scopes={
                k: snapshot.scope_from_state(v, f"{where}.scopes.{k}")
                for k, v in parts["scopes"].items()
            },
            alerts={
                k: snapshot.alert_from_state(v, k, workflow, f"{where}.alerts.{k}")
                for k, v in parts["alerts"].items()
            },
            clock=snapshot.clock_from_state(doc.get("clock"), f"{where}.clock"),
            resolved=snapshot.times_from_state(doc.get("resolved"), f"{where}.resolved"),
            left_out=snapshot.left_out_from_state(doc.get("left_out"), f"{where}.left_out"),
        )
        self._states[workflow] = state
        if workflow != UNTRACKED:
            self._seen[workflow] = None
        if state.alerts:
            self._alerting.add(workflow)

    def workflows(self) -> list[str]:
        return sorted(self._states)

    @property
    def tracked_workflows(self) -> int:
        """Workflows counted against ``detectors.max_workflows`` (not the capacity alert's)."""
        return len(self._states) - (UNTRACKED in self._states)

    def clock(self, workflow: str) -> int:
        """``workflow``'s event-time clock (microseconds; 0 before its first record)."""
        state = self._states.get(workflow)
        return state.clock.now if state is not None else 0

    @property
    def watermark(self) -> int:
        """The latest workflow clock (microseconds): the time of baseline snapshots."""
        return max((s.clock.now for s in self._states.values()), default=0)

    @property
    def metrics(self) -> tuple[Metric, ...]:
        return self._drift.metrics

    def detector_summaries(
        self, workflow: str
    ) -> Iterable[tuple[str, Metric, dict[str, Any], dict[str, str]]]:
        """(bundle id, metric, :meth:`MetricDetector.summary`, bundle context) per detector."""
        state = self._states.get(workflow)
        if state is None:
            return
        for bundle_id, bundle in sorted(state.bundles.items()):
            for metric in self._drift.metrics:
                detector = bundle.detectors.get(metric.name)
                if detector is not None:
                    yield bundle_id, metric, detector.summary(), bundle.context

    # --- one workflow -------------------------------------------------------------

    def _state(self, workflow: str) -> WorkflowState:
        state = self._states.get(workflow)
        if state is None:
            state = self._states[workflow] = WorkflowState()
        self._dirty.add(workflow)
        return state

    def _admit(self, workflow: str, records: int) -> bool:
        """Whether ``workflow`` is (or may now be) tracked under ``detectors.max_workflows``.

        At the cap a new workflow takes the place of one that has no reference yet and no
        open alert: the least recently seen of those with fewer than
        :data:`PROBATION_RECORDS` records so far, else the least recently seen of all. So
        a flood of one-off names replaces its own names, not a workflow warming up (a flood
        of more new names per batch than the cap used to push such a workflow out every
        batch, so it never got a reference); established workflows are never pushed out. A
        search that finds no room is not repeated within the batch (each is one pass over
        the tracked workflows).
        """
        probation = self._probation
        if workflow in self._states:
            self._seen.move_to_end(workflow)
            if workflow in probation:
                seen = probation.pop(workflow) + records
                if seen < PROBATION_RECORDS:
                    probation[workflow] = seen
            return True
        if self.tracked_workflows >= self._settings.detectors.max_workflows:
            stale = None if self._no_room else self._evictable(probation)
            stale = stale or (None if self._no_room else self._evictable(self._seen))
            if stale is None:
                self._no_room = True
                return False
            del self._states[stale]
            del self._seen[stale]
            probation.pop(stale, None)
            self._alerting.discard(stale)
            self._dirty.add(stale)  # its checkpoint becomes an empty state, not a stale one
            self.evicted_workflows += 1
        self._seen[workflow] = None
        if records < PROBATION_RECORDS:
            probation[workflow] = records
        return True

    def _evictable(self, candidates: OrderedDict[str, Any]) -> str | None:
        """The least recent of ``candidates`` without a reference or open alert, if any;
        the ones passed over move to the back, so the next search starts past them."""
        for _ in range(len(candidates)):
            name = next(iter(candidates))
            state = self._states[name]
            if not state.alerts and not _has_reference(state):
                return name
            candidates.move_to_end(name)
        return None

    def _refuse(self, untracked: list[tuple[str, list[dict], list[dict]]]) -> list[dict]:
        """Count the records of workflows over the cap, and keep one warning alert open
        (``budget/*/tracked_workflows/``) while they keep coming."""
        state = self._state(UNTRACKED)
        times = [event_time(r) for _, events, traces in untracked for r in (*events, *traces)]
        state.clock.step(times, self._step_us, self._fleet_time() or min(times))
        self.untracked_records += len(times)
        names = [name for name, _, _ in untracked]
        evidence: dict[str, Any] = {
            "offenders": names[:MAX_LISTED_OFFENDERS],
            "records_not_monitored": self.untracked_records,
        }
        if len(names) > MAX_LISTED_OFFENDERS:
            evidence["offenders_truncated"] = True
        hit = cap_warning(
            state.clock.now,
            UNTRACKED,
            TRACKED_WORKFLOWS,
            "detectors.max_workflows",
            self._settings.detectors.max_workflows,
            evidence,
        )
        if hit.key in state.alerts:
            hit = with_offenders_of(hit, state.alerts[hit.key].record.get("evidence"))
        out = lifecycle.due_before(state.alerts, hit.ts, self._hold_us)
        out.extend(lifecycle.apply_hit(state.alerts, hit, self._settings.alerts))
        self._alerting.add(UNTRACKED)
        return out

    def _workflow_settings(self, workflow: str) -> WorkflowSettings:
        wf = self._settings.workflows
        return wf.get(workflow) or wf.get("*") or _DEFAULT_WORKFLOW

    def _step(
        self, workflow: str, events: list[dict], times: list[int], traces: list[dict]
    ) -> list[dict]:
        """One step of ``workflow``: ``events`` in event-time order with their
        :func:`event_time` s (``times``), and the traces that go with them."""
        new = workflow not in self._states
        state = self._state(workflow)
        trace_times = [event_time(t) for t in traces]
        floor = self._fleet_time() if new else 0  # a new clock starts near everyone else's
        state.clock.step(times + trace_times, self._step_us, floor)
        now = state.clock.now
        wf = self._workflow_settings(workflow)
        hits = self._drift.hits(workflow, state.bundles, events, now, times, state.left_out)
        if events:
            capped = [t if t < now else now for t in times]
            hits.extend(routing_hits_of(workflow, wf, events, capped))
            hits.extend(budgets.events_hits(workflow, wf, state.scopes, events, capped))
        if traces and budgets.limits_traces(wf):
            keys = [_trace_order(ts, t) for ts, t in zip(trace_times, traces, strict=True)]
            for i in sorted(range(len(traces)), key=keys.__getitem__):
                ts = trace_times[i]
                hits.extend(budgets.trace_hits(workflow, wf, traces[i], ts if ts < now else now))
        hits.sort(key=lambda h: (h.ts, h.key))
        out: list[dict] = []
        over_cap: list[Hit] = []
        for hit in hits:
            if hit.ts > now:  # canary hits carry a bundle's time: never past the clock
                hit = dataclasses.replace(hit, ts=now)
            out.extend(lifecycle.due_before(state.alerts, hit.ts, self._hold_us))
            if hit.ts <= state.resolved.get(hit.key, -1) and hit.key not in state.alerts:
                # Late evidence (an event that arrived after newer ones) of an incident
                # already resolved after its time: not a new incident, no new page.
                continue
            if hit.metric not in CAP_METRICS and self._at_cap(state, hit):
                over_cap.append(hit)
                continue
            if "offenders" in hit.evidence and hit.key in state.alerts:
                hit = with_offenders_of(hit, state.alerts[hit.key].record.get("evidence"))
            out.extend(lifecycle.apply_hit(state.alerts, hit, self._settings.alerts))
        if over_cap:
            out.extend(self._over_cap(workflow, state, over_cap))
        out.extend(self._review(state, now))
        self._remember_resolves(state, out, now)
        return out

    def _at_cap(self, state: WorkflowState, hit: Hit) -> bool:
        """Whether ``hit`` would open a new alert while ``state`` holds
        ``alerts.max_open_per_workflow_kind`` of its kind (cap warnings not counted)."""
        cap = self._settings.alerts.max_open_per_workflow_kind
        if hit.key in state.alerts or len(state.alerts) < cap:
            return False
        kind = hit.kind
        open_of_kind = sum(
            1
            for a in state.alerts.values()
            if a.record["kind"] == kind and a.record["metric"] not in CAP_METRICS
        )
        return open_of_kind >= cap

    def _over_cap(self, workflow: str, state: WorkflowState, hits: list[Hit]) -> list[dict]:
        """Count the alerts left unopened, and keep one warning (``budget/<workflow>/
        open_alerts/``) listing them, as severe as the worst of them: it may stand for a
        critical condition."""
        self.alerts_over_cap += len(hits)
        keys = sorted({h.key for h in hits})
        evidence: dict[str, Any] = {"offenders": keys[:MAX_LISTED_OFFENDERS]}
        if len(keys) > MAX_LISTED_OFFENDERS:
            evidence["offenders_truncated"] = True
        worst = min((h.severity for h in hits), key=lifecycle.severity_rank)
        hit = cap_warning(
            max(h.ts for h in hits),
            workflow,
            OPEN_ALERTS,
            "alerts.max_open_per_workflow_kind",
            self._settings.alerts.max_open_per_workflow_kind,
            evidence,
            severity=worst,
        )
        if hit.key in state.alerts:
            hit = with_offenders_of(hit, state.alerts[hit.key].record.get("evidence"))
        return lifecycle.apply_hit(state.alerts, hit, self._settings.alerts)

    def _remember_resolves(self, state: WorkflowState, out: list[dict], now: int) -> None:
        for t in out:
            if t["transition"] == "resolve":
                state.resolved[str(t["dedup_key"])] = int(t["resolved_at"])
        horizon = now - LATE_HORIZON_HOLDS * max(self._hold_us, self._step_us)
        for key in [k for k, at in state.resolved.items() if at < horizon]:
            del state.resolved[key]

    def _fleet_time(self) -> int:
        return fleet_time([s.clock.now for s in self._states.values() if s.clock.now])

    def _review(self, state: WorkflowState, now: int) -> list[dict]:
        def holds(alert: OpenAlert) -> bool:
            if alert.condition in ("drift", "canary"):
                return self._drift.holds(state.bundles, alert.record, now)
            if alert.condition in ("window", "burn"):
                return budgets.holds(state.scopes, str(alert.record["metric"]), now)
            if alert.condition == "untracked":
                return self._drift.left_out_serving(state.left_out, now)
            return True

        return lifecycle.review(state.alerts, now, self._hold_us, holds)

    def _review_idle(self, touched: set[str]) -> list[dict]:
        """Resolve what is due in workflows without records in this batch, at the fleet
        clock: a workflow that went quiet still sees its time-based alerts resolve."""
        self._alerting = {w for w in self._alerting | touched if self._states[w].alerts}
        idle = self._alerting - touched
        if not idle:
            return []
        # The median costs one pass over every workflow: re-read it only once the clocks
        # of this batch are more than a review step past it, not on every message.
        latest = max(self._states[w].clock.now for w in touched) if touched else 0
        if self._fleet is None or latest - self._fleet > self._slice_us:
            self._fleet = self._fleet_time()
        fleet = self._fleet
        out: list[dict] = []
        for workflow in sorted(idle):
            state = self._states[workflow]
            now = max(state.clock.now, fleet)
            before = [a.clear_since for a in state.alerts.values()]
            resolved = self._review(state, now)
            self._remember_resolves(state, resolved, now)
            if resolved or before != [a.clear_since for a in state.alerts.values()]:
                self._dirty.add(workflow)
            out.extend(resolved)
        return out


def _has_reference(state: WorkflowState) -> bool:
    return any(d.frozen for b in state.bundles.values() for d in b.detectors.values())


def _slices(
    events: list[dict], traces: list[dict], span_us: int
) -> list[tuple[list[dict], list[int], list[dict]]]:
    """One workflow's records in event-time order, cut into steps spanning at most
    ``span_us`` of event time; each trace goes with the first step that reaches its time.
    Each step: its events, their :func:`event_time` s, its traces.

    >>> events = [{"end_ts": t} for t in (1, 2, 9, 10, 30)]
    >>> [[e["end_ts"] for e in part] for part, _, _ in _slices(events, [], 5)]
    [[1, 2], [9, 10], [30]]
    """
    keys = [record_order(e) for e in events]
    order = sorted(range(len(events)), key=keys.__getitem__)
    pending = sorted(traces, key=record_order)
    parts: list[tuple[list[dict], list[int], list[dict]]] = []
    first = 0
    for i in order:
        ts = keys[i][0]
        if not parts or ts - first > span_us:
            parts.append(([], [], []))
            first = ts
        parts[-1][0].append(events[i])
        parts[-1][1].append(ts)
    t = 0
    for _, part_times, part_traces in parts:
        horizon = part_times[-1]
        while t < len(pending) and event_time(pending[t]) <= horizon:
            part_traces.append(pending[t])
            t += 1
    if t < len(pending):
        if not parts:
            parts.append(([], [], []))
        parts[-1][2].extend(pending[t:])
    return parts


def _trace_order(ts: int, trace: dict[str, Any]) -> tuple[int, str, str]:
    """:func:`record_order` of a trace whose event time is known."""
    return (ts, str(trace.get("trace_id", "")), str(trace.get("span_id", "")))


def _time_order(transitions: list[dict]) -> list[dict]:
    """Transitions in event-time order, except that one alert's never overtake each other:
    a resolve dated after an open of the same key that came later (late evidence) stays
    before it, so the topic never shows two opens of one key in a row.

    >>> out = [{"dedup_key": "a", "event_ts": 9}, {"dedup_key": "a", "event_ts": 5},
    ...        {"dedup_key": "b", "event_ts": 7}]
    >>> [(t["dedup_key"], t["event_ts"]) for t in _time_order(out)]
    [('b', 7), ('a', 9), ('a', 5)]
    """
    latest: dict[str, int] = {}
    keyed = []
    for index, t in enumerate(transitions):
        key = str(t["dedup_key"])
        at = latest[key] = max(int(t["event_ts"]), latest.get(key, int(t["event_ts"])))
        keyed.append((at, index, t))
    keyed.sort(key=lambda item: (item[0], item[1]))
    return [t for _, _, t in keyed]
