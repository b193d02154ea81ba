"""The sink under data the store can never take: wide batches, refused rows, restarts.

Every test runs against the real engine (chdb, or chdb behind the ClickHouse HTTP protocol).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from typing import Any, Literal

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftline.config import StoreSettings
from driftline.store import ChdbStore, Store, StoreUnavailableError, open_store
from driftline.store.base import SkipExisting, TooManyPartitionsError
from driftline.store.server_store import ServerStore
from driftline.streams.sink import (
    MAX_PARTITIONS_PER_INSERT,
    TABLES,
    EventSink,
    split_by_partition,
    to_arrow,
)
from tests.utils.chdb_http import ChdbHttpServer
from tests.utils.events import make_event, reset_store, summarize_trace

DAY_US = 86_400_000_000
JAN_2026 = 1_767_225_600_000_000
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


def _daily_events(days: int, start: int = JAN_2026 - 200 * DAY_US) -> list[dict[str, Any]]:
    """One event a day for ``days`` days, each its own trace."""
    return [
        make_event(trace_id=f"{i:032x}", span_id=f"{i:016x}", start_ts=start + i * DAY_US)
        for i in range(days)
    ]


def _count(store: Store, table: str, final: bool = False) -> int:
    column = "sum(requests)" if table.startswith("rollup") else "count()"
    sql = f"SELECT {column} FROM driftline.{table}{' FINAL' if final else ''}"
    return int(store.query(sql).column(0)[0].as_py() or 0)


def test_one_insert_over_the_partition_limit_is_a_permanent_refusal(store: ChdbStore) -> None:
    # the bug as reported: 101 days in one insert, which ClickHouse answers with code 252
    table = to_arrow(_daily_events(MAX_PARTITIONS_PER_INSERT + 1), TABLES["events"].fields)
    with pytest.raises(TooManyPartitionsError, match="Code: 252"):
        store.insert_arrow("driftline.llm_requests_raw", table, "t1")


def test_a_batch_spanning_more_days_than_allowed_is_stored_whole(store: ChdbStore) -> None:
    events = _daily_events(2 * MAX_PARTITIONS_PER_INSERT + 37)
    sink = EventSink(store)
    for offset, event in enumerate(events):
        sink.add("events", event, ("llm_events", 0, offset))
        sink.add("traces", summarize_trace([event]), ("llm_events", 0, offset))
    result = sink.flush()
    assert result.rows == {"events": len(events), "traces": len(events)}
    assert (result.rejected, sink.failures, sink.pending_rows) == (0, 0, 0)
    for table in ("llm_requests_raw", "llm_traces_raw", *ROLLUPS):
        assert _count(store, table) == len(events), table
    days = store.query("SELECT uniqExact(toDate(start_ts)) FROM driftline.llm_requests_raw")
    assert days.column(0)[0].as_py() == len(events)


def test_a_split_batch_written_again_after_a_restart_is_stored_once(store: ChdbStore) -> None:
    # traces have no skip-existing filter: only the per-piece dedup tokens keep them single
    events = _daily_events(3 * MAX_PARTITIONS_PER_INSERT)
    traces = [summarize_trace([e]) for e in events]

    def deliver(sink: EventSink) -> None:
        for offset, trace in enumerate(traces):
            sink.add("traces", trace, ("llm_events", 2, 500 + offset))

    first = EventSink(store)
    deliver(first)
    first.flush()
    restarted = EventSink(store)  # a new worker, the same uncommitted offsets
    deliver(restarted)
    restarted.flush()
    assert _count(store, "llm_traces_raw") == len(traces)  # physical rows, no FINAL


class _FailingNthInsert(Store):
    """The real store, but the ``n``-th insert fails as a dropped connection would."""

    def __init__(self, inner: Store, n: int) -> None:
        self.inner, self.n, self.inserts = inner, n, 0
        self.url = inner.url

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        return self.inner.query(sql, params)

    def command(self, sql: str) -> None:
        self.inner.command(sql)

    def insert_arrow(
        self,
        table_name: str,
        data: pa.Table,
        dedup_token: str | None = None,
        *,
        skip_existing: SkipExisting | None = None,
    ) -> None:
        self.inserts += 1
        if self.inserts == self.n:
            raise StoreUnavailableError("connection reset (injected)")
        self.inner.insert_arrow(table_name, data, dedup_token, skip_existing=skip_existing)

    def close(self) -> None:
        pass


def test_an_outage_between_pieces_writes_each_piece_once(store: ChdbStore) -> None:
    events = _daily_events(3 * MAX_PARTITIONS_PER_INSERT)
    flaky = _FailingNthInsert(store, n=2)  # the first piece lands, the second fails
    sink = EventSink(flaky)
    for offset, event in enumerate(events):
        sink.add("traces", summarize_trace([event]), ("llm_events", 0, offset))
    with pytest.raises(StoreUnavailableError):
        sink.flush()
    assert _count(store, "llm_traces_raw") == MAX_PARTITIONS_PER_INSERT
    assert sink.pending_rows == len(events)
    assert sink.flush().rows == {"traces": len(events)}
    assert _count(store, "llm_traces_raw") == len(events)  # the first piece was not doubled


@pytest.fixture
def latency_check(store: ChdbStore) -> Iterator[ChdbStore]:
    """An operator's CHECK constraint: the store refuses single rows for their values."""
    store.command(
        "ALTER TABLE driftline.llm_requests_raw ADD CONSTRAINT sane_latency CHECK latency_ms < 1e6"
    )
    yield store
    store.command("ALTER TABLE driftline.llm_requests_raw DROP CONSTRAINT sane_latency")


