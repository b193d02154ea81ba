"""The ClickHouse tables the code writes: each one's name and columns, said once.

The DDL under ``schemas/ddl/`` creates the tables; this module says which columns the code
fills, in DDL order, and of what kind (:class:`~driftline.schemas.event.Field`: the sink turns
kinds into Arrow types). Every writer takes its table from here: the sink (requests, traces,
alert transitions), the delivery log, baseline snapshots, model prices, engine metrics and
the migrations record. ``tests/unit/test_tables.py`` migrates a store and compares every
table below with ``DESCRIBE TABLE``: the same columns in the same order, each type one that
its field's kind converts to (:data:`CLICKHOUSE_TYPES`), and the delivery outcomes
documented on the column.

Columns the engine computes (``MATERIALIZED``, like ``llm_traces_raw.version``) are not listed:
no writer sends them.

>>> DELIVERIES.name, DELIVERIES.columns[:3]
('driftline.alert_deliveries', ('alert_id', 'dedup_key', 'event_action'))
>>> fits(Field("cost_usd", "float", nullable=True), "Nullable(Float64)")
True
>>> fits(Field("attempt", "int"), "Nullable(UInt16)"), fits(Field("route", "str"), "String")
(False, True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal, get_args

from driftline.schemas.alert import TRANSITION_FIELDS
from driftline.schemas.ddl import DATABASE, MIGRATIONS_TABLE
from driftline.schemas.event import EVENT_FIELDS, TRACE_FIELDS, Field, FieldKind


@dataclass(frozen=True, slots=True)
class Table:
    name: str  # database.table
    fields: tuple[Field, ...]  # the columns writers fill, in DDL order

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)


# The ClickHouse types each field kind is stored as (the Arrow type the sink builds converts to
# any of them); a nullable field is the same type inside Nullable(...).
CLICKHOUSE_TYPES: Final[dict[FieldKind, frozenset[str]]] = {
    "str": frozenset({"String", "LowCardinality(String)"}),
    "int": frozenset({"UInt16", "UInt32", "UInt64"}),
    "float": frozenset({"Float64"}),
    "bool": frozenset({"Bool"}),
    "ts": frozenset({"DateTime64(6, 'UTC')"}),
    "map": frozenset({"Map(LowCardinality(String), String)"}),
}


def fits(field: Field, clickhouse_type: str) -> bool:
    """Whether a column of ``clickhouse_type`` stores ``field`` (kind and nullability)."""
    nullable = clickhouse_type.startswith("Nullable(") and clickhouse_type.endswith(")")
    inner = clickhouse_type[len("Nullable(") : -1] if nullable else clickhouse_type
    return nullable == field.nullable and inner in CLICKHOUSE_TYPES[field.kind]


REQUESTS: Final = Table(f"{DATABASE}.llm_requests_raw", EVENT_FIELDS)
TRACES: Final = Table(f"{DATABASE}.llm_traces_raw", TRACE_FIELDS)
ALERTS_LOG: Final = Table(
    f"{DATABASE}.llm_alerts_log",
    # evidence is a nested dict in the record: stored as JSON text, not as a Map(String, String)
    tuple(Field(f.name, "str") if f.name == "evidence" else f for f in TRANSITION_FIELDS),
)

# What happened to one delivery attempt or decision (streams/notifier/records.py). The column
# is a String documented by a COMMENT (schemas/ddl/0004_delivery_outcomes.sql), not an Enum: an
# outcome the DDL does not know yet must not make the delivery log unwritable.
Outcome = Literal["delivered", "retrying", "failed_permanent", "gave_up", "unrouted", "coalesced"]
DELIVERY_OUTCOMES: Final[tuple[Outcome, ...]] = get_args(Outcome)

DELIVERIES: Final = Table(
    f"{DATABASE}.alert_deliveries",
    (
        Field("alert_id", "str"),
        Field("dedup_key", "str"),
        Field("event_action", "str"),  # trigger | resolve
        Field("attempt", "int"),
        Field("status_code", "int"),
        Field("outcome", "str"),  # one of DELIVERY_OUTCOMES
        Field("error", "str"),
        Field("latency_ms", "float"),
        Field("sent_at", "ts"),
        Field("target", "str"),
    ),
)
BASELINES: Final = Table(
    f"{DATABASE}.workflow_baselines",
    (
        Field("snapshot_ts", "ts"),
        Field("workflow", "str"),
        Field("bundle_id", "str"),
        Field("metric", "str"),
        Field("frozen", "bool"),
        Field("n", "int"),
        Field("mean", "float"),
        Field("std", "float"),
        Field("p50", "float", nullable=True),
        Field("p95", "float", nullable=True),
        Field("p99", "float", nullable=True),
        Field("extra", "str"),  # JSON
    ),
)
MODEL_PRICES: Final = Table(
    f"{DATABASE}.model_prices",
    (
        Field("provider", "str"),
        Field("model", "str"),
        Field("input_per_mtok", "float"),
        Field("output_per_mtok", "float"),
        Field("cache_read_per_mtok", "float"),
        Field("cache_write_per_mtok", "float"),
        Field("source", "str"),
        Field("updated_at", "ts"),
    ),
)
ENGINE_METRICS: Final = Table(
    f"{DATABASE}.engine_metrics",
    (
        Field("time", "ts"),
        Field("engine", "str"),
        Field("model", "str"),
        Field("instance", "str"),
        Field("metric", "str"),
        Field("value", "float"),
        Field("source_metric", "str"),
    ),
)
SCHEMA_MIGRATIONS: Final = Table(
    MIGRATIONS_TABLE,
    (
        Field("version", "int"),
        Field("name", "str"),
        Field("checksum", "str"),
        Field("applied_at", "ts"),
    ),
)

WRITTEN_TABLES: Final = (
    REQUESTS,
    TRACES,
    ALERTS_LOG,
    DELIVERIES,
    BASELINES,
    MODEL_PRICES,
    ENGINE_METRICS,
    SCHEMA_MIGRATIONS,
)
