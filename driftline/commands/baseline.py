"""``driftline baseline accept WORKFLOW``: the current behaviour becomes the reference.

For a shift that is intended (a new prompt version that answers longer on purpose): the
workflow's detectors (one metric's, one bundle's when given) re-warm from the next events,
and its open drift alerts resolve with ``evidence.resolution = "accepted"``, which the
store keeps with the alert (``llm_alerts``) and PagerDuty receives as a resolve.

The command publishes one control record onto ``llm_events``, keyed and partitioned like
the workflow's events (:mod:`driftline.streams.monitor.control`), so exactly the worker
that owns the workflow's state applies it, in order with the traffic, once.
"""

from __future__ import annotations

import argparse
import getpass
import sys
import time

from driftline.commands.terminal import print_config_error
from driftline.config import ConfigError, load_settings
from driftline.detectors import METRIC_NAMES

FLUSH_TIMEOUT_S = 30.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    accept = actions.add_parser(
        "accept",
        help="make the workflow's current behaviour its new baseline, resolving its drift alerts",
    )
    accept.add_argument("workflow", metavar="WORKFLOW")
    accept.add_argument("--metric", choices=METRIC_NAMES, help="only this metric's baseline")
    accept.add_argument("--bundle", metavar="BUNDLE_ID", help="only this bundle's baselines")
    accept.add_argument(
        "--bootstrap-servers",
        metavar="HOST:PORT",
        help="Kafka to publish to (default: kafka.bootstrap_servers)",
    )


def run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print_config_error(exc)
        return 2

    from confluent_kafka import KafkaException, Producer

    from driftline.streams import topics
    from driftline.streams.kafka import (
        KafkaConfigError,
        bootstrap_of,
        producer_config,
        topic_partition_counts,
    )
    from driftline.streams.monitor.control import (
        RECORD_TYPE_CONTROL,
        ControlError,
        accept_baseline_message,
    )
    from driftline.streams.positions import target_partition

    try:
        # Checked before Kafka is asked anything: a name no span can have is a usage error.
        value = accept_baseline_message(
            args.workflow, args.metric, args.bundle, time.time_ns() // 1000, getpass.getuser()
        )
    except ControlError as exc:
        print(f"driftline baseline accept: {exc}", file=sys.stderr)
        return 2
    try:
        servers = bootstrap_of(settings.kafka, args.bootstrap_servers)
        partitions = topic_partition_counts(settings.kafka, servers).get(topics.LLM_EVENTS)
        if not partitions:
            print(f"topic {topics.LLM_EVENTS} not found on {servers}", file=sys.stderr)
            return 1
        producer = Producer(producer_config(settings.kafka, servers))
        producer.produce(
            topics.LLM_EVENTS,
            key=args.workflow.encode(),
            value=value,
            partition=target_partition(args.workflow, partitions),
            headers=[(topics.HEADER_RECORD_TYPE, RECORD_TYPE_CONTROL)],
        )
        if producer.flush(FLUSH_TIMEOUT_S):
            print(f"not acknowledged by {servers} within {FLUSH_TIMEOUT_S:.0f}s", file=sys.stderr)
            return 1
    except (KafkaConfigError, KafkaException) as exc:
        print(f"driftline baseline accept: {exc}", file=sys.stderr)
        return 1
    scope = " ".join(
        part
        for part in (
            f"metric {args.metric}" if args.metric else "",
            f"bundle {args.bundle}" if args.bundle else "",
        )
        if part
    )
    print(
        f"baseline accept for workflow {args.workflow}{' (' + scope + ')' if scope else ''} "
        f"sent to {topics.LLM_EVENTS}; its worker applies it after the events before it"
    )
    return 0
