"""The store: migrations, Arrow inserts (embedded and through a server), parameters, errors,
chdb's one-path rule."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import clickhouse_connect
import pyarrow as pa
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from driftline.config import StoreSettings
from driftline.schemas.ddl import Migration, latest_version, load_migrations
from driftline.store import (
    ChdbPathInUseError,
    ChdbStore,
    MigrationChangedError,
    SchemaTooNewError,
    SkipExisting,
    Store,
    StoreInUseError,
    StoreQueryError,
    StoreUrlError,
    connect,
    open_store,
)
from driftline.store.chdb_store import held_by_another_process
from driftline.store.migrations import applied_versions, migrate
from driftline.store.server_store import ServerStore
from tests.utils.chdb_http import ChdbHttpServer
from tests.utils.events import reset_store

MIGRATIONS = "SELECT * FROM driftline.schema_migrations ORDER BY version"


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChdbStore]:
    path = tmp_path_factory.mktemp("chdb")
    store = open_store(f"chdb://{path}", StoreSettings(ttl_days=3650))
    assert isinstance(store, ChdbStore)
    yield store
    store.close()


@pytest.fixture
def store(shared_store: ChdbStore) -> ChdbStore:
    reset_store(shared_store)
    return shared_store


@pytest.fixture(params=["chdb", "server"])
def writer(request: pytest.FixtureRequest, store: ChdbStore) -> Iterator[Store]:
    """The store itself, or the same engine behind ClickHouse's HTTP interface."""
    if request.param == "chdb":
        yield store
        return
    with ChdbHttpServer(store.session) as server:
        remote = ServerStore(f"clickhouse://default@127.0.0.1:{server.port}", StoreSettings())
        yield remote
        remote.close()
        inserts = [s for s in server.requests if s.startswith("INSERT")]
        # what production sends is what the engine ran: no input(), a format the body is in
        assert inserts and all(s.endswith("\nFORMAT ArrowStream") for s in inserts)
        assert not any("input(" in s for s in inserts)


def _schema(store: ChdbStore) -> dict[str, str]:
    table = store.query(
        "SELECT name, create_table_query FROM system.tables WHERE database = 'driftline'"
    )
    return dict(zip(table.column(0).to_pylist(), table.column(1).to_pylist(), strict=True))


def test_open_store_creates_every_table_and_view(store: ChdbStore) -> None:
    names = set(_schema(store))
    expected = {
        "llm_requests_raw",
        "llm_requests",
        "llm_traces_raw",
        "llm_traces",
        "llm_alerts_log",
        "llm_alerts",
        "llm_alerts_current",
        "alert_deliveries",
        "workflow_baselines",
        "model_prices",
        "engine_metrics",
        "schema_migrations",
    }
    expected |= {f"rollup_{d}_1m" for d in ("workflow", "model", "route", "tenant", "engine")}
    expected |= {f"rollup_{d}_1m_mv" for d in ("workflow", "model", "route", "tenant", "engine")}
    assert names == expected
    assert sorted(applied_versions(store)) == list(range(1, latest_version() + 1))


def test_applying_twice_changes_nothing(store: ChdbStore) -> None:
    before = _schema(store)
    migrations_before = store.query(MIGRATIONS).to_pylist()
    assert migrate(store, 3650) == []
    assert _schema(store) == before
    assert store.query(MIGRATIONS).to_pylist() == migrations_before


def test_ttl_comes_from_settings(store: ChdbStore) -> None:
    ddl = _schema(store)["llm_requests_raw"]
    assert "toIntervalDay(3650)" in ddl
    reset_store(store, ttl_days=30)
    assert "toIntervalDay(30)" in _schema(store)["llm_requests_raw"]
    # a changed setting reaches existing tables at the next start
    assert migrate(store, 45) == []
    schema = _schema(store)
    with_ttl = [name for name, ddl in schema.items() if " TTL " in ddl]
    assert len(with_ttl) == 11
    assert all("toIntervalDay(45)" in schema[name] for name in with_ttl)
    assert migrate(store, 45) == []
    assert _schema(store) == schema


def test_newer_schema_than_code_is_refused(store: ChdbStore) -> None:
    future = latest_version() + 1
    store.command(
        "INSERT INTO driftline.schema_migrations VALUES"
        f" ({future}, 'from_the_future', 'x', now64(6))"
    )
    with pytest.raises(SchemaTooNewError, match=rf"schema version {future}.*upgrade driftline"):
        migrate(store, 3650)


def test_edited_migration_is_refused(store: ChdbStore) -> None:
    migrations = load_migrations()
    first = migrations[0]
    edited = Migration(first.version, first.name, first.text + "\n-- edited\n")
    with pytest.raises(MigrationChangedError, match=r"0001_init\.sql changed"):
        migrate(store, 3650, [edited, *migrations[1:]])


