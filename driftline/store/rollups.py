"""Rollups made whole again after an insert that was cut off.

An insert into ``llm_requests_raw`` writes the raw part and then one part per materialized
view (the per-minute rollups), each committed on its own. A worker killed in between leaves
the spans in the raw table and missing from some or all rollups. The batch is read again
(its offsets were not committed) and the sink skips the spans already stored, so that no
rollup counts a span twice; the rollups that missed them would stay short for good.

So the sink asks which (workflow, minute) of a batch are already stored before it inserts
(:func:`stored_minutes`); when there are any, it recomputes those keys of every rollup fed
from the table from the deduplicated rows once the insert is done (:func:`rebuild_rollups`):
delete them, insert them again from ``FINAL`` through the view's own query. That is exact
whatever part of the first insert landed, and a crash during it is repaired the same way by
the next delivery. Rows of a workflow come through one ``llm_events`` partition, so one sink
writes them and nothing else adds to those keys meanwhile.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

import pyarrow as pa
import pyarrow.compute as pc

from driftline.store.base import (
    SkipExisting,
    Store,
    check_identifier,
    sql_literal,
    stored_keys_statement,
)

__all__ = ["RollupView", "rebuild_rollups", "rollup_views", "stored_minutes"]

MinuteKey = tuple[str, int]  # workflow, minute as Unix seconds
_MINUTE: Final = "toUInt32(toStartOfMinute(start_ts))"
# The keys one statement lists, as SQL text: a backlog sent again (6,400 minutes of one
# workflow) made a statement past the server's max_query_size (256 KiB), which failed on
# every retry and held the sink for good. A key longer than this alone is not rebuilt.
MAX_KEYS_SQL_CHARS: Final = 64 * 1024


@dataclass(frozen=True, slots=True)
class RollupView:
    """A materialized view from the source table into a rollup keyed by workflow and minute."""

    view: str
    target: str
    columns: tuple[str, ...]  # the target's columns, in order
    select: str  # the view's query


def stored_minutes(
    store: Store, table_name: str, data: pa.Table, skip_existing: SkipExisting
) -> set[MinuteKey]:
    """(workflow, minute) of the rows of ``data`` whose key is already in ``table_name``: the
    keys an earlier, cut-off insert of the same rows may have left short in the rollups."""
    if data.num_rows == 0:
        return set()
    names = list(skip_existing.key)
    stored = store.query(stored_keys_statement(table_name, data, skip_existing))
    if stored.num_rows == 0:
        return set()
    keys = data.select(names)
    found = keys.join(stored.select(names).cast(keys.schema), keys=names, join_type="left semi")
    minutes = pc.multiply(
        pc.divide(found.column("start_ts").cast(pa.int64()), pa.scalar(60_000_000, pa.int64())),
        pa.scalar(60, pa.int64()),
    )
    pairs = (
        pa.table({"w": found.column("workflow"), "m": minutes}).group_by(["w", "m"]).aggregate([])
    )
    return {(str(w), int(m)) for w, m in zip(*pairs.to_pydict().values(), strict=True)}


def rollup_views(store: Store, table_name: str) -> list[RollupView]:
    """Materialized views reading ``table_name`` into a table with workflow and minute."""
    database = check_identifier(table_name).split(".")[0]
    source = re.compile(rf"\bFROM {re.escape(table_name)}\b")
    views = store.query(
        "SELECT name, as_select, create_table_query FROM system.tables"
        " WHERE database = {db:String} AND engine = 'MaterializedView' ORDER BY name",
        {"db": database},
    ).to_pylist()
    out = []
    for view in views:
        target = re.search(r"\bTO (\w+\.\w+)", str(view["create_table_query"]))
        if target is None or not source.search(str(view["as_select"])):
            continue
        target_db, target_table = target.group(1).split(".")
        columns = tuple(
            store.query(
                "SELECT name FROM system.columns WHERE database = {db:String}"
                " AND table = {t:String} ORDER BY position",
                {"db": target_db, "t": target_table},
            )
            .column("name")
            .to_pylist()
        )
        if {"workflow", "minute"} <= set(columns):
            name = f"{database}.{view['name']}"
            out.append(RollupView(name, target.group(1), columns, view["as_select"]))
    return out


def key_chunks(keys: set[MinuteKey]) -> tuple[list[list[MinuteKey]], list[MinuteKey]]:
    """``keys`` in sorted chunks whose SQL list stays within :data:`MAX_KEYS_SQL_CHARS`, and
    the keys too long for any.

    >>> chunks, too_long = key_chunks({("a", 60), ("b", 0), ("x" * 70_000, 0)})
    >>> chunks, [(w[:3], m) for w, m in too_long]
    ([[('a', 60), ('b', 0)]], [('xxx', 0)])
    """
    chunks: list[list[MinuteKey]] = []
    too_long: list[MinuteKey] = []
    size = MAX_KEYS_SQL_CHARS + 1
    for key in sorted(keys):
        length = len(_pair(key)) + 2
        if length > MAX_KEYS_SQL_CHARS:
            too_long.append(key)
            continue
        if size + length > MAX_KEYS_SQL_CHARS:
            chunks.append([])
            size = 0
        chunks[-1].append(key)
        size += length
    return chunks, too_long


def _pair(key: MinuteKey) -> str:
    return f"({sql_literal(key[0])}, {int(key[1])})"


def rebuild_statements(view: RollupView, table_name: str, keys: set[MinuteKey]) -> list[str]:
    """Delete ``keys`` (at most :data:`MAX_KEYS_SQL_CHARS` of them as SQL) from the view's
    rollup and insert them again from ``FINAL`` rows.

    >>> view = RollupView("db.r_mv", "db.r", ("minute", "workflow", "requests"),
    ...     "SELECT toStartOfMinute(r.start_ts) AS minute, r.workflow AS workflow, "
    ...     "count() AS requests FROM db.raw AS r GROUP BY minute, workflow")
    >>> delete, insert = rebuild_statements(view, "db.raw", {("it's", 60)})
    >>> print(delete)
    DELETE FROM db.r WHERE (workflow, toUInt32(minute)) IN (('it\\'s', 60))
    >>> insert.startswith("INSERT INTO db.r (minute, workflow, requests) SELECT")
    True
    >>> "count() AS requests FROM (SELECT * FROM db.raw FINAL WHERE start_ts >=" in insert
    True
    """
    if not keys:
        return []
    pairs = ", ".join(_pair(key) for key in sorted(keys))
    low = min(m for _, m in keys)
    high = max(m for _, m in keys) + 60
    rows = (
        f"(SELECT * FROM {table_name} FINAL WHERE start_ts >= toDateTime({low}, 'UTC')"
        f" AND start_ts < toDateTime({high}, 'UTC') AND (workflow, {_MINUTE}) IN ({pairs}))"
    )
    alias = re.search(rf"\bFROM {re.escape(table_name)}(?: AS (\w+))?", view.select)
    assert alias is not None  # rollup_views() kept only views reading the table
    name = alias.group(1) or table_name.split(".")[1]
    select = view.select[: alias.start()] + f"FROM {rows} AS {name}" + view.select[alias.end() :]
    columns = ", ".join(check_identifier(c) for c in view.columns)
    return [
        f"DELETE FROM {view.target} WHERE (workflow, toUInt32(minute)) IN ({pairs})",
        f"INSERT INTO {view.target} ({columns}) SELECT {columns} FROM ({select})"
        " SETTINGS do_not_merge_across_partitions_select_final = 1",
    ]


def rebuild_rollups(store: Store, table_name: str, keys: set[MinuteKey]) -> list[MinuteKey]:
    """Recompute ``keys`` in every rollup fed from ``table_name``, a chunk of them per
    statement; returns the keys too long to list in one (not recomputed)."""
    if not keys:
        return []
    chunks, too_long = key_chunks(keys)
    views = rollup_views(store, table_name)
    for view in views:
        for chunk in chunks:
            for statement in rebuild_statements(view, table_name, set(chunk)):
                store.command(statement)
    return too_long