def _with_refused_rows(count: int, refused: set[int]) -> list[dict[str, Any]]:
    events = _daily_events(count, start=JAN_2026)
    for i in refused:
        events[i]["latency_ms"] = 5e6
    return events


def test_rows_the_store_refuses_are_set_aside_with_a_reason(latency_check: ChdbStore) -> None:
    store = latency_check
    refused = {3, 17, 18, 40}
    events = _with_refused_rows(50, refused)
    sink = EventSink(store)
    for offset, event in enumerate(events):
        sink.add("events", event, ("llm_events", 1, 1000 + offset))
    result = sink.flush()
    assert (result.rows, result.rejected) == ({"events": 50 - len(refused)}, len(refused))
    assert _count(store, "llm_requests_raw") == 50 - len(refused)
    assert _count(store, "rollup_workflow_1m") == 50 - len(refused)
    rejects = sink.take_rejected()
    assert sink.take_rejected() == [] and sink.rejected == []
    assert sorted(r.position for r in rejects) == [
        ("llm_events", 1, 1000 + i) for i in sorted(refused)
    ]
    for reject in rejects:
        assert reject.kind == "events" and "Code: 469" in reject.reason
        assert reject.ids["span_id"] == reject.record["span_id"]
        detail = json.loads(reject.detail)  # what a dead letter carries: ids and reason
        assert detail["ids"] == reject.ids and detail["reason"] == reject.reason
        assert reject.record["service"] not in reject.detail  # no field beyond the ids
        assert "5000000" not in reject.detail  # the engine quotes the value; not passed on
        assert "Column values" not in reject.reason
        kind, record, reason = reject  # the triple older readers unpack
        assert (kind, record, reason) == ("events", reject.record, reject.reason)


def test_refused_rows_are_set_aside_once_across_an_outage(latency_check: ChdbStore) -> None:
    events = _with_refused_rows(20, {5})
    flaky = _FailingNthInsert(latency_check, n=3)  # batch refused, first half refused, then down
    sink = EventSink(flaky)
    for offset, event in enumerate(events):
        sink.add("events", event, ("llm_events", 0, offset))
    with pytest.raises(StoreUnavailableError):
        sink.flush()
    assert sink.rejected == [] and sink.pending_rows == 20
    assert sink.flush().rejected == 1
    assert [r.record["span_id"] for r in sink.take_rejected()] == [events[5]["span_id"]]
    assert _count(latency_check, "llm_requests_raw") == 19


def test_times_the_store_cannot_hold_or_would_drop_are_set_aside(store: ChdbStore) -> None:
    # the store keeps 3650 days: its TTL (a 32-bit DateTime) ends at 2106-02-07
    times = {
        "past any calendar": 2**62,  # building the insert used to raise OverflowError
        "year 2400": 13_569_465_600_000_000,  # past DateTime64: stored as another time
        "year 2100": 4_102_444_800_000_000,  # TTL overflows: stored, then dropped at once
        "year 1971": 31_536_000_000_000,  # older than the TTL: dropped at once
    }
    events = _daily_events(len(times) + 1, start=JAN_2026)
    for event, start in zip(events[1:], times.values(), strict=True):
        event["start_ts"] = start
    sink = EventSink(store)
    for offset, event in enumerate(events):
        sink.add("events", event, ("llm_events", 0, offset))
    assert sink.flush().rejected == len(times)
    reasons = {r.record["start_ts"]: r.reason for r in sink.take_rejected()}
    assert set(reasons) == set(times.values())
    assert "1900-2299" in reasons[times["year 2400"]]
    assert "TTL would overflow" in reasons[times["year 2100"]]
    assert "older than the table keeps (TTL 3650 days)" in reasons[times["year 1971"]]
    assert _count(store, "llm_requests_raw") == 1 == _count(store, "rollup_workflow_1m")


