"""Batch normalized records into columnar inserts: the ClickHouse sink, without Faust.

Callers hand each record to :meth:`EventSink.add` (with the Kafka position it came from, if
any) and call :meth:`EventSink.flush` when :attr:`EventSink.pending_rows` reaches
``batch_rows`` or their own timer says so. The stream agents flush before they return a batch,
so Faust commits only offsets whose records are stored (streams/stages.py); ``driftline load``
adds records with no position.

Idempotent: duplicates inside a batch collapse on the natural key; each insert carries a dedup
token derived from its Kafka positions (or from its content) and skips keys already stored, so
a re-delivered span is counted once in every table and rollup (schemas/ddl/0001_init.sql).

When the store is down, :meth:`flush` keeps what it could not write and re-raises; the caller
retries (``streams.stages.flush_until_stored`` backs off on :attr:`EventSink.failures` and
takes no new messages meanwhile, which bounds what the sink holds).

What can never be stored does not hold the rest back. A batch is split so that no insert spans
more partitions (days, or months for alerts: ``TableSpec.partition_by``, as the DDL's
``PARTITION BY``) than ClickHouse's ``max_partitions_per_insert_block`` allows. An insert the
store refuses for its values (:class:`~driftline.store.base.StoreRejectedRowsError`) is bisected
down to the offending rows; they, and records that do not convert, are set aside with a reason
(:meth:`EventSink.take_rejected`) and the rest is stored. Every split and half carries a token
derived from the batch's token and its own place in the batch, so a batch written again after a
restart splits the same way and each piece is dropped as a repeat.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, Final, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from driftline.schemas.event import Field
from driftline.schemas.tables import ALERTS_LOG, REQUESTS, TRACES
from driftline.store import SkipExisting, Store, StoreError
from driftline.store.base import StoreRejectedRowsError
from driftline.store.rollups import rebuild_rollups, stored_minutes
from driftline.streams.histogram import Histogram
from driftline.streams.positions import offsets_token

RecordKind = Literal["events", "traces", "alerts"]
KINDS: Final[tuple[RecordKind, ...]] = ("events", "traces", "alerts")
TopicPartition = tuple[str, int]
Position = tuple[str, int, int]  # topic, partition, offset
PartitionUnit = Literal["day", "month"]

# ClickHouse's default max_partitions_per_insert_block; a server set lower is met by bisection.
MAX_PARTITIONS_PER_INSERT: Final = 100
# One sink's write: chdb takes about 1M rows/s from Arrow, a server a round trip more; the
# retries of a store that is down wait outside the attempt.
STORE_WRITE_BUCKETS_S: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(frozen=True, slots=True)
class TableSpec:
    table: str
    fields: tuple[Field, ...]
    key: tuple[str, ...]  # natural key: later records with the same key replace earlier ones
    # the DDL's PARTITION BY: toYYYYMMDD(column) is "day", toYYYYMM(column) is "month"; the
    # rollups fed by a table's materialized views share its days
    partition_by: tuple[str, PartitionUnit]
    skip_existing: SkipExisting | None = None
    json_fields: tuple[str, ...] = ()  # str columns that may arrive as dicts: stored as JSON


TABLES: Final[dict[RecordKind, TableSpec]] = {
    "events": TableSpec(
        REQUESTS.name,
        REQUESTS.fields,
        ("workflow", "start_ts", "span_id"),
        ("start_ts", "day"),
        SkipExisting(("workflow", "start_ts", "span_id"), "start_ts"),
    ),
    "traces": TableSpec(TRACES.name, TRACES.fields, ("trace_id",), ("start_ts", "day")),
    "alerts": TableSpec(
        ALERTS_LOG.name,
        ALERTS_LOG.fields,
        ("alert_id", "event_ts", "transition"),
        ("opened_at", "month"),
        json_fields=("evidence",),  # a nested dict in the record, a str column in the table
    ),
}
# Identifiers a dead letter may carry for each kind (never content).
_ID_FIELDS: Final[dict[RecordKind, tuple[str, ...]]] = {
    "events": ("workflow", "trace_id", "span_id", "start_ts"),
    "traces": ("workflow", "trace_id", "start_ts"),
    "alerts": ("alert_id", "dedup_key", "transition", "event_ts"),
}
# DateTime64(6)'s range: ClickHouse stores a value outside it as some other time, silently.
_MIN_TS_US: Final = -2_208_988_800_000_000  # 1900-01-01
_MAX_TS_US: Final = 10_413_792_000_000_000 - 1  # 2299-12-31 23:59:59.999999
# A table's TTL (and its rollups' minute) is a 32-bit DateTime: past 2106-02-07 06:28:15 it
# wraps to 1970 and ClickHouse drops the row at once, as it drops one already past its TTL.
_DATETIME_MAX_US: Final = 4_294_967_295_000_000
_TTL: Final = re.compile(r"TTL toDateTime\((\w+)\) \+ toIntervalDay\((\d+)\)")
_REASON_CHARS: Final = 300

_ARROW_TYPES: Final[dict[str, pa.DataType]] = {
    "str": pa.string(),
    "int": pa.int64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
    "ts": pa.int64(),  # microseconds; cast to timestamp after building
    "map": pa.map_(pa.string(), pa.string()),
}
_TIMESTAMP: Final = pa.timestamp("us", tz="UTC")


def _key_getter(key: tuple[str, ...]) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    if len(key) > 1:
        return itemgetter(*key)
    name = key[0]  # itemgetter of one key returns the value, not a 1-tuple

    def one(record: Mapping[str, Any]) -> tuple[Any, ...]:
        return (record[name],)

    return one


_KEY_GETTERS: Final = {kind: _key_getter(spec.key) for kind, spec in TABLES.items()}
_CONVERSION_ERRORS: Final = (
    pa.ArrowInvalid,
    pa.ArrowTypeError,
    TypeError,
    ValueError,
    OverflowError,
)


def to_arrow(records: Iterable[Mapping[str, Any]], fields: tuple[Field, ...]) -> pa.Table:
    """Records (internal form: timestamps in microseconds) as an Arrow table of ``fields``.

    >>> fields = (TRACES.fields[0], TRACES.fields[7])
    >>> t = to_arrow([{"trace_id": "t1", "start_ts": 1_000_000}], fields)
    >>> t.column("start_ts").to_pylist()[0].isoformat()
    '1970-01-01T00:00:01+00:00'
    """
    rows = records if isinstance(records, list) else list(records)
    struct = pa.struct([pa.field(f.name, _ARROW_TYPES[f.kind]) for f in fields])
    try:
        # One pass in pyarrow's C++ converter: about 5x faster than building column lists.
        table = pa.Table.from_struct_array(pa.array(rows, type=struct))
    except _CONVERSION_ERRORS:
        return _to_arrow_by_column(rows, fields)  # e.g. attribute values that are not strings
    for i, f in enumerate(fields):
        if f.kind == "ts":
            table = table.set_column(i, f.name, table.column(i).cast(_TIMESTAMP))
    return table


def _to_arrow_by_column(rows: list[Mapping[str, Any]], fields: tuple[Field, ...]) -> pa.Table:
    columns = []
    for f in fields:
        name = f.name
        values = [r.get(name) for r in rows]
        if f.kind == "map":
            values = [_map_items(v) for v in values]
        array = pa.array(values, type=_ARROW_TYPES[f.kind], from_pandas=False)
        if f.kind == "ts":
            array = array.cast(_TIMESTAMP)
        columns.append(array)
    return pa.Table.from_arrays(columns, names=[f.name for f in fields])


def _map_items(value: Any) -> list[tuple[str, str]]:
    if not value:
        return []
    if not isinstance(value, Mapping):
        raise TypeError(f"a map column needs a mapping, got {type(value).__name__}")
    return [(str(k), v if isinstance(v, str) else str(v)) for k, v in value.items()]


def _with_json(record: Mapping[str, Any], names: tuple[str, ...]) -> Mapping[str, Any]:
    if all(isinstance(record.get(n), str | None) for n in names):
        return record
    out = dict(record)
    for n in names:
        if not isinstance(out.get(n), str | None):
            out[n] = json.dumps(out[n], sort_keys=True, default=str)
    return out


@dataclass(slots=True)
class _Buffer:
    rows: dict[tuple[Any, ...], Mapping[str, Any]] = field(default_factory=dict)
    # [lowest, highest] offset per topic-partition among the rows held: the insert's dedup token
    bounds: dict[TopicPartition, list[int]] = field(default_factory=dict)
    positions: dict[tuple[Any, ...], Position] = field(default_factory=dict)  # of each row


@dataclass(frozen=True, slots=True)
class RejectedRecord:
    """A record the store can never take, why, and the Kafka position it came from.

    Unpacks as the ``(kind, record, reason)`` triple that readers of :attr:`EventSink.rejected`
    iterate over.
    """

    kind: RecordKind
    record: Mapping[str, Any] = field(repr=False)  # content: never in a log line by accident
    reason: str = ""
    position: Position | None = None

    def __iter__(self) -> Any:
        return iter((self.kind, self.record, self.reason))

    @property
    def ids(self) -> dict[str, str]:
        """What identifies the record (workflow, trace and span ids, time), never its content.

        >>> RejectedRecord("traces", {"trace_id": "t1", "workflow": "w", "cost_usd": 1.0}, "x").ids
        {'workflow': 'w', 'trace_id': 't1'}
        """
        return {
            name: str(self.record[name])
            for name in _ID_FIELDS[self.kind]
            if self.record.get(name) is not None
        }

    @property
    def detail(self) -> str:
        """A dead letter's detail: kind, ids and reason as JSON, no content.

        >>> RejectedRecord("traces", {"trace_id": "t1", "cost_usd": 1.0}, "refused").detail
        '{"kind": "traces", "ids": {"trace_id": "t1"}, "reason": "refused"}'
        """
        return json.dumps({"kind": self.kind, "ids": self.ids, "reason": self.reason})


@dataclass(frozen=True, slots=True)
class FlushResult:
    rows: dict[str, int]  # kind -> rows handed to the store (after in-batch dedup)
    rejected: int  # records that could not be converted (see EventSink.rejected)


class EventSink:
    """Buffers request events, trace summaries and alert records; writes them in batches.

    Parameters
    ----------
    store
        Where to write (:func:`driftline.store.open_store`).
    batch_rows
        The batch size callers flush at (all kinds together); the sink itself never flushes.

    Examples
    --------
    >>> sink = EventSink(store=None, batch_rows=2)
    >>> sink.add("events", {"workflow": "w", "start_ts": 1, "span_id": "a"}, ("llm_events", 0, 7))
    >>> sink.add("events", {"workflow": "w", "start_ts": 1, "span_id": "a"}, ("llm_events", 0, 8))
    >>> sink.pending_rows
    1
    """

    def __init__(
        self,
        store: Store | None,
        *,
        batch_rows: int = 50_000,
        max_partitions_per_insert: int = MAX_PARTITIONS_PER_INSERT,
    ) -> None:
        if batch_rows < 1:
            raise ValueError(f"batch_rows must be >= 1, got {batch_rows}")
        if max_partitions_per_insert < 1:
            raise ValueError(
                f"max_partitions_per_insert must be >= 1, got {max_partitions_per_insert}"
            )
        self.store = store
        self.batch_rows = batch_rows
        self.max_partitions_per_insert = max_partitions_per_insert
        self._buffers: dict[RecordKind, _Buffer] = {kind: _Buffer() for kind in KINDS}
        self._pending = 0
        self._failures = 0
        # Rollup keys left short after a repeated insert (see rebuild_rollups), until counted.
        self.rollup_keys_not_rebuilt = 0
        # Unix time of the last flush that wrote everything it held (None: none yet).
        self.last_success_s: float | None = None
        # Each write attempt's time, by outcome (streams.stages.flush_until_stored times it).
        self.write_seconds = {o: Histogram(STORE_WRITE_BUCKETS_S) for o in ("ok", "failed")}
        # Records set aside for good, oldest first, until take_rejected() hands them out.
        self.rejected: list[RejectedRecord] = []
        self._columns: dict[str, tuple[Field, ...]] = {}
        self._ttl: dict[str, tuple[str, int] | None] = {}  # table -> (TTL column, days)

    # -- intake ---------------------------------------------------------------------------

    def add(
        self, kind: RecordKind, record: Mapping[str, Any], position: Position | None = None
    ) -> None:
        """Buffer one record; ``position`` is the Kafka (topic, partition, offset) it came from."""
        # The hot path of the sink: one call per consumed record, kept to a few dict operations.
        buffer = self._buffers[kind]
        rows = buffer.rows
        try:
            key = _KEY_GETTERS[kind](record)
        except KeyError:
            key = tuple(record.get(k) for k in TABLES[kind].key)
        before = len(rows)
        rows[key] = record
        self._pending += len(rows) - before
        if position is not None:
            buffer.positions[key] = position
            tp = (position[0], position[1])
            offset = position[2]
            bounds = buffer.bounds.get(tp)
            if bounds is None:
                buffer.bounds[tp] = [offset, offset]
            elif offset > bounds[1]:
                bounds[1] = offset
            elif offset < bounds[0]:
                bounds[0] = offset

    # -- state ----------------------------------------------------------------------------

    @property
    def pending_rows(self) -> int:
        return self._pending

    @property
    def failures(self) -> int:
        """Consecutive failed flushes (0 after a success)."""
        return self._failures

    def take_rejected(self) -> list[RejectedRecord]:
        """The records set aside since the last call, oldest first; the sink forgets them.

        Each was dropped from its batch for good (it does not convert, carries a time the store
        cannot hold, or the store refused its values): send it to a dead-letter topic with its
        reason and :attr:`RejectedRecord.ids`. Its Kafka offset may be committed.
        """
        taken, self.rejected = self.rejected, []
        return taken

    # -- writing --------------------------------------------------------------------------

    def flush(self, dedup_token: str | None = None) -> FlushResult:
        """Write every buffered kind; on a store error keep the rest and re-raise.

        ``dedup_token``: a caller-chosen token (the kind is appended); by default the token is
        derived from the batch's Kafka positions, or from its content when it has none.
        Records that can never be stored are set aside (:meth:`take_rejected`), the rest is
        written. A kind is settled only when all its rows are: after an error the next flush
        writes the same pieces under the same tokens, and sets nothing aside twice.
        """
        if self.store is None:
            raise StoreError("this sink has no store to write to")
        written: dict[str, int] = {}
        rejected_before = len(self.rejected)
        for kind in KINDS:
            buffer = self._buffers[kind]
            if not buffer.rows:
                continue
            try:
                written[kind], rejected = self._write_kind(kind, buffer, dedup_token)
            except StoreError:
                self._failures += 1
                raise
            self.rejected.extend(rejected)
            self._pending -= len(buffer.rows)
            self._buffers[kind] = _Buffer()
        self._failures = 0
        self.last_success_s = time.time()
        return FlushResult(written, len(self.rejected) - rejected_before)

    def _write_kind(
        self, kind: RecordKind, buffer: _Buffer, dedup_token: str | None
    ) -> tuple[int, list[RejectedRecord]]:
        """Store one kind's buffer; return the rows handed to the store and the records refused."""
        assert self.store is not None
        spec = TABLES[kind]
        records = list(buffer.rows.values())
        if spec.json_fields:
            records = [_with_json(r, spec.json_fields) for r in records]
        token = self._token(kind, buffer, records, spec, dedup_token)
        positions = [buffer.positions.get(key) for key in buffer.rows]
        fields = self._stored_fields(spec)
        table, kept, refused = self._convert(records, fields, self._ttl[spec.table])
        rejected = [RejectedRecord(kind, records[i], why, positions[i]) for i, why in refused]
        # Rows already stored came from an earlier insert of theirs, which may have been cut
        # off before every rollup got them: those keys are recomputed once this one is in.
        stale = (
            stored_minutes(self.store, spec.table, table, spec.skip_existing)
            if spec.skip_existing is not None
            else set()
        )
        stored = 0
        for piece in split_by_partition(
            table, kept, spec.partition_by, self.max_partitions_per_insert, token
        ):
            stored += self._insert_isolating(spec, piece, rejected, kind, records, positions)
        self.rollup_keys_not_rebuilt += len(rebuild_rollups(self.store, spec.table, stale))
        return stored, rejected

    def _insert_isolating(
        self,
        spec: TableSpec,
        piece: InsertPiece,
        rejected: list[RejectedRecord],
        kind: RecordKind,
        records: list[Mapping[str, Any]],
        positions: list[Position | None],
    ) -> int:
        """Insert ``piece``; bisect what the store refuses down to single rows, set those aside.

        Halves are tokened by their row range inside the piece, so the same piece bisects to the
        same inserts every time. Other store errors propagate: nothing is set aside then.
        """
        assert self.store is not None
        stored = 0
        todo = [(0, piece.table.num_rows)]
        while todo:
            low, high = todo.pop()
            whole = (low, high) == (0, piece.table.num_rows)
            token = piece.token if whole else f"{piece.token}:r{low}-{high}"
            try:
                self.store.insert_arrow(
                    spec.table,
                    piece.table.slice(low, high - low),
                    token,
                    skip_existing=spec.skip_existing,
                )
            except StoreRejectedRowsError as exc:
                if high - low > 1:
                    middle = (low + high) // 2
                    todo += [(middle, high), (low, middle)]  # the lower half is written first
                    continue
                index = piece.record_indices[low]
                rejected.append(
                    RejectedRecord(kind, records[index], _short_reason(exc), positions[index])
                )
                continue
            stored += high - low
        return stored

    def _stored_fields(self, spec: TableSpec) -> tuple[Field, ...]:
        """The record fields the table has: a record schema ahead of the DDL still inserts."""
        if spec.table not in self._columns:
            assert self.store is not None
            database, table = spec.table.split(".")
            names = (
                self.store.query(
                    "SELECT name FROM system.columns"
                    " WHERE database = {db:String} AND table = {t:String}",
                    {"db": database, "t": table},
                )
                .column("name")
                .to_pylist()
            )
            if not names:
                raise StoreError(
                    f"table {spec.table} does not exist; open the store with open_store()"
                )
            self._columns[spec.table] = tuple(f for f in spec.fields if f.name in set(names))
            engine = self.store.query(
                "SELECT engine_full FROM system.tables WHERE database = {db:String}"
                " AND name = {t:String}",
                {"db": database, "t": table},
            ).column("engine_full")
            match = _TTL.search(str(engine[0].as_py())) if len(engine) else None
            self._ttl[spec.table] = (match.group(1), int(match.group(2))) if match else None
        return self._columns[spec.table]

    @staticmethod
    def _convert(
        records: list[Mapping[str, Any]],
        fields: tuple[Field, ...],
        ttl: tuple[str, int] | None = None,
    ) -> tuple[pa.Table, list[int], list[tuple[int, str]]]:
        """The storable records as a table, their indices in ``records``, and (index, reason)
        of each record that does not convert or carries a time the store cannot hold (or
        would drop at once under the table's ``ttl``: column and days)."""
        refused: list[tuple[int, str]] = []
        try:
            table = to_arrow(records, fields)
            kept = list(range(len(records)))
        except _CONVERSION_ERRORS:
            # Find the records that do not fit instead of blocking the partition on them.
            kept = []
            for index, record in enumerate(records):
                try:
                    to_arrow([record], fields)
                except _CONVERSION_ERRORS as exc:
                    refused.append((index, f"not convertible: {exc}"))
                else:
                    kept.append(index)
            table = to_arrow([records[i] for i in kept], fields)
        outside = _outside_store_range(table, fields, ttl, int(time.time() * 1e6))
        if outside is None:
            return table, kept, refused
        mask, reasons = outside
        for row in np.flatnonzero(mask):
            refused.append((kept[row], reasons[row]))
        keep = ~mask
        return (
            table.filter(pa.array(keep)),
            [i for i, k in zip(kept, keep, strict=True) if k],
            refused,
        )

    @staticmethod
    def _token(
        kind: RecordKind,
        buffer: _Buffer,
        records: list[Mapping[str, Any]],
        spec: TableSpec,
        explicit: str | None,
    ) -> str:
        if explicit is not None:
            return f"{explicit}:{kind}"
        if buffer.bounds:
            return offsets_token(kind, buffer.bounds)
        digest = hashlib.blake2b(digest_size=12)
        for key in sorted(repr(tuple(r.get(k) for k in spec.key)) for r in records):
            digest.update(key.encode())
        return f"{kind}:content:{digest.hexdigest()}"


