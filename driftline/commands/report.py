"""``driftline report --out DIR``: the dashboards as a static HTML page with PNG charts.

For the embedded mode, where there is no Grafana: the same panel queries run against the
store for one time range (``--from``/``--to`` in ISO 8601, or ``--last 6h``; default the last
6 hours) and ``DIR/index.html`` shows the results. It only reads: the store must exist at the
newest schema and gets no DDL (no migration, no TTL change); like ``driftline sql`` it reads
through ``store.reader_url`` when that is set.
"""

from __future__ import annotations

import argparse
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from driftline.commands.exits import EXIT_FAILED, EXIT_OK, EXIT_UNUSABLE
from driftline.config import ConfigError, load_settings

EXIT_QUERY_FAILED = EXIT_FAILED
DEFAULT_LAST = "6h"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# --last reaches back at most this far (about 100 years): enough for any store's retention
# (store.ttl_days <= 3650), and far from the dates a datetime can hold.
_MAX_RANGE_S = 36_525 * 86400


def _out_dir(text: str) -> Path:
    """``--out``: a directory path; an empty one would write into the working directory."""
    if not text.strip():
        raise argparse.ArgumentTypeError("give a directory (an empty path is the current one)")
    return Path(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out",
        required=True,
        type=_out_dir,
        metavar="DIR",
        help="output directory (created if missing)",
    )
    parser.add_argument("--from", dest="start", metavar="ISO", help="range start (UTC if no zone)")
    parser.add_argument("--to", dest="end", metavar="ISO", help="range end (default: now)")
    parser.add_argument(
        "--last", metavar="DURATION", help="range ending now: 15m, 1h, 7d (at most 36525d)"
    )
    parser.add_argument(
        "--store",
        metavar="URL",
        help="store URL (default: store.reader_url when set, else store.url; must exist)",
    )
    parser.add_argument("--workflow", action="append", default=[], help="only this workflow")
    parser.add_argument("--model", action="append", default=[], help="only this model")
    parser.add_argument("--environment", action="append", default=[], help="only this environment")
    parser.add_argument(
        "--metric", help="drift dashboard metric, e.g. output_tokens (the default) or latency"
    )


def parse_duration(text: str) -> timedelta:
    """``90s``, ``15m``, ``1h``, ``7d``, ``2w``.

    >>> parse_duration("1h"), parse_duration("15m")
    (datetime.timedelta(seconds=3600), datetime.timedelta(seconds=900))
    """
    match = re.fullmatch(r"(\d+)([smhdw])", text.strip())
    if not match or int(match[1]) == 0:
        raise ValueError(f"duration {text!r}: write a positive number and a unit, e.g. 1h or 15m")
    seconds = int(match[1]) * _UNITS[match[2]]
    if seconds > _MAX_RANGE_S:
        raise ValueError(f"duration {text!r}: at most {_MAX_RANGE_S // 86400}d")
    return timedelta(seconds=seconds)


def parse_time(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def time_range_of(
    args: argparse.Namespace, now: datetime | None = None
) -> tuple[datetime, datetime]:
    if args.last and (args.start or args.end):
        raise ValueError("give --last or --from/--to, not both")
    end = parse_time(args.end) if args.end else (now or datetime.now(UTC))
    if args.start:
        return parse_time(args.start), end
    duration = parse_duration(args.last or DEFAULT_LAST)
    try:
        return end - duration, end
    except OverflowError:
        raise ValueError(f"--last {args.last or DEFAULT_LAST} reaches before year 1") from None


def run(args: argparse.Namespace) -> int:
    from driftline.commands.sql import store_target
    from driftline.dashboards.drift import METRIC_EXPRESSIONS
    from driftline.dashboards.macros import ALL, MacroError, TimeRange
    from driftline.dashboards.panels import BuildContext
    from driftline.dashboards.report import default_variables, render_report
    from driftline.store import StoreError, StoreQueryError, open_store

    try:
        settings = load_settings(args.config)
        start, end = time_range_of(args)
        time_range = TimeRange.between(start, end)
    except (ConfigError, ValueError) as exc:
        print(f"driftline report: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    if args.out.exists() and not args.out.is_dir():
        print(
            f"driftline report: --out {args.out}: exists and is not a directory",
            file=sys.stderr,
        )
        return EXIT_UNUSABLE
    if args.metric and args.metric not in METRIC_EXPRESSIONS:
        known = ", ".join(sorted(METRIC_EXPRESSIONS))
        print(f"driftline report: --metric {args.metric!r}: one of {known}", file=sys.stderr)
        return EXIT_UNUSABLE
    variables = default_variables(args.metric) if args.metric else default_variables()
    for name in ("workflow", "model", "environment"):
        chosen = getattr(args, name)
        variables[name] = chosen or [ALL]
    try:
        url, store_settings = store_target(args.store, settings.store, writing=False)
        store = open_store(url, store_settings, read_only=True)
    except StoreError as exc:
        print(f"driftline report: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    try:
        report = render_report(
            store, args.out, time_range, BuildContext.from_settings(settings), variables
        )
    except MacroError as exc:  # a chosen name no dashboard variable can carry into SQL
        print(f"driftline report: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    except StoreQueryError as exc:
        print(f"driftline report: a panel query failed: {exc}", file=sys.stderr)
        return EXIT_QUERY_FAILED
    except StoreError as exc:
        print(f"driftline report: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    except OSError as exc:  # the directory or a file in it cannot be written
        print(f"driftline report: cannot write to {args.out}: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    finally:
        store.close()
    empty = [p.title for p in report.panels if p.rows == 0]
    print(report.index)
    if empty:
        print(f"no data in the range for: {', '.join(empty)}", file=sys.stderr)
    return EXIT_OK
