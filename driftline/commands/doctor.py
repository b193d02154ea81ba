"""``driftline doctor``: what is wrong with this deployment, on one screen.

Runs the preflight (``config check``), then connects to what the configuration names:

- Kafka: every driftline topic exists with ``kafka.partitions`` partitions, and the worker
  group's lag (records between its committed offsets and the end of each source topic);
- the store: it exists at this version's schema (opened read-only: no DDL, no TTL change);
- paging: each route's destination and whether its secret is set (never its value), and
  whether a PagerDuty routing key has the shape of one (32 letters and digits).

Nothing is sent to a pager unless asked: ``--page-test`` sends every configured route one
test event (:func:`page_test_findings`). Each line is ``ok``, ``warn`` or ``FAIL`` with what
to do.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Literal
from urllib.parse import urlsplit

from driftline.commands.exits import EXIT_FAILED, EXIT_OK, EXIT_UNUSABLE
from driftline.commands.terminal import print_config_error
from driftline.config import ConfigError, Settings, load_settings

if TYPE_CHECKING:
    from driftline.streams.notifier import Route, Router, Transport

Status = Literal["ok", "warn", "FAIL"]
DEFAULT_MAX_LAG: Final = 10_000
TIMEOUT_S: Final = 10.0
# A test event is retried on 408, 429, 5xx and no answer, after 1 s then 2 s (or Retry-After,
# up to MAX_RETRY_AFTER_S): enough to ride out a blip, short enough for a command.
PAGE_TEST_ATTEMPTS: Final = 3
MAX_RETRY_AFTER_S: Final = 5.0
PAGE_TEST_CLASS: Final = "driftline_page_test"
# An Events API v2 integration (routing) key: 32 letters and digits (lowercase in older
# accounts, uppercase in newer ones). Another shape is a paste gone wrong (a cut, a newline,
# quotes, the service URL), and PagerDuty refuses every event sent with it.
ROUTING_KEY: Final = re.compile(r"[A-Za-z0-9]{32}")
ROUTING_KEY_LENGTH: Final = 32

EXIT_CODES_HELP: Final = """exit codes:
  0  every check ok or warn (with --page-test: every route took its test event, and
     every PagerDuty test incident was resolved)
  1  a check failed: FAIL lines name what (with --page-test: a route refused or never
     answered its test event, or its secret is not set)
  2  could not run: the configuration does not load"""


@dataclass(frozen=True, slots=True)
class Finding:
    area: str
    status: Status
    detail: str

    def line(self) -> str:
        return f"{self.status:<4}  {self.area:<8}  {self.detail}"


def _records(text: str) -> int:
    """``--max-lag``: a count of records, 0 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text[:40]!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("a lag is 0 records or more")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bootstrap-servers",
        metavar="HOST:PORT[,...]",
        help="Kafka to check (default: kafka.bootstrap_servers)",
    )
    parser.add_argument("--store", metavar="URL", help="store to check (default: store.url)")
    parser.add_argument(
        "--max-lag",
        type=_records,
        default=DEFAULT_MAX_LAG,
        metavar="RECORDS",
        help=f"consumer lag above which a topic is reported (default: {DEFAULT_MAX_LAG})",
    )
    parser.add_argument(
        "--page-test",
        action="store_true",
        help="send every paging route a test event: PagerDuty a trigger labelled as a test "
        "with a dedup key of its own, then its resolve (the incident resolves itself); a "
        "Slack webhook one message; an Alertmanager webhook a firing then a resolved alert",
    )
    parser.epilog = EXIT_CODES_HELP


def run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print_config_error(exc)
        return EXIT_UNUSABLE
    findings = [
        *config_findings(settings),
        *kafka_findings(settings, args.bootstrap_servers, args.max_lag),
        *store_findings(settings, args.store),
        *paging_findings(settings),
        *(page_test_findings(settings) if args.page_test else ()),
    ]
    for finding in findings:
        print(finding.line())
    failed = sum(f.status == "FAIL" for f in findings)
    warned = sum(f.status == "warn" for f in findings)
    print(f"{failed} failed, {warned} warnings, {len(findings) - failed - warned} ok")
    return EXIT_FAILED if failed else EXIT_OK