def test_the_server_path_splits_and_isolates_the_same_way(latency_check: ChdbStore) -> None:
    wide = _daily_events(MAX_PARTITIONS_PER_INSERT + 1)
    refused = _with_refused_rows(10, {4})
    with ChdbHttpServer(latency_check.session) as server:
        remote = ServerStore(
            f"clickhouse://default@127.0.0.1:{server.port}/driftline",
            StoreSettings(),
            query_retries=0,
        )
        table = to_arrow(wide, TABLES["events"].fields)
        with pytest.raises(TooManyPartitionsError):
            remote.insert_arrow("driftline.llm_requests_raw", table, "one-insert")
        sink = EventSink(remote)
        for offset, event in enumerate([*wide, *refused]):
            sink.add("events", event, ("llm_events", 0, offset))
        result = sink.flush()
        remote.close()
    assert (result.rows, result.rejected) == ({"events": len(wide) + 9}, 1)
    assert [r.record["span_id"] for r in sink.take_rejected()] == [refused[4]["span_id"]]
    assert _count(latency_check, "llm_requests") == len(wide) + 9


def test_the_partition_units_match_the_schema(store: ChdbStore) -> None:
    keys = {
        f"driftline.{row['name']}": row["partition_key"]
        for row in store.query(
            "SELECT name, partition_key FROM system.tables WHERE database = 'driftline'"
        ).to_pylist()
    }
    function = {"day": "toYYYYMMDD", "month": "toYYYYMM"}
    for spec in TABLES.values():
        column, unit = spec.partition_by
        assert keys[spec.table] == f"{function[unit]}({column})", spec.table


@settings(max_examples=200, deadline=None)
@given(
    days=st.lists(st.integers(-30_000, 100_000), min_size=1, max_size=300),
    limit=st.integers(1, 120),
    unit=st.sampled_from(["day", "month"]),
)
def test_pieces_cover_the_batch_within_the_limit_the_same_way_every_time(
    days: list[int], limit: int, unit: Any
) -> None:
    column = pa.array([d * DAY_US + 3_600_000_000 for d in days], pa.timestamp("us", "UTC"))
    table = pa.table({"ts": column, "row": list(range(len(days)))})
    indices = [10 * i for i in range(len(days))]
    pieces = split_by_partition(table, indices, ("ts", unit), limit, "tok")
    again = split_by_partition(table, indices, ("ts", unit), limit, "tok")
    assert [(p.token, p.record_indices) for p in pieces] == [
        (p.token, p.record_indices) for p in again
    ]
    assert sorted(i for p in pieces for i in p.record_indices) == indices
    assert len({p.token for p in pieces}) == len(pieces)
    fmt = "%Y%m%d" if unit == "day" else "%Y%m"
    for piece in pieces:
        assert piece.record_indices == [10 * r for r in piece.table.column("row").to_pylist()]
        stamps = piece.table.column("ts").to_pylist()
        assert len({s.strftime(fmt) for s in stamps}) <= limit
    if len(pieces) == 1:
        assert pieces[0].token == "tok"  # a batch that fits keeps the token it always had


def _remote(server: ChdbHttpServer, **options: Any) -> ServerStore:
    return ServerStore(
        f"clickhouse://default@127.0.0.1:{server.port}/driftline",
        StoreSettings(),
        query_retries=0,
        **options,
    )


@pytest.mark.parametrize("kind", ["traces", "events"])
def test_an_insert_whose_answer_was_lost_is_stored_once(
    store: ChdbStore, kind: Literal["traces", "events"]
) -> None:
    # traces rely on the pieces' dedup tokens alone; events also skip keys already stored
    events = _daily_events(2 * MAX_PARTITIONS_PER_INSERT + 10)  # three pieces
    records = events if kind == "events" else [summarize_trace([e]) for e in events]
    with ChdbHttpServer(store.session) as server:
        remote = _remote(server)
        sink = EventSink(remote)
        for offset, record in enumerate(records):
            sink.add(kind, record, ("llm_events", 0, offset))
        server.lose_insert_responses(1)  # the first piece lands, its answer does not
        with pytest.raises(StoreUnavailableError):
            sink.flush()
        tables = ("llm_requests_raw", *ROLLUPS) if kind == "events" else ("llm_traces_raw",)
        assert _count(store, tables[0]) == MAX_PARTITIONS_PER_INSERT  # it did land
        assert sink.flush().rows == {kind: len(records)}
        remote.close()
    assert {t: _count(store, t) for t in tables} == {t: len(records) for t in tables}


def test_an_insert_held_past_the_client_timeout_lands_once(store: ChdbStore) -> None:
    events = _daily_events(30)
    with ChdbHttpServer(store.session) as server:
        remote = _remote(server, send_receive_timeout=1)
        sink = EventSink(remote)
        for offset, event in enumerate(events):
            sink.add("traces", summarize_trace([event]), ("llm_events", 3, offset))
        server.hang_inserts(1, 2.5)  # runs after the client gave up on it
        with pytest.raises(StoreUnavailableError):
            sink.flush()
        assert sink.pending_rows == len(events)
        sink.flush()  # the retry, same token, may land before or after the held one
        time.sleep(3)  # let the held insert finish
        remote.close()
    assert _count(store, "llm_traces_raw") == len(events)
