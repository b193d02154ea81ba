"""Drift per (bundle, metric) and canary comparisons between bundles of one slot.

- drift: :class:`detectors.MetricDetector` on the natural scale (frozen reference after
  ``detectors.warmup_events``, taken from ``detectors.settle_s`` of event time after the
  bundle first appears); the ARL0 budget ``detectors.arl0_events`` is split evenly over
  every test of every metric; failed calls count for retries only (see
  :mod:`detectors.metrics`). The alert stays open while :func:`shift_holds`.
- KV pressure joined from engine reports: every call between two scrapes carries its
  engine's one report (:data:`ENGINE_KV_REPORT_NS`), so the KV detector of a bundle takes a
  call only if it has not taken that report of that engine yet (:func:`take_report`): one
  observation per report, as many as there are measurements. A call whose span carried
  its own KV (no report time) counts on its own.
- canary: two bundles of one *slot* (:func:`canary_slot`: same operation, same model)
  active within ``detectors.canary_active_s`` are compared with each other (two-sample
  KS of their latest windows), so a change shared by both (retrieval, traffic mix) does
  not count against the new bundle. Bundles of different slots are never compared: they
  are different calls, not a rollout. The alert stays open while the KS statistic stays
  above ``CANARY_STAY_FRACTION`` of its critical value.

A drift alert's ``score`` is the effect size, ``|current - baseline|`` in reference
standard deviations on the natural scale (Jensen-Shannon divergence for a categorical
mix); ``threshold`` and ``evidence`` carry the test's own statistic.
"""

from __future__ import annotations

import bisect
import zlib
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, Final

import numpy as np

from driftline.config import DetectorSettings
from driftline.detectors import METRICS, MetricDetector
from driftline.detectors.composite import CONTINUOUS_TESTS, Detection
from driftline.detectors.ks import ks_critical_value, ks_statistic
from driftline.detectors.metrics import KV_PRESSURE, Metric
from driftline.detectors.seasonal import HourProfile, at_times
from driftline.streams.engine_attribution import ENGINE_INSTANCE, ENGINE_KV_REPORT_NS
from driftline.streams.monitor import untracked
from driftline.streams.monitor.hits import TRACKED_BUNDLES, Hit, cap_warning, event_time
from driftline.streams.monitor.routing import MAX_OFFENDER_CHARS
from driftline.streams.monitor.untracked import Sighting

_US: Final = 1_000_000
CANARY_STAY_FRACTION: Final = 0.8
# A bundle left out for this many canary_active_s is warned of: at a rollout the new
# version's bundles wait one for the old ones to go idle (at 1, the two raced: a warning
# opened and resolved at each of a replay's deploys).
WARN_LEFT_OUT_ACTIVE: Final = 2
# A measured shift of at least one reference standard deviation (or one caught by the CUSUM
# member aimed at 1.5) is an error, a smaller one a warning; an alert that grows into it
# is updated (not paged again).
ERROR_EFFECT_SD: Final = 1.0
ERROR_MEMBER_SD: Final = 1.5
# Engines per bundle whose KV reports taken are remembered (the one with the oldest report
# is forgotten beyond it), and reports remembered per engine: a call may end, and reach the
# monitor, after calls that met later reports; one whose report is older than every report
# remembered is not taken (it may have been).
MAX_KV_ENGINES: Final = 64
KV_REPORTS_KEPT: Final = 32

BUNDLE_CONTEXT_FIELDS: Final = (
    "service",
    "operation",
    "provider",
    "model_version",
    "prompt_version",
    "retrieval_index_version",
    "router_version",
)


@dataclass(slots=True)
class Bundle:
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
    # Engine instance -> times (ns, ascending) of the newest KV reports its KV detector took.
    kv_reports: dict[str, list[int]] = field(default_factory=dict)
    # Continuous metric -> its level by hour of day (detectors.seasonal).
    seasons: dict[str, HourProfile] = field(default_factory=dict)