def config_findings(settings: Settings) -> Iterator[Finding]:
    from driftline.commands.preflight import preflight

    errors, warnings = preflight(settings)
    yield from (Finding("config", "FAIL", e) for e in errors)
    yield from (Finding("config", "warn", w) for w in warnings)
    if not errors:
        yield Finding("config", "ok", "configuration and secrets present")


def kafka_findings(settings: Settings, bootstrap: str | None, max_lag: int) -> Iterator[Finding]:
    from driftline.streams.kafka import KafkaConfigError, bootstrap_of, topic_partition_counts
    from driftline.streams.topics import ALL_TOPICS

    try:
        servers = bootstrap_of(settings.kafka, bootstrap)
    except KafkaConfigError as exc:
        yield Finding("kafka", "warn", f"not checked: {exc}")
        return
    try:
        counts = topic_partition_counts(settings.kafka, servers, timeout_s=TIMEOUT_S)
    except Exception as exc:  # KafkaException, a timeout, SASL/TLS failures: all "unreachable"
        yield Finding("kafka", "FAIL", f"{servers}: no answer to a metadata request ({exc})")
        return
    wanted = settings.kafka.partitions
    bad = []
    for topic in ALL_TOPICS:
        if topic not in counts:
            bad.append(f"{topic} missing (the worker creates it at start)")
        elif counts[topic] != wanted:
            bad.append(f"{topic} has {counts[topic]} partitions, kafka.partitions = {wanted}")
    for problem in bad:
        yield Finding("kafka", "FAIL", f"{servers}: {problem}")
    if not bad:
        yield Finding("kafka", "ok", f"{servers}: {len(ALL_TOPICS)} topics, {wanted} partitions")
    yield from _lag_findings(settings, servers, counts, max_lag)


def _lag_findings(
    settings: Settings, servers: str, counts: dict[str, int], max_lag: int
) -> Iterator[Finding]:
    from confluent_kafka import Consumer, TopicPartition

    from driftline.streams.kafka import consumer_config
    from driftline.streams.topics import SOURCE_TOPICS

    group = settings.kafka.consumer_group
    partitions = [TopicPartition(t, p) for t in SOURCE_TOPICS for p in range(counts.get(t, 0))]
    if not partitions:
        return
    consumer = Consumer(consumer_config(settings.kafka, group, servers))
    try:
        lag: dict[str, int] = {}
        for tp in consumer.committed(partitions, timeout=TIMEOUT_S):
            low, high = consumer.get_watermark_offsets(tp, timeout=TIMEOUT_S)
            # Never committed: the worker starts from the earliest record (auto.offset.reset).
            start = tp.offset if tp.offset >= 0 else low
            lag[tp.topic] = lag.get(tp.topic, 0) + max(high - start, 0)
    except Exception as exc:  # KafkaException or a timeout: reported, the other checks go on
        yield Finding("lag", "warn", f"group {group}: offsets not readable ({exc})")
        return
    finally:
        consumer.close()
    behind = {t: n for t, n in lag.items() if n > max_lag}
    for topic, records in sorted(behind.items()):
        yield Finding("lag", "FAIL", f"group {group} is {records} records behind on {topic}")
    if not behind:
        total = sum(lag.values())
        yield Finding("lag", "ok", f"group {group}: {total} records behind in all")


def store_findings(settings: Settings, url: str | None) -> Iterator[Finding]:
    from driftline.store import StoreError, open_store
    from driftline.store.migrations import applied_versions

    target = url or settings.store.url
    try:
        store = open_store(target, settings.store, read_only=True)
    except StoreError as exc:
        yield Finding("store", "FAIL", str(exc))
        return
    try:
        version = max(applied_versions(store))
    finally:
        store.close()
    yield Finding("store", "ok", f"{store.url}: schema version {version} (current)")