@dataclass(frozen=True, slots=True)
class InsertPiece:
    """Rows of a batch that one insert may carry, and which buffered records they are."""

    table: pa.Table
    record_indices: list[int]
    token: str


def split_by_partition(
    table: pa.Table,
    record_indices: list[int],
    partition_by: tuple[str, PartitionUnit],
    max_partitions: int,
    token: str,
) -> list[InsertPiece]:
    """``table`` in pieces of at most ``max_partitions`` partitions each (a day or a month).

    A batch that fits is one piece under the batch's own token, as before splitting existed.
    Otherwise rows are ordered by partition (stably) and each piece's token names its first
    and last partition: the same rows split the same way under the same tokens every time.

    >>> day = 86_400_000_000
    >>> t = pa.table({"ts": pa.array([0, 2 * day, day, 2 * day], pa.timestamp("us", "UTC"))})
    >>> pieces = split_by_partition(t, [7, 8, 9, 10], ("ts", "day"), 2, "b")
    >>> [(p.record_indices, p.token) for p in pieces]
    [([7, 9], 'b:p19700101-19700102'), ([8, 10], 'b:p19700103-19700103')]
    """
    if table.num_rows == 0:
        return []
    ids = _partition_ids(table.column(partition_by[0]), partition_by[1])
    distinct = np.unique(ids)
    if len(distinct) <= max_partitions:
        return [InsertPiece(table, record_indices, token)]
    order = np.argsort(ids, kind="stable")
    ordered = table.take(pa.array(order))
    ids = ids[order]
    pieces = []
    for start in range(0, len(distinct), max_partitions):
        first, last = distinct[start], distinct[min(start + max_partitions, len(distinct)) - 1]
        low = int(np.searchsorted(ids, first, "left"))
        high = int(np.searchsorted(ids, last, "right"))
        indices = [record_indices[i] for i in order[low:high]]
        pieces.append(
            InsertPiece(ordered.slice(low, high - low), indices, f"{token}:p{first}-{last}")
        )
    return pieces


