"""Conditions of the serving engines themselves: KV cache saturated, preemptions, queue.

Pure and deterministic, like the rest of the monitor: reports in, alert lifecycle
transitions out, time is the engine's own report time (microseconds). One state per engine
(its model and instance, as :mod:`streams.engine_attribution` keys them); the worker feeds
each engine's new reports per metric in time order (:meth:`EngineConditions.update`) and
checkpoints :meth:`EngineConditions.snapshot` of the engines it changed.

=======================  ==============================================  =========  ========
condition                a report is bad when                            stays open severity
                                                                         while
=======================  ==============================================  =========  ========
``kv_cache_saturated``   KV usage >= ``kv_usage_high`` (0.95)            > clear    error
                                                                         (0.90)
``preemptions_rising``   preemptions per second since the previous       > half     error
                         report >= ``preemptions_per_s_high`` (0.1)
``queue_growing``        requests waiting >= ``queue_waiting_high`` (20) > half     warning
                         and, to open, not fewer than when it began
=======================  ==============================================  =========  ========

An alert opens once every report of its metric has been bad for ``condition_for_s``; one
good report in between starts the wait again. While open, each bad report is a hit (the
alert is updated, never paged again, when it gets materially worse: :mod:`.lifecycle`);
it stays open while the reports stay above the clear bound (hysteresis: a value wandering
around the bound is one incident, not a page per crossing) and resolves once they have
been at or below it for ``hold_down_s``, dated ``hold_down_s`` after the first such
report. An engine that stops reporting the metric resolves ``hold_down_s`` after its last
report, as the newest report of any engine (:meth:`EngineConditions.review`) tells, with
``evidence.resolution = "no_reports"``.

Alerts are ``kind = "engine"``; ``workflow`` is the engine's instance (``host:port``, the
scrape target), ``metric`` the condition, ``bundle_id`` the model, so the dedup key is
``engine/<instance>/<condition>/<model>``: one incident per engine and condition.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from driftline.config import AlertSettings, EngineSettings
from driftline.schemas import engine_metrics as em
from driftline.schemas.alert import dedup_key
from driftline.streams.monitor import lifecycle
from driftline.streams.monitor.hits import Hit
from driftline.streams.monitor.lifecycle import OpenAlert
from driftline.streams.monitor.links import DASHBOARD_AFTER_MS, DASHBOARD_BEFORE_MS
from driftline.streams.monitor.snapshot import SnapshotError, alert_from_state, alert_state

__all__ = [
    "KIND_ENGINE",
    "EngineConditions",
    "EngineKey",
    "Rule",
    "rules_of",
]

KIND_ENGINE: Final = "engine"
KV_CACHE_SATURATED: Final = "kv_cache_saturated"
PREEMPTIONS_RISING: Final = "preemptions_rising"
QUEUE_GROWING: Final = "queue_growing"
RESOLVED_NO_REPORTS: Final = "no_reports"
CLEAR_RATIO: Final = 0.5  # preemptions and queue stay open above this share of the bound
SNAPSHOT_MAGIC: Final = b"DLENG1\n"
SRE_DASHBOARD: Final = "driftline-sre"  # dashboards/sre_overview.py (a layer above)
_US: Final = 1_000_000

EngineKey = tuple[str, str]  # (model, instance)


@dataclass(frozen=True, slots=True)
class Rule:
    """One condition on one engine metric."""

    name: str
    metric: str  # canonical engine metric (schemas.engine_metrics)
    open_at: float  # a report at or above this is bad
    clear_at: float  # an open alert holds while reports are above this
    severity: str
    rate: bool = False  # a counter: judge its rate per second between reports
    growing: bool = False  # open only if the last bad report is not below the first

    def describe(self, value: float) -> str:
        if self.metric == em.KV_CACHE_USAGE:
            return f"KV cache {value * 100:.0f}% full (bound {self.open_at * 100:.0f}%)"
        if self.rate:
            return f"{value:.2g} preemptions/s (bound {self.open_at:g}/s)"
        return f"{value:g} requests waiting (bound {self.open_at:g})"


def rules_of(settings: EngineSettings) -> tuple[Rule, ...]:
    """The three conditions with the bounds of ``[engines]``."""
    return (
        Rule(
            KV_CACHE_SATURATED,
            em.KV_CACHE_USAGE,
            settings.kv_usage_high,
            settings.kv_usage_clear,
            "error",
        ),
        Rule(
            PREEMPTIONS_RISING,
            em.PREEMPTIONS,
            settings.preemptions_per_s_high,
            settings.preemptions_per_s_high * CLEAR_RATIO,
            "error",
            rate=True,
        ),
        Rule(
            QUEUE_GROWING,
            em.REQUESTS_WAITING,
            settings.queue_waiting_high,
            settings.queue_waiting_high * CLEAR_RATIO,
            "warning",
            growing=True,
        ),
    )


@dataclass(slots=True)
class _Run:
    """A rule's run of bad reports not yet long enough to open (``since`` None: none)."""

    since: int | None = None
    first: float = 0.0
    reports: int = 0


