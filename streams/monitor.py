"""The monitoring engine: events and traces in, alert lifecycle transitions out.

Pure and deterministic: no Kafka, no Faust, no clock. All time is event time
(``end_ts``, else ``start_ts``), so the stream and ``driftline replay`` produce the
same alerts from the same events. The stream calls :meth:`Monitor.process` per batch
and checkpoints :meth:`Monitor.snapshot` of :meth:`Monitor.dirty_workflows`; a
restarted worker :meth:`Monitor.restore` s them and continues without a reset and
without repeating an alert.

What it watches, per workflow:

- drift per (bundle, metric): :class:`detectors.MetricDetector` on the natural scale
  (frozen reference after ``detectors.warmup_events``, taken from
  ``detectors.settle_s`` of event time after the bundle first appears); the ARL0 budget
  ``detectors.arl0_events`` is split evenly over every test of every metric; failed
  calls count for retries only (see :mod:`detectors.metrics`);
- canary: two bundles of one *slot* (:func:`canary_slot`: same operation, same model)
  active within ``detectors.canary_active_s`` are compared with each other
  (two-sample KS of their latest windows), so a change shared by both (retrieval,
  traffic mix) does not count against the new bundle. Bundles of different slots
  (a chat model beside an embedding model or a larger chat model) are never compared:
  they are different calls, not a rollout;
- budgets (workflow, and per tenant / route when configured): tokens per request,
  retries per request, loop depth, trace amplification, tokens and cost per window,
  and multi-window burn rate of ``monthly_cost_usd``;
- routing: a call whose requested and answered models are both outside
  ``allowed_models`` (shadow routing; :func:`model_allowed`), a bundle or model
  version outside the registered ones (ghost deployment).

A drift alert's ``score`` is the effect size, ``|current - baseline|`` in reference
standard deviations on the natural scale (Jensen-Shannon divergence for a
categorical mix); ``threshold`` and ``evidence`` carry the test's own statistic.

Lifecycle per ``dedup_key``: ``open`` on the first hit; ``update`` while open only on
a material change (severity up, or score moved by more than 25%); ``resolve`` once
no hit has come for ``alerts.hold_down_s`` of event time. A hit after that opens a
new alert (new ``alert_id``).

State per tracked workflow, bounded (defaults: warm-up 500, window 500, at most
``detectors.max_bundles_per_workflow`` = 2 bundles; an armed bundle is kept while it
serves traffic, see ``Monitor._bundle``):

- per bundle, 9 metric detectors (<= 8 KB of arrays each, see
  :mod:`detectors.composite`) and a ring of ``window`` int64 timestamps (4 KB); measured
  with all nine metrics frozen: 38 KB serialized, about 90 KB in memory with Python
  object overhead (``bench/bench_detector_speed.py``);
- per budget scope (the workflow, plus each configured tenant and route): per-minute
  rings, ``16 * ceil(window_s / 60)`` bytes for window sums (1 h: ~1 KB) and 360
  minutes (~6 KB) for the burn rate;
- per open alert, one record (~2 KB), one per dedup key.

Bound: ``bundles * 90 KB + scopes * 8 KB + open alerts * 2 KB``: about 190 KB with
the defaults, one scope and a few open alerts; 10k workflows stay under 2 GB.
"""

from __future__ import annotations

import heapq
import pickle
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import quote, urlencode

import numpy as np

from driftline.config import BudgetSettings, Settings, WorkflowSettings
from driftline.detectors import METRICS, BurnRate, BurnVerdict, MetricDetector, WindowSum
from driftline.detectors.composite import CONTINUOUS_TESTS, Detection
from driftline.detectors.ks import ks_critical_value, ks_statistic
from driftline.detectors.metrics import Metric
from driftline.schemas.alert import SEVERITIES, alert_id, dedup_key

SNAPSHOT_MAGIC: Final = b"DLMON1\n"
MATERIAL_SCORE_CHANGE: Final = 0.25
_US: Final = 1_000_000
_DEFAULT_WORKFLOW = WorkflowSettings()
# A new bundle's first seconds of event time are not used for its reference: the calls
# that end soon after a bundle appears (or the monitor starts) are the early calls of
# its traces, an agent's first planning steps, not a sample of its steady traffic.
# Measured on the simulator's agent-planner: log output tokens average 4.79 in the
# first 10 s, 4.98 in 10-30 s and 5.17-5.20 from 30 s on (sd 0.75). The wait is
# detectors.settle_s (default 60 s).


