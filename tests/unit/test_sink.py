"""The sink: exact totals under re-delivery, outages, bad records, alerts."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from driftline.config import StoreSettings
from driftline.store import ChdbStore, StoreUnavailableError, open_store
from driftline.store.server_store import ServerStore
from driftline.streams.sink import EventSink
from tests.utils.chdb_http import ChdbHttpServer
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


def _totals(store: ChdbStore) -> dict[str, tuple[int, float]]:
    out = {}
    for name in ("llm_requests", "llm_requests_raw", *ROLLUPS):
        count = "count()" if name.startswith("llm_") else "sum(requests)"
        cost = "sum(cost_usd)"
        row = store.query(f"SELECT {count} AS n, {cost} AS usd FROM driftline.{name}")
        row = row.to_pylist()[0]
        out[name] = (row["n"], round(row["usd"] or 0.0, 9))
    row = store.query("SELECT count() AS n, sum(cost_usd) AS usd FROM driftline.llm_traces")
    row = row.to_pylist()[0]
    out["llm_traces"] = (row["n"], round(row["usd"] or 0.0, 9))
    return out


def test_redelivered_spans_are_counted_once_in_every_table_and_rollup(store: ChdbStore) -> None:
    events, traces = generate_traffic(150, seed=3)
    expected_cost = round(sum(e["cost_usd"] for e in events), 9)
    sink = EventSink(store, batch_rows=10_000)
    for offset, event in enumerate(events):
        sink.add("events", event, ("llm_events", 0, offset))
    for trace in traces:
        sink.add("traces", trace)
    # a duplicate inside the same batch (the producer retried)
    sink.add("events", events[0], ("llm_events", 0, len(events)))
    sink.flush()
    # a worker restarts from an older commit: part of the stream comes again, in other batches
    for offset, event in enumerate(events[100:250], start=len(events) + 1):
        sink.add("events", event, ("llm_events", 0, offset))
    sink.add("traces", traces[0])
    sink.flush()
    for offset, event in enumerate(events[::7], start=10_000):
        sink.add("events", event, ("llm_events", 1, offset))
    sink.flush()

    want = (len(events), expected_cost)
    totals = _totals(store)
    assert {name: totals[name] for name in ("llm_requests", "llm_requests_raw", *ROLLUPS)} == {
        name: want for name in ("llm_requests", "llm_requests_raw", *ROLLUPS)
    }
    assert totals["llm_traces"] == (len(traces), expected_cost)
    for table in ("llm_requests_raw", "llm_traces_raw", *ROLLUPS):
        store.command(f"OPTIMIZE TABLE driftline.{table} FINAL")
    assert _totals(store) == totals


def test_outage_keeps_rows_counts_failures_and_catches_up(store: ChdbStore) -> None:
    events, _ = generate_traffic(40, seed=9)
    with ChdbHttpServer(store.session) as server:
        remote = ServerStore(
            f"clickhouse://default@127.0.0.1:{server.port}/driftline",
            StoreSettings(),
            query_retries=0,
        )
        sink = EventSink(remote, batch_rows=20)
        for offset, event in enumerate(events[:20]):
            sink.add("events", event, ("llm_events", 0, offset))
        server.fail_with(210)
        for failures in (1, 2):
            with pytest.raises(StoreUnavailableError):
                sink.flush()
            assert (sink.failures, sink.pending_rows) == (failures, 20)
        for offset, event in enumerate(events[20:40], start=20):
            sink.add("events", event, ("llm_events", 0, offset))

        server.recover()
        assert sink.flush().rows == {"events": 40}
        assert (sink.failures, sink.pending_rows) == (0, 0)
        remote.close()
    count = store.query("SELECT count() FROM driftline.llm_requests").column(0)[0].as_py()
    assert count == 40


def test_store_that_went_away_is_unavailable(store: ChdbStore) -> None:
    server = ChdbHttpServer(store.session).start()
    remote = ServerStore(
        f"clickhouse://default@127.0.0.1:{server.port}/driftline", StoreSettings(), query_retries=0
    )
    sink = EventSink(remote, batch_rows=10)
    events, _ = generate_traffic(2, seed=1)
    sink.add("events", events[0], ("llm_events", 0, 0))
    server.stop()
    with pytest.raises(StoreUnavailableError):
        sink.flush()
    assert sink.pending_rows == 1
    remote.close()


def test_a_bad_record_is_set_aside_and_the_rest_is_written(store: ChdbStore) -> None:
    events, _ = generate_traffic(3, seed=2)
    bad = dict(events[1], input_tokens="many")
    sink = EventSink(store)
    for offset, event in enumerate([events[0], bad, *events[2:]]):
        sink.add("events", event, ("llm_events", 0, offset))
    result = sink.flush()
    assert result.rejected == 1
    assert sink.rejected[0].record is bad
    count = store.query("SELECT count() FROM driftline.llm_requests").column(0)[0].as_py()
    assert count == len(events) - 1


def test_alert_lifecycle_rows_and_current_state(store: ChdbStore) -> None:
    opened = {
        "alert_id": "a-1",
        "dedup_key": "drift:support-chat:input_tokens:b1",
        "kind": "drift",
        "severity": "error",
        "state": "open",
        "opened_at": 1_767_225_600_000_000,
        "resolved_at": None,
        "workflow": "support-chat",
        "metric": "input_tokens",
        "baseline_value": 900.0,
        "current_value": 1800.0,
        "score": 12.5,
        "threshold": 5.0,
        "bundle_id": "b1",
        "evidence": {"test": "cusum", "n_baseline": 500, "n_current": 200},
        "runbook_url": "https://runbooks/x",
        "dashboard_url": "http://grafana/d/x",
        "transition": "open",
        "event_ts": 1_767_225_600_000_000,
    }
    updated = dict(
        opened, transition="update", current_value=2000.0, event_ts=1_767_225_660_000_000
    )
    resolved = dict(
        opened,
        state="resolved",
        resolved_at=1_767_229_200_000_000,
        transition="resolve",
        event_ts=1_767_229_200_000_000,
    )
    sink = EventSink(store)
    sink.add("alerts", opened, ("llm_alerts", 0, 0))
    sink.flush()
    sink.add("alerts", opened, ("llm_alerts", 0, 0))  # re-delivered
    sink.add("alerts", updated, ("llm_alerts", 0, 1))
    sink.add("alerts", resolved, ("llm_alerts", 0, 2))
    sink.flush()
    log = store.query("SELECT transition, evidence FROM driftline.llm_alerts ORDER BY event_ts")
    assert log.column("transition").to_pylist() == ["open", "update", "resolve"]
    assert json.loads(log.column("evidence")[0].as_py())["test"] == "cusum"
    current = store.query("SELECT alert_id, state FROM driftline.llm_alerts_current").to_pylist()
    assert current == [{"alert_id": "a-1", "state": "resolved"}]
