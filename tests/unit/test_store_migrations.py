"""Schema upgrades on a store that already holds data: 0003 (environment in the rollups),
0004 (delivery-log column comments) and 0006 (the delivery log keyed by route).

The rollups are compared as a whole: every key and every counter of the four per-minute
tables, plus the latency and TTFT percentiles, on a store built with 0001-0004 from the start
and on one that took traffic under 0001-0002 and was upgraded.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, get_args

import pyarrow as pa
import pytest

from driftline.config import StoreSettings
from driftline.schemas.ddl import load_migrations
from driftline.schemas.tables import DELIVERIES
from driftline.store import ChdbStore, open_store
from driftline.store.migrations import applied_versions, migrate
from driftline.streams.notifier.records import Outcome
from driftline.streams.sink import EventSink
from tests.utils.events import generate_traffic

ROLLUPS = {
    "rollup_workflow_1m": ("workflow",),
    "rollup_model_1m": ("workflow", "model"),
    "rollup_route_1m": ("workflow", "route"),
    "rollup_tenant_1m": ("tenant", "workflow"),
}
COUNTERS = (
    "requests",
    "errors",
    "validation_failures",
    "retries",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "unpriced",
)
ENVIRONMENTS = ("prod", "staging", "dev")
HOUR_US = 3_600_000_000


def _traffic(seed: int, start_us: int) -> list[dict[str, Any]]:
    """Seeded events over one hour, each trace in one of three environments."""
    events, _ = generate_traffic(150, seed=seed, start_us=start_us)
    for e in events:
        e["environment"] = ENVIRONMENTS[int(e["trace_id"], 16) % len(ENVIRONMENTS)]
    return events


BEFORE = _traffic(3, 1_767_225_600_000_000)  # stored under 0001-0002
AFTER = _traffic(4, 1_767_225_600_000_000 + HOUR_US)  # arrives once 0003 is applied


def _write(store: ChdbStore, events: list[dict[str, Any]], first_offset: int) -> None:
    sink = EventSink(store, batch_rows=200)
    for offset, event in enumerate(events, start=first_offset):
        sink.add("events", event, ("llm_events", 0, offset))
        if sink.pending_rows >= sink.batch_rows:
            sink.flush()
    sink.flush()


def rollup_contents(store: ChdbStore) -> dict[str, list[dict[str, Any]]]:
    """Every rollup, merged per key: counters exact, cost and percentiles rounded."""
    contents = {}
    for table, keys in ROLLUPS.items():
        group = ", ".join(("minute", *keys, "environment"))
        sums = ", ".join(f"sum({c}) AS {c}" for c in COUNTERS)
        rows = store.query(
            f"""SELECT {group}, {sums}, round(sum(cost_usd), 9) AS cost_usd,
                   arrayMap(x -> round(x, 6),
                            quantilesTDigestMerge(0.5, 0.95, 0.99)(latency_ms_q)) AS latency,
                   arrayMap(x -> round(x, 6),
                            quantilesTDigestMerge(0.5, 0.95, 0.99)(ttft_ms_q)) AS ttft
            FROM driftline.{table} GROUP BY {group} ORDER BY {group}"""
        ).to_pylist()
        contents[table] = rows
    return contents


def raw_totals(store: ChdbStore) -> list[dict[str, Any]]:
    return store.query(
        """SELECT environment, count() AS requests, round(sum(ifNull(cost_usd, 0)), 9) AS cost
        FROM driftline.llm_requests GROUP BY environment ORDER BY environment"""
    ).to_pylist()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChdbStore]:
    opened = open_store(f"chdb://{tmp_path_factory.mktemp('chdb')}", StoreSettings(ttl_days=3650))
    assert isinstance(opened, ChdbStore)
    yield opened
    opened.close()


def _fresh(store: ChdbStore, versions: int | None = None) -> None:
    store.command("DROP DATABASE IF EXISTS driftline SYNC")
    migrate(store, 3650, load_migrations()[:versions])


@pytest.fixture(scope="module")
def from_the_start(store: ChdbStore) -> dict[str, Any]:
    """Rollups of a store that had environment in them from the first row."""
    _fresh(store)
    _write(store, BEFORE, 0)
    _write(store, AFTER, 10_000)
    return {"rollups": rollup_contents(store), "raw": raw_totals(store)}


def test_upgrade_with_data_gives_the_rollups_of_a_fresh_schema(
    store: ChdbStore, from_the_start: dict[str, Any]
) -> None:
    _fresh(store, versions=2)
    _write(store, BEFORE, 0)
    assert migrate(store, 3650) == [m.version for m in load_migrations()[2:]]  # 3, 4, ...
    _write(store, BEFORE, 0)  # re-delivered after the upgrade: filtered, as before it
    _write(store, AFTER, 10_000)
    upgraded = rollup_contents(store)
    assert upgraded == from_the_start["rollups"]
    assert raw_totals(store) == from_the_start["raw"]
    # and the rollups agree with the raw rows, environment by environment
    per_environment = store.query(
        """SELECT environment, sum(requests) AS requests, round(sum(cost_usd), 9) AS cost
        FROM driftline.rollup_model_1m GROUP BY environment ORDER BY environment"""
    ).to_pylist()
    assert per_environment == from_the_start["raw"]
    assert [r["environment"] for r in per_environment] == sorted(ENVIRONMENTS)


def test_upgrade_interrupted_and_applied_again_changes_nothing(
    store: ChdbStore, from_the_start: dict[str, Any]
) -> None:
    _fresh(store, versions=2)
    _write(store, BEFORE, 0)
    upgrade = load_migrations()[2]
    statements = upgrade.statements(3650)
    # stop halfway through the second rollup (its old table dropped, the new one not renamed)
    halfway = next(
        i for i, s in enumerate(statements) if "RENAME TABLE driftline.rollup_model" in s
    )
    for statement in statements[:halfway]:
        store.command(statement)
    assert migrate(store, 3650) == [m.version for m in load_migrations()[2:]]  # 3, 4, ...
    _write(store, AFTER, 10_000)
    assert rollup_contents(store) == from_the_start["rollups"]
    for statement in statements:  # and a whole second run rebuilds the same thing
        store.command(statement)
    assert rollup_contents(store) == from_the_start["rollups"]
    tables = store.query("SELECT name FROM system.tables WHERE database = 'driftline'")
    assert not [n for n in tables.column(0).to_pylist() if n.endswith("_next")]


def test_rollups_are_keyed_by_environment(store: ChdbStore) -> None:
    _fresh(store)
    rows = store.query(
        "SELECT name, sorting_key FROM system.tables"
        " WHERE database = 'driftline' AND has({names:Array(String)}, name)",
        {"names": list(ROLLUPS)},
    ).to_pylist()
    keys = {r["name"]: r["sorting_key"] for r in rows}
    assert keys == {
        table: ", ".join((*dims, "environment", "minute")) for table, dims in ROLLUPS.items()
    }
    assert sorted(applied_versions(store)) == [m.version for m in load_migrations()]


def test_delivery_outcomes_documented_as_the_notifier_writes_them(store: ChdbStore) -> None:
    _fresh(store)
    rows = store.query(
        "SELECT name, comment FROM system.columns"
        " WHERE database = 'driftline' AND table = 'alert_deliveries'"
    ).to_pylist()
    comments = {r["name"]: r["comment"] for r in rows}
    outcome = comments["outcome"]
    documented = re.findall(r"(?:^|\| )([a-z_]+) \(", outcome)
    assert documented == list(get_args(Outcome))
    assert "0 when no response" in comments["status_code"]


def _deliveries(sent_at: datetime) -> pa.Table:
    """One trigger's first attempt, sent to two routes in the same microsecond."""
    rows = [
        {
            "alert_id": "a1",
            "dedup_key": "k1",
            "event_action": "trigger",
            "attempt": 1,
            "status_code": code,
            "outcome": outcome,
            "error": "",
            "latency_ms": 12.5,
            "sent_at": sent_at,
            "target": target,
        }
        for target, code, outcome in (
            ("pagerduty@events.pagerduty.com", 202, "delivered"),
            ("chat@hooks.example.com", 503, "retrying"),
        )
    ]
    return pa.Table.from_pylist(rows).select(list(DELIVERIES.columns))


