"""The ``driftline`` command line: one front door, one module per command.

Each command lives in ``driftline/commands/<name>.py`` with two functions,
``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported only
when their command runs, so ``driftline config check`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import select
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from driftline import __version__
from driftline.commands.exits import EXIT_CODES_HELP

# command name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": (
        "driftline.commands.demo",
        "embedded stack + simulated traffic with incidents, live view",
    ),
    "up": ("driftline.commands.up", "start the embedded stack (broker, collector, worker)"),
    "worker": ("driftline.commands.worker", "run the stream worker against the configured Kafka"),
    "simulate": ("driftline.commands.simulate", "send realistic GenAI traffic through OTLP"),
    "normalize": (
        "driftline.commands.normalize",
        "decode an OTLP file and print normalized events",
    ),
    "replay": ("driftline.commands.replay", "run the detectors offline over normalized events"),
    "baseline": (
        "driftline.commands.baseline",
        "accept a workflow's current behaviour as its baseline (resolves its drift alerts)",
    ),
    "load": ("driftline.commands.load", "load normalized events (NDJSON) into the store"),
    "sql": ("driftline.commands.sql", "run analyst SQL against the store"),
    "dashboards": ("driftline.commands.dashboards", "build Grafana dashboards as JSON"),
    "report": ("driftline.commands.report", "render a static HTML report from the store"),
    "config": ("driftline.commands.config", "check and print the resolved configuration"),
    "doctor": (
        "driftline.commands.doctor",
        "check Kafka topics and lag, the store's schema and paging routes, on one screen",
    ),
    "status": (
        "driftline.commands.status",
        "running workers on one screen: ready, lag, rates, store, alerts about themselves",
    ),
}


def _available() -> dict[str, tuple[str, str]]:
    found = {}
    for name, (module, help_text) in COMMANDS.items():
        if importlib.util.find_spec(module) is not None:
            found[name] = (module, help_text)
    return found


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, object]]:
    parser = argparse.ArgumentParser(prog="driftline", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"driftline {__version__}")
    parser.add_argument(
        "--config", metavar="FILE", help="driftline.toml (default: ./driftline.toml if present)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    modules: dict[str, object] = {}
    for name, (module_name, help_text) in _available().items():
        module = importlib.import_module(module_name)
        command_parser = sub.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=EXIT_CODES_HELP,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(command_parser)
        modules[name] = module
    return parser, modules


def main(argv: Sequence[str] | None = None) -> int:
    error_output = sys.stderr
    sys.stderr = _ErrorOutput(error_output)
    try:
        return _main(argv)
    finally:
        sys.stderr = error_output


def _main(argv: Sequence[str] | None) -> int:
    parser, modules = build_parser()
    args = parser.parse_args(argv)
    module = modules[args.command]
    try:
        code: int = module.run(args)  # type: ignore[attr-defined]
    except BrokenPipeError:
        if not _stdout_reader_gone():
            raise  # another pipe or socket broke: that is the command's failure
        # The reader of stdout has gone (``| head``): not an error of the command. Point
        # stdout at /dev/null so the interpreter's final flush does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    return code


class _ErrorOutput:
    """``sys.stderr`` while a command runs: what can no longer be written there (its reader
    has gone, ``2>&1 | head -0``, or stderr is closed) is dropped, and the command ends with
    its own exit status. A broken pipe raised by an error message ended the command as if
    the reader of its output had gone: exit 0, the failure hidden."""

    def __init__(self, stream: TextIO | None) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        if self._stream is not None:
            try:
                self._stream.write(text)
            except BrokenPipeError:
                self._reader_gone()
        return len(text)

    def flush(self) -> None:
        if self._stream is not None:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._reader_gone()

    def _reader_gone(self) -> None:
        stream, self._stream = self._stream, None
        # The interpreter flushes stderr once more at exit (a failed flush is exit 120):
        # point its descriptor at /dev/null, where what is still buffered can go.
        try:
            fd = stream.fileno() if stream is not None else -1
        except (OSError, ValueError):
            return
        if fd >= 0:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, fd)
            os.close(devnull)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _stdout_reader_gone() -> bool:
    """Whether stdout is a pipe whose reader has closed it (poll reports an error)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError):
        return False


if __name__ == "__main__":
    sys.exit(main())