def paging_findings(settings: Settings) -> Iterator[Finding]:
    from driftline.streams.notifier.routing import Router

    router = Router.from_settings(settings.pagerduty)
    for route in router.routes:
        url = route.url or (None if route.kind == "webhook" else router.events_url)
        # Host only: a webhook URL carries its secret in the path.
        destination = urlsplit(url).hostname if url else f"the URL in ${route.routing_key_env}"
        value = router.environ.get(route.routing_key_env, "")
        has_secret = bool(value)
        needs_secret = route.kind == "pagerduty" or route.url is None
        status: Status = "ok" if has_secret or not needs_secret else "warn"
        secret = "set" if has_secret else "NOT SET"
        if route.kind == "pagerduty" and has_secret and (problem := routing_key_problem(value)):
            # PagerDuty refuses every event with it: a warning, the key never printed
            status = "warn"
            secret = (
                f"set, but not shaped as a routing key ({ROUTING_KEY_LENGTH} letters and "
                f"digits): {problem}"
            )
        yield Finding(
            "paging",
            status,
            f"{route.name} ({route.kind}, workflow {route.workflow!r}, >= {route.min_severity})"
            f" -> {destination}; {route.routing_key_env} {secret}",
        )


def routing_key_problem(key: str) -> str | None:
    """Why ``key`` is not shaped as a PagerDuty routing key, or None; never the key itself.

    >>> routing_key_problem("0123456789abcdef0123456789abcdef") is None
    True
    >>> routing_key_problem("0123456789abcdef0123456789abcdef\\n")
    '33 characters, with a space or newline at an end'
    >>> routing_key_problem("https://events.pagerduty.com/x")
    '30 characters, not only letters and digits'
    """
    if ROUTING_KEY.fullmatch(key):
        return None
    what = [f"{len(key)} characters"]
    if key != key.strip():
        what.append("with a space or newline at an end")
    elif not (key.isascii() and key.isalnum()):
        what.append("not only letters and digits")
    return ", ".join(what)


# -- --page-test ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sent:
    """The last attempt at one test event: its status (0: no answer) and what went wrong."""

    status: int
    error: str
    attempts: int

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def text(self) -> str:
        tries = f" after {self.attempts} attempts" if self.attempts > 1 else ""
        return f"{self.status}{tries}" if self.ok else f"{self.error}{tries}"


