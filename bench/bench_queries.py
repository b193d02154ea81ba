"""Every library query and rollup query on generated data (default 10M requests), timed.

    .venv/bin/python bench/bench_queries.py [--rows 10000000] [--repeat 3] [--path DIR]

Requests (14 days, 4 workflows, 4 models, 5 tenants) are generated with numpy in chunks and
inserted as Arrow, so the rollups fill through their materialized views as in production;
trace summaries are derived from the requests in SQL. Each query runs over the whole 14 days
and over one day, twice: as inserted (several parts per day: FINAL has to merge) and after
OPTIMIZE FINAL (one part per day, the state background merges leave past days in). Reported:
the best of ``--repeat`` runs, and a plain ``count()`` as the floor measured in the same run.
Goal: <= 0.5 s per query on the 2-core machine. ``--path`` keeps the store for reuse.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from driftline.config import PriceOverride, StoreSettings
from driftline.store import ChdbStore, open_store
from driftline.store.prices import write_model_prices
from driftline.store.queries import load_query, query_defaults, query_names, query_params
from driftline.streams.pricing import PriceBook
from tests.utils.events import RATES, event_table

START_US = 1_767_225_600_000_000  # 2026-01-01
SPAN_S = 14 * 86400.0
CHUNK = 1_000_000
GOAL_S = 0.5


def _load(store: ChdbStore, rows: int) -> None:
    t0 = time.perf_counter()
    for first in range(0, rows, CHUNK):
        n = min(CHUNK, rows - first)
        # Chunks cover consecutive slices of the 14 days, as a stream would deliver them.
        start = START_US + int(SPAN_S * 1e6 * first / rows)
        batch = event_table(n, seed=first, start_us=start, span_s=SPAN_S * n / rows)  # noqa: F841
        store.command("INSERT INTO driftline.llm_requests_raw SELECT * FROM Python(batch)")
    print(f"inserted {rows:,} requests in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    store.command(
        """INSERT INTO driftline.llm_traces_raw
        SELECT trace_id, any(workflow), any(service), any(environment), any(tenant), any(route),
               argMin(span_id, start_ts), min(start_ts), max(end_ts), count(), count(),
               max(loop_depth), sum(input_tokens), sum(output_tokens),
               sum(input_tokens + output_tokens), sum(cost_usd), countIf(cost_usd IS NULL),
               sum(input_tokens + output_tokens)
                   / greatest(argMin(input_tokens + output_tokens, start_ts), 1),
               countIf(retry_attempt > 0), countIf(status = 'error'), 'root_end'
        FROM driftline.llm_requests_raw GROUP BY trace_id"""
    )
    traces = store.query("SELECT count() FROM driftline.llm_traces_raw").column(0)[0].as_py()
    print(f"derived {traces:,} traces in {time.perf_counter() - t0:.1f} s")
    overrides = {
        name: PriceOverride(
            input_per_mtok=r.input,
            output_per_mtok=r.output,
            cache_read_per_mtok=r.cache_read,
            cache_write_per_mtok=r.cache_write,
        )
        for name, r in RATES.items()
    }
    write_model_prices(store, PriceBook(overrides))


def _best(store: ChdbStore, sql: str, params: dict[str, object], repeat: int) -> tuple[float, int]:
    times, rows = [], 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        rows = store.query(sql, params).num_rows
        times.append(time.perf_counter() - t0)
    return min(times), rows


def _report(
    store: ChdbStore, state: str, whole: dict[str, object], day: dict[str, object], repeat: int
) -> None:
    floor, _ = _best(store, "SELECT count() FROM driftline.llm_requests_raw", {}, repeat)
    print(f"\n{state}; best of {repeat}; goal <= {GOAL_S} s")
    print(f"{'query':<30} {'rows':>6} {'14 days s':>10} {'1 day s':>8}")
    within = 0
    for name in query_names():
        sql = load_query(name)
        names = query_params(sql)
        params = {**query_defaults(sql), **whole}
        seconds, rows = _best(store, sql, {k: params[k] for k in names}, repeat)
        one_day, _ = _best(store, sql, {k: {**params, **day}[k] for k in names}, repeat)
        within += seconds <= GOAL_S
        mark = "" if seconds <= GOAL_S else "  over goal"
        print(f"{name:<30} {rows:>6} {seconds:>10.3f} {one_day:>8.3f}{mark}")
    print(
        f"floor: SELECT count() on the raw table {floor * 1000:.1f} ms; "
        f"{within}/{len(query_names())} queries over 14 days within the goal"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--path", help="store directory to (re)use; default: a temporary one")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.path or tmp) / "bench_queries"
        store = open_store(f"chdb://{path}", StoreSettings(ttl_days=3650))
        assert isinstance(store, ChdbStore)
        have = store.query("SELECT count() FROM driftline.llm_requests_raw").column(0)[0].as_py()
        if have != args.rows:
            store.command("DROP DATABASE driftline SYNC")
            store.close()
            store = open_store(f"chdb://{path}", StoreSettings(ttl_days=3650))
            assert isinstance(store, ChdbStore)
            _load(store, args.rows)
        end = datetime.fromtimestamp(START_US / 1e6 + SPAN_S, UTC)
        params: dict[str, object] = {
            "from": datetime.fromtimestamp(START_US / 1e6, UTC),
            "to": end,
            "at": end,
            "limit": 20,
            "budgets": {"support-chat": 5000.0, "rag-search": 100.0},
        }
        day: dict[str, object] = {
            "from": datetime.fromtimestamp(START_US / 1e6 + 6 * 86400, UTC),
            "to": datetime.fromtimestamp(START_US / 1e6 + 7 * 86400, UTC),
        }
        _report(store, "as inserted (several parts per day)", params, day, args.repeat)
        t0 = time.perf_counter()
        for table in (
            "llm_requests_raw",
            "llm_traces_raw",
            "rollup_workflow_1m",
            "rollup_model_1m",
            "rollup_route_1m",
            "rollup_tenant_1m",
        ):
            store.command(f"OPTIMIZE TABLE driftline.{table} FINAL")
        print(f"\nOPTIMIZE ... FINAL in {time.perf_counter() - t0:.1f} s")
        _report(
            store,
            "merged (one part per day, as background merges leave past days)",
            params,
            day,
            args.repeat,
        )
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