def _stored_deliveries(store: ChdbStore) -> list[tuple[str, str]]:
    store.command("OPTIMIZE TABLE driftline.alert_deliveries FINAL")
    rows = store.query(
        "SELECT target, outcome FROM driftline.alert_deliveries ORDER BY target"
    ).to_pylist()
    return [(r["target"], r["outcome"]) for r in rows]


BOTH_ROUTES = [
    ("chat@hooks.example.com", "retrying"),
    ("pagerduty@events.pagerduty.com", "delivered"),
]


def test_one_attempt_to_two_routes_keeps_both_records(store: ChdbStore) -> None:
    _fresh(store, versions=5)
    sent_at = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
    store.insert_arrow(DELIVERIES.name, _deliveries(sent_at))
    before = _stored_deliveries(store)
    assert len(before) == 1  # the old key: one route's record collapsed away at insert
    upgrade = load_migrations()[5]
    statements = upgrade.statements(3650)
    # interrupted right after the swap, before the old table was dropped, then applied again
    swap = next(i for i, s in enumerate(statements) if s.startswith("EXCHANGE TABLES"))
    for statement in statements[: swap + 1]:
        store.command(statement)
    assert migrate(store, 3650) == [m.version for m in load_migrations()[5:]]  # 6, ...
    assert _stored_deliveries(store) == before  # copied once, across the swap and the re-run
    store.command("TRUNCATE TABLE driftline.alert_deliveries")
    store.insert_arrow(DELIVERIES.name, _deliveries(sent_at))
    assert _stored_deliveries(store) == BOTH_ROUTES
    keys = store.query(
        "SELECT sorting_key FROM system.tables"
        " WHERE database = 'driftline' AND name = 'alert_deliveries'"
    ).column(0)
    assert keys.to_pylist() == ["alert_id, event_action, attempt, target, sent_at"]
    tables = store.query("SELECT name FROM system.tables WHERE database = 'driftline'")
    assert "alert_deliveries_next" not in tables.column(0).to_pylist()
