"""Every dashboard panel query on a large embedded store: which one is slowest.

Loads ``--rows`` request events (default 10M, 14 days, tests.utils.events.event_table) into a
fresh chdb store through the same Arrow insert the sink uses, so the per-minute rollups fill
through their materialized views; derives one trace summary per trace in SQL; adds the test
alerts, baselines and prices. Then runs every panel and annotation query, expanded the way
the Grafana plugin expands it with every filter on All, for a 24-hour and a 14-day range,
``--repeat`` times each (best time kept).

Timings on a shared machine are noisy, so each is also printed as a ratio to a baseline
measured in the same run: one full scan of the raw table (``sum(cost_usd)`` over all rows).

    .venv/bin/python bench/bench_panels.py --rows 1000000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from driftline.config import StoreSettings  # noqa: E402
from driftline.dashboards.build import dashboard_specs  # noqa: E402
from driftline.dashboards.macros import TimeRange, expand  # noqa: E402
from driftline.dashboards.panels import AnnotationSpec, BuildContext, PanelSpec  # noqa: E402
from driftline.dashboards.report import default_variables  # noqa: E402
from driftline.store import Store, open_store  # noqa: E402
from tests.utils import dashboard_data  # noqa: E402
from tests.utils.events import event_table  # noqa: E402

DAYS = 14
CHUNK_ROWS = 1_000_000

_TRACES_FROM_EVENTS = """
INSERT INTO driftline.llm_traces_raw
    (trace_id, workflow, service, environment, tenant, route, root_span_id, start_ts, end_ts,
     span_count, llm_call_count, max_loop_depth, input_tokens, output_tokens, total_tokens,
     cost_usd, unpriced_calls, amplification, retries, error_count, closed_by)
SELECT trace_id, any(workflow), any(service), any(environment), any(tenant), any(route),
       argMin(span_id, start_ts), min(start_ts), max(end_ts), count(), count(),
       max(loop_depth), sum(input_tokens), sum(output_tokens),
       sum(input_tokens) + sum(output_tokens), sum(cost_usd), countIf(cost_usd IS NULL),
       (sum(input_tokens) + sum(output_tokens))
           / argMin(input_tokens + output_tokens, start_ts),
       countIf(retry_attempt > 0), countIf(status = 'error'), 'root_end'
FROM driftline.llm_requests_raw
GROUP BY trace_id
"""


def load(store: Store, rows: int) -> None:
    start_us = dashboard_data.START_US
    span_us = DAYS * 86400 * 1_000_000
    chunks = max(1, -(-rows // CHUNK_ROWS))
    for i in range(chunks):
        n = min(CHUNK_ROWS, rows - i * CHUNK_ROWS)
        table = event_table(
            n,
            seed=100 + i,
            start_us=start_us + i * span_us // chunks,
            span_s=span_us / chunks / 1e6,
        )
        store.insert_arrow("driftline.llm_requests_raw", table)
        print(f"  loaded {min((i + 1) * CHUNK_ROWS, rows):,} rows", file=sys.stderr)
    store.command(_TRACES_FROM_EVENTS)
    small, _ = dashboard_data.traffic(200)  # alerts, baselines and prices need a few events
    sink_rows = dashboard_data.alert_transitions()
    from driftline.streams.sink import EventSink

    sink = EventSink(store)
    for record in sink_rows:
        sink.add("alerts", record)
    sink.flush()
    store.insert_arrow("driftline.workflow_baselines", dashboard_data.baseline_table(small))
    from driftline.store.prices import write_model_prices

    write_model_prices(store, dashboard_data.price_book())


def best_of(store: Store, sql: str, repeat: int) -> tuple[float, int]:
    best = float("inf")
    rows = 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        rows = store.query(sql).num_rows
        best = min(best, time.perf_counter() - t0)
    return best, rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument(
        "--path",
        type=Path,
        help="chdb directory (default: a temporary one); reused when it holds --rows events",
    )
    args = parser.parse_args()
    path = args.path or Path(tempfile.mkdtemp(prefix="bench-panels-"))
    store = open_store(f"chdb://{path}", StoreSettings(ttl_days=3650))
    have = store.query("SELECT count() FROM driftline.llm_requests_raw").column(0)[0].as_py()
    if have != args.rows:
        store.command("DROP DATABASE driftline SYNC")
        store.close()
        store = open_store(f"chdb://{path}", StoreSettings(ttl_days=3650))
        t0 = time.perf_counter()
        load(store, args.rows)
        print(f"loaded {args.rows:,} events in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    counts = store.query(
        "SELECT (SELECT count() FROM driftline.llm_requests_raw) AS events,"
        " (SELECT count() FROM driftline.llm_traces_raw) AS traces"
    ).to_pylist()[0]
    baseline, _ = best_of(store, "SELECT sum(cost_usd) FROM driftline.llm_requests_raw", 3)
    print(
        f"events {counts['events']:,}, traces {counts['traces']:,}; "
        f"baseline full scan {baseline * 1000:.0f} ms"
    )
    end = dashboard_data.START + timedelta(days=DAYS)
    context = BuildContext(dashboard_data.BUDGETS)
    results = []
    for label, time_range in (
        ("24h", TimeRange.between(end - timedelta(days=1), end)),
        ("14d", TimeRange.between(dashboard_data.START, end)),
    ):
        for spec in dashboard_specs(context):
            items: list[PanelSpec | AnnotationSpec] = [*spec.panels, *spec.annotations]
            for item in items:
                title = getattr(item, "title", None) or getattr(item, "name", "")
                sql = expand(item.sql, time_range, default_variables())
                seconds, rows = best_of(store, sql, args.repeat)
                raw = getattr(item, "raw", False) or "llm_requests" in item.sql
                results.append((seconds, label, spec.uid, title, rows, raw))
    print(f"{'range':5} {'ms':>8} {'x scan':>7} {'rows':>6}  panel")
    for seconds, label, uid, title, rows, raw in sorted(results, reverse=True):
        source = "raw rows" if raw else "rollup or small table"
        print(
            f"{label:5} {seconds * 1000:8.0f} {seconds / baseline:7.2f} {rows:6}  "
            f"{uid} / {title} [{source}]"
        )
    slowest = max(results)
    print(
        f"slowest: {slowest[2]} / {slowest[3]} ({slowest[1]}): {slowest[0] * 1000:.0f} ms, "
        f"{slowest[0] / baseline:.2f}x a full scan"
    )
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
