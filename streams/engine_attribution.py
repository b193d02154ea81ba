"""Engine state at the start of each request: an as-of join of engine metrics onto events.

Each request served by a self-hosted engine gets the KV-cache usage, the queue depth and the
preemption rate its engine reported last at or before the request started, if that report
is at most ``staleness_s`` older than the start (a scrape every 15-30 s is usual). Then the
per-workflow KV baseline measures the pressure the workflow's requests met.

Which engine served a request:

1. the request's model (answering model, else requested) and instance (``server.address``
   and ``server.port`` of the client span, kept in the event's attributes) both match an
   engine's (the model label of its metrics, and the scrape target ``host:port`` that the
   Prometheus receiver records as ``service.instance.id``);
2. else, if exactly one instance serves that model, that one (a single vLLM server behind a
   gateway whose address the client never sees);
3. else none: a model served by several instances, none of which the span names, gets no
   engine state rather than a guess.

A value the span itself carries (``driftline.kv_cache.usage``) is kept. A KV value taken
from a report is marked with the report's time (:data:`ENGINE_KV_REPORT_NS`): every call
between two scrapes shares it, and the per-workflow KV baseline counts one observation per
report, not per call (:mod:`driftline.streams.monitor.drift`). Points are kept for
``horizon_s`` behind the newest one seen (events arrive seconds after their start). At most
``max_engines`` engines are tracked: the labels come from whoever can write ``otlp_metrics``,
and points of further engines are counted (:attr:`EngineAttribution.untracked_points`), not
kept, so neither memory nor the engine alerts grow with a flood of names.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any, Final

from driftline.schemas import engine_metrics as em
from driftline.streams.engine_metrics import EngineMetricRows

# Attributes an attributed event gains (the events table has one column for KV usage; the
# queue depth and preemption rate ride in the attributes map).
ENGINE_INSTANCE: Final = "driftline.engine.instance"
ENGINE_REQUESTS_WAITING: Final = "driftline.engine.requests_waiting"
ENGINE_PREEMPTIONS_PER_S: Final = "driftline.engine.preemptions_per_s"
# Time (ns since the epoch, decimal) of the engine report a joined KV usage came from; absent
# when the span carried its own KV usage. Calls with one report time share one measurement.
ENGINE_KV_REPORT_NS: Final = "driftline.engine.kv_report_ns"

JOINED_METRICS: Final = (em.KV_CACHE_USAGE, em.REQUESTS_WAITING, em.PREEMPTIONS)
_US: Final = 1_000


@dataclass(slots=True)
class _Series:
    times_ns: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)

    def add(self, time_ns: int, value: float) -> None:
        if not self.times_ns or time_ns > self.times_ns[-1]:
            self.times_ns.append(time_ns)
            self.values.append(value)
            return
        at = bisect.bisect_left(self.times_ns, time_ns)
        if at < len(self.times_ns) and self.times_ns[at] == time_ns:
            self.values[at] = value  # the same point again (a re-delivered message)
        else:
            self.times_ns.insert(at, time_ns)
            self.values.insert(at, value)

    def as_of(self, time_ns: int, staleness_ns: int) -> int | None:
        """Index of the last point at or before ``time_ns``, if recent enough."""
        at = bisect.bisect_right(self.times_ns, time_ns) - 1
        if at < 0 or time_ns - self.times_ns[at] > staleness_ns:
            return None
        return at

    def prune(self, before_ns: int) -> None:
        cut = bisect.bisect_left(self.times_ns, before_ns)
        if cut:
            del self.times_ns[:cut]
            del self.values[:cut]


EngineKey = tuple[str, str]  # (model, instance)


class EngineAttribution:
    """Recent engine metrics by (model, instance), joined onto request events as of their start.

    >>> from driftline.streams.engine_metrics import EngineMetricRows
    >>> rows = EngineMetricRows()
    >>> rows.time_ns, rows.engine, rows.model = [10**18], ["vllm"], ["llama"]
    >>> rows.instance, rows.metric, rows.value = ["vllm-0:8000"], ["kv_cache_usage"], [0.83]
    >>> book = EngineAttribution(staleness_s=30)
    >>> book.add(rows)
    >>> event = {"start_ts": 10**15 + 5 * 10**6, "request_model": "llama", "response_model": "",
    ...          "kv_cache_usage": None, "attributes": {}}
    >>> book.attribute([event]), event["kv_cache_usage"]
    (1, 0.83)
    """

    def __init__(
        self, staleness_s: float = 60.0, horizon_s: float = 900.0, max_engines: int = 1_000
    ) -> None:
        if staleness_s <= 0 or horizon_s < staleness_s:
            raise ValueError("staleness_s must be > 0 and horizon_s >= staleness_s")
        if max_engines < 1:
            raise ValueError(f"max_engines must be >= 1, got {max_engines}")
        self.max_engines = max_engines
        self.untracked_points = 0
        self.staleness_ns = int(staleness_s * 1e9)
        self.horizon_ns = int(horizon_s * 1e9)
        self._series: dict[EngineKey, dict[str, _Series]] = {}
        self._instances_of_model: dict[str, set[str]] = {}
        self._newest_ns = 0

    @property
    def engines(self) -> int:
        return len(self._series)

    def add(self, rows: EngineMetricRows) -> None:
        for time_ns, model, instance, metric, value in zip(
            rows.time_ns, rows.model, rows.instance, rows.metric, rows.value, strict=True
        ):
            if metric not in JOINED_METRICS:
                continue
            by_metric = self._series.get((model, instance))
            if by_metric is None:
                if len(self._series) >= self.max_engines:
                    self.untracked_points += 1
                    continue
                by_metric = self._series[(model, instance)] = {}
            by_metric.setdefault(metric, _Series()).add(time_ns, value)
            self._instances_of_model.setdefault(model, set()).add(instance)
            self._newest_ns = max(self._newest_ns, time_ns)
        self._prune()

    def _prune(self) -> None:
        before = self._newest_ns - self.horizon_ns
        for key, by_metric in list(self._series.items()):
            for series in by_metric.values():
                series.prune(before)
            if not any(series.times_ns for series in by_metric.values()):
                del self._series[key]
                instances = self._instances_of_model[key[0]]
                instances.discard(key[1])
                if not instances:
                    del self._instances_of_model[key[0]]

    @property
    def newest_ns(self) -> int:
        """Time of the newest point seen, of any engine (0 before the first)."""
        return self._newest_ns

    def engine_keys(self) -> list[EngineKey]:
        return sorted(self._series)

    def points_after(
        self, key: EngineKey, metric: str, after_ns: int
    ) -> tuple[list[int], list[float]]:
        """The points of ``metric`` of engine ``key`` later than ``after_ns``, in time order."""
        series = self._series.get(key, {}).get(metric)
        if series is None:
            return [], []
        at = bisect.bisect_right(series.times_ns, after_ns)
        return series.times_ns[at:], series.values[at:]

    def engine_of(self, model: str, instance: str) -> EngineKey | None:
        """The engine that served a call (rules in the module docstring)."""
        if (model, instance) in self._series:
            return (model, instance)
        instances = self._instances_of_model.get(model, ())
        if len(instances) == 1:
            return (model, next(iter(instances)))
        return None

    def attribute(self, events: list[dict[str, Any]]) -> int:
        """Fill each event's engine state in place; returns how many events got some."""
        if not self._series:
            return 0
        attributed = 0
        for event in events:
            attributes = event.get("attributes") or {}
            model = event.get("response_model") or event.get("request_model") or ""
            address = attributes.get(em.SERVER_ADDRESS)
            instance = em.instance_of(address, attributes.get(em.SERVER_PORT)) if address else ""
            key = self.engine_of(model, instance)
            if key is None:
                continue
            reported_ns: dict[str, int] = {}
            found = self._state_at(key, int(event["start_ts"]) * _US, reported_ns)
            if not found:
                continue
            attributed += 1
            extra = {ENGINE_INSTANCE: key[1]}
            kv = found.get(em.KV_CACHE_USAGE)
            if kv is not None and event.get("kv_cache_usage") is None:
                event["kv_cache_usage"] = kv
                extra[ENGINE_KV_REPORT_NS] = str(reported_ns[em.KV_CACHE_USAGE])
            if em.REQUESTS_WAITING in found:
                extra[ENGINE_REQUESTS_WAITING] = f"{found[em.REQUESTS_WAITING]:g}"
            if em.PREEMPTIONS in found:
                extra[ENGINE_PREEMPTIONS_PER_S] = f"{found[em.PREEMPTIONS]:.6g}"
            event["attributes"] = {**attributes, **extra}
        return attributed

    def _state_at(
        self, key: EngineKey, time_ns: int, reported_ns: dict[str, int]
    ) -> dict[str, float]:
        """Each metric's state as of ``time_ns``; ``reported_ns`` gets the time of the
        report each one was read from."""
        state: dict[str, float] = {}
        for metric, series in self._series[key].items():
            at = series.as_of(time_ns, self.staleness_ns)
            if at is None:
                continue
            reported_ns[metric] = series.times_ns[at]
            if metric == em.PREEMPTIONS:
                # A counter: the rate over the interval ending at the point (resets read as 0).
                if at == 0:
                    continue
                seconds = (series.times_ns[at] - series.times_ns[at - 1]) / 1e9
                increase = series.values[at] - series.values[at - 1]
                state[metric] = max(increase, 0.0) / seconds if seconds > 0 else 0.0
            else:
                state[metric] = series.values[at]
        return state
