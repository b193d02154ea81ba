"""``driftline worker``: the Faust stream worker against ``kafka.bootstrap_servers``.

In production it reads the configured Kafka (SASL/TLS from the ``kafka`` section);
``driftline up`` starts it as a child pointed at the embedded broker with
``--bootstrap-servers`` and waits for ``--ready-file``. SIGTERM or Ctrl-C stops it
cleanly (offsets committed, table changelogs flushed). It does not start while a
configured route or connection lacks its secret, or ``detectors.enabled_metrics`` names an
unknown metric (exit 2, the same findings as ``driftline config check``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from driftline.commands.terminal import print_config_error
from driftline.config import ConfigError, load_settings

LOG_LEVELS = ("debug", "info", "warning", "error")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bootstrap-servers",
        metavar="HOST:PORT[,...]",
        help="Kafka to read and write (default: kafka.bootstrap_servers)",
    )
    parser.add_argument(
        "--ready-file",
        type=Path,
        metavar="FILE",
        help="write this file once the first partition assignment completed",
    )
    parser.add_argument("--loglevel", choices=LOG_LEVELS, default="info")


def run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print_config_error(exc)
        return 2
    from driftline.commands.preflight import preflight

    errors, warnings = preflight(settings)
    for warning in warnings:
        print(f"driftline worker: warning: {warning}", file=sys.stderr)
    if errors:
        for error in errors:
            print(f"driftline worker: {error}", file=sys.stderr)
        print(
            "driftline worker: not started (`driftline config check` lists the same)",
            file=sys.stderr,
        )
        return 2

    import faust  # heavy; imported only when the worker really runs

    from driftline.streams.app import create_app
    from driftline.streams.kafka import KafkaConfigError

    try:
        pipeline = create_app(
            settings, bootstrap_servers=args.bootstrap_servers, ready_file=args.ready_file
        )
    except KafkaConfigError as exc:
        print(f"driftline worker: {exc}", file=sys.stderr)
        return 2
    worker = faust.Worker(pipeline.app, loglevel=args.loglevel, quiet=True)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 0
    return 0