def page_test_findings(
    settings: Settings,
    *,
    environ: Mapping[str, str] | None = None,
    transport: Transport | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> list[Finding]:
    """Send each configured paging route a test event and say, per route, what came back.

    A PagerDuty route gets a ``trigger`` whose summary says it is a test from this host,
    under a dedup key of its own (``driftline-page-test/<host>/<time>/<random>``), then its
    ``resolve``. Webhooks get one message (Slack) or a firing then a resolved alert
    (Alertmanager format). Every route is tried, whatever its workflow and severity filter.
    Errors are scrubbed of every route secret; destinations are shown by host only.
    """
    from driftline.streams.notifier import HttpxTransport, Router

    router = Router.from_settings(settings.pagerduty, environ)
    sender = transport if transport is not None else HttpxTransport(user_agent="driftline-doctor")
    host = (socket.gethostname() or "?")[:64]  # the dedup key stays far under 255 chars
    started = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")

    async def run_all() -> list[Finding]:
        try:
            return list(
                await asyncio.gather(
                    *(
                        _page_test(router, route, sender, sleep, host, started)
                        for route in router.routes
                    )
                )
            )
        finally:
            await sender.aclose()

    return asyncio.run(run_all())


async def _page_test(
    router: Router,
    route: Route,
    transport: Transport,
    sleep: Callable[[float], Awaitable[None]],
    host: str,
    started: str,
) -> Finding:
    from driftline.streams.notifier import MissingSecretError
    from driftline.streams.notifier.payload import encode_body

    try:
        destination = router.destination(route)
    except MissingSecretError as exc:
        return Finding("page", "FAIL", f"{route.name}: not sent: {exc}")
    hidden = router.known_secrets()
    where = f"{route.name} -> {urlsplit(destination.url).hostname or '?'}"
    dedup_key = f"driftline-page-test/{host}/{started}/{secrets.token_hex(4)}"
    summary = (
        f"TEST from driftline doctor --page-test on {host}: paging works; "
        "resolves itself, no action needed"
    )
    began = time.monotonic()

    async def send(doc: Mapping[str, Any], key: str | None) -> Sent:
        return await _post(transport, destination.url, encode_body(doc, key), hidden, sleep)

    if route.kind == "pagerduty":
        key = destination.routing_key.reveal() if destination.routing_key else None
        bodies = _pagerduty_test(dedup_key, summary, host, route.min_severity)
        names = ("trigger", "resolve")
        first = await send(bodies[0], key)
        second = await send(bodies[1], key) if first.ok else None
    elif route.webhook_format == "alertmanager":
        bodies = _alertmanager_test(dedup_key, summary, route.name, route.min_severity)
        names = ("firing", "resolved")
        first = await send(bodies[0], None)
        second = await send(bodies[1], None) if first.ok else None
    else:
        names = ("message", "")
        first = await send({"text": f":test_tube: *{summary}* (`{dedup_key}`)"}, None)
        second = None
    took = f"{time.monotonic() - began:.1f} s"
    if not first.ok:
        return Finding("page", "FAIL", f"{where}: {names[0]} not delivered: {first.text()}")
    if second is None:
        return Finding("page", "ok", f"{where}: {names[0]} {first.text()} in {took}")
    if not second.ok:
        return Finding(
            "page",
            "FAIL",
            f"{where}: {names[0]} {first.text()}, {names[1]} not delivered: {second.text()};"
            f" resolve {dedup_key} by hand",
        )
    return Finding(
        "page",
        "ok",
        f"{where}: {names[0]} {first.text()}, {names[1]} {second.text()} in {took}"
        f" (dedup key {dedup_key})",
    )


async def _post(
    transport: Transport,
    url: str,
    body: bytes,
    hidden: list[str],
    sleep: Callable[[float], Awaitable[None]],
) -> Sent:
    from driftline.streams.notifier import TransportError
    from driftline.streams.notifier.records import MAX_ERROR_CHARS
    from driftline.streams.notifier.routing import scrub

    sent = Sent(0, "", 0)
    for attempt in range(1, PAGE_TEST_ATTEMPTS + 1):
        retry_after = None
        try:
            response = await transport.post(url, body, TIMEOUT_S)
        except TransportError as exc:
            sent = Sent(0, scrub(f"no answer: {exc}", hidden)[:MAX_ERROR_CHARS], attempt)
        else:
            error = f"HTTP {response.status_code}: {response.text.strip()}"
            # scrubbed whole, then cut: a cut can split a secret scrub would miss
            sent = Sent(response.status_code, scrub(error, hidden)[:MAX_ERROR_CHARS], attempt)
            retry_after = response.retry_after_s
            retryable = response.status_code in (408, 429) or response.status_code >= 500
            if sent.ok or not retryable:
                return sent
        if attempt < PAGE_TEST_ATTEMPTS:
            delay = float(2 ** (attempt - 1))
            await sleep(max(delay, min(retry_after or 0.0, MAX_RETRY_AFTER_S)))
    return sent


def _pagerduty_test(
    dedup_key: str, summary: str, host: str, severity: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A trigger (at the route's lowest severity, what its real alerts carry at least) and
    its resolve, without the routing key (added when the body is encoded)."""
    trigger = {
        "event_action": "trigger",
        "dedup_key": dedup_key,
        "payload": {
            "summary": summary,
            "source": host,
            "severity": severity,
            "component": "driftline",
            "class": PAGE_TEST_CLASS,
            "custom_details": {"test": True, "sent_by": "driftline doctor --page-test"},
        },
        "client": "driftline",
    }
    return trigger, {"event_action": "resolve", "dedup_key": dedup_key}


def _alertmanager_test(
    dedup_key: str, summary: str, receiver: str, severity: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A firing alert and the same alert resolved, in the Alertmanager webhook format (v4)."""
    now = datetime.now(UTC).isoformat(timespec="milliseconds")
    labels = {"alertname": PAGE_TEST_CLASS, "severity": severity, "dedup_key": dedup_key}

    def body(status: str, ends_at: str) -> dict[str, Any]:
        alert = {
            "status": status,
            "labels": labels,
            "annotations": {"summary": summary},
            "startsAt": now,
            "endsAt": ends_at,
            "generatorURL": "",
            "fingerprint": dedup_key,
        }
        return {
            "version": "4",
            "groupKey": dedup_key,
            "truncatedAlerts": 0,
            "status": status,
            "receiver": receiver,
            "groupLabels": {"alertname": PAGE_TEST_CLASS},
            "commonLabels": labels,
            "commonAnnotations": alert["annotations"],
            "externalURL": "",
            "alerts": [alert],
        }

    return body("firing", "0001-01-01T00:00:00Z"), body("resolved", now)
