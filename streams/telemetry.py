"""The worker's own telemetry: Prometheus ``/metrics``, ``/healthz`` and ``/readyz`` on one port.

As the OpenTelemetry Collector reports its own accepted, refused and queued items, every
worker serves what it already counts (``Pipeline.counters``) and a few gauges that are cheap
to read, on ``[worker] metrics_host:metrics_port`` (docs/metrics.md has every name and unit).

Nothing here runs per message. A scrape reads the counters the agents keep anyway and the
state the worker holds (open traces, tracked workflows, the store sinks, the consumer's
offsets), on the event loop, in well under a millisecond for a worker's worth of
partitions. A failure to read a value, or to bind the port, is logged and never reaches
the pipeline: telemetry does not stop the worker.

The parts:

- the text exposition (:class:`Family`, :func:`render`), format 0.0.4;
- the names of the counters (:data:`COUNTERS`, :func:`counter_families`): one metric per
  counter, and one labelled metric where the counter's key carries a reason, kind, outcome or
  transition (``rejects.not_otlp`` -> ``driftline_spans_rejected_total{reason="not_otlp"}``;
  ``alerts.open.drift`` -> ``driftline_alert_transitions_total{transition="open",kind="drift"}``);
- the notifiers' own counts and timings by route (:func:`page_families`): deliveries, and
  histograms of the HTTP attempts and of an alert's event to its page;
- what a scrape reads from the worker (:func:`worker_families`, :func:`worker_readiness`,
  :func:`worker_health`; the ``Pipeline`` of ``streams.app`` is passed in, not imported);
- the HTTP server (:class:`TelemetryServer`), which ``streams.app._add_telemetry`` starts
  at the worker's first rebalance and stops at its shutdown;
- alerts about the worker itself and its heartbeat (:func:`self_reading`,
  :class:`SelfWatch`; the decisions are the pure :mod:`streams.selfalerts`), started and
  stopped the same way.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, get_args
from urllib.parse import urlsplit

import httpx
from aiohttp import web

from driftline import __version__
from driftline.schemas.alert import KINDS, TRANSITIONS
from driftline.streams.histogram import Histogram
from driftline.streams.monitor.engine_conditions import KIND_ENGINE
from driftline.streams.notifier.metrics import NO_ROUTE
from driftline.streams.notifier.records import FAILED_PERMANENT, GAVE_UP, UNROUTED, Outcome
from driftline.streams.notifier.routing import scrub
from driftline.streams.selfalerts import (
    CONDITIONS,
    CONSUMER_LAG,
    HeartbeatSchedule,
    Reading,
    SelfAlerts,
    held_routes,
)
from driftline.streams.topics import SOURCE_TOPICS
from driftline.streams.traces import (
    CLOSED_BY_EVICTED,
    CLOSED_BY_FLUSH,
    CLOSED_BY_ROOT_END,
    CLOSED_BY_SPAN_CAP,
    CLOSED_BY_TIMEOUT,
)

__all__ = [
    "CONTENT_TYPE",
    "COUNTERS",
    "CounterSpec",
    "Family",
    "Probe",
    "SelfWatch",
    "TelemetryServer",
    "consumer_lag",
    "counter_families",
    "page_families",
    "render",
    "self_reading",
    "worker_families",
    "worker_health",
    "worker_readiness",
]

log = logging.getLogger(__name__)

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
PATH_METRICS: Final = "/metrics"
PATH_HEALTH: Final = "/healthz"
PATH_READY: Final = "/readyz"
LOOP_PROBE_S: Final = 0.5  # how often the event loop's lateness is sampled
FALLBACK_COUNTER: Final = "driftline_worker_counter_total"
CLOSED_BY: Final = (
    CLOSED_BY_ROOT_END,
    CLOSED_BY_TIMEOUT,
    CLOSED_BY_EVICTED,
    CLOSED_BY_SPAN_CAP,
    CLOSED_BY_FLUSH,
)

Kind = Literal["counter", "gauge", "histogram"]
Labels = Mapping[str, str]
# Alert kinds the monitor and the engine conditions raise, exported at 0 before their first
# transition (a unit test reads the kinds the alert code sets and keeps this complete).
ALERT_KINDS: Final = (*KINDS, KIND_ENGINE)
# A counter key without a value for one of its spec's labels (a key counted before the label
# was added to it): still counted, under this value, so the sum over the label stays whole.
MISSING_LABEL: Final = "unknown"


# -- the text exposition ------------------------------------------------------------------


@dataclass(slots=True)
class Family:
    """One metric: its name (a counter's ends in ``_total``), type, help and samples.

    A histogram's series are :class:`Histogram` values (:meth:`add_histogram`), written as the
    ``_bucket`` (one per bound, cumulative, with ``le``), ``_sum`` and ``_count`` samples.
    """

    name: str
    kind: Kind
    help: str
    samples: list[tuple[Labels, float]] = field(default_factory=list)
    histograms: list[tuple[Labels, Histogram]] = field(default_factory=list)

    def add(self, value: float, **labels: str) -> Family:
        self.samples.append((labels, value))
        return self

    def add_histogram(self, histogram: Histogram, **labels: str) -> Family:
        self.histograms.append((labels, histogram))
        return self


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, int) or (math.isfinite(value) and value == int(value)):
        return str(int(value))
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _label_text(labels: Labels) -> str:
    return ",".join(f'{k}="{_escape_label(str(v))}"' for k, v in labels.items())


def _sample(name: str, labels: Labels, value: float) -> str:
    if not labels:
        return f"{name} {_number(value)}"
    return f"{name}{{{_label_text(labels)}}} {_number(value)}"


@functools.lru_cache(maxsize=16)
def _le_values(bounds: tuple[float, ...]) -> tuple[str, ...]:
    return (*(_number(b) for b in bounds), "+Inf")


def _histogram_lines(name: str, labels: Labels, histogram: Histogram) -> list[str]:
    # The label text and the le values are written once per series, not once per bucket: a
    # worker with a few routes has hundreds of bucket lines.
    text = _label_text(labels)
    bucket = f"{name}_bucket{{{text}," if text else f"{name}_bucket{{"
    counts = (count for _, count in histogram.cumulative())
    lines = [
        f'{bucket}le="{le}"}} {count}'
        for le, count in zip(_le_values(histogram.bounds), counts, strict=True)
    ]
    lines.append(_sample(f"{name}_sum", labels, histogram.sum))
    lines.append(
        f"{name}_count{{{text}}} {histogram.count}" if text else f"{name}_count {histogram.count}"
    )
    return lines


def render(families: Iterable[Family]) -> str:
    """Families in the Prometheus text format, version 0.0.4.

    A histogram's bounds are written as the Go client writes them (``le="0.5"``, ``le="1"``,
    ``le="+Inf"``), its buckets cumulative.

    >>> print(render([Family("x_total", "counter", 'a "b"').add(3, reason='q"\\\\')]), end="")
    # HELP x_total a "b"
    # TYPE x_total counter
    x_total{reason="q\\"\\\\"} 3
    >>> h = Histogram((0.5, 1.0))
    >>> h.observe(0.75)
    >>> print(render([Family("t_seconds", "histogram", "t").add_histogram(h, route="r")]), end="")
    # HELP t_seconds t
    # TYPE t_seconds histogram
    t_seconds_bucket{route="r",le="0.5"} 0
    t_seconds_bucket{route="r",le="1"} 1
    t_seconds_bucket{route="r",le="+Inf"} 1
    t_seconds_sum{route="r"} 0.75
    t_seconds_count{route="r"} 1
    """
    lines: list[str] = []
    for family in families:
        name = family.name
        lines.append(f"# HELP {name} {_escape_help(family.help)}")
        lines.append(f"# TYPE {name} {family.kind}")
        for labels, value in family.samples:
            lines.append(_sample(name, labels, value))
        for labels, histogram in family.histograms:
            lines += _histogram_lines(name, labels, histogram)
    return "\n".join(lines) + "\n" if lines else ""


# -- the worker's counters, named ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CounterSpec:
    """How one key of ``Pipeline.counters`` (or every key under a prefix) is exported.

    ``key`` ending in ``.`` is a prefix: the rest of the key holds the values of ``labels``,
    one after the other, separated by ``.`` (``alerts.open.drift``: transition ``open``, kind
    ``drift``; the last label takes the rest). Each value is cut at its first ``:``
    (``negative_tokens:gen_ai.usage.input_tokens`` -> ``negative_tokens``) so labels stay a
    short, bounded set of values the code names, never span content; the DLQ headers keep the
    whole reason. A key with fewer values than labels counts the missing ones as
    ``unknown``. ``known`` holds each label's values known in advance: every combination is
    exported at 0 before it first happens, so ``rate()`` sees it from the start.
    """

    key: str
    name: str
    help: str
    labels: tuple[str, ...] = ()
    known: tuple[tuple[str, ...], ...] = ()

    def __post_init__(self) -> None:
        if self.labels and not self.key.endswith("."):
            raise ValueError(f"{self.name}: a labelled counter's key must be a prefix ending in .")
        if self.known and len(self.known) != len(self.labels):
            raise ValueError(f"{self.name}: known values are given per label")

    def label_values(self, rest: str) -> tuple[str, ...]:
        """The label values in ``rest``, the key after the prefix.

        >>> CounterSpec("a.", "a_total", "", ("t", "k")).label_values("open.drift:x.y")
        ('open', 'drift')
        >>> CounterSpec("a.", "a_total", "", ("t", "k")).label_values("open")
        ('open', 'unknown')
        """
        parts = rest.split(".", len(self.labels) - 1)
        values = [part.split(":", 1)[0] or MISSING_LABEL for part in parts]
        values += [MISSING_LABEL] * (len(self.labels) - len(values))
        return tuple(values)


COUNTERS: Final[tuple[CounterSpec, ...]] = (
    # Longer prefixes first: "rejects.metrics." before "rejects.".
    CounterSpec("spans.in", "driftline_spans_received_total", "Spans read from otlp_spans."),
    CounterSpec(
        "rejects.metrics.",
        "driftline_engine_metrics_rejected_total",
        "otlp_metrics records dead-lettered to otlp_spans_dlq, by reason.",
        ("reason",),
    ),
    CounterSpec(
        "rejects.",
        "driftline_spans_rejected_total",
        "Spans (or whole messages that are not OTLP) dead-lettered to otlp_spans_dlq at "
        "decode, by reason.",
        ("reason",),
    ),
    CounterSpec(
        "events.decoded", "driftline_events_decoded_total", "LLM-call events normalized at decode."
    ),
    CounterSpec(
        "events.requests",
        "driftline_request_events_published_total",
        "Events published to llm_events at decode, before their trace closed.",
    ),
    CounterSpec(
        "events.unpriced",
        "driftline_events_unpriced_total",
        "Events whose model has no known price (cost_usd NULL).",
    ),
    CounterSpec(
        "events.engine_state",
        "driftline_events_engine_state_total",
        "Events given their serving engine's state (KV usage, queue depth) at decode.",
    ),
    CounterSpec(
        "events.out",
        "driftline_events_completed_total",
        "Completed events published to llm_events when their trace closed.",
    ),
    CounterSpec(
        "traces.out",
        "driftline_traces_published_total",
        "Trace summaries published to llm_events.",
    ),
    CounterSpec(
        "spans.redelivered_skipped",
        "driftline_spans_redelivered_skipped_total",
        "Spans read again after a restart or rebalance and skipped (applied already).",
    ),
    CounterSpec(
        "store.failures",
        "driftline_store_write_failures_total",
        "Failed writes of events, traces or alerts to the store (each is retried).",
    ),
    CounterSpec(
        "store.rollup_keys_not_rebuilt",
        "driftline_store_rollup_keys_not_rebuilt_total",
        "Per-minute rollup keys left uncorrected after a repeated insert: their workflow name"
        " was too long to list in one statement.",
    ),
    CounterSpec(
        "store.rejected.",
        "driftline_store_rejected_records_total",
        "Records the store can never take, dead-lettered, by kind.",
        ("kind",),
    ),
    CounterSpec(
        "engine_metrics.rows",
        "driftline_engine_metrics_rows_stored_total",
        "Serving-engine metric rows written to engine_metrics.",
    ),
    CounterSpec(
        "baselines.rows",
        "driftline_baseline_rows_stored_total",
        "Baseline snapshot rows written to workflow_baselines.",
    ),
    CounterSpec(
        "alerts.",
        "driftline_alert_transitions_total",
        "Alert transitions published to llm_alerts, by transition and alert kind.",
        ("transition", "kind"),
        (TRANSITIONS, ALERT_KINDS),
    ),
    CounterSpec(
        "monitor.events",
        "driftline_monitor_events_total",
        "Call events applied to the monitor's baselines and budgets.",
    ),
    CounterSpec(
        "monitor.traces",
        "driftline_monitor_traces_total",
        "Trace summaries applied to the monitor.",
    ),
    CounterSpec(
        "engines.join_waits_timed_out",
        "driftline_engine_join_waits_timed_out_total",
        "Decode batches joined to engine state while the engine metrics feed was still behind.",
    ),
    CounterSpec(
        "monitor.redelivered_skipped",
        "driftline_monitor_redelivered_messages_skipped_total",
        "llm_events messages read again and skipped by the monitor (applied already).",
    ),
    CounterSpec(
        "consumer.commits_held",
        "driftline_consumer_commits_held_total",
        "Times a partition's commit held because its committed offset was not acknowledged "
        "while later ones were (Faust would have committed past it).",
    ),
    CounterSpec(
        "consumer.offsets_skipped_by_fetch",
        "driftline_consumer_offsets_skipped_by_fetch_total",
        "Offsets of a stream topic a fetch jumped over; left unacknowledged, so the commit "
        "holds there and the partition is read again from it.",
    ),
    CounterSpec(
        "consumer.partitions_reread",
        "driftline_consumer_partitions_reread_total",
        "Partitions read again from their committed offset: held while no agent had the "
        "message there.",
    ),
    CounterSpec(
        "consumer.offsets_counted_read",
        "driftline_consumer_offsets_counted_read_total",
        "Committed offsets counted as read after reads from them never handed them to an "
        "agent (not a record: a transaction marker or compacted).",
    ),
    CounterSpec(
        "monitor.revoked_skipped",
        "driftline_monitor_revoked_messages_skipped_total",
        "llm_events messages of partitions revoked while buffered, left to their new owner.",
    ),
    CounterSpec(
        "monitor.requests_redecoded_skipped",
        "driftline_monitor_redecoded_requests_skipped_total",
        "Request events decoded again after a restart and skipped by the monitor.",
    ),
    CounterSpec(
        "monitor.snapshots_dropped",
        "driftline_monitor_snapshots_dropped_total",
        "Checkpointed monitor states that could not be restored (rebuilt from scratch).",
    ),
    CounterSpec(
        "monitor.untracked_records",
        "driftline_monitor_untracked_records_total",
        "Events and trace summaries of workflows over detectors.max_workflows, not tracked.",
    ),
    CounterSpec(
        "monitor.untracked_bundle_records",
        "driftline_monitor_untracked_bundle_records_total",
        "Events of bundles past detectors.max_bundles_per_workflow, not monitored.",
    ),
    CounterSpec(
        "monitor.alerts_over_cap",
        "driftline_monitor_alerts_over_cap_total",
        "Alerts not opened: their workflow held alerts.max_open_per_workflow_kind of their "
        "kind (listed by the budget/<workflow>/open_alerts/ warning).",
    ),
    CounterSpec(
        "monitor.evicted_workflows",
        "driftline_monitor_evicted_workflows_total",
        "Workflows without a reference or open alert dropped to make room for new ones.",
    ),
    CounterSpec(
        "engines.untracked_points",
        "driftline_engine_untracked_points_total",
        "Engine metric points of engines past engines.max_engines: not joined, not alerted on.",
    ),
    CounterSpec(
        "monitor.controls_applied",
        "driftline_monitor_controls_applied_total",
        "Operator controls (baseline accept) applied.",
    ),
    CounterSpec(
        "llm_events.bad_messages",
        "driftline_llm_events_bad_messages_total",
        "llm_events messages with records not in the layout and types decode writes, left out"
        " and dead-lettered (bad_llm_events).",
    ),
    CounterSpec(
        "decode.tokenless.",
        "driftline_tokenless_spans_total",
        "Spans that look like LLM calls but carry no token counts, by reason.",
        ("reason",),
        (("no_usage", "zero_usage", "not_a_call"),),
    ),
    CounterSpec(
        "monitor.controls_refused",
        "driftline_monitor_controls_refused_total",
        "Operator controls refused.",
    ),
    CounterSpec(
        "pipeline_alerts.",
        "driftline_pipeline_alert_transitions_total",
        "Alerts about the worker itself (pipeline/<worker>/<condition>/), by transition.",
        ("transition",),
        (("open", "resolve"),),
    ),
    CounterSpec(
        "heartbeats.sent",
        "driftline_heartbeats_sent_total",
        "Heartbeats (worker.heartbeat_url_env) answered with a 2xx.",
    ),
    CounterSpec(
        "heartbeats.failed",
        "driftline_heartbeats_failed_total",
        "Heartbeats that got no answer or a non-2xx one.",
    ),
)
# Kept in the counters for other reasons and exported otherwise: driftline_worker_ready, and
# the page outcomes (read by the pipeline alerts and logged), which the notifiers count again
# by route for driftline_page_deliveries_total (page_families).
NOT_EXPORTED: Final = frozenset({"worker.ready"})
NOT_EXPORTED_PREFIXES: Final = ("pages.",)


# Keys are a bounded set (the code's counters with bounded label values), read at every scrape.
@functools.lru_cache(maxsize=4096)
def counter_spec(key: str) -> tuple[CounterSpec, tuple[str, ...]] | None:
    """The spec exporting ``key`` and its label values; None for a key no spec names.

    >>> spec, values = counter_spec("rejects.negative_tokens:gen_ai.usage.input_tokens")
    >>> spec.name, values
    ('driftline_spans_rejected_total', ('negative_tokens',))
    >>> counter_spec("rejects.metrics.bad_value")[0].name
    'driftline_engine_metrics_rejected_total'
    >>> counter_spec("alerts.open.budget")[1]
    ('open', 'budget')
    """
    for spec in COUNTERS:
        if not spec.labels:
            if key == spec.key:
                return spec, ()
        elif key.startswith(spec.key) and len(key) > len(spec.key):
            return spec, spec.label_values(key[len(spec.key) :])
    return None


# Every combination of the known values of each labelled counter's labels, exported at 0.
_KNOWN_LABELS: Final = {
    spec.name: tuple(itertools.product(*spec.known)) if spec.known else ()
    for spec in COUNTERS
    if spec.labels
}


def counter_families(counters: Mapping[str, float]) -> list[Family]:
    """Every spec's metric from a snapshot of ``Pipeline.counters``, in :data:`COUNTERS` order.

    A metric without labels is exported at 0 before its first count; a labelled one with its
    known values at 0. A key no spec names is exported as ``driftline_worker_counter_total``
    with its key as the ``name`` label, so a counter added later is never invisible.

    >>> print(render(counter_families({"spans.in": 7, "rejects.not_otlp": 1})[:3]), end="")
    # HELP driftline_spans_received_total Spans read from otlp_spans.
    # TYPE driftline_spans_received_total counter
    driftline_spans_received_total 7
    # HELP driftline_engine_metrics_rejected_total otlp_metrics records dead-lettered to otlp_spans_dlq, by reason.
    # TYPE driftline_engine_metrics_rejected_total counter
    # HELP driftline_spans_rejected_total Spans (or whole messages that are not OTLP) dead-lettered to otlp_spans_dlq at decode, by reason.
    # TYPE driftline_spans_rejected_total counter
    driftline_spans_rejected_total{reason="not_otlp"} 1
    """  # noqa: E501
    values = {name: dict.fromkeys(known, 0.0) for name, known in _KNOWN_LABELS.items()}
    unknown = Family(
        FALLBACK_COUNTER, "counter", "Worker counters without a metric of their own, by name."
    )
    for key, value in sorted(counters.items()):
        if key in NOT_EXPORTED or key.startswith(NOT_EXPORTED_PREFIXES):
            continue
        found = counter_spec(key)
        if found is None:
            unknown.add(value, name=key)
            continue
        spec, label_values = found
        if label_values:
            by_labels = values[spec.name]
            by_labels[label_values] = by_labels.get(label_values, 0.0) + value
    out = []
    for spec in COUNTERS:
        family = Family(spec.name, "counter", spec.help)
        if spec.labels:
            family.samples.extend(
                (dict(zip(spec.labels, label_values, strict=True)), value)
                for label_values, value in sorted(values[spec.name].items())
            )
        else:
            family.add(float(counters.get(spec.key, 0)))
        out.append(family)
    if unknown.samples:
        out.append(unknown)
    return out


# -- the notifiers' deliveries, by route --------------------------------------------------

OUTCOMES: Final[tuple[str, ...]] = get_args(Outcome)


def _merged(histograms: list[Histogram]) -> Histogram:
    if len(histograms) == 1:  # the usual case: only one notifier has paged on that series
        return histograms[0]
    out = Histogram(histograms[0].bounds)
    for histogram in histograms:
        out.add(histogram)
    return out


def page_families(notifiers: Iterable[Any]) -> list[Family]:
    """Deliveries by route and outcome, and the delivery histograms, of ``notifiers``.

    The paging stage's notifier and the pipeline alerts' one page over the same configured
    routes: their counts add up per route. Every configured route's outcomes (and ``unrouted``
    under ``route="none"``) are exported at 0 before their first delivery; a histogram series
    appears with its first observation (a histogram without any is left out, as client
    libraries leave out a labelled metric they have not observed). No notifier (paging off):
    the counter has no series.
    """
    present = [n for n in notifiers if n is not None]
    deliveries: Counter[tuple[str, str]] = Counter()
    for notifier in present:
        for route in notifier.router.routes:
            for outcome in OUTCOMES:
                deliveries[route.name, outcome] += 0
        deliveries[NO_ROUTE, UNROUTED] += 0
        deliveries.update(notifier.metrics.deliveries)
    counted = Family(
        "driftline_page_deliveries_total",
        "counter",
        "Alert deliveries to paging routes (PagerDuty, webhooks), by outcome and route.",
    )
    for (route_name, outcome), n in sorted(deliveries.items()):
        counted.add(n, outcome=outcome, route=route_name)
    send: dict[tuple[str, str], list[Histogram]] = {}
    accepted: dict[str, list[Histogram]] = {}
    for notifier in present:
        for key, histogram in notifier.metrics.send_seconds.items():
            send.setdefault(key, []).append(histogram)
        for route_name, histogram in notifier.metrics.event_to_accepted_seconds.items():
            accepted.setdefault(route_name, []).append(histogram)
    delivery = Family(
        "driftline_page_delivery_seconds",
        "histogram",
        "Time of each HTTP attempt to deliver a page, by route and outcome.",
    )
    for (route_name, outcome), found in sorted(send.items()):
        delivery.add_histogram(_merged(found), route=route_name, outcome=outcome)
    event_to_page = Family(
        "driftline_event_to_page_seconds",
        "histogram",
        "From the event that raised an alert transition to its page accepted, by route.",
    )
    for route_name, found in sorted(accepted.items()):
        event_to_page.add_histogram(_merged(found), route=route_name)
    return [counted, *(f for f in (delivery, event_to_page) if f.histograms)]


# -- gauges read from the consumer --------------------------------------------------------


def consumer_lag(
    assigned: Iterable[Any],
    highwater: Callable[[Any], int | None],
    committed: Mapping[Any, int | None],
    read: Mapping[Any, int | None],
) -> list[tuple[str, int, int]]:
    """(topic, partition, records behind) of each assigned partition whose end is known.

    Behind = the partition's high watermark (the offset the next record will get) less the
    worker's committed offset (the next record it will process after a restart), or, before
    its first commit, the offset after the last record it has read. A partition whose high
    watermark is not known yet (nothing fetched from it) is left out; a negative difference
    (the embedded broker reports its watermark at the start of its last batch) is 0.

    >>> from collections import namedtuple
    >>> TP = namedtuple("TP", "topic partition")
    >>> a, b, c = TP("t", 0), TP("t", 1), TP("t", 2)
    >>> consumer_lag([a, b, c], {a: 10, b: 5}.get, {a: 4}, {b: 5})
    [('t', 0, 6), ('t', 1, 0)]
    """
    out = []
    for tp in assigned:
        try:
            end = highwater(tp)
        except Exception:  # not fetched yet, or revoked in between: no number to give
            end = None
        if end is None:
            continue
        position = committed.get(tp)
        if position is None:
            last_read = read.get(tp)
            if last_read is None:
                continue
            position = last_read + 1
        out.append((tp.topic, tp.partition, max(0, end - position)))
    return sorted(out)


class ReadDelays:
    """Per partition, how long the last record read had waited in Kafka (read time less its
    timestamp): the consumer's lag in seconds at its read position.

    A worker keeping up reads records within a second of their append; one falling behind
    reads them later and later. ``note`` runs once per message Faust hands to the streams
    (a Faust sensor calls it), so it is two float reads and one dict store.

    >>> delays = ReadDelays(clock=lambda: 110.0)
    >>> delays.note("llm_spans", 3, 100.0)
    >>> delays.note("llm_spans", 3, None)  # a record without a timestamp changes nothing
    >>> delays.seconds()
    {('llm_spans', 3): 10.0}
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._latest: dict[tuple[str, int], float] = {}

    def note(self, topic: str, partition: int, timestamp_s: float | None) -> None:
        if timestamp_s:
            self._latest[(topic, partition)] = self._clock() - timestamp_s

    def seconds(self) -> dict[tuple[str, int], float]:
        return dict(self._latest)


