"""``driftline demo``: the embedded stack, simulated traffic with scripted incidents, live view.

Runs in a fresh data directory (``var/demo`` unless ``--data-dir``; wiped at start) with a
configuration of its own written there. Pages go to a local stand-in for the PagerDuty
Events API unless ``PAGERDUTY_ROUTING_KEY`` is set. At the end it prints the cost
attribution and the alerts from SQL and writes the dashboards JSON and a static report.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_UNUSABLE = 2
EXIT_INTERRUPTED = 130


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--duration",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="seconds of traffic; the incident timeline scales with it (default 120)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path("var/demo"),
        metavar="DIR",
        help="working directory, wiped at start (default var/demo)",
    )
    parser.add_argument("--seed", type=int, default=7, help="same seed, same traffic (default 7)")
    parser.add_argument(
        "--plain", action="store_true", help="line updates instead of a redrawn screen"
    )


def run(args: argparse.Namespace) -> int:
    from driftline.demo.run import DemoError, DemoOptions, run_demo

    if args.duration < 20:
        print("driftline demo: --duration must be at least 20 seconds", file=sys.stderr)
        return EXIT_UNUSABLE
    if args.config:
        print(
            "driftline demo: uses a configuration of its own (written to --data-dir); "
            "--config is ignored",
            file=sys.stderr,
        )
    options = DemoOptions(
        data_dir=args.data_dir,
        duration_s=args.duration,
        seed=args.seed,
        tty=False if args.plain else None,
    )
    try:
        outcome = run_demo(options, sys.stdout)
    except DemoError as exc:
        print(f"driftline demo: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    if outcome.interrupted:
        return EXIT_INTERRUPTED
    return outcome.exit_code