def take_report(taken: dict[str, list[int]], engine: str, report_ns: int) -> bool:
    """Whether a KV value read from ``engine``'s report of ``report_ns`` is a new
    measurement for a bundle that has ``taken`` these reports (which it then joins).

    >>> taken = {}
    >>> [take_report(taken, "vllm-0:8000", t) for t in (10, 10, 25, 10, 25, 40)]
    [True, False, True, False, False, True]
    """
    times = taken.get(engine)
    if times is None:
        if len(taken) >= MAX_KV_ENGINES:
            del taken[min(taken, key=lambda e: (taken[e][-1], e))]
        taken[engine] = [report_ns]
        return True
    at = bisect.bisect_left(times, report_ns)
    if at < len(times) and times[at] == report_ns:
        return False
    if at == 0 and len(times) >= KV_REPORTS_KEPT:
        return False  # older than every report remembered: it may have been taken
    times.insert(at, report_ns)
    if len(times) > KV_REPORTS_KEPT:
        del times[0]
    return True


def canary_slot(event: dict[str, Any]) -> tuple[str, str]:
    """The call a bundle serves: ``(operation, model)``, the model named as in ``bundle_id``.

    >>> canary_slot({"operation": "chat", "request_model": "gpt-4o"})
    ('chat', 'gpt-4o')
    """
    model = str(event.get("response_model") or event.get("request_model") or "")
    return (str(event.get("operation") or ""), model)


def bundle_context(event: dict[str, Any]) -> dict[str, str]:
    """The bundle an event ran under, as evidence: its model and artifact versions.

    >>> context = bundle_context({"service": "chat", "request_model": "gpt-4o"})
    >>> context["model"], context["service"], context["prompt_version"]
    ('gpt-4o', 'chat', '')
    """
    out = {name: str(event.get(name) or "") for name in BUNDLE_CONTEXT_FIELDS}
    out["model"] = str(event.get("response_model") or event.get("request_model") or "")
    return out


def enabled_metrics(det: DetectorSettings) -> tuple[Metric, ...]:
    known = {m.name for m in METRICS}
    enabled = det.enabled_metrics
    if enabled is not None and (unknown := sorted(set(enabled) - known)):
        raise ValueError(
            f"detectors.enabled_metrics has unknown metrics {unknown}; choose from {sorted(known)}"
        )
    return tuple(m for m in METRICS if enabled is None or m.name in enabled)


def shift_holds(detector: MetricDetector) -> bool:
    """Whether a metric's recent window still differs from its reference, at the detector's
    stay-open bar (lower than the bar that opens an alert): the drift alert's condition."""
    return detector.shift_holds()