# -- the worker's state, read at a scrape (p: streams.app.Pipeline) ------------------------


@dataclass(frozen=True, slots=True)
class Probe:
    """An answer of ``/healthz`` or ``/readyz``: ok or not, and one short plain reason."""

    ok: bool
    reason: str


def worker_readiness(p: Any) -> Probe:
    """Ready: the partition assignment has completed, no rebalance is under way, the store
    is open and its last write succeeded (from the sinks' own state: no connection per probe),
    and the worker is not behind its lag bound.

    A worker assigned no partition (more workers than partitions) is ready: it is a standby
    member of the group, and a rebalance may give it work at any time.
    """
    if not p.counters.get("worker.ready"):
        return Probe(False, "not ready: waiting for the first partition assignment")
    if p.app.rebalancing:
        return Probe(False, "not ready: rebalancing")
    state = p.governance
    if state is not None:
        sinks = list(state.sinks.values())
        if any(sink.store is None for sink in sinks):
            return Probe(False, "not ready: store not open yet (see the log)")
        failures = max((sink.failures for sink in sinks), default=0)
        if failures:
            return Probe(False, f"not ready: store unavailable ({failures} failed writes in a row)")
    # Behind its bound (the consumer_lag alert about itself, worker.self_alert_lag_records for
    # worker.self_alert_for_s): the one lag bound, so the probe and the page agree.
    watch = getattr(p, "self_watch", None)
    if watch is not None and CONSUMER_LAG in watch.alerts.open_conditions():
        return Probe(False, "not ready: behind (the consumer_lag alert is open)")
    assigned = [tp for tp in p.app.assignor.assigned_actives() if tp.topic in SOURCE_TOPICS]
    return Probe(True, f"ready: {len(assigned)} partitions assigned")