class SnapshotError(ValueError):
    """A snapshot cannot be restored; drop it and the baseline rebuilds from warm-up."""


@dataclass(slots=True)
class _Hit:
    ts: int
    workflow: str
    kind: str
    metric: str
    bundle_id: str
    severity: str
    score: float
    threshold: float | None
    baseline: float | None
    current: float | None
    evidence: dict[str, Any]

    @property
    def key(self) -> str:
        return dedup_key(self.kind, self.workflow, self.metric, self.bundle_id)


@dataclass(slots=True)
class _OpenAlert:
    record: dict[str, Any]
    last_hit_ts: int
    emitted_score: float
    emitted_severity: str


@dataclass(slots=True)
class _Bundle:
    detectors: dict[str, MetricDetector]
    ts_ring: np.ndarray
    first_ts: int
    last_ts: int = 0
    n_events: int = 0
    canary_pending: int = 0
    frozen_at: dict[str, int] = field(default_factory=dict)
    # (operation, model): bundles of one slot are alternatives for the same call (canary).
    slot: tuple[str, str] = ("", "")
    # What the bundle is (service, model, versions): evidence a responder needs on a page.
    context: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class _Scope:
    tokens: WindowSum | None
    cost: WindowSum | None
    burn: BurnRate | None


@dataclass(slots=True)
class _Workflow:
    bundles: dict[str, _Bundle] = field(default_factory=dict)
    scopes: dict[str, _Scope] = field(default_factory=dict)
    alerts: dict[str, _OpenAlert] = field(default_factory=dict)


def event_time(record: dict[str, Any]) -> int:
    """Event time of an event or trace: its end, else its start (microseconds)."""
    return int(record.get("end_ts") or record.get("start_ts") or 0)


def model_allowed(request_model: str, response_model: str, allowed: Iterable[str]) -> bool:
    """Whether a call is within a workflow's model policy.

    Allowed when the model it *asked for* or the model that *answered* is listed:
    providers answer an alias with a dated snapshot (``gpt-4o-mini`` is answered as
    ``gpt-4o-mini-2024-07-18``), so a policy naming either one covers the call. A call
    that names no model at all cannot be judged and is not flagged. The price of the
    OR: a gateway that answers an allowed request with another model is not flagged
    here; list dated snapshots explicitly and rely on ``registered_model_versions``
    to catch that.

    >>> model_allowed("gpt-4o-mini", "gpt-4o-mini-2024-07-18", ["gpt-4o-mini"])
    True
    >>> model_allowed("gpt-4-turbo", "gpt-4-turbo-2024-04-09", ["gpt-4o-mini"])
    False
    """
    names = {request_model, response_model} - {""}
    return not names or bool(names & set(allowed))


def canary_slot(event: dict[str, Any]) -> tuple[str, str]:
    """The call a bundle serves: ``(operation, model)``, the model named as in ``bundle_id``.

    Two bundles are canary alternatives only when they serve the same slot: the same
    operation on the same model, differing in model, prompt, index or router *version*.
    A workflow that calls a chat model, a larger chat model and an embedding model at
    once has three slots, and comparing them with each other would only measure that
    they are different calls.
    """
    model = str(event.get("response_model") or event.get("request_model") or "")
    return (str(event.get("operation") or ""), model)


def _order(record: dict[str, Any]) -> tuple[int, str, str]:
    return (event_time(record), str(record.get("trace_id", "")), str(record.get("span_id", "")))


