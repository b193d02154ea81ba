"""A store filled the way production fills it, for the dashboard query tests and the report.

Two hours of seeded traffic (tests.utils.events) written through the real sink, with a canary
bundle (prompt ``p4``) taking part of ``support-chat`` in the second hour and answering longer,
KV-cache usage on the vLLM-served model, a share of the traces in a second environment
(``staging``, so that the environment filter has something to narrow), alert transitions (a
drift alert still open, a budget alert opened and resolved), baseline snapshots written by the
real monitor (streams.baselines) as the worker writes them, and model prices for the
cache-savings panel.
"""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa

from driftline.config import PriceOverride
from driftline.schemas import engine_metrics as em
from driftline.schemas.alert import alert_id, dedup_key
from driftline.schemas.event import bundle_id
from driftline.schemas.tables import ENGINE_METRICS
from driftline.store import Store
from driftline.store.prices import write_model_prices
from driftline.streams.pricing import PriceBook
from driftline.streams.sink import EventSink
from tests.utils.events import RATES, generate_traffic, price, summarize_trace

START = datetime(2026, 1, 1, tzinfo=UTC)
START_US = int(START.timestamp() * 1_000_000)
SPAN = timedelta(hours=2)
END = START + SPAN
ENGINE_MODEL = "llama-3.1-8b"  # the self-hosted (vLLM) model of tests.utils.events
CANARY_WORKFLOW = "support-chat"
CANARY_PROMPT = "p4"
STAGING = "staging"
STAGING_SHARE = 0.15  # of the traces; the rest stay in "prod"
# Monthly USD: close to what the traffic spends, so burn rates hover around 1.
BUDGETS = {
    "support-chat": 800.0,
    "code-review": 1500.0,
    "doc-summarize": 1500.0,
    "rag-search": 200.0,
}


def price_book() -> PriceBook:
    """The real price book, with tests.utils.events.RATES as configured overrides."""
    return PriceBook(
        {
            r.model: PriceOverride(
                input_per_mtok=r.input,
                output_per_mtok=r.output,
                cache_read_per_mtok=r.cache_read,
                cache_write_per_mtok=r.cache_write,
            )
            for r in RATES.values()
        }
    )


Records = list[dict[str, Any]]


def traffic(n_traces: int = 1500, seed: int = 7) -> tuple[Records, Records]:
    """Events and trace summaries with a canary bundle and KV-cache usage."""
    events, _ = generate_traffic(
        n_traces, seed=seed, start_us=START_US, span_s=SPAN.total_seconds()
    )
    rng = random.Random(seed + 1)
    half_us = START_US + int(SPAN.total_seconds() / 2 * 1e6)
    canary_traces = {
        e["trace_id"]
        for e in events
        if e["workflow"] == CANARY_WORKFLOW
        and e["parent_span_id"] == ""
        and e["start_ts"] >= half_us
        and rng.random() < 0.4
    }
    staging_rng = random.Random(seed + 2)
    staging_traces = {
        t for t in sorted({e["trace_id"] for e in events}) if staging_rng.random() < STAGING_SHARE
    }
    for e in events:
        if e["trace_id"] in staging_traces:
            e["environment"] = STAGING
        if e["trace_id"] in canary_traces:
            e["prompt_version"] = CANARY_PROMPT
            e["output_tokens"] = int(e["output_tokens"] * 1.8)
            e["output_chars"] = e["output_tokens"] * 4
            model = e["response_model"]
            e["bundle_id"] = bundle_id(
                model,
                e["model_version"],
                CANARY_PROMPT,
                e["retrieval_index_version"],
                e["router_version"],
            )
            e["cost_usd"] = price(
                model,
                e["input_tokens"],
                e["output_tokens"],
                e["cache_read_tokens"],
                e["cache_write_tokens"],
            )
        if RATES[e["response_model"]].provider == "vllm":
            e["kv_cache_usage"] = round(min(0.99, max(0.05, rng.gauss(0.55, 0.15))), 4)
    by_trace: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        by_trace[e["trace_id"]].append(e)
    return events, [summarize_trace(t) for t in by_trace.values()]


