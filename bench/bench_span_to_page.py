"""Alert latency from span end to the PagerDuty receiver, through the whole embedded stack.

Starts tansu, rotel and the worker (chdb store, notifier), and a real local HTTP receiver
standing in for the Events API v2 (``PAGERDUTY_ROUTING_KEY`` / ``PAGERDUTY_EVENTS_URL``
in the worker's environment). The simulator sends support-chat traffic in realtime at a
fixed rate through the OTel SDK and OTLP gRPC to the collector; after a warm-up a small
share of calls goes to a model outside ``allowed_models``. Each such call opens a routing
alert, which resolves after ``hold_down_s`` without one, so the next one pages again.

For every routing trigger the receiver got, the latency is arrival time minus the end
time of the span that opened it (``payload.timestamp`` is the alert's event time, and
``custom_details.evidence.span_id`` names the span). Same host, same wall clock; the span's
end comes before its export, so this is at least the latency from the collector's OTLP
request. The latency is split at the Kafka timestamps of the first ``llm_events`` message
that carried the span (collector + decode: a call that names its workflow goes out as a
request at once, others after trace assembly's ``trace_grace_s``) and of the alert on
``llm_alerts`` (monitor), the rest being the notifier.

``--background-spans N`` adds about N LLM spans/s of another workflow through the same
collector and worker, from ``--background-procs`` simulator processes (OTel SDK, OTLP gRPC);
the report prints the LLM spans/s they reached and the worker stored, so a run on a
machine that cannot produce the load says so.

    .venv/bin/python bench/bench_span_to_page.py [--rate 5] [--duration 60]
    .venv/bin/python bench/bench_span_to_page.py --background-spans 2000
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition  # noqa: E402

from driftline.config import Settings, load_settings  # noqa: E402
from driftline.simulator import (  # noqa: E402
    Simulator,
    SimulatorConfig,
    network_exporter,
    parse_incident,
)
from driftline.stack import EmbeddedStack  # noqa: E402
from driftline.streams import topics  # noqa: E402
from driftline.streams.kafka import consumer_config  # noqa: E402
from driftline.streams.notifier.routing import ENV_EVENTS_URL, ENV_ROUTING_KEY  # noqa: E402
from tests.utils.http_receiver import HttpReceiver  # noqa: E402

PARTITIONS = 4
WORKFLOW = "support-chat"
ALLOWED_MODELS = ["gpt-4o-mini", "gpt-4o", "text-embedding-3-small"]
ROUTING_KEY = "bench-routing-key-" + uuid.uuid4().hex[:12]
DRAIN_QUIET_S = 10.0  # after the traffic: stop waiting when no page came for this long
BACKGROUND_WORKFLOW = "batch-summarizer"  # about 5.6 LLM calls per trace
BACKGROUND_CALLS_PER_TRACE = 5.6


def write_config(directory: Path, hold_down_s: float, trace_grace_s: float | None) -> Path:
    grace = f"trace_grace_s = {trace_grace_s}" if trace_grace_s is not None else ""
    path = directory / "driftline.toml"
    path.write_text(
        f"""
[kafka]
partitions = {PARTITIONS}
consumer_group = "driftline-bench-page-{uuid.uuid4().hex[:8]}"

[collector]
grpc_port = 0
http_port = 0

[embedded]
data_dir = "{directory / "var"}"
start_timeout_s = 90

[streams]
{grace}

[alerts]
hold_down_s = {hold_down_s}