def worker_health(p: Any) -> Probe:
    app: Any = p.app
    if app.crashed:
        return Probe(False, f"crashed: {type(app.crash_reason).__name__}")
    if app.should_stop:
        return Probe(False, "stopping")
    return Probe(True, "ok")


def worker_families(p: Any) -> list[Family]:
    """What a scrape exports: the counters by name, the notifiers' deliveries, and gauges read
    from the worker's state."""
    out = counter_families(p.counters)
    watch = getattr(p, "self_watch", None)
    paging = getattr(p.governance, "notifier", None)
    out += page_families([paging, getattr(watch, "notifier", None)])
    app: Any = p.app
    consumer: Any = app.consumer
    ready = worker_readiness(p).ok
    out.append(Family("driftline_worker_ready", "gauge", "1 while /readyz answers 200.").add(ready))
    out.append(
        Family("driftline_build_info", "gauge", "The running driftline version.").add(
            1, version=__version__
        )
    )
    out.append(
        Family(
            "driftline_worker_start_time_seconds", "gauge", "When the worker started (Unix time)."
        ).add(p.started_s)
    )
    out.append(
        Family(
            "driftline_worker_rebalances_total", "counter", "Consumer group rebalances seen."
        ).add(app.rebalancing_count)
    )
    assignment = [tp for tp in consumer.assignment() if tp.topic in SOURCE_TOPICS]
    assigned = Family(
        "driftline_kafka_assigned_partitions", "gauge", "Partitions of each source topic assigned."
    )
    per_topic = Counter(tp.topic for tp in assignment)
    for topic in SOURCE_TOPICS:
        assigned.add(per_topic[topic], topic=topic)
    out.append(assigned)
    lag = Family(
        "driftline_kafka_consumer_lag_records",
        "gauge",
        "Records in a partition after the worker's committed offset (high watermark - committed).",
    )
    # Faust keeps the committed and last read offsets on its consumer (read on this loop).
    for topic, partition, behind in consumer_lag(
        assignment, consumer.highwater, consumer._committed_offset, consumer._read_offset
    ):
        lag.add(behind, topic=topic, partition=str(partition))
    out.append(lag)
    delays = getattr(p, "read_delays", None)
    if delays is not None:
        waited = delays.seconds()
        delay = Family(
            "driftline_kafka_consumer_read_delay_seconds",
            "gauge",
            "How long the last record read from a partition had waited in Kafka.",
        )
        owned = {(tp.topic, tp.partition) for tp in assignment}
        for (topic, partition), seconds in sorted(waited.items()):
            if (topic, partition) in owned:
                delay.add(max(0.0, seconds), topic=topic, partition=str(partition))
        out.append(delay)
    assemblers = list(p.assemblers.values())
    out.append(
        Family("driftline_open_traces", "gauge", "Traces being assembled (spans held).").add(
            sum(a.open_count for a in assemblers)
        )
    )
    closed = Counter(p.closed_elsewhere)
    for assembler in assemblers:
        closed.update(assembler.closed_counts)
    closed_family = Family(
        "driftline_traces_closed_total",
        "counter",
        "Traces closed, by how: root_end, timeout, evicted (max_open_traces), flush.",
    )
    for closed_by in CLOSED_BY:
        closed_family.add(closed[closed_by], closed_by=closed_by)
    out.append(closed_family)
    open_now = set(watch.alerts.open_conditions()) if watch is not None else set()
    pipeline = Family(
        "driftline_pipeline_alert_open",
        "gauge",
        "1 while the alert about this worker's condition is open (worker.self_alerts).",
    )
    for condition in CONDITIONS:
        pipeline.add(condition in open_now, condition=condition)
    out.append(pipeline)
    state = p.governance
    if state is not None:
        out.append(
            Family(
                "driftline_workflows_tracked", "gauge", "Workflows whose monitor state is held."
            ).add(state.monitor.tracked_workflows)
        )
        sizes = getattr(state, "snapshot_bytes", {})
        out.append(
            Family(
                "driftline_monitor_state_bytes",
                "gauge",
                "Size of the monitor state held: its workflows' last checkpoints, encoded.",
            ).add(sum(sizes.get(w, 0) for w in state.monitor.workflows()) if sizes else 0)
        )
        sinks = list(state.sinks.values())
        failures = max((sink.failures for sink in sinks), default=0)
        reachable = all(sink.store is not None for sink in sinks) and not failures
        out.append(
            Family(
                "driftline_store_reachable",
                "gauge",
                "1 when the store is open and its last write succeeded.",
            ).add(reachable)
        )
        out.append(
            Family(
                "driftline_store_pending_rows",
                "gauge",
                "Rows buffered for the store (events, traces, alerts), not yet written.",
            ).add(sum(sink.pending_rows for sink in sinks))
        )
        out.append(
            Family(
                "driftline_store_consecutive_failures",
                "gauge",
                "Failed store writes in a row (0 after a success).",
            ).add(failures)
        )
        writes = Family(
            "driftline_store_write_seconds",
            "histogram",
            "Each attempt to write a sink's buffered rows to the store, by outcome.",
        )
        for outcome in ("ok", "failed"):
            timed = [s.write_seconds[outcome] for s in sinks if hasattr(s, "write_seconds")]
            if any(h.count for h in timed):
                writes.add_histogram(_merged([h for h in timed if h.count]), outcome=outcome)
        if writes.histograms:
            out.append(writes)
        successes = [s.last_success_s for s in sinks if s.last_success_s is not None]
        if successes:  # absent until the first write: no misleading 0 (1970) to alert on
            out.append(
                Family(
                    "driftline_store_last_success_timestamp_seconds",
                    "gauge",
                    "Unix time of the last store write that succeeded.",
                ).add(max(successes))
            )
    return out