class DriftRules:
    """Drift and canary rules for every workflow, on state the caller keeps per workflow."""

    def __init__(self, det: DetectorSettings) -> None:
        self._det = det
        self.metrics = enabled_metrics(det)
        tests = sum(CONTINUOUS_TESTS if m.kind == "continuous" else 1 for m in self.metrics)
        # Every test gets an equal share of the workflow's false-alarm budget.
        self.test_arl0 = det.arl0_events * max(tests, 1)
        self._settle_us = int(det.settle_s * _US)
        # Events of bundles past detectors.max_bundles_per_workflow (exported as a counter).
        self.untracked_bundle_records = 0

    def hits(
        self,
        workflow: str,
        bundles: dict[str, Bundle],
        events: list[dict],
        now: int,
        times: list[int] | None = None,
        left_out: dict[str, Sighting] | None = None,
    ) -> list[Hit]:
        """Feed one workflow's events (event-time order); the drift and canary hits.

        Event times are capped at the workflow's clock ``now``: a record dated far ahead
        must not start a bundle in the future (it would never settle). ``times``: the
        events' :func:`event_time` s when the caller has them. ``left_out``: the
        workflow's bundles serving without a place (:mod:`.untracked`), kept up to date.

        The metrics' values are read once per call, column by column
        (:class:`_Columns`); each bundle then takes its rows of every column.
        """
        hits: list[Hit] = []
        if events:
            if times is None:
                times = [event_time(e) for e in events]
            capped = np.array([t if t < now else now for t in times], dtype=np.int64)
            by_bundle: dict[str, list[int]] = {}
            for i, bid in enumerate(map(_bundle_of, events)):
                rows = by_bundle.get(bid)
                if rows is None:
                    by_bundle[bid] = [i]
                else:
                    rows.append(i)
            columns = _Columns(events, self.metrics)
            seen = {} if left_out is None else left_out
            for bundle_id in sorted(by_bundle, key=lambda b: (times[by_bundle[b][0]], b)):
                rows = by_bundle[bundle_id]
                hits.extend(
                    self._bundle_hits(
                        workflow, bundles, seen, bundle_id, events, rows, capped, columns
                    )
                )
        hits.extend(self._canary(workflow, bundles))
        return hits

    def _bundle_hits(
        self,
        workflow: str,
        bundles: dict[str, Bundle],
        left_out: dict[str, Sighting],
        bundle_id: str,
        events: list[dict],
        rows: list[int],
        capped: np.ndarray,
        columns: _Columns,
    ) -> list[Hit]:
        idx = np.array(rows, dtype=np.intp)
        ts = capped[idx]
        errors = columns.errors
        all_failed = all(errors[i] for i in rows)
        bundle = self._bundle(bundles, left_out, bundle_id, int(ts[0]), all_failed)
        if bundle is None:
            if all_failed:
                return []
            self.untracked_bundle_records += len(rows)
            seen = untracked.record(left_out, bundle_id, int(ts[0]), int(ts[-1]), len(rows))
            if (
                seen.last_ts - seen.first_ts
                < WARN_LEFT_OUT_ACTIVE * self._det.canary_active_s * _US
            ):
                return []  # a rollout's new bundle: the old ones are idle by then
            return [self._no_room_hit(workflow, bundle_id, events[rows[0]], seen.last_ts)]
        left_out.pop(bundle_id, None)
        if bundle.slot == ("", ""):
            bundle.slot = canary_slot(events[rows[0]])
        if not bundle.context:
            bundle.context = bundle_context(events[rows[0]])
        settled = bundle.first_ts + self._settle_us
        if ts[0] < settled:
            bundle.last_ts = max(bundle.last_ts, int(ts[-1]))
            keep = np.flatnonzero(ts >= settled)
            idx, ts = idx[keep], ts[keep]
            if not idx.shape[0]:
                return []
        rows_view = _BundleRows(bundle, idx, ts, columns)
        hits: list[Hit] = []
        for metric in self.metrics:
            hits.extend(self._metric(workflow, bundle_id, bundle, metric, rows_view))
        _push_times(bundle, ts)
        return hits

    def _no_room_hit(self, workflow: str, bundle_id: str, event: dict[str, Any], ts: int) -> Hit:
        """The warning that a bundle serves ``workflow`` unmonitored: it has been left out
        for ``WARN_LEFT_OUT_ACTIVE`` x ``canary_active_s`` while every tracked bundle
        served (``detectors.max_bundles_per_workflow``). Not sooner: at a rollout, the new
        version's bundles wait ``canary_active_s`` for the old ones to count as idle. One incident
        per workflow (``budget/<workflow>/tracked_bundles/``), listing the bundles left out;
        it holds while one of them still serves (:func:`untracked.serving`)."""
        model = bundle_context(event)["model"]
        return cap_warning(
            ts,
            workflow,
            TRACKED_BUNDLES,
            "detectors.max_bundles_per_workflow",
            self._det.max_bundles_per_workflow,
            {"offenders": [f"{bundle_id} ({model})"[:MAX_OFFENDER_CHARS]]},
            condition="untracked",
        )

    def left_out_serving(self, left_out: dict[str, Sighting], now: int) -> bool:
        """The ``tracked_bundles`` warning's condition: a bundle left out still serves."""
        return untracked.serving(left_out, now, self._det.canary_active_s * _US)

    def holds(self, bundles: dict[str, Bundle], record: dict[str, Any], now: int) -> bool:
        """Whether a drift or canary alert's condition still holds at ``now``.

        A bundle no longer tracked, or without traffic for ``detectors.canary_active_s``
        or for ``RETIRED_GAPS`` of its own mean gap between calls if that is longer
        (retired by a rollout), has no shift left to keep its alerts open. A canary alert
        holds while either bundle's window is refilling (after a shape detection, or a
        recovery test's decision, started it over): no evidence either way yet.
        """
        metric_name, _, canary = str(record["metric"]).partition(":")
        bundle = bundles.get(str(record["bundle_id"]))
        if bundle is None or metric_name not in bundle.detectors:
            return False
        if now - bundle.last_ts > self._retired_after_us(bundle):
            return False
        if canary:
            incumbent = bundles.get(str((record.get("evidence") or {}).get("baseline_bundle_id")))
            if incumbent is None:
                return False
            d, critical = self._canary_statistic(incumbent, bundle, metric_name)
            return d is None or d > CANARY_STAY_FRACTION * critical
        return shift_holds(bundle.detectors[metric_name])

    def _retired_after_us(self, bundle: Bundle) -> float:
        """How long without a call a bundle counts as retired. A fallback model answering
        a tenth of a quiet workflow's calls goes 10 minutes without one at night while it
        still serves (bench/bench_replay.py seed 11: a latency creep on such a bundle
        resolved twice while it lasted, each time after a 10-minute gap, and reopened)."""
        return untracked.retired_after_us(
            bundle.first_ts, bundle.last_ts, bundle.n_events, self._det.canary_active_s * _US
        )

    def _new_bundle(self, ts: int) -> Bundle:
        det = self._det
        detectors = {
            m.name: MetricDetector(
                m.kind,
                det.warmup_events,
                det.window_events,
                self.test_arl0 / (CONTINUOUS_TESTS if m.kind == "continuous" else 1),
                spread=m.spread,
            )
            for m in self.metrics
        }
        return Bundle(detectors, np.zeros(det.window_events, dtype=np.int64), first_ts=ts)

    def _bundle(
        self,
        bundles: dict[str, Bundle],
        left_out: dict[str, Sighting],
        bundle_id: str,
        ts: int,
        all_failed: bool,
    ) -> Bundle | None:
        """The bundle's state; a new one is tracked only when there is room for it.

        Room: a free place, or a tracked bundle idle for ``canary_active_s``, or one seen
        at one instant only (the least recently seen goes). A bundle that still serves
        keeps its place, armed or still warming up: dropping it for a newcomer and the
        newcomer for it again (a workflow calling more models than the bound, an A/B test
        of two prompts with a fallback model each) kept every baseline in warm-up for ever,
        with no warning. The bundles left out are listed by the ``tracked_bundles``
        warning while they serve. A flood of one-off names passes through one place.
        Failed calls alone never start a bundle (they answer with no model snapshot, so
        their bundle id is not the served one).
        """
        bundle = bundles.get(bundle_id)
        if bundle is not None:
            return bundle
        if all_failed:
            return None
        det = self._det
        if len(bundles) >= det.max_bundles_per_workflow:
            idle_before = ts - int(det.canary_active_s * _US)
            evictable = [
                b for b, s in bundles.items() if s.last_ts < idle_before or s.last_ts <= s.first_ts
            ]
            if not evictable:
                return None
            stale = min(evictable, key=lambda b: (bundles[b].last_ts, b))
            gone = bundles.pop(stale)
            if gone.last_ts > gone.first_ts:  # it may still serve, now unmonitored
                untracked.record(left_out, stale, gone.first_ts, gone.last_ts, gone.n_events)
        bundle = bundles[bundle_id] = self._new_bundle(ts)
        return bundle

    def _metric(
        self,
        workflow: str,
        bundle_id: str,
        bundle: Bundle,
        metric: Metric,
        rows: _BundleRows,
    ) -> list[Hit]:
        positions, values = rows.values(metric)
        if metric.name == KV_PRESSURE and positions.shape[0]:
            positions, values = rows.new_reports(positions, values)
        if not positions.shape[0]:
            return []
        detector = bundle.detectors[metric.name]
        ts = rows.ts
        groups = None
        if metric.kind == "continuous":  # the reference's design effect, then one_trace
            groups = rows.groups()[positions]
            values = _by_hour(bundle, metric.name, detector, ts[positions], values)
        was_frozen = detector.frozen
        warm_before = detector.n_warm
        detections = detector.update_many(values, groups)
        if detector.frozen and not was_frozen and metric.kind != "categorical":
            last_warm = self._det.warmup_events - warm_before - 1
            at = int(positions[min(last_warm, positions.shape[0] - 1)])
            bundle.frozen_at[metric.name] = int(ts[at])
        if not detections:
            return []
        hits = []
        window = self._det.window_events
        history = rows.history()
        offset = history.shape[0] - ts.shape[0]
        for d in detections:
            at = int(positions[d.index])
            start = int(history[max(0, offset + at - window + 1)]) or bundle.first_ts
            hits.append(self._drift_hit(workflow, bundle_id, bundle, metric, d, int(ts[at]), start))
        return hits

    def _drift_hit(
        self,
        workflow: str,
        bundle_id: str,
        bundle: Bundle,
        metric: Metric,
        d: Detection,
        ts: int,
        window_start: int,
    ) -> Hit:
        det = self._det
        categorical = metric.kind == "categorical"
        severity = "warning"
        # In reference sd beyond the tolerance: a member's shift_sd includes twice the
        # tolerance, which on a metric as steady as the tolerance (its scale at the floor,
        # detectors.composite.LEVEL_MIN_SCALE) is 2 sd, and one sd there is a 2.5% change.
        tolerance = float(d.evidence.get("tolerance_sd", 0.0))
        member = float(d.evidence.get("shift_sd", 0.0)) - 2.0 * tolerance
        large = d.test == "cusum" and member >= ERROR_MEMBER_SD
        if large or (not categorical and abs(d.effect) >= max(ERROR_EFFECT_SD, 2 * tolerance)):
            severity = "error"
        evidence = {
            "test": d.test,
            "score_units": "jensen_shannon" if categorical else "reference_sd",
            "statistic": d.statistic,
            "threshold": d.threshold,
            "arl0_events": self.test_arl0,
            "transform": getattr(metric.transform, "__name__", "none"),
            "window_start": window_start,
            "window_end": ts,
            "window_events": det.window_events,
            "reference_start": bundle.first_ts + self._settle_us,
            "reference_end": bundle.frozen_at.get(metric.name, bundle.first_ts),
            "reference_events": det.warmup_events,
            # The reference keeps growing while the metric is in control (up to 8x the
            # warm-up): how many observations it holds now, beside the warm-up's window.
            "reference_size": bundle.detectors[metric.name].reference_size,
            "bundle_id": bundle_id,
            **bundle.context,
            **{k: v for k, v in d.evidence.items() if k not in {"statistic", "threshold"}},
        }
        if _corrected(bundle, metric.name):
            # Values corrected by hour of day (detectors.seasonal): baseline and current
            # are on the day's average level.
            evidence["by_hour_of_day"] = True
        return Hit(
            ts=ts,
            workflow=workflow,
            kind="drift",
            metric=metric.name,
            bundle_id=bundle_id,
            severity=severity,
            score=abs(d.effect),
            threshold=d.threshold,
            baseline=None if categorical else metric.raw_scale(d.baseline_value),
            current=d.current_value if categorical else metric.raw_scale(d.current_value),
            evidence=evidence,
            condition="drift",
        )

    def _canary(self, workflow: str, bundles: dict[str, Bundle]) -> list[Hit]:
        if len(bundles) < 2:
            return []
        now = max(b.last_ts for b in bundles.values())
        active = [
            (bid, b)
            for bid, b in sorted(bundles.items())
            if b.last_ts >= now - self._det.canary_active_s * _US
        ]
        slots: dict[tuple[str, str], list[tuple[str, Bundle]]] = {}
        for bid, b in active:
            slots.setdefault(b.slot, []).append((bid, b))
        hits = []
        for slot in sorted(slots):
            if len(slots[slot]) >= 2 and slot[1]:
                hits.extend(self._canary_slot(workflow, slots[slot]))
        return hits

    def _canary_statistic(
        self, incumbent: Bundle, candidate: Bundle, metric: str
    ) -> tuple[float | None, float]:
        window = self._det.window_events
        stride = max(1, window // 5)
        critical = ks_critical_value(window, window, stride / self.test_arl0)
        a = _recent_values(incumbent, metric)
        b = _recent_values(candidate, metric)
        if a is None or b is None:
            return None, critical
        return ks_statistic(np.sort(a), b), critical

    def _canary_slot(self, workflow: str, active: list[tuple[str, Bundle]]) -> list[Hit]:
        det = self._det
        incumbent_id, incumbent = max(active, key=lambda p: (p[1].n_events, p[0]))
        stride = max(1, det.window_events // 5)
        hits = []
        for bid, candidate in active:
            if bid == incumbent_id or candidate.canary_pending < stride:
                continue
            candidate.canary_pending = 0
            for metric in self.metrics:
                if metric.kind != "continuous":
                    continue
                d, critical = self._canary_statistic(incumbent, candidate, metric.name)
                if d is None or d <= critical:
                    continue
                a = _recent_values(incumbent, metric.name)
                b = _recent_values(candidate, metric.name)
                assert a is not None and b is not None
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
                    Hit(
                        ts=candidate.last_ts,
                        workflow=workflow,
                        kind="drift",
                        metric=f"{metric.name}:canary",
                        bundle_id=bid,
                        severity="warning",
                        score=d / critical,
                        threshold=critical,
                        baseline=metric.raw_scale(float(np.mean(a))),
                        current=metric.raw_scale(float(np.mean(b))),
                        evidence=evidence,
                        condition="canary",
                    )
                )
        return hits


def _by_hour(
    bundle: Bundle, metric: str, detector: MetricDetector, times: np.ndarray, values: np.ndarray
) -> np.ndarray:
    """A continuous metric's values with their hour's offset taken off, once the bundle's
    profile by hour of day is worth using (:mod:`detectors.seasonal`). The detector's
    reference then starts over on such values (it held the hours it had seen), at a
    moment no shift holds."""
    profile = bundle.seasons.get(metric)
    if profile is None:
        profile = bundle.seasons[metric] = HourProfile()
    profile.learn(times, values)
    if not profile.active:
        # Not while a shift holds: starting the reference over would accept it unseen.
        if (
            not detector.frozen
            or not profile.due_for_check()
            or detector.shift_holds()
            or not profile.worth_using()
        ):
            return values
        profile.active = True
        detector.rebaseline()
    return values - at_times(profile.offsets_in_use(), times)


def _corrected(bundle: Bundle, metric: str) -> bool:
    profile = bundle.seasons.get(metric)
    return profile is not None and profile.active


def _recent_values(bundle: Bundle, metric: str) -> np.ndarray | None:
    """A bundle's latest window of ``metric`` as measured: a bundle corrected by hour of
    day gets its latest hour's offset back, so a canary compares like with like."""
    values = bundle.detectors[metric].recent_values()
    if values is None or not _corrected(bundle, metric):
        return values
    offsets = bundle.seasons[metric].offsets_in_use()
    return values + at_times(offsets, np.array([bundle.last_ts]))[0]


def _bundle_of(event: dict[str, Any]) -> str:
    return str(event.get("bundle_id") or "")


class _Columns:
    """The metrics' fields of one step's events, read once, one column per field.

    Values come out exactly as :meth:`Metric.raw_value` gives them, event by event:
    a failed call (``error_type`` set) measured nothing but its retries, a missing
    value is not measured, a negative one counts as 0.
    """

    __slots__ = ("_cache", "_columns", "errors", "events")

    def __init__(self, events: list[dict], metrics: tuple[Metric, ...]) -> None:
        fields = (*dict.fromkeys(m.field for m in metrics), "error_type")
        getter = itemgetter(*fields)
        try:
            table = list(map(getter, events))
        except KeyError:  # a sparse record: read it field by field
            table = [tuple(map(e.get, fields)) for e in events]
        if len(fields) == 1:
            table = [(v,) for v in table]
        columns = list(zip(*table, strict=True))
        self._columns = dict(zip(fields, columns, strict=True))
        self.errors: list[bool] = list(map(bool, self._columns["error_type"]))
        self.events = events
        self._cache: dict[str, tuple[np.ndarray | None, Any]] = {}

    def column(self, metric: Metric) -> tuple[np.ndarray | None, Any]:
        """(measured: bool per event, None when every one is; values): float64 per event
        for numeric metrics (anything where not measured), ``str | None`` per event for a
        categorical one."""
        cached = self._cache.get(metric.name)
        if cached is not None:
            return cached
        raw = self._columns[metric.field]
        n = len(raw)
        failed = np.fromiter(self.errors, dtype=bool, count=n)
        values: Any
        if metric.kind == "categorical":
            values = [str(v) if v else None for v in raw]
            measured = np.fromiter(map(bool, raw), dtype=bool, count=n)
        elif metric.kind == "bernoulli":
            values = np.fromiter(map(bool, raw), dtype=np.float64, count=n)
            measured = np.ones(n, dtype=bool)
        else:
            filled: Any = raw
            measured = np.ones(n, dtype=bool)
            if None in raw:
                measured = np.fromiter((v is not None for v in raw), dtype=bool, count=n)
                filled = [0.0 if v is None else v for v in raw]
            x = np.array(filled, dtype=np.float64)
            values = np.where(x < 0.0, 0.0, x)  # max(v, 0.0): NaN and -0.0 stay
        if metric.kind != "poisson":
            measured &= ~failed
        out = self._cache[metric.name] = (None if measured.all() else measured, values)
        return out

    def trace_groups(self, rows: np.ndarray) -> np.ndarray:
        """A code per row: CRC-32 of its trace id, or a code of its own (negative) for a
        call without one, which is no more tied to other such calls than to any call."""
        events = self.events
        return np.fromiter(
            (
                zlib.crc32(trace.encode())
                if (trace := str(events[i].get("trace_id") or ""))
                else -1 - i
                for i in rows.tolist()
            ),
            dtype=np.int64,
            count=rows.shape[0],
        )


class _BundleRows:
    """One bundle's rows of a step: its events' times and metric values, and what a
    detection needs (trace groups, the times of the window before) only when asked."""

    __slots__ = ("_bundle", "_columns", "_every", "_groups", "_history", "idx", "ts")

    def __init__(self, bundle: Bundle, idx: np.ndarray, ts: np.ndarray, columns: _Columns):
        self._bundle = bundle
        self._columns = columns
        self.idx = idx
        self.ts = ts
        self._groups: np.ndarray | None = None
        self._history: np.ndarray | None = None
        self._every: np.ndarray | None = None

    def values(self, metric: Metric) -> tuple[np.ndarray, Any]:
        """Positions (into the bundle's rows) of the measured values, and the values on
        the metric's natural scale (``str`` s for a categorical one)."""
        measured, values = self._columns.column(metric)
        if measured is None:
            positions, rows = self.every(), self.idx
        else:
            positions = np.flatnonzero(measured[self.idx])
            rows = self.idx[positions]
        if metric.kind == "categorical":
            return positions, [values[i] for i in rows.tolist()]
        return positions, metric.natural(values[rows])

    def new_reports(self, positions: np.ndarray, values: Any) -> tuple[np.ndarray, Any]:
        """The KV values that are new measurements: a value joined from an engine report
        (:data:`ENGINE_KV_REPORT_NS`) only if the bundle has not taken that report of that
        engine yet (:attr:`Bundle.kv_reports`); a value without a report time, always."""
        events = self._columns.events
        taken = self._bundle.kv_reports
        keep = np.ones(positions.shape[0], dtype=bool)
        for k, row in enumerate(self.idx[positions].tolist()):
            attributes = events[row].get("attributes")
            reported = attributes.get(ENGINE_KV_REPORT_NS) if attributes else None
            if reported is None:
                continue
            try:
                report_ns = int(reported)
            except (TypeError, ValueError):
                continue  # not a time this join wrote: the value counts on its own
            keep[k] = take_report(taken, str(attributes.get(ENGINE_INSTANCE, "")), report_ns)
        if keep.all():
            return positions, values
        return positions[keep], values[keep]

    def every(self) -> np.ndarray:
        """Positions of all the rows."""
        if self._every is None:
            self._every = np.arange(self.idx.shape[0])
        return self._every

    def groups(self) -> np.ndarray:
        """Trace group (CRC-32 of the trace id) per row: calls of one trace are one draw."""
        if self._groups is None:
            self._groups = self._columns.trace_groups(self.idx)
        return self._groups

    def history(self) -> np.ndarray:
        """Timestamps of the bundle's previous window then these rows, oldest first."""
        if self._history is None:
            bundle = self._bundle
            ring = np.roll(bundle.ts_ring, -(bundle.n_events % bundle.ts_ring.shape[0]))
            self._history = np.concatenate([ring, self.ts])
        return self._history


def _push_times(bundle: Bundle, ts: np.ndarray) -> None:
    n = int(bundle.ts_ring.shape[0])
    bundle.n_events += max(0, ts.shape[0] - n)
    tail = ts[-n:]
    bundle.ts_ring[(bundle.n_events + np.arange(tail.shape[0])) % n] = tail
    bundle.n_events += int(tail.shape[0])
    bundle.canary_pending += int(ts.shape[0])
    bundle.last_ts = max(bundle.last_ts, int(ts[-1]))
