"""An insert cut off between the raw part and the rollups is repaired by its re-delivery.

A worker killed during an insert can leave the spans in ``llm_requests_raw`` and missing
from some or all of the per-minute rollups (each materialized view commits its own part).
The batch comes again and the sink skips the spans already stored; the rollups that missed
them are recomputed for those workflows and minutes (driftline/store/rollups.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pytest

from driftline.config import StoreSettings
from driftline.store import ChdbStore, open_store
from driftline.store.rollups import rollup_views, stored_minutes
from driftline.streams.sink import TABLES, EventSink
from tests.utils.events import generate_traffic, reset_store

ROLLUPS = ("rollup_workflow_1m", "rollup_model_1m", "rollup_route_1m", "rollup_tenant_1m")


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChdbStore]:
    store = open_store(f"chdb://{tmp_path_factory.mktemp('chdb')}", StoreSettings(ttl_days=3650))
    assert isinstance(store, ChdbStore)
    yield store
    store.close()


@pytest.fixture
def store(shared_store: ChdbStore) -> ChdbStore:
    reset_store(shared_store)
    return shared_store


def totals(store: ChdbStore) -> dict[str, tuple[int, int, float]]:
    """Requests, input tokens and cost per table: the view and every rollup."""
    out = {}
    for name in ("llm_requests", *ROLLUPS):
        n = "count()" if name == "llm_requests" else "sum(requests)"
        row = store.query(
            f"SELECT {n} AS n, sum(input_tokens) AS i, sum(cost_usd) AS usd FROM driftline.{name}"
        ).to_pylist()[0]
        out[name] = (int(row["n"]), int(row["i"]), round(row["usd"] or 0.0, 6))
    return out


def per_minute(store: ChdbStore, table: str) -> dict[tuple[str, int], int]:
    n = "count()" if table == "llm_requests" else "sum(requests)"
    minute = "toUInt32(toStartOfMinute(start_ts))" if table == "llm_requests" else "minute"
    rows = store.query(
        f"SELECT workflow, toUInt32({minute}) AS m, {n} AS n FROM driftline.{table}"
        " GROUP BY workflow, m"
    ).to_pylist()
    return {(r["workflow"], r["m"]): int(r["n"]) for r in rows}


@pytest.mark.parametrize("cut_off", [ROLLUPS, ROLLUPS[1:3]], ids=["all views", "two views"])
def test_rollups_missed_by_a_cut_off_insert_are_rebuilt_on_redelivery(
    store: ChdbStore, cut_off: tuple[str, ...]
) -> None:
    events, _ = generate_traffic(150, seed=3)
    # The first insert lands in the raw table and only in the views not cut off.
    for table in cut_off:
        store.command(f"DETACH TABLE driftline.{table}_mv")
    first = EventSink(store, batch_rows=10_000)
    for offset, event in enumerate(events[:100]):
        first.add("events", event, ("llm_events", 0, offset))
    first.flush()
    for table in cut_off:
        store.command(f"ATTACH TABLE driftline.{table}_mv")
    short = totals(store)
    assert all(short[t][0] < 100 for t in cut_off)

    # After the restart everything since the last commit comes again, cut into other batches.
    again = EventSink(store, batch_rows=10_000)
    for low, high in ((0, 60), (60, len(events))):
        for offset, event in enumerate(events[low:high], start=low):
            again.add("events", event, ("llm_events", 0, offset))
        again.flush()

    found = totals(store)
    assert found["llm_requests"][0] == len(events)
    assert {t: found[t] for t in ROLLUPS} == {t: found["llm_requests"] for t in ROLLUPS}
    for table in ROLLUPS:
        assert per_minute(store, table) == per_minute(store, "llm_requests"), table


def test_a_first_delivery_finds_nothing_stored(store: ChdbStore) -> None:
    events, _ = generate_traffic(40, seed=5)
    sink = EventSink(store, batch_rows=10_000)
    for offset, event in enumerate(events):
        sink.add("events", event, ("llm_events", 0, offset))
    rows = pa.table(
        {
            "workflow": [e["workflow"] for e in events],
            "start_ts": pa.array([e["start_ts"] for e in events], pa.int64()).cast(
                pa.timestamp("us", tz="UTC")
            ),
            "span_id": [e["span_id"] for e in events],
        }
    )
    raw, skip = "driftline.llm_requests_raw", TABLES["events"].skip_existing
    assert skip is not None
    assert stored_minutes(store, raw, rows, skip) == set()
    sink.flush()
    assert stored_minutes(store, raw, rows, skip) == set(per_minute(store, "llm_requests"))
    assert {v.target for v in rollup_views(store, raw)} == {f"driftline.{t}" for t in ROLLUPS}


def test_a_backlog_delivered_again_is_repaired_in_statements_the_store_takes(
    store: ChdbStore,
) -> None:
    # 2,000 minutes of a workflow with a long (but safe) name: listed in one statement, the
    # keys to recompute passed ClickHouse's max_query_size (256 KiB), the statement failed on
    # every retry, and the sink held its batch for good.
    events, _ = generate_traffic(700, seed=11)
    events = events[:2_000]
    for minute, event in enumerate(events):  # each in a minute of its own
        shift = minute * 60_000_000 - (event["start_ts"] - events[0]["start_ts"])
        event["start_ts"] += shift
        event["end_ts"] += shift
        event["workflow"] = "w" * 400
    first = EventSink(store, batch_rows=100_000)
    for offset, event in enumerate(events):
        first.add("events", event, ("llm_events", 0, offset))
    first.flush()
    minutes = per_minute(store, "llm_requests")
    assert len(minutes) > 1_000

    again = EventSink(store, batch_rows=100_000)
    for offset, event in enumerate(events):
        again.add("events", event, ("llm_events", 0, offset))
    again.flush()
    assert again.rollup_keys_not_rebuilt == 0
    for table in ROLLUPS:
        assert per_minute(store, table) == minutes, table


def test_a_key_too_long_for_any_statement_is_counted_not_retried(store: ChdbStore) -> None:
    events, _ = generate_traffic(3, seed=12)
    for event in events:
        event["workflow"] = "x" * 70_000  # only a record written straight to llm_events
    for _ in range(2):
        sink = EventSink(store, batch_rows=100_000)
        for offset, event in enumerate(events):
            sink.add("events", event, ("llm_events", 0, offset))
        sink.flush()
    assert sink.pending_rows == 0
    assert sink.rollup_keys_not_rebuilt == len(per_minute(store, "llm_requests")) > 0
