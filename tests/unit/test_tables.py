"""Every table the code writes (schemas/tables.py) against DESCRIBE TABLE on a migrated store."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from driftline.config import StoreSettings
from driftline.schemas.event import Field
from driftline.schemas.tables import DELIVERIES, DELIVERY_OUTCOMES, WRITTEN_TABLES, Table, fits
from driftline.store import ChdbStore, open_store
from driftline.streams.notifier import records


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChdbStore]:
    store = open_store(f"chdb://{tmp_path_factory.mktemp('tables')}", StoreSettings())
    assert isinstance(store, ChdbStore)
    yield store
    store.close()


def _described(store: ChdbStore, table: str) -> list[dict[str, str]]:
    rows = store.query(f"DESCRIBE TABLE {table}").to_pylist()
    # computed columns (MATERIALIZED, ALIAS) are the engine's, never written
    return [row for row in rows if row["default_type"] in ("", "DEFAULT")]


def _mismatches(table: Table, described: list[dict[str, str]]) -> list[str]:
    """What differs between the code's columns and the store's, one line per difference."""
    problems = []
    names = [row["name"] for row in described]
    if list(table.columns) != names:
        only_code = [c for c in table.columns if c not in names]
        only_ddl = [c for c in names if c not in table.columns]
        problems.append(
            f"{table.name}: columns differ; only in schemas/tables.py: {only_code}, "
            f"only in the DDL: {only_ddl} (or the order differs)"
        )
    types = {row["name"]: row["type"] for row in described}
    for field in table.fields:
        if field.name in types and not fits(field, types[field.name]):
            problems.append(f"{table.name}.{field.name}: {field} stored as {types[field.name]}")
    return problems


@pytest.mark.parametrize("table", WRITTEN_TABLES, ids=lambda t: t.name)
def test_columns_match_the_migrated_table(store: ChdbStore, table: Table) -> None:
    assert _mismatches(table, _described(store, table.name)) == []


def test_a_column_added_on_one_side_only_is_reported(store: ChdbStore) -> None:
    described = _described(store, DELIVERIES.name)
    code_only = Table(DELIVERIES.name, (*DELIVERIES.fields, Field("region", "str")))
    ddl_only = [*described, {"name": "region", "type": "String", "default_type": ""}]
    assert "only in schemas/tables.py: ['region']" in _mismatches(code_only, described)[0]
    assert "only in the DDL: ['region']" in _mismatches(DELIVERIES, ddl_only)[0]
    nullable = [
        dict(r, type="Nullable(UInt16)") if r["name"] == "attempt" else r for r in described
    ]
    assert _mismatches(DELIVERIES, nullable) == [
        "driftline.alert_deliveries.attempt: Field(name='attempt', kind='int', nullable=False) "
        "stored as Nullable(UInt16)"
    ]


def test_delivery_outcomes_are_the_ones_documented_on_the_column(store: ChdbStore) -> None:
    comment = {
        r["name"]: r["comment"]
        for r in store.query(f"DESCRIBE TABLE {DELIVERIES.name}").to_pylist()
    }["outcome"]
    documented = tuple(re.findall(r"(?:^|\| )([a-z_]+) \(", comment))
    assert documented == DELIVERY_OUTCOMES
    # the notifier's constants are the same values
    assert {
        records.DELIVERED,
        records.RETRYING,
        records.FAILED_PERMANENT,
        records.GAVE_UP,
        records.UNROUTED,
        records.COALESCED,
    } == set(DELIVERY_OUTCOMES)
