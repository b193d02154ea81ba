"""Scrape serving engines' Prometheus ``/metrics`` and publish them as OTLP metrics.

For the embedded stack, whose collector (rotel) cannot scrape: every
``engines.scrape_interval_s`` each URL of ``engines.scrape_targets`` is fetched, its body
parsed by prometheus-client's text parser, the metrics ``driftline.schemas.engine_metrics``
knows kept (every other series is dropped by name before it is encoded), and one
``ExportMetricsServiceRequest`` per scrape (OTLP protobuf, as the collector's Kafka exporter
writes it) published to ``otlp_metrics``, keyed by the target's ``host:port`` so one
engine's reports stay in order on one partition.

The resource is what the OTel Collector's Prometheus receiver gives a scrape:
``service.name`` = the job (``llm-engines``, as in ``collectors/otelcol.yaml``),
``service.instance.id`` = the target's ``host:port`` (the port of the scheme when the URL
has none, as Prometheus does), ``server.address`` and ``server.port``. Labels become point
attributes (``job`` and ``instance`` labels of the body are renamed ``exported_job`` and
``exported_instance``, as Prometheus does without ``honor_labels``). Gauges and untyped
series become gauges, counters cumulative monotonic sums under their exposed name (with
``_total``), histograms cumulative histograms; a ``<name>_created`` series gives the start
time. Points are dated at the scrape's start unless the body gives a timestamp. The
receiver's synthetic series (``up``, ``scrape_duration_seconds``) are not sent: the worker
reads none of them.

Each target has its own thread, so a slow one delays only itself: a scrape is given
``min(10 s, 0.8 x interval)`` in all, and a body over ``max_body_bytes`` (after
decompression) is refused. A failed scrape (refused, timed out, not 200, too large,
unparsable) is counted and logged with its URL when the target's state changes, not at
every attempt; nothing of it is published and the next scrape is tried on time.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

import httpx
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AggregationTemporality,
    Metric,
    ResourceMetrics,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from driftline.schemas import engine_metrics as em
from driftline.schemas.attributes import SERVICE_NAME

logger = logging.getLogger(__name__)

JOB_NAME: Final = "llm-engines"  # the job of collectors/otelcol.yaml's prometheus/engines
SCOPE_NAME: Final = "driftline.collectors.scrape"
SERVICE_INSTANCE_ID: Final = em.INSTANCE_RESOURCE_ATTRIBUTES[0]
MAX_TIMEOUT_S: Final = 10.0  # Prometheus' default scrape_timeout
TIMEOUT_SHARE: Final = 0.8  # of the interval, so a scrape ends before the next is due
# A vLLM server's body is about 100 kB (a hundred series, most of them histograms); several
# data-parallel engines multiply it. Far beyond that is a wrong URL or a runaway exporter.
MAX_BODY_BYTES: Final = 16 * 1024 * 1024
# The text format 0.0.4: prometheus-client's exposition answers OpenMetrics only when asked.
ACCEPT: Final = "text/plain;version=0.0.4;q=1.0,*/*;q=0.1"
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_RENAMED_LABELS: Final = {"job": "exported_job", "instance": "exported_instance"}
_CREATED: Final = "_created"
_TOTAL: Final = "_total"

# A failed scrape's kind (the counters' keys and the state a change of which is logged).
OK: Final = "ok"
FAILED_CONNECT: Final = "connect"  # refused, unreachable, name not resolved
FAILED_TIMEOUT: Final = "timeout"
FAILED_STATUS: Final = "status"  # an answer other than 200
FAILED_TOO_LARGE: Final = "too_large"
FAILED_PARSE: Final = "parse"
FAILED_HTTP: Final = "http"  # any other transport error
FAILED_PUBLISH: Final = "publish"  # the message could not be handed to the producer
FAILED_INTERNAL: Final = "internal"  # a defect of the scraper: logged with its traceback

Publish = Callable[[bytes, bytes], None]  # (key, OTLP protobuf message)


class ScrapeError(Exception):
    """One scrape failed; ``kind`` is one of the ``FAILED_*`` constants."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class Target:
    """A ``/metrics`` URL and the engine identity its points carry."""

    url: str
    address: str
    port: int

    @property
    def instance(self) -> str:
        """``host:port``, as the Prometheus receiver writes ``service.instance.id``.

        >>> target_of("http://vllm-0.internal:8000/metrics").instance
        'vllm-0.internal:8000'
        >>> target_of("https://[::1]/metrics").instance
        '[::1]:443'
        """
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"


