"""``driftline status``: one screen on running workers, read from their /metrics and /readyz.

For each worker (``--worker URL``, repeatable; default the configured
``worker.metrics_host:metrics_port``): ready or not and why, partitions assigned, consumer
lag per topic, spans and events per second (two scrapes ``--interval`` seconds apart; totals
since the worker started with ``--once``), rejects and dead letters, the store, pages, and
the alerts about the worker itself that are open. Read-only: two GETs per worker.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlsplit

import httpx

from driftline.commands.exits import EXIT_FAILED, EXIT_OK, EXIT_UNUSABLE
from driftline.commands.terminal import escape_controls

DEFAULT_INTERVAL_S: Final = 5.0
MAX_INTERVAL_S: Final = 3600.0  # rates over longer than an hour say little about now
TIMEOUT_S: Final = 5.0
SOURCE_TOPICS: Final = ("otlp_spans", "llm_spans", "llm_events", "llm_alerts")

Labels = tuple[tuple[str, str], ...]
Samples = dict[str, dict[Labels, float]]

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def _unescaped(raw: str) -> str:
    return raw.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")


def parse_metrics(text: str) -> Samples:
    """Samples of a Prometheus text exposition, by name then labels (comments skipped).

    >>> parse_metrics('# TYPE a gauge\\na{t="x"} 2\\nb 1.5\\n')
    {'a': {(('t', 'x'),): 2.0}, 'b': {(): 1.5}}
    """
    out: Samples = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if not match or line.startswith("#"):
            continue
        name, labels_text, value = match.groups()
        labels = tuple(
            # Unescaped, then control characters escaped again: a label value comes from
            # the network and is printed; a newline in it would forge a line of the screen.
            (key, escape_controls(_unescaped(raw)))
            for key, raw in _LABEL.findall(labels_text or "")
        )
        try:
            out.setdefault(name, {})[labels] = float(value)
        except ValueError:
            continue
    return out


@dataclass(slots=True)
class Scrape:
    """One reading of a worker: its metrics and its /readyz answer, or why there is none."""

    url: str
    at_s: float
    samples: Samples = field(default_factory=dict)
    ready: bool = False
    ready_text: str = ""
    error: str = ""

    def total(self, name: str, **match: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``match``."""
        return sum(
            value
            for labels, value in self.samples.get(name, {}).items()
            if all((k, v) in labels for k, v in match.items())
        )

    def by_label(self, name: str, label: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for labels, value in self.samples.get(name, {}).items():
            key = dict(labels).get(label, "")
            out[key] = out.get(key, 0.0) + value
        return out


def scrape(client: httpx.Client, url: str) -> Scrape:
    result = Scrape(url, time.time())
    try:
        metrics = client.get(f"{url}/metrics")
        if metrics.status_code != 200:
            result.error = f"/metrics answered HTTP {metrics.status_code}"
            return result
        result.samples = parse_metrics(metrics.text)
        ready = client.get(f"{url}/readyz")
        result.ready = ready.status_code == 200
        result.ready_text = escape_controls(ready.text.strip()) or f"HTTP {ready.status_code}"
    except httpx.HTTPError as exc:
        result.error = f"no answer ({type(exc).__name__}: {exc})"
    return result


def _n(value: float) -> str:
    if not math.isfinite(value):  # a gauge may be NaN; nothing here is, unless a peer lies
        return str(value)
    return f"{value:,.0f}" if value == int(value) else f"{value:,.1f}"


def _rate(value: float) -> str:
    return f"{value:,.0f}/s" if value >= 10 else f"{value:.2g}/s"


def _uptime(seconds: float) -> str:
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min"
    if minutes < 48 * 60:
        return f"{minutes // 60} h {minutes % 60} min"
    return f"{minutes // 1440} d {minutes % 1440 // 60} h"


def _per_topic(values: Mapping[str, float], unit: str = "") -> str:
    text = ", ".join(f"{topic} {_n(values.get(topic, 0.0))}" for topic in SOURCE_TOPICS)
    return text + (f" {unit}" if unit else "")


# Every write to otlp_spans_dlq, and the label that says why.
DEAD_LETTER_METRICS: Final = {
    "driftline_spans_rejected_total": "reason",
    "driftline_engine_metrics_rejected_total": "reason",
    "driftline_store_rejected_records_total": "kind",
}
# Dead-letter writes counted without a label, and the reason their records carry.
UNLABELED_DEAD_LETTERS: Final = {"driftline_llm_events_bad_messages_total": "bad_llm_events"}


def describe(last: Scrape, first: Scrape | None) -> tuple[list[str], bool]:
    """The lines of one worker, and whether it is failing (not ready, unreachable, or an
    alert about itself open). ``first``: an earlier scrape to take rates from, or None."""
    shown = shown_url(last.url)
    if last.error:
        error = last.error.replace(last.url, shown)
        return [f"worker {shown}", f"  FAIL          {error}"], True
    version = next(
        (dict(k).get("version", "?") for k in last.samples.get("driftline_build_info", {})), "?"
    )
    started = last.total("driftline_worker_start_time_seconds")
    head = f"worker {shown} (driftline {version}"
    head += f", up {_uptime(max(0.0, last.at_s - started))})" if started else ")"
    lines = [head]
    ready = "yes" if last.ready else "NO"
    lines.append(f"  ready         {ready}: {last.ready_text}")
    lines.append(
        "  partitions    "
        + _per_topic(last.by_label("driftline_kafka_assigned_partitions", "topic"))
    )
    lag = last.by_label("driftline_kafka_consumer_lag_records", "topic")
    lines.append("  consumer lag  " + _per_topic(lag, "records behind"))

    dead = {name: last.by_label(name, label) for name, label in DEAD_LETTER_METRICS.items()}
    dead |= {name: {why: last.total(name)} for name, why in UNLABELED_DEAD_LETTERS.items()}
    dead_total = sum(sum(v.values()) for v in dead.values())
    reasons: dict[str, float] = {}
    for values in dead.values():
        for reason, seen in values.items():
            if seen:
                reasons[reason] = reasons.get(reason, 0.0) + seen
    reason_text = ", ".join(f"{r} {_n(c)}" for r, c in sorted(reasons.items(), key=lambda i: -i[1]))

    def count(name: str, **match: str) -> float:
        return last.total(name, **match)

    if first is not None and not first.error and last.at_s > first.at_s:
        span = last.at_s - first.at_s

        def rate(name: str) -> str:
            return _rate(max(0.0, last.total(name) - first.total(name)) / span)

        first_dead = sum(
            first.total(name) for name in [*DEAD_LETTER_METRICS, *UNLABELED_DEAD_LETTERS]
        )
        lines.append(
            f"  spans         {rate('driftline_spans_received_total')} received, "
            f"{rate('driftline_spans_rejected_total')} rejected; events "
            f"{rate('driftline_events_decoded_total')} decoded, "
            f"{rate('driftline_events_completed_total')} completed (over {span:.0f} s)"
        )
        dead_rate = _rate(max(0.0, dead_total - first_dead) / span)
        lines.append(
            f"  dead letters  {dead_rate} ({_n(dead_total)} since start"
            + (f": {reason_text})" if reason_text else ")")
        )
    else:
        lines.append(
            f"  spans         {_n(count('driftline_spans_received_total'))} received, "
            f"{_n(count('driftline_spans_rejected_total'))} rejected; events "
            f"{_n(count('driftline_events_decoded_total'))} decoded, "
            f"{_n(count('driftline_events_completed_total'))} completed (since start)"
        )
        lines.append(
            f"  dead letters  {_n(dead_total)} since start"
            + (f" ({reason_text})" if reason_text else "")
        )
    if "driftline_store_reachable" in last.samples:
        reachable = count("driftline_store_reachable") == 1
        lines.append(
            f"  store         {'reachable' if reachable else 'FAILING'}; "
            f"{_n(count('driftline_store_pending_rows'))} rows pending; "
            f"{_n(count('driftline_store_consecutive_failures'))} failed writes in a row "
            f"({_n(count('driftline_store_write_failures_total'))} since start)"
        )
    else:
        lines.append("  store         none (worker without store stages)")
    lines.append(
        f"  traces        {_n(count('driftline_open_traces'))} open; workflows tracked "
        f"{_n(count('driftline_workflows_tracked'))}"
    )
    pages = last.by_label("driftline_page_deliveries_total", "outcome")
    failed_pages = pages.get("failed_permanent", 0.0) + pages.get("gave_up", 0.0)
    alerts = last.by_label("driftline_alert_transitions_total", "transition")
    lines.append(
        f"  pages         {_n(pages.get('delivered', 0.0))} delivered, {_n(failed_pages)} "
        f"failed, {_n(pages.get('retrying', 0.0))} retries; alerts "
        f"{_n(alerts.get('open', 0.0))} opened, {_n(alerts.get('resolve', 0.0))} resolved"
    )
    open_now = sorted(
        c for c, v in last.by_label("driftline_pipeline_alert_open", "condition").items() if v
    )
    lines.append("  self-alerts   " + (f"OPEN: {', '.join(open_now)}" if open_now else "none open"))
    sent = count("driftline_heartbeats_sent_total")
    missed = count("driftline_heartbeats_failed_total")
    if sent or missed:
        lines.append(f"  heartbeat     {_n(sent)} sent, {_n(missed)} failed")
    return lines, not last.ready or bool(open_now)


def normalize_url(text: str) -> str:
    """``host:port``, ``http://host:port`` or its ``/metrics`` URL, as a base URL.

    >>> normalize_url("10.0.0.5:9464"), normalize_url("http://w:9464/metrics")
    ('http://10.0.0.5:9464', 'http://w:9464')
    """
    url = text.strip().rstrip("/")
    if "://" not in url:
        url = f"http://{url}"
    url = url.removesuffix("/metrics").removesuffix("/readyz")
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 - raises on a port out of range or not a number
    except ValueError:
        parts = parts._replace(scheme="")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        shown = shown_url(url)  # with its scheme: "user:pw@host" alone parses as a scheme
        raise ValueError(f"--worker {shown!r}: give http://HOST:PORT (the worker's metrics port)")
    return url


def shown_url(url: str) -> str:
    """``url`` as printed: without a user and password (a worker behind basic auth).

    >>> shown_url("http://ops:s3cret@w:9464"), shown_url("http://w:9464")
    ('http://w:9464', 'http://w:9464')
    """
    parts = urlsplit(url)
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--worker",
        action="append",
        metavar="URL",
        help="a worker's metrics address, http://HOST:PORT; repeat for several "
        "(default: worker.metrics_host:metrics_port)",
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=DEFAULT_INTERVAL_S,
        metavar="SECONDS",
        help=f"time between the two scrapes rates are taken from (default: {DEFAULT_INTERVAL_S:g})",
    )
    parser.add_argument(
        "--once", action="store_true", help="one scrape: totals since start instead of rates"
    )
    parser.epilog = EXIT_CODES