[workflows.{WORKFLOW}]
allowed_models = {ALLOWED_MODELS!r}
"""
    )
    return path


def read_topic(settings: Settings, bootstrap: str, topic: str) -> list[tuple[float, Any]]:
    """(Kafka timestamp in s, JSON value) of every record, read from the beginning."""
    consumer = Consumer(
        consumer_config(
            settings.kafka,
            f"bench-read-{uuid.uuid4().hex[:8]}",
            bootstrap,
            **{"enable.auto.commit": False},
        )
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    out: list[tuple[float, Any]] = []
    idle_until = time.monotonic() + 3.0
    try:
        while time.monotonic() < idle_until:
            batch = consumer.consume(1000, timeout=0.5)
            for message in batch:
                if message.error() is None:
                    value = json.loads(message.value() or b"{}")
                    out.append((message.timestamp()[1] / 1000.0, value))
            if batch:
                idle_until = time.monotonic() + 3.0  # tansu's watermark is unreliable
    finally:
        consumer.close()
    return out


def parse_iso(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC).timestamp()


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    if len(ordered) < 2:
        only = {"p50": ordered[0], "p95": ordered[0], "p99": ordered[0], "max": ordered[0]}
        return only if ordered else {}
    q = statistics.quantiles(ordered, n=100, method="inclusive")
    return {
        "p50": round(q[49], 3),
        "p95": round(q[94], 3),
        "p99": round(q[98], 3),
        "max": round(ordered[-1], 3),
    }


def run_background(endpoint: str, rate: float, duration_s: float, seed: int) -> dict[str, float]:
    """One background simulator process: ``rate`` traces/s of BACKGROUND_WORKFLOW."""
    config = SimulatorConfig(
        rate=rate,
        duration_s=duration_s,
        seed=seed,
        clock="realtime",
        workflows=(BACKGROUND_WORKFLOW,),
    )
    result = Simulator(config).run([network_exporter("grpc", endpoint)])
    return {"spans": result.spans, "elapsed_s": result.elapsed_s, "failed": sum(result.failed)}


def start_background(
    args: argparse.Namespace, endpoint: str
) -> tuple[Any, list[Any]] | tuple[None, list[Any]]:
    if args.background_spans <= 0:
        return None, []
    traces_per_s = args.background_spans / BACKGROUND_CALLS_PER_TRACE / args.background_procs
    pool = multiprocessing.get_context("spawn").Pool(args.background_procs)
    runs = [
        pool.apply_async(run_background, (endpoint, traces_per_s, args.duration, 1000 + i))
        for i in range(args.background_procs)
    ]
    return pool, runs


def measure(args: argparse.Namespace, directory: Path) -> dict[str, Any]:
    config_file = write_config(directory, args.hold_down, args.trace_grace_s)
    settings = load_settings(config_file)
    with HttpReceiver() as receiver:
        os.environ[ENV_ROUTING_KEY] = ROUTING_KEY
        os.environ[ENV_EVENTS_URL] = receiver.url
        stack = EmbeddedStack(settings, config_file=config_file)
        try:
            endpoints = stack.start()
            simulator = SimulatorConfig(
                rate=args.rate,
                duration_s=args.duration,
                seed=args.seed,
                clock="realtime",
                workflows=(WORKFLOW,),
                incidents=(
                    parse_incident(f"unapproved-model@{args.warmup}:{WORKFLOW}={args.share}"),
                ),
            )
            print(f"simulating {args.duration:g} s at {args.rate:g} req/s ...", file=sys.stderr)
            pool, background = start_background(args, endpoints.otlp_grpc)
            result = Simulator(simulator).run([network_exporter("grpc", endpoints.otlp_grpc)])
            background_runs = [run.get() for run in background]
            if pool is not None:
                pool.close()
            if any(result.failed):
                raise RuntimeError(f"spans failed to export: {result.failed}")
            last = time.monotonic()
            seen = len(receiver.requests)
            while time.monotonic() - last < DRAIN_QUIET_S:
                time.sleep(0.5)
                if len(receiver.requests) != seen:
                    seen, last = len(receiver.requests), time.monotonic()
            events = read_topic(settings, endpoints.bootstrap_servers, topics.LLM_EVENTS)
            alerts = read_topic(settings, endpoints.bootstrap_servers, topics.LLM_ALERTS)
        finally:
            stack.stop()
            for name in (ENV_ROUTING_KEY, ENV_EVENTS_URL):
                os.environ.pop(name, None)
        requests = receiver.requests
    report = analyse(settings, result.traces, requests, events, alerts)
    if background_runs:
        report["background"] = background_load(args, background_runs, events)
    return report


def background_load(
    args: argparse.Namespace, runs: list[dict[str, float]], events: list[tuple[float, Any]]
) -> dict[str, Any]:
    """What the background reached: spans the simulators sent, LLM calls the worker published."""
    elapsed = max(run["elapsed_s"] for run in runs)
    calls = [
        ts
        for ts, doc in events
        for e in doc.get("events", ())
        if e.get("workflow") == BACKGROUND_WORKFLOW
    ]
    published_s = (max(calls) - min(calls)) if len(calls) > 1 else 0.0
    return {
        "target_llm_spans_per_s": args.background_spans,
        "spans_sent": int(sum(run["spans"] for run in runs)),
        "spans_failed": int(sum(run["failed"] for run in runs)),
        "send_elapsed_s": round(elapsed, 1),
        "llm_calls_published": len(calls),
        "llm_calls_per_s_over_the_run": round(len(calls) / args.duration, 1),
        "llm_calls_per_s_while_publishing": round(len(calls) / published_s, 1)
        if published_s
        else None,
    }


def analyse(
    settings: Settings,
    traces: int,
    requests: list[Any],
    events: list[tuple[float, Any]],
    alerts: list[tuple[float, Any]],
) -> dict[str, Any]:
    published_at: dict[str, float] = {}  # span id -> when its event first reached llm_events
    for ts, doc in events:
        for e in (*doc.get("requests", ()), *doc.get("events", ())):
            published_at[e["span_id"]] = min(ts, published_at.get(e["span_id"], ts))
    alert_at = {(doc["alert_id"], doc["transition"]): ts for ts, doc in alerts}
    total, to_events, to_alert, to_receiver = [], [], [], []
    dedup = []
    for request in requests:
        body = request.json()
        if body.get("event_action") != "trigger" or request.answered != 202:
            continue
        if not str(body.get("dedup_key", "")).startswith(f"routing/{WORKFLOW}/"):
            continue  # per-request routing pages only (background traffic may page too)
        details = body["payload"]["custom_details"]
        span_end = parse_iso(body["payload"]["timestamp"])
        total.append(request.arrived_at - span_end)
        dedup.append(body["dedup_key"])
        assembled = published_at.get(details["evidence"].get("span_id", ""))
        alerted = alert_at.get((details["alert_id"], details["transition"]))
        if assembled is not None and alerted is not None:
            to_events.append(assembled - span_end)
            to_alert.append(alerted - assembled)
            to_receiver.append(request.arrived_at - alerted)
    if not total:
        raise RuntimeError("no trigger reached the receiver; see the worker log")
    grace = settings.streams.trace_grace_s
    p50 = percentiles(total)["p50"]
    return {
        "traces_sent": traces,
        "pages": len(total),
        "alerts_paged": len(set(dedup)),
        "requests_at_receiver": len(requests),
        "span_end_to_page_s": percentiles(total),
        "breakdown_s": {
            "span_end_to_llm_events": percentiles(to_events),
            "llm_events_to_llm_alerts": percentiles(to_alert),
            "llm_alerts_to_receiver": percentiles(to_receiver),
            "matched_pages": len(to_events),
        },
        "trace_grace_s": grace,
        "ratio_p50_to_trace_grace": round(p50 / grace, 2) if grace else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=5.0, help="requests per second")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of traffic")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds before the incident")
    parser.add_argument(
        "--share", type=float, default=0.05, help="share of calls sent to an unapproved model"
    )
    parser.add_argument(
        "--hold-down",
        type=float,
        default=2.0,
        help="alerts.hold_down_s: a quiet gap this long resolves the alert",
    )
    parser.add_argument(
        "--trace-grace-s",
        type=float,
        default=None,
        help="streams.trace_grace_s (default: the config default)",
    )
    parser.add_argument(
        "--background-spans",
        type=float,
        default=0.0,
        help=f"LLM spans/s of {BACKGROUND_WORKFLOW} traffic beside the measured workflow",
    )
    parser.add_argument("--background-procs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    args = parser.parse_args(argv)
    directory = Path(tempfile.mkdtemp(prefix="driftline-bench-page-"))
    try:
        report = measure(args, directory)
    finally:
        if not args.keep:
            import shutil

            shutil.rmtree(directory, ignore_errors=True)
    report = {"rate_per_s": args.rate, "duration_s": args.duration, **report}
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
