"""``driftline simulate``: send realistic GenAI traffic through OTLP, with incidents."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from datetime import datetime
from pathlib import Path

from opentelemetry.sdk.metrics.export import MetricExporter
from opentelemetry.sdk.trace.export import SpanExporter

from driftline.config import ConfigError, load_settings
from driftline.schemas.event import iso_to_micros, micros_to_iso
from driftline.simulator import (
    INCIDENT_KINDS,
    WORKFLOW_NAMES,
    GroundTruth,
    IncidentSpecError,
    OtlpFileExporter,
    Simulator,
    SimulatorConfig,
    collector_endpoint,
    network_exporter,
    network_metric_exporter,
    parse_incident,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rate", type=float, default=10.0, help="requests per second (default 10)")
    parser.add_argument(
        "--duration",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="event-time length of the run (default 60)",
    )
    parser.add_argument("--seed", type=int, default=0, help="same seed, same traffic (default 0)")
    parser.add_argument("--endpoint", help="collector OTLP endpoint (default: from [collector])")
    parser.add_argument("--protocol", choices=("grpc", "http"), default="grpc")
    parser.add_argument(
        "--incident",
        action="append",
        default=[],
        metavar="KIND@SECONDS[:WORKFLOW][=MAGNITUDE]",
        help=f"inject an incident (repeatable); kinds: {', '.join(INCIDENT_KINDS)}",
    )
    parser.add_argument(
        "--workflow",
        action="append",
        choices=WORKFLOW_NAMES,
        help="simulate only this workflow (repeatable; default all)",
    )
    parser.add_argument(
        "--ground-truth", metavar="FILE", help="write the normalized events sent as NDJSON"
    )
    parser.add_argument(
        "--otlp-out",
        metavar="FILE",
        help="also write the exported spans as OTLP protobuf TracesData",
    )
    parser.add_argument("--no-send", action="store_true", help="do not send to a collector")
    parser.add_argument(
        "--clock",
        choices=("realtime", "simulated"),
        default="realtime",
        help="realtime: paced to --rate; simulated: as fast as possible "
        "with synthetic timestamps from --start",
    )
    parser.add_argument("--start", metavar="ISO", help="simulated clock start (default now)")
    parser.add_argument(
        "--environment", default="production", help="deployment.environment.name of every service"
    )


def _config(args: argparse.Namespace) -> SimulatorConfig:
    start = None
    if args.start:
        if args.clock != "simulated":
            raise ValueError("--start needs --clock simulated")
        start = datetime.fromtimestamp(iso_to_micros(args.start) / 1e6).astimezone()
    return SimulatorConfig(
        rate=args.rate,
        duration_s=args.duration,
        seed=args.seed,
        incidents=tuple(parse_incident(spec) for spec in args.incident),
        clock=args.clock,
        start=start,
        environment=args.environment,
        workflows=tuple(args.workflow) if args.workflow else WORKFLOW_NAMES,
    )


def run(args: argparse.Namespace) -> int:
    try:
        config = _config(args)
        settings = load_settings(args.config)
    except (ValueError, IncidentSpecError, ConfigError) as exc:
        print(f"driftline simulate: {exc}", file=sys.stderr)
        return 2
    if args.no_send and not (args.otlp_out or args.ground_truth):
        print("driftline simulate: --no-send needs --otlp-out or --ground-truth", file=sys.stderr)
        return 2
    exporters: list[SpanExporter] = []
    names: list[str] = []
    engines: MetricExporter | None = None
    if not args.no_send:
        c = settings.collector
        endpoint = args.endpoint or collector_endpoint(
            args.protocol, c.host, c.grpc_port, c.http_port
        )
        exporters.append(network_exporter(args.protocol, endpoint))
        names.append(f"otlp-{args.protocol} {endpoint}")
        # The self-hosted engines report KV usage, queue and preemptions as OTLP metrics.
        engines = network_metric_exporter(args.protocol, endpoint)
    if args.otlp_out:
        exporters.append(OtlpFileExporter(args.otlp_out))
        names.append(f"file {args.otlp_out}")
    with contextlib.ExitStack() as stack:
        out = None
        if args.ground_truth:
            out = stack.enter_context(Path(args.ground_truth).open("w", encoding="utf-8"))
        truth = GroundTruth(out, keep=False)
        simulator = Simulator(config)
        try:
            result = simulator.run(exporters, truth, engines)
        except KeyboardInterrupt:
            simulator.stop()
            return 130
    summary = {
        "traces": result.traces,
        "spans": result.spans,
        "events": result.events,
        "exported": dict(zip(names, result.exported, strict=True)),
        "failed": dict(zip(names, result.failed, strict=True)),
        "elapsed_s": round(result.elapsed_s, 3),
        "event_time": [micros_to_iso(result.first_event_us), micros_to_iso(result.last_event_us)]
        if result.traces
        else [],
        "priced": truth.priced,
    }
    print(json.dumps(summary), file=sys.stderr)
    return 1 if any(result.failed) else 0