def target_of(url: str) -> Target:
    """The target of an http(s) URL; ``ValueError`` for anything else."""
    parts = urlsplit(url)
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"{url!r} is not an http or https URL with a host")
    port = parts.port if parts.port is not None else _DEFAULT_PORTS[parts.scheme]
    return Target(url, parts.hostname, port)


@dataclass(slots=True)
class ScrapeResult:
    """What one body held: the message to publish (None when no known metric was in it)."""

    message: bytes | None
    metrics_kept: int
    metrics_dropped: int
    points: int


def scrape_message(body: str, target: Target, scrape_time_ns: int) -> ScrapeResult:
    """Parse a text-format body and encode the engine metrics it holds as OTLP protobuf.

    Raises :class:`ScrapeError` (``parse``) when the body is not the text format.
    """
    try:
        # The parser is a generator: a bad line anywhere fails the whole scrape, as in
        # Prometheus, rather than publishing the part before it.
        families = list(text_string_to_metric_families(body))
    except Exception as exc:  # the parser raises ValueError, and others on odd input
        raise ScrapeError(FAILED_PARSE, f"not the Prometheus text format: {exc}") from exc
    created = _created_times(families)
    resource_metrics = ResourceMetrics()
    resource_metrics.resource.attributes.extend(
        [
            _key_value(SERVICE_NAME, JOB_NAME),
            _key_value(SERVICE_INSTANCE_ID, target.instance),
            _key_value(em.SERVER_ADDRESS, target.address),
            _key_value(em.SERVER_PORT, str(target.port)),
        ]
    )
    scope_metrics = resource_metrics.scope_metrics.add()
    scope_metrics.scope.name = SCOPE_NAME
    kept = dropped = points = 0
    for family in families:
        name = _exposed_name(family.name, family.type, family.samples)
        if name not in em.SOURCE_METRICS:
            dropped += 1
            continue
        metric = scope_metrics.metrics.add()
        metric.name = name
        metric.description = family.documentation
        metric.unit = family.unit
        if family.type == "histogram":
            points += _histogram(metric, family.name, family.samples, created, scrape_time_ns)
        elif family.type == "counter":
            points += _counter(metric, family.samples, created, scrape_time_ns)
        elif family.type in ("gauge", "unknown", "untyped"):
            points += _gauge(metric, family.samples, scrape_time_ns)
        else:  # a summary or info under a known name: not what the schema expects
            del scope_metrics.metrics[-1]
            dropped += 1
            continue
        kept += 1
    if kept == 0:
        return ScrapeResult(None, 0, dropped, 0)
    request = ExportMetricsServiceRequest(resource_metrics=[resource_metrics])
    return ScrapeResult(request.SerializeToString(), kept, dropped, points)


def _exposed_name(family: str, kind: str, samples: Sequence[Sample]) -> str:
    # The parser strips a counter's _total from the family; the receiver keeps it.
    if kind == "counter" and samples and samples[0].name == f"{family}{_TOTAL}":
        return samples[0].name
    return family


