"""``driftline config check``: validate the configuration and the environment it needs.

Prints the resolved configuration, or names every bad field and where its value came from
(the file, an environment variable, the defaults). A secret a configured route or connection
needs but cannot read is an error here, as it is at worker start; values are never printed,
nor the path or query of a route's URL (a Slack webhook's secret is its path). Names from
the file or the environment are printed with their control characters escaped
(:mod:`~driftline.commands.terminal`): a workflow key may hold anything.
"""

from __future__ import annotations

import argparse
import json
import sys

from driftline.commands.exits import EXIT_OK, EXIT_UNUSABLE
from driftline.commands.terminal import escape_controls, print_config_error
from driftline.config import ConfigError, config_path, load_settings, printable


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("check", help="validate driftline.toml + environment and print the result")


def run(args: argparse.Namespace) -> int:
    from driftline.commands.preflight import preflight

    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print_config_error(exc)
        return EXIT_UNUSABLE
    errors, warnings = preflight(settings)
    for warning in warnings:
        print(f"warning: {escape_controls(warning)}", file=sys.stderr)
    if errors:
        print("invalid configuration:", file=sys.stderr)
        for error in errors:
            print(f"  {escape_controls(error)}", file=sys.stderr)
        return EXIT_UNUSABLE
    source = config_path(args.config)
    origin = source or "none, defaults"
    print(f"# configuration OK (file: {origin}; secrets come from the environment)")
    print(json.dumps(printable(settings), indent=2, sort_keys=True))
    return EXIT_OK
