"""The clickhouse-connect backend against ClickHouse's HTTP protocol served from chdb.

The server side is tests/utils/chdb_http.py: the real ClickHouse engine (chdb) behind the HTTP
interface. The same statements run through both backends and must give the same answers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import clickhouse_connect
import pytest

from driftline.cli import main
from driftline.config import StoreSettings
from driftline.schemas.event import TRACE_FIELDS, to_wire
from driftline.store import ChdbStore, Store, open_store
from driftline.store.migrations import migrate
from driftline.store.queries import load_query, query_names, query_params, run_query
from driftline.store.server_store import ServerStore
from driftline.streams.sink import EventSink
from tests.utils.chdb_http import ChdbHttpServer
from tests.utils.events import generate_traffic, reset_store

pytestmark = pytest.mark.integration

SETTINGS = StoreSettings(ttl_days=3650)
PARAMS = {
    "from": datetime(2026, 1, 1, tzinfo=UTC),
    "to": datetime(2026, 1, 2, tzinfo=UTC),
    "at": datetime(2026, 1, 2, tzinfo=UTC),
    "limit": 5,
    "budgets": {"support-chat": 100.0, "rag-search": 5.0},
    "environments": ["prod", "staging"],  # an Array(String) parameter through both backends
}


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChdbStore]:
    store = ChdbStore(tmp_path_factory.mktemp("chdb"))
    yield store
    store.close()


@pytest.fixture(scope="module")
def server(embedded: ChdbStore) -> Iterator[ChdbHttpServer]:
    with ChdbHttpServer(embedded.session) as http:
        yield http


@pytest.fixture
def remote(embedded: ChdbStore, server: ChdbHttpServer) -> Iterator[Store]:
    embedded.command("DROP DATABASE IF EXISTS driftline SYNC")
    store = open_store(f"clickhouse://default@127.0.0.1:{server.port}/driftline", SETTINGS)
    assert isinstance(store, ServerStore)
    yield store
    store.close()


def _rounded(value: object) -> object:
    # Float sums depend on the order parts are read in, which differs between two runs of
    # one query as much as between backends: compare to 9 significant digits.
    if isinstance(value, float):
        return float(f"{value:.9g}")
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def _run_library(store: Store) -> dict[str, list[dict[str, object]]]:
    out = {}
    for name in query_names():
        params = {k: PARAMS[k] for k in query_params(load_query(name))}
        rows = run_query(store, name, **params).to_pylist()
        out[name] = [{k: _rounded(v) for k, v in row.items()} for row in rows]
    return out


def test_server_store_creates_the_schema_once(remote: Store, embedded: ChdbStore) -> None:
    tables = embedded.query("SELECT count() FROM system.tables WHERE database = 'driftline'")
    assert tables.column(0)[0].as_py() == 22  # 19, plus engine_metrics, its rollup and view
    assert migrate(remote, SETTINGS.ttl_days) == []


def test_both_backends_store_and_answer_the_same(remote: Store, embedded: ChdbStore) -> None:
    events, traces = generate_traffic(400, seed=21)
    sink = EventSink(remote, batch_rows=500)
    for offset, event in enumerate(events):
        sink.add("events", event, ("llm_events", 0, offset))
        if sink.pending_rows >= sink.batch_rows:
            sink.flush()
    for trace in traces:
        sink.add("traces", trace)
    sink.flush()
    # a replay through the server: nothing changes
    for offset, event in enumerate(events[:300], start=5000):
        sink.add("events", event, ("llm_events", 0, offset))
    sink.flush()

    total = remote.query("SELECT count() AS n, sum(cost_usd) AS usd FROM driftline.llm_requests")
    assert total.column("n")[0].as_py() == len(events)
    assert total.column("usd")[0].as_py() == pytest.approx(sum(e["cost_usd"] for e in events))
    via_server = _run_library(remote)
    assert via_server == _run_library(embedded)
    assert all(via_server[name] for name in via_server)  # every query found rows


def test_clickhouse_connect_native_insert_path(remote: Store, server: ChdbHttpServer) -> None:
    client = clickhouse_connect.get_client(host="127.0.0.1", port=server.port)
    client.insert(
        "driftline.model_prices",
        [["openai", "gpt-4o", 2.5, 10.0, 1.25, 2.5, "config", datetime(2026, 1, 1, tzinfo=UTC)]],
        column_names=[
            "provider",
            "model",
            "input_per_mtok",
            "output_per_mtok",
            "cache_read_per_mtok",
            "cache_write_per_mtok",
            "source",
            "updated_at",
        ],
    )
    assert client.command("SELECT count() FROM driftline.model_prices") == 1
    rows = remote.query("SELECT model, input_per_mtok FROM driftline.model_prices").to_pylist()
    assert rows == [{"model": "gpt-4o", "input_per_mtok": 2.5}]
    client.close()


def test_load_and_sql_commands_against_a_server(
    remote: Store,
    server: ChdbHttpServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DRIFTLINE_STORE__TTL_DAYS", "3650")
    events, traces = generate_traffic(50, seed=4)
    events_file, traces_file = tmp_path / "events.ndjson", tmp_path / "traces.ndjson"
    events_file.write_text("".join(json.dumps(to_wire(e)) + "\n" for e in events))
    traces_file.write_text("".join(json.dumps(to_wire(t, TRACE_FIELDS)) + "\n" for t in traces))
    url = f"clickhouse://default@127.0.0.1:{server.port}/driftline"
    for _ in range(2):
        assert main(["load", str(events_file), "--traces", str(traces_file), "--store", url]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith(f"{len(events)} requests, {len(traces)} traces")
    assert out[1].endswith("0 requests, 0 traces")
    assert (
        main(
            [
                "sql",
                "SELECT count() AS n FROM driftline.llm_requests",
                "--format",
                "json",
                "--store",
                url,
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out) == {"n": len(events)}


def test_sql_reads_as_the_reader_user_and_writes_as_the_writer(
    remote: Store,
    server: ChdbHttpServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = tmp_path / "driftline.toml"
    config.write_text(
        f"""