def engine_metrics(scrape_s: int = 15, seed: int = 11) -> pa.Table:
    """Two vLLM servers of the self-hosted model scraped over the span: KV usage, queue, and
    a preemption count that grows and, on one server, restarts from 0 (an engine restart)."""
    rng = random.Random(seed)
    rows: dict[str, list[Any]] = defaultdict(list)
    for instance in ("vllm-0:8000", "vllm-1:8000"):
        preemptions = 0.0
        for i in range(int(SPAN.total_seconds()) // scrape_s):
            at = START + timedelta(seconds=i * scrape_s)
            if instance == "vllm-1:8000" and i == 200:
                preemptions = 0.0
            preemptions += rng.choice((0, 0, 0, 1, 2))
            for metric, value in (
                (em.KV_CACHE_USAGE, round(min(0.99, max(0.05, rng.gauss(0.6, 0.2))), 4)),
                (em.REQUESTS_WAITING, float(rng.randint(0, 12))),
                (em.PREEMPTIONS, preemptions),
            ):
                rows["time"].append(at)
                rows["engine"].append("vllm")
                rows["model"].append(ENGINE_MODEL)
                rows["instance"].append(instance)
                rows["metric"].append(metric)
                rows["value"].append(value)
                rows["source_metric"].append(f"vllm:{metric}")
    types = {"time": pa.timestamp("us", "UTC"), "value": pa.float64()}
    return pa.table(
        {c: pa.array(rows[c], types.get(c, pa.string())) for c in ENGINE_METRICS.columns}
    )


def alert_transitions() -> list[dict[str, Any]]:
    """A drift alert still open on the canary, a budget alert opened and resolved."""
    canary = bundle_id("gpt-4o", "", CANARY_PROMPT, "", "")
    records = []
    for kind, workflow, metric, bundle, opened_min, resolved_min, severity, score, threshold in (
        ("drift", CANARY_WORKFLOW, "output_tokens", canary, 75, None, "error", 9.5, 5.0),
        ("budget", "code-review", "cost_burn_1h", "", 20, 50, "critical", 16.0, 14.4),
        ("drift", "rag-search", "latency", "", 30, 45, "warning", 5.8, 5.0),
    ):
        key = dedup_key(kind, workflow, metric, bundle)
        opened = START + timedelta(minutes=opened_min)
        opened_us = int(opened.timestamp() * 1e6)
        base = {
            "alert_id": alert_id(key, opened_us),
            "dedup_key": key,
            "kind": kind,
            "severity": severity,
            "state": "open",
            "opened_at": opened_us,
            "resolved_at": None,
            "workflow": workflow,
            "metric": metric,
            "baseline_value": 180.0,
            "current_value": 320.0,
            "score": score,
            "threshold": threshold,
            "bundle_id": bundle,
            "evidence": {"test": "cusum", "window_events": "500"},
            "runbook_url": f"https://runbooks.example.com/driftline/{kind}",
            "dashboard_url": f"http://localhost:3000/d/driftline-drift?var-workflow={workflow}",
        }
        records.append({**base, "transition": "open", "event_ts": opened_us})
        records.append(
            {
                **base,
                "transition": "update",
                "event_ts": opened_us + 300_000_000,
                "score": score * 1.2,
            }
        )
        if resolved_min is not None:
            resolved_us = int((START + timedelta(minutes=resolved_min)).timestamp() * 1e6)
            records.append(
                {
                    **base,
                    "state": "resolved",
                    "resolved_at": resolved_us,
                    "score": threshold * 0.5,
                    "transition": "resolve",
                    "event_ts": resolved_us,
                }
            )
    return records


def baseline_table(events: list[dict[str, Any]]) -> pa.Table:
    """Baseline snapshots as the worker writes them: the real monitor over the traffic in
    event-time order, the rows of the workflows that changed written once a minute."""
    from driftline.config import DetectorSettings, Settings
    from driftline.streams.baselines import BASELINE_COLUMNS, baseline_rows
    from driftline.streams.monitor import Monitor, event_time
    from driftline.streams.sink import to_arrow

    detectors = DetectorSettings(warmup_events=60, window_events=30, max_bundles_per_workflow=8)
    monitor = Monitor(Settings(detectors=detectors))
    rows: list[dict[str, Any]] = []
    ordered = sorted(events, key=event_time)
    minute = 60_000_000
    start = 0
    while start < len(ordered):
        end = start
        boundary = (event_time(ordered[start]) // minute + 1) * minute
        while end < len(ordered) and event_time(ordered[end]) < boundary:
            end += 1
        monitor.process([dict(e) for e in ordered[start:end]], [])
        rows += baseline_rows(monitor, sorted(monitor.dirty_workflows()), monitor.watermark)
        start = end
    return to_arrow(rows, BASELINE_COLUMNS)


def fill(store: Store, n_traces: int = 1500) -> dict[str, int]:
    """Write events, traces, alerts, baselines and prices; return row counts per kind."""
    events, traces = traffic(n_traces)
    sink = EventSink(store, batch_rows=100_000)
    for e in events:
        sink.add("events", e)
    for t in traces:
        sink.add("traces", t)
    alerts = alert_transitions()
    for a in alerts:
        sink.add("alerts", a)
    sink.flush()
    baselines = baseline_table(events)
    store.insert_arrow("driftline.workflow_baselines", baselines)
    prices = write_model_prices(store, price_book())
    engine_points = engine_metrics()
    store.insert_arrow(ENGINE_METRICS.name, engine_points)
    return {
        "events": len(events),
        "traces": len(traces),
        "alerts": len(alerts),
        "baselines": baselines.num_rows,
        "prices": prices,
        "engine_points": engine_points.num_rows,
    }
