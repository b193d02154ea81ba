"""``driftline dashboards build --out DIR``: write the Grafana dashboards as JSON files.

Grafana loads them through the file provider in ``dashboards/provisioning/dashboards/``;
monthly budgets for the burn-rate panels come from the configuration.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from driftline.commands.terminal import print_config_error
from driftline.config import ConfigError, load_settings

EXIT_OK = 0
EXIT_UNUSABLE = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    build = sub.add_parser("build", help="write one JSON file per dashboard")
    build.add_argument("--out", required=True, type=Path, metavar="DIR", help="output directory")


def run(args: argparse.Namespace) -> int:
    from driftline.dashboards.build import write_all
    from driftline.dashboards.panels import BuildContext

    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print_config_error(exc)
        return EXIT_UNUSABLE
    try:
        paths = write_all(args.out, BuildContext.from_settings(settings))
    except OSError as exc:
        print(f"driftline dashboards: cannot write to {args.out}: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    for path in paths:
        print(path)
    return EXIT_OK