EXIT_CODES: Final = """exit codes:
  0  every worker answered, is ready, and has no alert about itself open
  1  a worker is not ready, does not answer, or has an alert about itself open
  2  could not run: bad arguments or configuration"""


def default_urls(config: str | None) -> list[str]:
    from driftline.config import load_settings
    from driftline.stack import worker_metrics_url

    settings = load_settings(config)
    url = worker_metrics_url(settings)
    if url is None:
        raise ValueError("worker.metrics_port is 0 (the worker serves no metrics): give --worker")
    return [url]


def run(args: argparse.Namespace) -> int:
    from driftline.config import ConfigError

    try:
        urls = [normalize_url(u) for u in args.worker] if args.worker else default_urls(args.config)
        if not args.once and not 0 < args.interval <= MAX_INTERVAL_S:
            raise ValueError(f"--interval must be a number of seconds in (0, {MAX_INTERVAL_S:g}]")
    except (ValueError, ConfigError) as exc:
        print(f"driftline status: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    lines, failing = status(urls, None if args.once else args.interval)
    print("\n".join(lines))
    return EXIT_FAILED if failing else EXIT_OK


def status(urls: Sequence[str], interval_s: float | None) -> tuple[list[str], bool]:
    """The screen for ``urls`` and whether any worker is failing."""
    with httpx.Client(timeout=TIMEOUT_S, headers={"User-Agent": "driftline-status"}) as client:
        first = [scrape(client, url) for url in urls] if interval_s else [None] * len(urls)
        if interval_s:
            time.sleep(interval_s)
        last = [scrape(client, url) for url in urls]
    lines: list[str] = []
    failing = 0
    for before, after in zip(first, last, strict=True):
        worker_lines, bad = describe(after, before)
        lines.extend(worker_lines)
        failing += bad
    total = len(urls)
    noun = "worker" if total == 1 else "workers"
    lines.append(
        f"{total} {noun}: " + (f"{failing} failing or not ready" if failing else "all ready")
    )
    return lines, bool(failing)
