"""Store a batch of ``otlp_metrics`` messages in ``engine_metrics``: one insert per batch.

The group-managed side of engine metrics (each partition's messages stored once; every
worker's own as-of book is :mod:`driftline.streams.engine_feed`). The insert carries a
dedup token derived from the batch's Kafka positions, so a batch read again after a crash
(the same offsets) is dropped by the store; points are dated within the ingest window of
their message's Kafka timestamp, so a batch spans at most a few days of partitions.
Rejected points come back with their reason for the dead-letter topic.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

from driftline.schemas.tables import ENGINE_METRICS
from driftline.store import Store
from driftline.streams.engine_metrics import MetricReject, decode_metrics_message
from driftline.streams.positions import offsets_token

Position = tuple[str, int, int]  # topic, partition, offset


@dataclass(frozen=True, slots=True)
class MetricsMessage:
    payload: bytes
    position: Position
    timestamp_ns: int | None  # the Kafka timestamp; None when unknown


@dataclass(slots=True)
class StoredBatch:
    rows: int = 0
    rejects: list[tuple[Position, MetricReject]] = field(default_factory=list)
    ignored_metrics: int = 0


def store_metrics(
    messages: list[MetricsMessage],
    store: Store,
    *,
    max_past_s: float,
    max_future_s: float,
) -> StoredBatch:
    """Decode and store ``messages``; raises the store's error (the caller retries the batch)."""
    result = StoredBatch()
    tables = []
    for message in messages:
        rows = decode_metrics_message(
            message.payload,
            arrival_ns=message.timestamp_ns,
            max_past_s=max_past_s,
            max_future_s=max_future_s,
        )
        result.rejects += [(message.position, reject) for reject in rows.rejects]
        result.ignored_metrics += rows.metrics_ignored
        if len(rows):
            tables.append(rows.to_arrow())
    if not tables:
        return result
    table = pa.concat_tables(tables)
    store.insert_arrow(ENGINE_METRICS.name, table, batch_token(messages))
    result.rows = table.num_rows
    return result


def batch_token(messages: list[MetricsMessage]) -> str:
    """``engine_metrics:offsets:<hash>`` of each partition's offset range in the batch.

    >>> m = [MetricsMessage(b"", ("otlp_metrics", 0, 7), None)]
    >>> batch_token(m) == batch_token(list(m)) and batch_token(m).startswith("engine_metrics:")
    True
    """
    bounds: dict[tuple[str, int], list[int]] = {}
    for message in messages:
        topic, partition, offset = message.position
        low_high = bounds.setdefault((topic, partition), [offset, offset])
        low_high[0], low_high[1] = min(low_high[0], offset), max(low_high[1], offset)
    return offsets_token("engine_metrics", bounds)
