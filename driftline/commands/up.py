"""``driftline up``: start the embedded stack (broker, collector, worker) and keep it running.

Prints the OTLP endpoints to send spans to. With ``engines.scrape_targets`` set it also
scrapes those engines' ``/metrics`` (collectors/scrape.py). Ctrl-C or SIGTERM stops every
part; a part that dies on its own stops the rest and exits non-zero. A scrape target that
fails is logged and retried, and never stops the stack.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from driftline.commands.terminal import print_config_error
from driftline.config import ConfigError, config_path, load_settings

POLL_S = 0.5


class _Stop(Exception):
    """SIGTERM arrived: leave the run loop so the stack stops cleanly."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-worker",
        action="store_true",
        help="start only the broker and the collector (run `driftline worker` yourself)",
    )


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop(signal.Signals(signum).name)


def _show_scrape_log() -> None:
    # The engine scraper runs in this process: its target state changes (a target failing,
    # coming back) go to the terminal with the stack's own lines, not to a worker's log.
    scrape_log = logging.getLogger("driftline.collectors.scrape")
    if not scrape_log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s scraper    %(message)s"))
        scrape_log.addHandler(handler)
        scrape_log.setLevel(logging.INFO)
        scrape_log.propagate = False


def run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print_config_error(exc)
        return 2

    from driftline.collectors.process import PortInUseError, ProcessStartError
    from driftline.stack import EmbeddedStack
    from driftline.streams.kafka import KafkaConfigError

    _show_scrape_log()
    source = config_path(args.config)
    stack = EmbeddedStack(
        settings,
        config_file=Path(source).resolve() if source is not None else None,
        with_worker=not args.no_worker,
        echo=lambda line: print(line, flush=True),
    )
    signal.signal(signal.SIGTERM, _raise_stop)
    try:
        endpoints = stack.start()
        print(
            f"driftline is up in {stack.times.total_s:.1f}s; send OTLP traces to:\n"
            f"{endpoints.describe()}\n"
            f"logs in {stack.data_dir}; Ctrl-C to stop",
            flush=True,
        )
        while True:
            time.sleep(POLL_S)
            stack.check_alive()
    except (KeyboardInterrupt, _Stop):
        print("stopping...", flush=True)
        return 0
    except (PortInUseError, KafkaConfigError) as exc:
        print(f"driftline up: {exc}", file=sys.stderr)
        return 2
    except ProcessStartError as exc:
        print(f"driftline up: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut teardown
        stack.stop()
        print("stopped", flush=True)