@dataclass(slots=True)
class EngineState:
    # metric -> (time, value) of the last report applied: reports at or before it are old
    last: dict[str, tuple[int, float]] = field(default_factory=dict)
    runs: dict[str, _Run] = field(default_factory=dict)  # rule name -> run
    alerts: dict[str, OpenAlert] = field(default_factory=dict)  # dedup key -> open alert


class EngineConditions:
    """The engine conditions of every engine a worker evaluates.

    >>> watch = EngineConditions(EngineSettings(condition_for_s=60, hold_down_s=60),
    ...                          AlertSettings())
    >>> engine = ("llama", "vllm-0:8000")
    >>> times = [s * 1_000_000 for s in range(0, 300, 15)]  # a scrape every 15 s
    >>> kv = [0.5] * 4 + [0.97] * 8 + [0.6] * 8  # saturated from 60 s to 165 s
    >>> for t in watch.update(engine, "kv_cache_usage", times, kv):
    ...     print(t["transition"], t["event_ts"] // 1_000_000, t["dedup_key"])
    open 120 engine/vllm-0:8000/kv_cache_saturated/llama
    resolve 240 engine/vllm-0:8000/kv_cache_saturated/llama
    """

    def __init__(self, settings: EngineSettings, alerts: AlertSettings) -> None:
        self._alerts = alerts
        self._for_us = int(settings.condition_for_s * _US)
        self._hold_us = int(settings.hold_down_s * _US)
        self.rules = rules_of(settings)
        self.metrics = tuple(sorted({r.metric for r in self.rules}))
        self._states: dict[EngineKey, EngineState] = {}
        self._dirty: set[EngineKey] = set()
        self.late_reports = 0  # reports older than one already applied, not judged

    # --- feeding ------------------------------------------------------------------

    def clock(self, engine: EngineKey, metric: str) -> int:
        """Time (us) of the last report of ``metric`` applied for ``engine``; -1 if none."""
        state = self._states.get(engine)
        if state is None or metric not in state.last:
            return -1
        return state.last[metric][0]

    def update(
        self, engine: EngineKey, metric: str, times_us: Sequence[int], values: Sequence[float]
    ) -> list[dict[str, Any]]:
        """Apply ``engine``'s reports of ``metric`` (time order); return the transitions.

        A report at or before the last one applied is counted in :attr:`late_reports` and
        otherwise ignored. A resolve is due ``hold_down_s`` after the first report back
        within bounds and is published by the first report at or after that time (or by
        :meth:`review`).
        """
        rules = [r for r in self.rules if r.metric == metric]
        if not rules or not times_us:
            return []
        state = self._states.get(engine)
        if state is None:
            state = self._states[engine] = EngineState()
        self._dirty.add(engine)
        out: list[dict[str, Any]] = []
        last = state.last.get(metric)
        for t, raw in zip(times_us, values, strict=True):
            t = int(t)
            if last is not None and t <= last[0]:
                self.late_reports += 1
                continue
            value = float(raw)
            if not math.isfinite(value):
                continue
            previous, last = last, (t, value)
            for rule in rules:
                judged = _rate(previous, t, value) if rule.rate else value
                if judged is None:
                    continue
                out.extend(self._judge(engine, state, rule, t, judged))
        if last is not None:
            state.last[metric] = last
        return out

    def review(self, now_us: int) -> list[dict[str, Any]]:
        """Resolve the alerts of engines that stopped reporting: due ``hold_down_s`` after
        their metric's last report, once ``now_us`` (the newest report of any engine) is
        past that."""
        out: list[dict[str, Any]] = []
        by_name = {r.name: r for r in self.rules}
        for engine in sorted(self._states):
            state = self._states[engine]
            for key in sorted(state.alerts):
                alert = state.alerts[key]
                rule = by_name.get(str(alert.record["metric"]))
                if rule is None:
                    continue
                last = state.last.get(rule.metric)
                due = (last[0] if last is not None else alert.last_hit_ts) + self._hold_us
                if due < now_us:
                    out.append(self._resolve(state, key, due, RESOLVED_NO_REPORTS))
                    self._dirty.add(engine)
        return out

    def forget_idle(self, now_us: int, idle_us: int) -> list[EngineKey]:
        """Drop the engines with no open alert and no report in the last ``idle_us``
        before ``now_us`` (an engine gone, or a name seen once); returns them."""
        gone = [
            engine
            for engine, state in self._states.items()
            if not state.alerts
            and max((t for t, _ in state.last.values()), default=0) < now_us - idle_us
        ]
        for engine in gone:
            self.drop(engine)
        return sorted(gone)

    # --- state ------------------------------------------------------------------

    def engines(self) -> list[EngineKey]:
        return sorted(self._states)

    def dirty(self) -> set[EngineKey]:
        """Engines changed since the previous call (the call clears the set)."""
        dirty, self._dirty = self._dirty, set()
        return dirty

    def open_alerts(self) -> list[dict[str, Any]]:
        records = [dict(a.record) for s in self._states.values() for a in s.alerts.values()]
        return sorted(records, key=lambda r: str(r["dedup_key"]))

    def drop(self, engine: EngineKey) -> None:
        """Forget ``engine`` (another worker evaluates it now)."""
        self._states.pop(engine, None)
        self._dirty.discard(engine)

    def snapshot(self, engine: EngineKey) -> bytes:
        """``engine``'s state as versioned plain data (no pickle)."""
        state = self._states.get(engine, EngineState())
        doc = {
            "engine": list(engine),
            "last": {m: [t, v] for m, (t, v) in sorted(state.last.items())},
            "runs": {
                name: [run.since, run.first, run.reports]
                for name, run in sorted(state.runs.items())
                if run.since is not None
            },
            "alerts": {k: alert_state(a) for k, a in sorted(state.alerts.items())},
        }
        return SNAPSHOT_MAGIC + orjson.dumps(doc)

    def restore(self, engine: EngineKey, blob: bytes) -> None:
        """Continue ``engine`` from a :meth:`snapshot`; :class:`SnapshotError` (and nothing
        restored) when ``blob`` is not one."""
        where = f"engine snapshot of {engine[1]!r} ({engine[0]!r})"
        if not isinstance(blob, bytes | bytearray) or not blob.startswith(SNAPSHOT_MAGIC):
            raise SnapshotError(f"{where}: not an engine snapshot of this version")
        try:
            doc = orjson.loads(blob[len(SNAPSHOT_MAGIC) :])
            if doc["engine"] != list(engine):
                raise SnapshotError(f"{where}: a snapshot of engine {doc['engine']!r}")
            state = EngineState(
                last={m: (int(t), float(v)) for m, (t, v) in doc["last"].items()},
                runs={
                    name: _Run(int(since), float(first), int(reports))
                    for name, (since, first, reports) in doc["runs"].items()
                },
                alerts={
                    k: alert_from_state(v, k, engine[1], f"{where}.alerts.{k}")
                    for k, v in doc["alerts"].items()
                },
            )
        except SnapshotError:
            raise
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise SnapshotError(f"{where}: unreadable ({type(exc).__name__})") from None
        self._states[engine] = state

    # --- one report -------------------------------------------------------------

    def _judge(
        self, engine: EngineKey, state: EngineState, rule: Rule, t: int, value: float
    ) -> list[dict[str, Any]]:
        key = _dedup_key(engine, rule)
        run = state.runs.setdefault(rule.name, _Run())
        alert = state.alerts.get(key)
        if alert is not None:
            if value >= rule.open_at:
                return self._hit(engine, state, rule, t, value, run)
            if value > rule.clear_at:
                alert.clear_since = None  # above the clear bound: the incident goes on
                return []
            if alert.clear_since is None:
                alert.clear_since = t
            due = alert.clear_since + self._hold_us
            if due <= t:
                return [self._resolve(state, key, due, lifecycle.RESOLVED_RECOVERED)]
            return []
        if value < rule.open_at:
            run.since = None
            run.reports = 0
            return []
        if run.since is None:
            run.since, run.first, run.reports = t, value, 0
        run.reports += 1
        if t - run.since < self._for_us or (rule.growing and value < run.first):
            return []
        return self._hit(engine, state, rule, t, value, run)

    def _hit(
        self, engine: EngineKey, state: EngineState, rule: Rule, t: int, value: float, run: _Run
    ) -> list[dict[str, Any]]:
        model, instance = engine
        since = run.since if run.since is not None else t
        description = f"{rule.describe(value)} on {instance or 'unknown instance'}"
        if model:
            description += f" ({model})"
        hit = Hit(
            ts=t,
            workflow=instance,
            kind=KIND_ENGINE,
            metric=rule.name,
            bundle_id=model,
            severity=rule.severity,
            score=value / rule.open_at,
            threshold=rule.open_at,
            baseline=None,
            current=value,
            evidence={
                "test": "sustained",
                "engine_metric": rule.metric,
                "instance": instance,
                "model": model,
                "description": description,
                "bad_since": since,
                "reports": run.reports,
                "for_s": self._for_us / _US,
                "open_at": rule.open_at,
                "clear_at": rule.clear_at,
                "per_second": rule.rate,
            },
            condition="window",
        )
        out = lifecycle.apply_hit(state.alerts, hit, self._alerts)
        record = state.alerts[hit.key].record
        record["dashboard_url"] = sre_dashboard_url(self._alerts, since, t)
        for transition in out:
            transition["dashboard_url"] = record["dashboard_url"]
        return out

    def _resolve(self, state: EngineState, key: str, ts: int, reason: str) -> dict[str, Any]:
        metric = str(state.alerts[key].record["metric"])
        state.runs.pop(metric, None)
        return lifecycle.resolve_now(state.alerts, key, ts, reason)


def _dedup_key(engine: EngineKey, rule: Rule) -> str:
    model, instance = engine
    return dedup_key(KIND_ENGINE, instance, rule.name, model)


def _rate(previous: tuple[int, float] | None, t: int, value: float) -> float | None:
    """Per second since ``previous`` of a counter (a reset, a fall, reads as 0)."""
    if previous is None or t <= previous[0]:
        return None
    return max(value - previous[1], 0.0) * _US / (t - previous[0])


def sre_dashboard_url(settings: AlertSettings, opened_at: int, now: int) -> str:
    """The SRE dashboard (engine panels) from an hour before ``opened_at`` to after ``now``.

    >>> sre_dashboard_url(AlertSettings(), 3_600_000_000, 3_600_000_000)
    'http://localhost:3000/d/driftline-sre?from=0&to=4500000'
    """
    base = settings.dashboard_base_url.rstrip("/")
    start = opened_at // 1000 - DASHBOARD_BEFORE_MS
    end = now // 1000 + DASHBOARD_AFTER_MS
    return f"{base}/d/{SRE_DASHBOARD}?from={start}&to={end}"