# -- the HTTP server ----------------------------------------------------------------------


class TelemetryServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` over HTTP, on the running event loop.

    Parameters
    ----------
    host, port
        Where to listen; port 0 picks a free one (see :attr:`port` once started).
    collect
        The metric families at the time of a scrape.
    ready
        ``/readyz``: 200 with its reason when ok, 503 otherwise.
    healthy
        ``/healthz``: answering at all shows the event loop is serving; this adds what the
        process knows about itself (crashed, stopping). Always ok when not given.

    The server adds ``driftline_worker_event_loop_lag_seconds``: how late a 0.5 s sleep on
    the loop last woke up (a loop busy with one long step shows it here before the
    probe's timeout).
    """

    def __init__(
        self,
        host: str,
        port: int,
        collect: Callable[[], list[Family]],
        ready: Callable[[], Probe],
        healthy: Callable[[], Probe] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self._collect = collect
        self._ready = ready
        self._healthy = healthy or (lambda: Probe(True, "ok"))
        self._runner: web.AppRunner | None = None
        self._watch: asyncio.Task[None] | None = None
        self.loop_lag_s = 0.0

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> bool:
        """Listen; False (and an error logged) when the address cannot be bound."""
        app = web.Application()
        app.router.add_get(PATH_METRICS, self._metrics)
        app.router.add_get(PATH_HEALTH, self._health)
        app.router.add_get(PATH_READY, self._readiness)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            log.error(
                "worker metrics not served: cannot listen on %s:%d (%s); set worker.metrics_port "
                "to a free port, or 0 to turn them off",
                self.host,
                self.port,
                exc,
            )
            return False
        self._runner = runner
        addresses = runner.addresses
        if addresses and self.port == 0:
            self.port = int(addresses[0][1])
        self._watch = asyncio.get_running_loop().create_task(self._watch_loop())
        log.info("worker metrics at %s%s (%s, %s)", self.url, PATH_METRICS, PATH_HEALTH, PATH_READY)
        return True

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _watch_loop(self) -> None:
        while True:
            started = time.monotonic()
            await asyncio.sleep(LOOP_PROBE_S)
            self.loop_lag_s = max(0.0, time.monotonic() - started - LOOP_PROBE_S)

    def families(self) -> list[Family]:
        lag = Family(
            "driftline_worker_event_loop_lag_seconds",
            "gauge",
            f"How late the event loop last woke up from a {LOOP_PROBE_S:g} s sleep.",
        ).add(round(self.loop_lag_s, 6))
        return [*self._collect(), lag]

    async def _metrics(self, request: web.Request) -> web.Response:
        try:
            body = render(self.families())
        except Exception:
            log.exception("reading the worker's metrics failed")
            return web.Response(status=500, text="reading the metrics failed; see the log\n")
        return web.Response(body=body.encode(), headers={"Content-Type": CONTENT_TYPE})

    async def _health(self, request: web.Request) -> web.Response:
        return self._answer(self._healthy)

    async def _readiness(self, request: web.Request) -> web.Response:
        return self._answer(self._ready)

    @staticmethod
    def _answer(probe: Callable[[], Probe]) -> web.Response:
        try:
            result = probe()
        except Exception as exc:
            log.exception("a health probe failed")
            result = Probe(False, f"probe failed: {type(exc).__name__}")
        return web.Response(status=200 if result.ok else 503, text=result.reason + "\n")


# -- alerts about the worker itself, and its heartbeat ---------------------------------------


def self_reading(p: Any, now_s: float, notifiers: Iterable[Any] = ()) -> Reading:
    """What :class:`SelfAlerts` judges, read from the worker as a scrape reads it.

    Before the first partition assignment the store has not been asked to open yet (tables
    may take minutes to recover): it counts as failing only once the worker is assigned.
    """
    consumer: Any = p.app.consumer
    assignment = [tp for tp in consumer.assignment() if tp.topic in SOURCE_TOPICS]
    lag = {
        (topic, partition): behind
        for topic, partition, behind in consumer_lag(
            assignment, consumer.highwater, consumer._committed_offset, consumer._read_offset
        )
    }
    counters = p.counters
    store_open: bool | None = None
    failures = 0
    state = p.governance
    if state is not None:
        sinks = list(state.sinks.values())
        assigned = bool(counters.get("worker.ready"))
        store_open = not assigned or all(sink.store is not None for sink in sinks)
        failures = max((sink.failures for sink in sinks), default=0)
    # Everything dead-lettered: spans (each, also those sent within one too_many_rejects
    # message) and engine reports refused at decode, records the store set aside, and
    # llm_events messages not in the layout decode writes.
    dead_letters = sum(
        int(v)
        for k, v in counters.items()
        if k.startswith(("rejects.", "store.rejected.")) or k == "llm_events.bad_messages"
    )
    failed = int(counters.get(f"pages.{FAILED_PERMANENT}", 0) + counters.get(f"pages.{GAVE_UP}", 0))
    main_notifier = state.notifier if state is not None else None
    return Reading(
        at_s=now_s,
        lag_records=lag,
        store_open=store_open,
        store_failures=failures,
        dead_letters=dead_letters,
        deliveries_failed=failed,
        routes_held=held_routes([main_notifier, *notifiers]),
    )


HEARTBEAT_TIMEOUT_S: Final = 10.0
HTTP_LOGGERS: Final = ("httpx", "httpcore")  # they log request URLs at INFO


class _HideUrl(logging.Filter):
    """Masks a secret URL (its path, query and their longer pieces) in the HTTP client's log."""

    def __init__(self, url: str) -> None:
        super().__init__()
        parts = urlsplit(url)
        pieces = [*parts.path.split("/"), *parts.query.replace("=", "&").split("&")]
        found = [url, *(p for p in (parts.path, parts.query) if len(p) > 1)]
        found += [p for p in pieces if len(p) >= 8]
        self.secrets = sorted(set(found), key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = scrub(message, self.secrets)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        return True


class SelfWatch:
    """Evaluates :class:`SelfAlerts` every ``check_s`` and pings the heartbeat, on the loop.

    Pipeline alerts go straight from here to the paging routes through a notifier of their
    own (``notifier``: same routes, no Kafka; delivery state in memory), so they leave even
    when Kafka is what broke. Nothing here runs per message.

    Parameters
    ----------
    read
        The current :class:`Reading` at a Unix time.
    healthy
        Whether the worker is ready and alive (``/readyz`` and ``/healthz``).
    heartbeat_url
        The dead man's switch (a secret: only its host is ever logged); None: no heartbeat.
    """

    def __init__(
        self,
        alerts: SelfAlerts,
        read: Callable[[float], Reading],
        healthy: Callable[[], bool],
        counters: Any,
        *,
        check_s: float,
        evaluate: bool = True,
        notifier: Any | None = None,
        heartbeat_url: str | None = None,
        heartbeat_s: float = 60.0,
        heartbeat_method: str = "GET",
        state_file: Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.alerts = alerts
        self._read = read
        self._healthy = healthy
        self.counters = counters
        self.check_s = check_s
        self.evaluate = evaluate
        self.notifier = notifier
        self.heartbeat_url = heartbeat_url
        self.heartbeat_method = heartbeat_method
        self.schedule = HeartbeatSchedule(heartbeat_s)
        self.state_file = state_file
        self.clock = clock
        self._outbox: asyncio.Queue[list[dict[str, Any]]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._client: httpx.AsyncClient | None = None
        self._hide: _HideUrl | None = None
        if heartbeat_url:
            self._hide = _HideUrl(heartbeat_url)
            for name in HTTP_LOGGERS:
                logging.getLogger(name).addFilter(self._hide)

    @property
    def heartbeat_target(self) -> str:
        return urlsplit(self.heartbeat_url or "").hostname or "?"

    def healthy(self) -> bool:
        """Ready, alive, and no alert about itself open: what the heartbeat vouches for."""
        return self._healthy() and not self.alerts.open_conditions()

    async def check(self) -> list[dict[str, Any]]:
        """Read, decide, and queue the transitions for delivery; returns them."""
        if not self.evaluate:
            return []
        transitions = self.alerts.step(self._read(self.clock()))
        for transition in transitions:
            self.counters[f"pipeline_alerts.{transition['transition']}"] += 1
            description = transition["evidence"].get("description", "")
            if transition["transition"] == "open":
                log.error("pipeline alert %s opened: %s", transition["dedup_key"], description)
            else:
                log.warning("pipeline alert %s resolved: %s", transition["dedup_key"], description)
        if transitions:
            self._save_open()
        if transitions and self.notifier is not None:
            self._outbox.put_nowait(transitions)
        if self.notifier is not None:
            self._count(self.notifier.take_late_records())
        return transitions

    async def beat(self) -> bool:
        """Ping the heartbeat if due and healthy; True when a ping was answered with a 2xx."""
        if self.heartbeat_url is None:
            return False
        now = self.clock()
        if not self.schedule.due(now, self.healthy()):
            return False
        if self._client is None:
            self._client = httpx.AsyncClient(
                headers={"User-Agent": "driftline-heartbeat"}, follow_redirects=True
            )
        try:
            response = await self._client.request(
                self.heartbeat_method, self.heartbeat_url, timeout=HEARTBEAT_TIMEOUT_S
            )
            status = response.status_code
            problem = "" if 200 <= status < 300 else f"HTTP {status}"
        except httpx.HTTPError as exc:  # the URL is a secret: never its text, only its host
            problem = type(exc).__name__
        if problem:
            self.counters["heartbeats.failed"] += 1
            log.warning("heartbeat to %s failed (%s)", self.heartbeat_target, problem)
            return False
        self.counters["heartbeats.sent"] += 1
        self.schedule.sent(now)
        return True

    def _count(self, records: Iterable[dict[str, Any]]) -> None:
        for record in records:
            self.counters[f"pages.{record['outcome']}"] += 1

    async def _deliver_loop(self) -> None:
        assert self.notifier is not None
        while True:
            transitions = await self._outbox.get()
            try:
                self._count(await self.notifier.deliver(transitions))
            except Exception:  # never the end of the loop: the next alert must still go out
                log.exception("delivering pipeline alerts failed")

    async def _check_loop(self) -> None:
        while True:
            await asyncio.sleep(self.check_s)
            try:
                await self.check()
            except Exception:
                log.exception("evaluating the pipeline alerts failed")

    async def _beat_loop(self) -> None:
        while True:
            try:
                await self.beat()
            except Exception:
                log.exception("heartbeat failed")
            await asyncio.sleep(min(self.check_s, self.schedule.interval_s))

    def resume(self) -> list[str]:
        """Reopen the alerts the last run left open (``state_file``); their names."""
        if self.state_file is None or not self.state_file.exists():
            return []
        try:
            saved = json.loads(self.state_file.read_text())
            resumed = self.alerts.restore_open(saved.get("open", {}))
        except (OSError, ValueError, AttributeError) as exc:
            log.warning("pipeline alerts of the last run not read (%s)", exc)
            return []
        if resumed:
            log.warning("pipeline alerts open before the restart: %s", ", ".join(resumed))
        return resumed

    def _save_open(self) -> None:
        if self.state_file is None:
            return
        try:
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            partial = self.state_file.with_suffix(".tmp")
            partial.write_text(json.dumps({"open": self.alerts.export_open()}))
            partial.replace(self.state_file)
        except OSError as exc:  # the alerts still go out; only a restart would forget them
            log.warning("pipeline alerts not saved to %s (%s)", self.state_file, exc)

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.evaluate:
            self.resume()
        if self.evaluate:
            self._tasks.append(loop.create_task(self._check_loop()))
        if self.notifier is not None:
            self._tasks.append(loop.create_task(self._deliver_loop()))
        if self.heartbeat_url is not None:
            self._tasks.append(loop.create_task(self._beat_loop()))
            log.info(
                "heartbeat to %s every %g s while ready",
                self.heartbeat_target,
                self.schedule.interval_s,
            )

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self.notifier is not None:
            await self.notifier.aclose()
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if self._hide is not None:
            for name in HTTP_LOGGERS:
                logging.getLogger(name).removeFilter(self._hide)
