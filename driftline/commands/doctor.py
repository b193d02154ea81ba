"""``driftline doctor``: what is wrong with this deployment, on one screen.

Runs the preflight (``config check``), then connects to what the configuration names:

- Kafka: every driftline topic exists with ``kafka.partitions`` partitions, and the worker
  group's lag (records between its committed offsets and the end of each source topic);
- the store: it exists at this version's schema (opened read-only: no DDL, no TTL change);
- paging: each route's destination and whether its secret is set (never its value).

Nothing is sent to a pager. Each line is ``ok``, ``warn`` or ``FAIL`` with what to do.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import urlsplit

from driftline.commands.exits import EXIT_FAILED, EXIT_OK, EXIT_UNUSABLE
from driftline.config import ConfigError, Settings, load_settings

Status = Literal["ok", "warn", "FAIL"]
DEFAULT_MAX_LAG: Final = 10_000
TIMEOUT_S: Final = 10.0


@dataclass(frozen=True, slots=True)
class Finding:
    area: str
    status: Status
    detail: str

    def line(self) -> str:
        return f"{self.status:<4}  {self.area:<8}  {self.detail}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bootstrap-servers",
        metavar="HOST:PORT[,...]",
        help="Kafka to check (default: kafka.bootstrap_servers)",
    )
    parser.add_argument("--store", metavar="URL", help="store to check (default: store.url)")
    parser.add_argument(
        "--max-lag",
        type=int,
        default=DEFAULT_MAX_LAG,
        metavar="RECORDS",
        help=f"consumer lag above which a topic is reported (default: {DEFAULT_MAX_LAG})",
    )


def run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_UNUSABLE
    findings = [
        *config_findings(settings),
        *kafka_findings(settings, args.bootstrap_servers, args.max_lag),
        *store_findings(settings, args.store),
        *paging_findings(settings),
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
        has_secret = bool(router.environ.get(route.routing_key_env))
        needs_secret = route.kind == "pagerduty" or route.url is None
        status: Status = "ok" if has_secret or not needs_secret else "warn"
        secret = "set" if has_secret else "NOT SET"
        yield Finding(
            "paging",
            status,
            f"{route.name} ({route.kind}, workflow {route.workflow!r}, >= {route.min_severity})"
            f" -> {destination}; {route.routing_key_env} {secret}",
        )