def test_insert_arrow_skips_keys_already_stored(store: ChdbStore, writer: Store) -> None:
    ts = pa.timestamp("us", "UTC")
    rows = pa.table(
        {
            "provider": ["openai", "openai"],
            "model": ["a", "b"],
            "input_per_mtok": [1.0, 2.0],
            "output_per_mtok": [1.0, 2.0],
            "cache_read_per_mtok": [0.5, 1.0],
            "cache_write_per_mtok": [1.0, 2.0],
            "source": ["config", "config"],
            "updated_at": pa.array([datetime(2026, 1, 1, tzinfo=UTC)] * 2, ts),
        }
    )
    skip = SkipExisting(("provider", "model", "updated_at"), "updated_at")
    writer.insert_arrow("driftline.model_prices", rows.slice(0, 1), skip_existing=skip)
    writer.insert_arrow("driftline.model_prices", rows, skip_existing=skip)
    writer.insert_arrow("driftline.model_prices", rows, skip_existing=skip)  # nothing new
    stored = store.query("SELECT model FROM driftline.model_prices ORDER BY model")
    assert stored.column(0).to_pylist() == ["a", "b"]
    # the raw table holds each row once, before any merge
    assert store.query("SELECT count() FROM driftline.model_prices").column(0)[0].as_py() == 2


def test_dedup_token_drops_a_repeated_insert(store: ChdbStore, writer: Store) -> None:
    row = pa.table(
        {
            "alert_id": ["a1"],
            "dedup_key": ["k"],
            "event_action": ["trigger"],
            "attempt": [1],
            "status_code": [202],
            "outcome": ["delivered"],
            "error": [""],
            "latency_ms": [12.5],
            "sent_at": pa.array([datetime(2026, 1, 1, tzinfo=UTC)], pa.timestamp("us", "UTC")),
            "target": ["pagerduty"],
        }
    )
    writer.insert_arrow("driftline.alert_deliveries", row, "deliveries:0:1-1")
    writer.insert_arrow("driftline.alert_deliveries", row, "deliveries:0:1-1")
    retry = row.set_column(3, "attempt", pa.array([2], pa.int64()))
    writer.insert_arrow("driftline.alert_deliveries", retry, "deliveries:0:2-2")
    count = store.query("SELECT count() FROM driftline.alert_deliveries").column(0)[0].as_py()
    assert count == 2


def test_query_parameters_round_trip(store: ChdbStore) -> None:
    result = store.query(
        "SELECT {at:DateTime64(6)} AS at, {budgets:Map(String, Float64)}['it''s'] AS budget,"
        " {name:String} AS name, {n:UInt32} + 1 AS n",
        {
            "at": datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC),
            "budgets": {"it's": 12.5, "other": 1.0},
            "name": "back\\slash 'quoted'",
            "n": 41,
        },
    ).to_pylist()[0]
    assert result["at"] == datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    assert result["budget"] == 12.5
    assert result["name"] == "back\\slash 'quoted'"
    assert result["n"] == 42


def test_bad_sql_is_a_query_error(store: ChdbStore) -> None:
    with pytest.raises(StoreQueryError, match=r"UNKNOWN_TABLE|does not exist"):
        store.query("SELECT * FROM driftline.no_such_table")


def test_second_chdb_path_in_one_process_is_refused(store: ChdbStore, tmp_path: Path) -> None:
    with pytest.raises(ChdbPathInUseError, match="one data path per process"):
        ChdbStore(tmp_path / "other")
    # the same path shares the open session, and closing it leaves the first one working
    again = ChdbStore(store.path)
    again.close()
    assert store.query("SELECT 1 AS one").column(0)[0].as_py() == 1


@pytest.mark.parametrize(
    "url",
    ["postgres://x", "chdb://", "clickhouse://u:secret@host/driftline", "clickhouse://h/other"],
)
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(StoreUrlError):
        connect(url, StoreSettings(url="chdb://var/chdb"))


ROOT = Path(__file__).resolve().parents[2]
# A second process that holds a store open until told to stop, as `driftline up` would.
_HOLDER = """
import sys
from driftline.store import ChdbStore
store = ChdbStore(sys.argv[1])
store.query("SELECT 1")
print("ready", flush=True)
sys.stdin.readline()
store.close()
"""


def test_a_path_held_by_another_process_is_refused_clearly(
    store: ChdbStore, tmp_path: Path
) -> None:
    held = tmp_path / "held"
    assert held_by_another_process(held) is None
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(held)],
        cwd=ROOT,
        text=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "ready"
        assert f"PID: {holder.pid}" in (held_by_another_process(held) or "")
        message = rf"in use by another driftline process \(PID: {holder.pid}.*driftline up"
        with pytest.raises(StoreInUseError, match=message):
            ChdbStore(held)
        with pytest.raises(StoreInUseError, match="stop that process first"):
            open_store(f"chdb://{held}")
    finally:
        holder.communicate("stop\n", timeout=60)
    assert holder.returncode == 0
    # Released: what stops this process now is only its own store on another path.
    assert held_by_another_process(held) is None
    with pytest.raises(ChdbPathInUseError):
        ChdbStore(held)
    assert store.query("SELECT 1 AS one").column(0)[0].as_py() == 1


def test_the_test_server_refuses_insert_settings_it_would_not_apply(store: ChdbStore) -> None:
    # chdb streams an insert without per-request settings: a dedup token sent in the URL would
    # be dropped here and honoured by a server, so the test server must not accept it.
    with ChdbHttpServer(store.session) as server:
        client = clickhouse_connect.get_client(host="127.0.0.1", port=server.port)
        row = pa.table({"provider": ["openai"], "model": ["a"]})
        with pytest.raises(DatabaseError, match="put them in the statement"):
            client.insert_arrow(
                "driftline.model_prices", row, settings={"insert_deduplication_token": "t1"}
            )
        client.insert_arrow("driftline.model_prices", row)
        client.close()
    assert store.query("SELECT count() FROM driftline.model_prices").column(0)[0].as_py() == 1