def _partition_ids(column: pa.ChunkedArray, unit: PartitionUnit) -> np.ndarray:
    """ClickHouse's toYYYYMMDD / toYYYYMM of a UTC timestamp column, as int64."""
    year = pc.year(column)
    month = pc.add(pc.multiply(year, 100), pc.month(column))
    ids = month if unit == "month" else pc.add(pc.multiply(month, 100), pc.day(column))
    return np.asarray(ids.fill_null(0).to_numpy(zero_copy_only=False), dtype=np.int64)


def _outside_store_range(
    table: pa.Table, fields: tuple[Field, ...], ttl: tuple[str, int] | None, now_us: int
) -> tuple[np.ndarray, list[str]] | None:
    """A mask of rows with a time the store cannot hold or would drop at once, and why, or
    None if there is none: rather set aside with a reason than counted stored and gone."""
    mask = np.zeros(table.num_rows, dtype=bool)
    reasons = [""] * table.num_rows

    def refuse(bad: np.ndarray, why: str) -> None:
        nonlocal mask
        for row in np.flatnonzero(bad & ~mask):
            reasons[row] = why
        mask |= bad

    for f in fields:
        if f.kind != "ts":
            continue
        micros = table.column(f.name).cast(pa.int64()).to_numpy(zero_copy_only=False)
        values = np.asarray(micros, dtype=np.float64)  # nulls arrive as NaN and compare False
        refuse(
            (values < _MIN_TS_US) | (values > _MAX_TS_US),
            f"{f.name} outside the years 1900-2299 that the store can hold",
        )
        if ttl is not None and ttl[0] == f.name:
            days_us = ttl[1] * 86_400_000_000
            refuse(
                values < now_us - days_us,
                f"{f.name} older than the table keeps (TTL {ttl[1]} days): dropped on insert",
            )
            refuse(
                (values < 0) | (values > _DATETIME_MAX_US - days_us),
                f"{f.name} outside 1970 to 2106-02-07 less the {ttl[1]}-day TTL: the TTL "
                "would overflow and drop it",
            )
    return (mask, reasons) if mask.any() else None


def _short_reason(exc: Exception) -> str:
    """The store's message, first line, without the column values it may quote (content)."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    text = text.split("Column values:")[0].rstrip(" .,")
    return text[:_REASON_CHARS]