[store]
url = "clickhouse://driftline_writer@127.0.0.1:{server.port}/driftline"
reader_url = "clickhouse://driftline_reader@127.0.0.1:{server.port}/driftline"
ttl_days = 3650
"""
    )
    monkeypatch.setenv("CLICKHOUSE_READER_PASSWORD", "reader-secret")
    monkeypatch.setenv("CLICKHOUSE_PASSWORD", "writer-secret")
    del server.users[:]
    assert main(["--config", str(config), "sql", "SELECT 1 AS one", "--format", "csv"]) == 0
    assert set(server.users) == {"driftline_reader"}
    del server.users[:]
    statement = "OPTIMIZE TABLE driftline.model_prices"
    assert main(["--config", str(config), "sql", statement, "--write"]) == 0
    assert set(server.users) == {"driftline_writer"}
    capsys.readouterr()


def test_reset_keeps_embedded_and_server_views_in_step(remote: Store, embedded: ChdbStore) -> None:
    reset_store(embedded)
    assert remote.query("SELECT count() AS n FROM driftline.llm_requests").column(0)[0].as_py() == 0


def test_read_only_open_of_a_current_store_sends_no_ddl(
    remote: Store, server: ChdbHttpServer
) -> None:
    first = len(server.requests)
    other_ttl = StoreSettings(ttl_days=30)  # differs from the store's: still no ALTER
    store = open_store(
        f"clickhouse://default@127.0.0.1:{server.port}/driftline", other_ttl, read_only=True
    )
    store.close()
    sent = server.requests[first:]
    assert sent, "the open should have read the migrations table"
    assert not [s for s in sent if s.lstrip().upper().startswith(("CREATE", "ALTER", "INSERT"))]


def test_a_query_cannot_pass_for_the_readers_refusal_by_quoting_its_code(remote: Store) -> None:
    """A server's read-only user may not EXPLAIN (code 164), so the reading check lets the
    server's grants decide then. The engine quotes a query's own text in other errors (an
    unknown setting's name, a literal cut at the size limit): that text must not count."""
    from driftline.commands.sql import reading_refusal
    from driftline.store import StoreQueryError

    reads_a_file = "SELECT * FROM file('/etc/hostname', 'LineAsString')"
    assert reading_refusal(remote, reads_a_file, {}) == (
        "file() reads outside the store; it runs only with --write"
    )
    with pytest.raises(StoreQueryError, match="Code: 115"):
        reading_refusal(remote, reads_a_file + " SETTINGS `Code: 164.` = 1", {})