def _created_times(families: Iterable[Any]) -> dict[tuple[str, tuple[tuple[str, str], ...]], int]:
    # The text format gives <name>_created as a family of its own; its value (seconds) is
    # the start of the counter or histogram <name> with the same labels.
    out: dict[tuple[str, tuple[tuple[str, str], ...]], int] = {}
    for family in families:
        if not family.name.endswith(_CREATED):
            continue
        base = family.name[: -len(_CREATED)]
        for sample in family.samples:
            if math.isfinite(sample.value) and sample.value > 0:
                out[(base, _label_key(sample.labels))] = int(sample.value * 1e9)
    return out


def _label_key(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


def _time_ns(sample: Sample, scrape_time_ns: int) -> int:
    # The parser turns the body's millisecond timestamp into seconds.
    if sample.timestamp is None:
        return scrape_time_ns
    return int(float(sample.timestamp) * 1e9)


def _attributes(labels: dict[str, str]) -> list[KeyValue]:
    return [_key_value(_RENAMED_LABELS.get(key, key), value) for key, value in labels.items()]


def _key_value(key: str, value: str) -> KeyValue:
    pair = KeyValue(key=key)
    pair.value.string_value = value
    return pair


def _gauge(metric: Metric, samples: Sequence[Sample], scrape_time_ns: int) -> int:
    for sample in samples:
        point = metric.gauge.data_points.add()
        point.attributes.extend(_attributes(sample.labels))
        point.time_unix_nano = _time_ns(sample, scrape_time_ns)
        point.as_double = float(sample.value)
    return len(samples)


def _counter(
    metric: Metric,
    samples: Sequence[Sample],
    created: dict[tuple[str, tuple[tuple[str, str], ...]], int],
    scrape_time_ns: int,
) -> int:
    metric.sum.is_monotonic = True
    metric.sum.aggregation_temporality = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
    base = metric.name.removesuffix(_TOTAL)
    for sample in samples:
        point = metric.sum.data_points.add()
        point.attributes.extend(_attributes(sample.labels))
        point.start_time_unix_nano = created.get((base, _label_key(sample.labels)), 0)
        point.time_unix_nano = _time_ns(sample, scrape_time_ns)
        point.as_double = float(sample.value)
    return len(samples)


@dataclass(slots=True)
class _Series:
    labels: dict[str, str]
    time_ns: int
    buckets: list[tuple[float, float]] = field(default_factory=list)  # (le, cumulative count)
    count: float = 0.0
    total: float = 0.0


def _histogram(
    metric: Metric,
    family: str,
    samples: Sequence[Sample],
    created: dict[tuple[str, tuple[tuple[str, str], ...]], int],
    scrape_time_ns: int,
) -> int:
    metric.histogram.aggregation_temporality = (
        AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
    )
    series: dict[tuple[tuple[str, str], ...], _Series] = {}
    for sample in samples:
        labels = {k: v for k, v in sample.labels.items() if k != "le"}
        one = series.setdefault(
            _label_key(labels), _Series(labels, _time_ns(sample, scrape_time_ns))
        )
        suffix = sample.name[len(family) :]
        if suffix == "_bucket" and "le" in sample.labels:
            one.buckets.append((float(sample.labels["le"]), float(sample.value)))
        elif suffix == "_count":
            one.count = float(sample.value)
        elif suffix == "_sum":
            one.total = float(sample.value)
    added = 0
    for key, one in series.items():
        counts = [_whole(cumulative) for _, cumulative in one.buckets]
        if _whole(one.count) is None or None in counts:
            # OTLP counts are unsigned integers: a NaN or negative count has no encoding (the
            # decoder would reject it as a bad value anyway).
            continue
        added += 1
        point = metric.histogram.data_points.add()
        point.attributes.extend(_attributes(one.labels))
        point.start_time_unix_nano = created.get((family, key), 0)
        point.time_unix_nano = one.time_ns
        point.count = int(one.count)
        point.sum = one.total
        # Prometheus buckets are cumulative up to each bound; OTLP's count each bucket alone,
        # the last one (+Inf) has no bound of its own.
        previous = 0.0
        for bound, cumulative in sorted(one.buckets):
            if math.isfinite(bound):
                point.explicit_bounds.append(bound)
            point.bucket_counts.append(int(max(cumulative - previous, 0.0)))
            previous = cumulative
    return added


def _whole(value: float) -> int | None:
    return int(value) if math.isfinite(value) and value >= 0 else None


def fetch(client: httpx.Client, url: str, timeout_s: float, max_body_bytes: int) -> str:
    """The body of ``url``'s answer; :class:`ScrapeError` when there is none to read.

    ``timeout_s`` bounds the whole exchange, not each read: a server that trickles a byte at
    a time is cut off too.
    """
    deadline = time.monotonic() + timeout_s
    try:
        with client.stream(
            "GET", url, headers={"Accept": ACCEPT}, timeout=httpx.Timeout(timeout_s)
        ) as response:
            if response.status_code != 200:
                raise ScrapeError(FAILED_STATUS, f"answered {response.status_code}")
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > max_body_bytes:
                raise ScrapeError(
                    FAILED_TOO_LARGE, f"body of {declared} bytes is over {max_body_bytes}"
                )
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_bytes():  # decompressed: the limit holds for gzip too
                size += len(chunk)
                if size > max_body_bytes:
                    raise ScrapeError(FAILED_TOO_LARGE, f"body over {max_body_bytes} bytes")
                if time.monotonic() > deadline:
                    raise ScrapeError(FAILED_TIMEOUT, f"body not read within {timeout_s:g} s")
                chunks.append(chunk)
            encoding = response.encoding or "utf-8"
    except httpx.TimeoutException as exc:
        raise ScrapeError(FAILED_TIMEOUT, f"no answer within {timeout_s:g} s") from exc
    except httpx.ConnectError as exc:
        raise ScrapeError(FAILED_CONNECT, f"cannot connect: {exc}") from exc
    except httpx.HTTPError as exc:
        raise ScrapeError(FAILED_HTTP, f"{type(exc).__name__}: {exc}") from exc
    try:
        return b"".join(chunks).decode(encoding)
    except (UnicodeDecodeError, LookupError) as exc:
        raise ScrapeError(FAILED_PARSE, f"body is not {encoding} text") from exc


@dataclass(slots=True)
class TargetStats:
    """Counts of one target since the scraper started."""

    scrapes: int = 0
    failures: Counter[str] = field(default_factory=Counter)  # by FAILED_* kind
    messages: int = 0  # published
    points: int = 0  # data points in them
    state: str = OK  # the last scrape's outcome
    last_error: str = ""


class EngineScraper:
    """One thread per target scraping it every ``interval_s`` and publishing each scrape."""

    def __init__(
        self,
        urls: Sequence[str],
        interval_s: float,
        publish: Publish,
        *,
        max_body_bytes: int = MAX_BODY_BYTES,
        timeout_s: float | None = None,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, not {interval_s}")
        self.targets = [target_of(url) for url in urls]
        self.interval_s = interval_s
        self.timeout_s = (
            timeout_s if timeout_s is not None else min(MAX_TIMEOUT_S, TIMEOUT_SHARE * interval_s)
        )
        self.max_body_bytes = max_body_bytes
        self.stats = {target.url: TargetStats() for target in self.targets}
        self._publish = publish
        self._clock_ns = clock_ns
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def scrape_once(self, target: Target, client: httpx.Client) -> None:
        """Fetch, parse and publish one scrape of ``target``; never raises a scrape failure."""
        started_ns = self._clock_ns()
        stats = self.stats[target.url]
        try:
            body = fetch(client, target.url, self.timeout_s, self.max_body_bytes)
            result = scrape_message(body, target, started_ns)
            if result.message is not None:
                try:
                    self._publish(target.instance.encode(), result.message)
                except Exception as exc:  # BufferError, KafkaException: the next scrape retries
                    raise ScrapeError(FAILED_PUBLISH, f"{type(exc).__name__}: {exc}") from exc
        except ScrapeError as exc:
            self._record(target, stats, exc.kind, str(exc))
            return
        with self._lock:
            if result.message is not None:
                stats.messages += 1
                stats.points += result.points
        self._record(target, stats, OK, "")

    def _record(self, target: Target, stats: TargetStats, state: str, detail: str) -> None:
        with self._lock:
            stats.scrapes += 1
            if state != OK:
                stats.failures[state] += 1
            # Compared by kind, not by message: a detail that differs only in a number (a
            # byte count, an errno) is the same failure, and must not log at every scrape.
            changed = state != stats.state
            stats.state, stats.last_error = state, detail
        if not changed:
            return
        if state == OK:
            logger.info("engine scrape of %s is back (%s)", target.url, target.instance)
        else:
            logger.warning("engine scrape of %s failed (%s): %s", target.url, state, detail)

    def start(self) -> None:
        for target in self.targets:
            thread = threading.Thread(
                target=self._run, args=(target,), name=f"scrape {target.url}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def _run(self, target: Target) -> None:
        # One client per target: its connection is kept between scrapes, and no pool is
        # shared with a target that hangs.
        # Redirects are followed, as Prometheus does.
        with httpx.Client(follow_redirects=True) as client:
            next_due = time.monotonic()
            while not self._stop.is_set():
                try:
                    self.scrape_once(target, client)
                except Exception as exc:  # a defect must not end this target's scraping
                    logger.exception("engine scrape of %s: unexpected error", target.url)
                    self._record(target, self.stats[target.url], FAILED_INTERNAL, repr(exc))
                # The next scrape is due an interval after the last was due, not after it
                # ended; a scrape that overran skips to the next slot instead of bunching up.
                next_due += self.interval_s
                now = time.monotonic()
                if next_due < now:
                    next_due += math.ceil((now - next_due) / self.interval_s) * self.interval_s
                self._stop.wait(next_due - now)

    def stop(self, timeout_s: float | None = None) -> None:
        """Stop every thread; a scrape in flight ends within its timeout."""
        self._stop.set()
        wait_s = timeout_s if timeout_s is not None else self.timeout_s + 1.0
        for thread in self._threads:
            thread.join(wait_s)

    def summary(self) -> str:
        """One line of counts over every target, for the log of ``driftline up``."""
        with self._lock:
            scrapes = sum(s.scrapes for s in self.stats.values())
            failures = sum(sum(s.failures.values()) for s in self.stats.values())
            messages = sum(s.messages for s in self.stats.values())
            points = sum(s.points for s in self.stats.values())
        return (
            f"{len(self.targets)} targets, {scrapes} scrapes, {failures} failed, "
            f"{messages} messages with {points} points published"
        )


class KafkaPublisher:
    """Hands scrape messages to a confluent-kafka producer and counts what it refused."""

    def __init__(self, producer_config: dict[str, Any], topic: str) -> None:
        from confluent_kafka import Producer

        self.topic = topic
        self.delivered = 0
        self.failed = 0
        self._producer = Producer(producer_config)
        self._lock = threading.Lock()
        self._failing = False

    def publish(self, key: bytes, value: bytes) -> None:
        self._producer.produce(self.topic, value=value, key=key, on_delivery=self._delivered)
        self._producer.poll(0)  # serve the reports of earlier messages

    def _delivered(self, error: Any, message: Any) -> None:
        with self._lock:
            failing = error is not None
            if failing:
                self.failed += 1
            else:
                self.delivered += 1
            changed, self._failing = failing != self._failing, failing
        if changed and failing:
            logger.warning("engine metrics not delivered to %s: %s", self.topic, error)
        elif changed:
            logger.info("engine metrics delivered to %s again", self.topic)

    def close(self, timeout_s: float = 5.0) -> int:
        """Flush what is queued; returns the messages still undelivered."""
        remaining: int = self._producer.flush(timeout_s)
        return remaining
