"""``driftline config check``: print the resolved configuration or name the bad field."""

from __future__ import annotations

import argparse
import json
import sys

from driftline.config import ConfigError, config_path, load_settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("check", help="validate driftline.toml + environment and print the result")


def run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    source = config_path(args.config)
    origin = source or "none, defaults"
    print(f"# configuration OK (file: {origin}; secrets come from the environment)")
    print(json.dumps(settings.model_dump(mode="json"), indent=2, sort_keys=True))
    return 0