class Monitor:
    """Detectors, budgets, routing checks and the alert lifecycle for many workflows."""

    def __init__(self, settings: Settings) -> None:
        det = settings.detectors
        known = {m.name for m in METRICS}
        enabled = det.enabled_metrics
        if enabled is not None and (unknown := sorted(set(enabled) - known)):
            raise ValueError(
                f"detectors.enabled_metrics has unknown metrics {unknown}; "
                f"choose from {sorted(known)}"
            )
        self._settings = settings
        self._settle_us = int(settings.detectors.settle_s * _US)
        self._metrics: tuple[Metric, ...] = tuple(
            m for m in METRICS if enabled is None or m.name in enabled
        )
        tests = sum(CONTINUOUS_TESTS if m.kind == "continuous" else 1 for m in self._metrics)
        # Every test gets an equal share of the workflow's false-alarm budget.
        self._test_arl0 = det.arl0_events * max(tests, 1)
        self._hold_us = int(settings.alerts.hold_down_s * _US)
        self._states: dict[str, _Workflow] = {}
        self._dirty: set[str] = set()
        self._due: list[tuple[int, str, str]] = []  # (resolve-at, workflow, dedup key)
        self._watermark = 0

    # --- public API ---------------------------------------------------------

    def process(self, events: list[dict[str, Any]], traces: list[dict[str, Any]]) -> list[dict]:
        """Feed a batch; return the alert transitions it caused, in event-time order."""
        hits: list[_Hit] = []
        by_workflow: dict[str, list[dict[str, Any]]] = {}
        for event in sorted(events, key=_order):
            by_workflow.setdefault(str(event.get("workflow") or ""), []).append(event)
        for workflow in sorted(by_workflow):
            batch = by_workflow[workflow]
            state = self._state(workflow)
            hits.extend(self._drift(workflow, state, batch))
            hits.extend(self._event_rules(workflow, state, batch))
        for trace in sorted(traces, key=_order):
            hits.extend(self._trace_rules(trace))
        hits.sort(key=lambda h: (h.ts, h.key))
        out: list[dict] = []
        for hit in hits:
            out.extend(self._resolve_due(hit.ts, inclusive=False))
            out.extend(self._apply(hit))
        latest = max((event_time(r) for r in (*events, *traces)), default=0)
        out.extend(self.advance(latest))
        return out

    def advance(self, now_us: int) -> list[dict]:
        """Move the event-time watermark; return the resolves due by ``now_us``."""
        self._watermark = max(self._watermark, int(now_us))
        return self._resolve_due(self._watermark, inclusive=True)

    def snapshot(self, workflow: str) -> bytes:
        """Everything the monitor keeps for ``workflow`` (baselines, budgets, open alerts)."""
        state = self._states.get(workflow, _Workflow())
        return SNAPSHOT_MAGIC + pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)

    def restore(self, workflow: str, state: bytes) -> None:
        """Continue ``workflow`` from a :meth:`snapshot` (taken by this version)."""
        if not state.startswith(SNAPSHOT_MAGIC):
            raise SnapshotError(
                f"snapshot for workflow {workflow!r} is not a monitor snapshot of this version; "
                "delete it and the baseline is rebuilt from warm-up"
            )
        restored = pickle.loads(state[len(SNAPSHOT_MAGIC) :])  # written by snapshot() only
        if not isinstance(restored, _Workflow):
            raise SnapshotError(f"snapshot for workflow {workflow!r} has an unexpected payload")
        for bundle in restored.bundles.values():
            if not hasattr(bundle, "slot"):  # taken before bundles knew their slot
                bundle.slot = ("", "")
        self._states[workflow] = restored
        for key, alert in restored.alerts.items():
            heapq.heappush(self._due, (alert.last_hit_ts + self._hold_us, workflow, key))

    def workflows(self) -> list[str]:
        return sorted(self._states)

    @property
    def watermark(self) -> int:
        """The latest event time seen (microseconds): the monitor's clock."""
        return self._watermark

    def detector_summaries(
        self, workflow: str
    ) -> Iterable[tuple[str, Metric, dict[str, Any], dict[str, str]]]:
        """(bundle id, metric, :meth:`MetricDetector.summary`, bundle context) per detector."""
        state = self._states.get(workflow)
        if state is None:
            return
        for bundle_id, bundle in sorted(state.bundles.items()):
            context = getattr(bundle, "context", None) or {}
            for metric in self._metrics:
                detector = bundle.detectors.get(metric.name)
                if detector is not None:
                    yield bundle_id, metric, detector.summary(), context

    def dirty_workflows(self) -> set[str]:
        """Workflows changed since the previous call (the call clears the set)."""
        dirty, self._dirty = self._dirty, set()
        return dirty

    def open_alerts(self) -> list[dict]:
        """Current records of all open alerts, ordered by dedup key."""
        records = [dict(a.record) for s in self._states.values() for a in s.alerts.values()]
        return sorted(records, key=lambda r: str(r["dedup_key"]))

    # --- state --------------------------------------------------------------

    def _state(self, workflow: str) -> _Workflow:
        state = self._states.get(workflow)
        if state is None:
            state = self._states[workflow] = _Workflow()
        self._dirty.add(workflow)
        return state

    def _workflow_settings(self, workflow: str) -> WorkflowSettings:
        wf = self._settings.workflows
        return wf.get(workflow) or wf.get("*") or _DEFAULT_WORKFLOW

    def _bundle(
        self, state: _Workflow, bundle_id: str, ts: int, batch: list[dict]
    ) -> _Bundle | None:
        """The bundle's state; a new one is tracked only when there is room for it.

        Room: a free place, or a tracked bundle idle for ``canary_active_s`` (the least
        recently seen goes), or one that has not armed a detector yet. An armed bundle
        that still serves traffic keeps its baseline: dropping it for a newcomer and the
        newcomer for it again (a workflow calling more models than the bound) would keep
        every baseline in warm-up for ever. Failed calls alone never start a bundle
        (they answer with no model snapshot, so their bundle id is not the served one).
        """
        bundle = state.bundles.get(bundle_id)
        if bundle is not None:
            return bundle
        if all(e.get("error_type") for e in batch):
            return None
        det = self._settings.detectors
        if len(state.bundles) >= det.max_bundles_per_workflow:
            idle_before = ts - int(det.canary_active_s * _US)
            evictable = [
                b
                for b, s in state.bundles.items()
                if s.last_ts < idle_before or not any(d.frozen for d in s.detectors.values())
            ]
            if not evictable:
                return None
            stale = min(evictable, key=lambda b: (state.bundles[b].last_ts, b))
            del state.bundles[stale]
        detectors = {
            m.name: MetricDetector(
                m.kind,
                det.warmup_events,
                det.window_events,
                self._test_arl0 / (CONTINUOUS_TESTS if m.kind == "continuous" else 1),
            )
            for m in self._metrics
        }
        ring = np.zeros(det.window_events, dtype=np.int64)
        bundle = state.bundles[bundle_id] = _Bundle(detectors, ring, first_ts=ts)
        return bundle

    # --- drift ----------------------------------------------------------------

    def _drift(self, workflow: str, state: _Workflow, events: list[dict]) -> list[_Hit]:
        hits: list[_Hit] = []
        by_bundle: dict[str, list[dict]] = {}
        for event in events:
            by_bundle.setdefault(str(event.get("bundle_id") or ""), []).append(event)
        for bundle_id in sorted(by_bundle, key=lambda b: (event_time(by_bundle[b][0]), b)):
            batch = by_bundle[bundle_id]
            ts = np.fromiter((event_time(e) for e in batch), dtype=np.int64, count=len(batch))
            bundle = self._bundle(state, bundle_id, int(ts[0]), batch)
            if bundle is None:
                continue
            if bundle.slot == ("", ""):
                bundle.slot = canary_slot(batch[0])
            if not getattr(bundle, "context", None):  # absent in older snapshots
                bundle.context = bundle_context(batch[0])
            settled = bundle.first_ts + self._settle_us
            if ts[0] < settled:
                bundle.last_ts = max(bundle.last_ts, int(ts[-1]))
                keep = np.flatnonzero(ts >= settled)
                batch, ts = [batch[i] for i in keep], ts[keep]
                if not batch:
                    continue
            # Timestamps of the bundle's previous window then this batch, oldest first.
            ring = np.roll(bundle.ts_ring, -(bundle.n_events % ts_len(bundle)))
            history = np.concatenate([ring, ts])
            for metric in self._metrics:
                hits.extend(self._metric(workflow, bundle_id, bundle, metric, batch, ts, history))
            self._push_times(bundle, ts)
        hits.extend(self._canary(workflow, state))
        return hits

    def _metric(
        self,
        workflow: str,
        bundle_id: str,
        bundle: _Bundle,
        metric: Metric,
        batch: list[dict],
        ts: np.ndarray,
        history: np.ndarray,
    ) -> list[_Hit]:
        raw = [metric.raw_value(e) for e in batch]
        positions = [i for i, v in enumerate(raw) if v is not None]
        if not positions:
            return []
        detector = bundle.detectors[metric.name]
        was_frozen = detector.frozen
        warm_before = detector.n_warm
        values: Any
        if metric.kind == "categorical":
            values = [raw[i] for i in positions]
        else:
            values = metric.natural(np.array([raw[i] for i in positions], dtype=np.float64))
        groups = None
        if metric.kind == "continuous" and not detector.frozen:
            groups = np.fromiter(
                (zlib.crc32(str(batch[i].get("trace_id", "")).encode()) for i in positions),
                dtype=np.int64,
                count=len(positions),
            )
        detections = detector.update_many(values, groups)
        if detector.frozen and not was_frozen and metric.kind != "categorical":
            last_warm = self._settings.detectors.warmup_events - warm_before - 1
            bundle.frozen_at[metric.name] = int(ts[positions[min(last_warm, len(positions) - 1)]])
        hits = []
        window = self._settings.detectors.window_events
        offset = history.shape[0] - ts.shape[0]
        for d in detections:
            at = positions[d.index]
            start = int(history[max(0, offset + at - window + 1)]) or bundle.first_ts
            hits.append(self._drift_hit(workflow, bundle_id, bundle, metric, d, int(ts[at]), start))
        return hits

    def _drift_hit(
        self,
        workflow: str,
        bundle_id: str,
        bundle: _Bundle,
        metric: Metric,
        d: Detection,
        ts: int,
        window_start: int,
    ) -> _Hit:
        det = self._settings.detectors
        severity = "warning"
        if d.test == "cusum" and float(d.evidence.get("shift_sd", 0.0)) >= 1.5:
            severity = "error"
        categorical = metric.kind == "categorical"
        evidence = {
            "test": d.test,
            "score_units": "jensen_shannon" if categorical else "reference_sd",
            "statistic": d.statistic,
            "threshold": d.threshold,
            "arl0_events": self._test_arl0,
            "transform": getattr(metric.transform, "__name__", "none"),
            "window_start": window_start,
            "window_end": ts,
            "window_events": det.window_events,
            "reference_start": bundle.first_ts + self._settle_us,
            "reference_end": bundle.frozen_at.get(metric.name, bundle.first_ts),
            "reference_events": det.warmup_events,
            "bundle_id": bundle_id,
            **getattr(bundle, "context", {}),
            **{k: v for k, v in d.evidence.items() if k not in {"statistic", "threshold"}},
        }
        return _Hit(
            ts,
            workflow,
            "drift",
            metric.name,
            bundle_id,
            severity,
            abs(d.effect),
            d.threshold,
            None if categorical else metric.raw_scale(d.baseline_value),
            d.current_value if categorical else metric.raw_scale(d.current_value),
            evidence,
        )

    def _push_times(self, bundle: _Bundle, ts: np.ndarray) -> None:
        n = ts_len(bundle)
        bundle.n_events += max(0, ts.shape[0] - n)
        tail = ts[-n:]
        bundle.ts_ring[(bundle.n_events + np.arange(tail.shape[0])) % n] = tail
        bundle.n_events += int(tail.shape[0])
        bundle.canary_pending += int(ts.shape[0])
        bundle.last_ts = max(bundle.last_ts, int(ts[-1]))

    def _canary(self, workflow: str, state: _Workflow) -> list[_Hit]:
        det = self._settings.detectors
        if len(state.bundles) < 2:
            return []
        now = max(b.last_ts for b in state.bundles.values())
        active = [
            (bid, b)
            for bid, b in sorted(state.bundles.items())
            if b.last_ts >= now - det.canary_active_s * _US
        ]
        slots: dict[tuple[str, str], list[tuple[str, _Bundle]]] = {}
        for bid, b in active:
            slots.setdefault(b.slot, []).append((bid, b))
        hits = []
        for slot in sorted(slots):
            if len(slots[slot]) >= 2 and slot[1]:
                hits.extend(self._canary_slot(workflow, slots[slot]))
        return hits

    def _canary_slot(self, workflow: str, active: list[tuple[str, _Bundle]]) -> list[_Hit]:
        det = self._settings.detectors
        incumbent_id, incumbent = max(active, key=lambda p: (p[1].n_events, p[0]))
        stride = max(1, det.window_events // 5)
        critical = ks_critical_value(det.window_events, det.window_events, stride / self._test_arl0)
        hits = []
        for bid, candidate in active:
            if bid == incumbent_id or candidate.canary_pending < stride:
                continue
            candidate.canary_pending = 0
            for metric in self._metrics:
                if metric.kind != "continuous":
                    continue
                a = incumbent.detectors[metric.name].recent_values()
                b = candidate.detectors[metric.name].recent_values()
                if a is None or b is None:
                    continue
                d = ks_statistic(np.sort(a), b)
                if d <= critical:
                    continue
                evidence = {
                    "test": "ks_canary",
                    "statistic": d,
                    "threshold": critical,
                    "baseline_bundle_id": incumbent_id,
                    "bundle_id": bid,
                    "window_events": det.window_events,
                    "window_end": candidate.last_ts,
                    "baseline_window_end": incumbent.last_ts,
                }
                hits.append(
                    _Hit(
                        candidate.last_ts,
                        workflow,
                        "drift",
                        f"{metric.name}:canary",
                        bid,
                        "warning",
                        d / critical,
                        critical,
                        metric.raw_scale(float(np.mean(a))),
                        metric.raw_scale(float(np.mean(b))),
                        evidence,
                    )
                )
        return hits

    # --- budgets and routing ------------------------------------------------------

    def _scopes(self, wf: WorkflowSettings, record: dict) -> list[tuple[str, BudgetSettings]]:
        scopes = [("", wf.budgets)]
        tenant = str(record.get("tenant") or "")
        route = str(record.get("route") or "")
        if tenant in wf.tenants:
            scopes.append((f"[tenant={tenant}]", wf.tenants[tenant]))
        if route in wf.routes:
            scopes.append((f"[route={route}]", wf.routes[route]))
        return scopes

    def _scope_state(self, state: _Workflow, label: str, budget: BudgetSettings) -> _Scope:
        scope = state.scopes.get(label)
        if scope is None:
            scope = state.scopes[label] = _Scope(
                WindowSum(budget.window_s) if budget.tokens_per_window else None,
                WindowSum(budget.window_s) if budget.cost_usd_per_window else None,
                BurnRate(budget.monthly_cost_usd) if budget.monthly_cost_usd else None,
            )
        return scope

    def _event_rules(self, workflow: str, state: _Workflow, events: list[dict]) -> list[_Hit]:
        wf = self._workflow_settings(workflow)
        hits: list[_Hit] = []
        for e in events:
            ts = event_time(e)
            hits.extend(self._routing(workflow, wf, e, ts, str(e.get("bundle_id") or "")))
            for label, budget in self._scopes(wf, e):
                scope = self._scope_state(state, label, budget)
                hits.extend(self._budget_checks(workflow, label, budget, scope, e, ts))
        return hits

    def _budget_checks(
        self,
        workflow: str,
        label: str,
        budget: BudgetSettings,
        scope: _Scope,
        e: dict,
        ts: int,
    ) -> list[_Hit]:
        tokens = int(e.get("input_tokens") or 0) + int(e.get("output_tokens") or 0)
        cost = e.get("cost_usd")
        checks: list[tuple[str, float, float | None, str]] = [
            ("tokens_per_request", tokens, budget.max_tokens_per_request, "warning"),
            (
                "retries_per_request",
                e.get("retry_attempt") or 0,
                budget.max_retries_per_request,
                "warning",
            ),
            ("loop_depth", e.get("loop_depth") or 0, budget.max_loop_depth, "warning"),
        ]
        if scope.tokens is not None:
            scope.tokens.add(ts, tokens)
            checks.append(
                ("tokens_per_window", scope.tokens.total(ts), budget.tokens_per_window, "error")
            )
        if cost is not None and scope.cost is not None:
            scope.cost.add(ts, float(cost))
            checks.append(
                ("cost_usd_per_window", scope.cost.total(ts), budget.cost_usd_per_window, "error")
            )
        context = {
            "window_s": budget.window_s,
            "trace_id": e.get("trace_id", ""),
            "span_id": e.get("span_id", ""),
            "service": e.get("service", ""),
            "model": e.get("response_model") or e.get("request_model") or "",
        }
        hits = [
            _limit_hit(ts, workflow, metric, label, severity, float(observed), limit, context)
            for metric, observed, limit, severity in checks
            if limit is not None and observed > limit
        ]
        if cost is not None and scope.burn is not None:
            scope.burn.add(ts, float(cost))
            verdict = scope.burn.verdict(ts)
            if verdict is not None:
                hits.append(_burn_hit(ts, workflow, label, verdict, budget.monthly_cost_usd))
        return hits

    def _routing(
        self, workflow: str, wf: WorkflowSettings, e: dict, ts: int, bundle_id: str
    ) -> Iterable[_Hit]:
        requested = str(e.get("request_model") or "")
        answered = str(e.get("response_model") or "")
        model = answered or requested
        version = str(e.get("model_version") or "")
        found = []
        if wf.allowed_models is not None and not model_allowed(
            requested, answered, wf.allowed_models
        ):
            found.append(
                (
                    "unallowed_model",
                    "critical",
                    {
                        "model": model,
                        "request_model": requested,
                        "response_model": answered,
                        "allowed_models": list(wf.allowed_models),
                    },
                )
            )
        if wf.registered_bundles is not None and bundle_id not in wf.registered_bundles:
            found.append(
                (
                    "unregistered_bundle",
                    "error",
                    {
                        "model": model,
                        "model_version": version,
                        "prompt_version": e.get("prompt_version", ""),
                        "retrieval_index_version": e.get("retrieval_index_version", ""),
                        "router_version": e.get("router_version", ""),
                    },
                )
            )
        if (
            wf.registered_model_versions is not None
            and version
            and version not in wf.registered_model_versions
        ):
            found.append(
                ("unregistered_model_version", "error", {"model": model, "model_version": version})
            )
        for metric, severity, evidence in found:
            evidence |= {
                "trace_id": e.get("trace_id", ""),
                "span_id": e.get("span_id", ""),
                "bundle_id": bundle_id,
                "service": e.get("service", ""),
            }
            yield _Hit(
                ts,
                workflow,
                "routing",
                metric,
                bundle_id,
                severity,
                1.0,
                None,
                None,
                None,
                evidence,
            )

    def _trace_rules(self, trace: dict) -> list[_Hit]:
        workflow = str(trace.get("workflow") or "")
        wf = self._workflow_settings(workflow)
        ts = event_time(trace)
        context = {
            "trace_id": trace.get("trace_id", ""),
            "service": trace.get("service", ""),
            "llm_call_count": trace.get("llm_call_count", 0),
            "total_tokens": trace.get("total_tokens", 0),
        }
        hits: list[_Hit] = []
        for label, budget in self._scopes(wf, trace):
            checks = [
                ("loop_depth", trace.get("max_loop_depth") or 0, budget.max_loop_depth),
                ("amplification", trace.get("amplification"), budget.max_amplification),
            ]
            hits.extend(
                _limit_hit(ts, workflow, metric, label, "warning", float(observed), limit, context)
                for metric, observed, limit in checks
                if limit is not None and observed is not None and observed > limit
            )
        if hits:
            self._state(workflow)
        return hits

    # --- lifecycle ----------------------------------------------------------

    def _apply(self, hit: _Hit) -> list[dict]:
        state = self._state(hit.workflow)
        key = hit.key
        alert = state.alerts.get(key)
        if alert is None:
            record: dict[str, Any] = {
                "alert_id": alert_id(key, hit.ts),
                "dedup_key": key,
                "kind": hit.kind,
                "severity": hit.severity,
                "state": "open",
                "opened_at": hit.ts,
                "resolved_at": None,
                "workflow": hit.workflow,
                "metric": hit.metric,
                "bundle_id": hit.bundle_id,
                "runbook_url": self._runbook_url(hit.kind, hit.metric),
            }
            self._fill(record, hit)
            state.alerts[key] = _OpenAlert(record, hit.ts, hit.score, hit.severity)
            heapq.heappush(self._due, (hit.ts + self._hold_us, hit.workflow, key))
            return [_transition(record, "open", hit.ts)]
        alert.last_hit_ts = max(alert.last_hit_ts, hit.ts)
        record = alert.record
        # Severity only rises while open: a falling one would page twice for one incident.
        if _rank(hit.severity) < _rank(record["severity"]):
            record["severity"] = hit.severity
        self._fill(record, hit)
        moved = abs(hit.score - alert.emitted_score) > MATERIAL_SCORE_CHANGE * max(
            abs(alert.emitted_score), 1e-12
        )
        if record["severity"] != alert.emitted_severity or moved:
            alert.emitted_score = hit.score
            alert.emitted_severity = record["severity"]
            return [_transition(record, "update", hit.ts)]
        return []

    def _fill(self, record: dict, hit: _Hit) -> None:
        record["baseline_value"] = hit.baseline
        record["current_value"] = hit.current
        record["score"] = float(hit.score)
        record["threshold"] = hit.threshold
        record["evidence"] = hit.evidence
        record["dashboard_url"] = self._dashboard_url(hit.workflow, record["opened_at"], hit.ts)

    def _resolve_due(self, now: int, inclusive: bool) -> list[dict]:
        out = []
        while self._due and (self._due[0][0] < now or (inclusive and self._due[0][0] <= now)):
            due, workflow, key = heapq.heappop(self._due)
            state = self._states.get(workflow)
            alert = state.alerts.get(key) if state is not None else None
            if alert is None:
                continue
            real_due = alert.last_hit_ts + self._hold_us
            if real_due != due:  # hit again since scheduled: reschedule
                heapq.heappush(self._due, (real_due, workflow, key))
                continue
            assert state is not None
            del state.alerts[key]
            self._dirty.add(workflow)
            record = alert.record
            record["state"] = "resolved"
            record["resolved_at"] = due
            out.append(_transition(record, "resolve", due))
        return out

    def _runbook_url(self, kind: str, metric: str) -> str:
        base = self._settings.alerts.runbook_base_url.rstrip("/")
        return f"{base}/{kind}/{quote(metric.split('[')[0], safe='')}"

    def _dashboard_url(self, workflow: str, opened_at: int, now: int) -> str:
        base = self._settings.alerts.dashboard_base_url.rstrip("/")
        query = urlencode(
            {
                "var-workflow": workflow,
                "from": opened_at // 1000 - 3_600_000,
                "to": now // 1000 + 900_000,
            }
        )
        return f"{base}/d/driftline-drift?{query}"


def _limit_hit(
    ts: int,
    workflow: str,
    metric: str,
    label: str,
    severity: str,
    observed: float,
    limit: float,
    context: dict[str, Any],
) -> _Hit:
    evidence = {"scope": label or "workflow", "observed": observed, "limit": limit, **context}
    return _Hit(
        ts,
        workflow,
        "budget",
        metric + label,
        "",
        severity,
        observed / limit,
        float(limit),
        float(limit),
        observed,
        evidence,
    )


def _burn_hit(
    ts: int, workflow: str, label: str, verdict: BurnVerdict, monthly: float | None
) -> _Hit:
    slower = min(verdict.short_rate, verdict.long_rate)
    evidence = {
        "scope": label or "workflow",
        "short_window_s": verdict.short_s,
        "long_window_s": verdict.long_s,
        "factor": verdict.factor,
        "short_burn_rate": verdict.short_rate,
        "long_burn_rate": verdict.long_rate,
        "monthly_cost_usd": monthly,
    }
    return _Hit(
        ts,
        workflow,
        "budget",
        "cost_burn_rate" + label,
        "",
        verdict.severity,
        slower / verdict.factor,
        verdict.factor,
        1.0,
        slower,
        evidence,
    )


BUNDLE_CONTEXT_FIELDS: Final = (
    "service",
    "operation",
    "provider",
    "model_version",
    "prompt_version",
    "retrieval_index_version",
    "router_version",
)


def bundle_context(event: dict[str, Any]) -> dict[str, str]:
    """The bundle an event ran under, as evidence: its model and artifact versions.

    >>> context = bundle_context({"service": "chat", "request_model": "gpt-4o"})
    >>> context["model"], context["service"], context["prompt_version"]
    ('gpt-4o', 'chat', '')
    """
    out = {name: str(event.get(name) or "") for name in BUNDLE_CONTEXT_FIELDS}
    out["model"] = str(event.get("response_model") or event.get("request_model") or "")
    return out


def ts_len(bundle: _Bundle) -> int:
    return int(bundle.ts_ring.shape[0])


def _rank(severity: str) -> int:
    return SEVERITIES.index(severity) if severity in SEVERITIES else len(SEVERITIES)


def _transition(record: dict, transition: str, ts: int) -> dict:
    out = dict(record)
    out["evidence"] = dict(record.get("evidence") or {})
    out["transition"] = transition
    out["event_ts"] = ts
    return out
