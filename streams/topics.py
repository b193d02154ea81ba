"""Kafka topic names and message header names: declared once, used everywhere."""

from __future__ import annotations

from typing import Final

OTLP_SPANS: Final = "otlp_spans"  # collector output: OTLP protobuf (or JSON) TracesData
OTLP_SPANS_DLQ: Final = "otlp_spans_dlq"  # rejected input, with a reason header
OTLP_METRICS: Final = "otlp_metrics"  # collector output: OTLP MetricsData (serving engines)
LLM_SPANS: Final = "llm_spans"  # normalized spans, partitioned by trace id
LLM_EVENTS: Final = "llm_events"  # request events and trace summaries, keyed by workflow
LLM_ALERTS: Final = "llm_alerts"  # alert lifecycle records, keyed by dedup key

ALL_TOPICS: Final = (
    OTLP_SPANS,
    OTLP_SPANS_DLQ,
    OTLP_METRICS,
    LLM_SPANS,
    LLM_EVENTS,
    LLM_ALERTS,
)
SOURCE_TOPICS: Final = (OTLP_SPANS, LLM_SPANS, LLM_EVENTS, LLM_ALERTS)  # what the worker reads

HEADER_REASON: Final = "driftline-reason"  # why a record went to the DLQ
HEADER_SOURCE_TOPIC: Final = "driftline-source-topic"
HEADER_SOURCE_PARTITION: Final = "driftline-source-partition"
HEADER_SOURCE_OFFSET: Final = "driftline-source-offset"
HEADER_RECORD_TYPE: Final = "driftline-record-type"  # "events" | "traces" | "spans"
HEADER_CONTENT_TYPE: Final = "content-type"
HEADER_DETAIL: Final = "driftline-detail"  # the reject's human sentence (ids, never content)

# Dead-letter reasons raised after decode (the normalizer's own are in streams/normalize.py).
REASON_STORE_REJECTED: Final = "store_rejected"  # the store can never take the record
# An llm_events message, or records of it, not in the layout and types decode writes.
REASON_BAD_LLM_EVENTS: Final = "bad_llm_events"


def dlq_headers(
    reason: str, detail: str, source_topic: str, source_partition: int, source_offset: int
) -> list[tuple[str, bytes]]:
    """Headers of a dead letter: why, and where the rejected record came from.

    >>> dict(dlq_headers("stale_timestamp", "too old", "otlp_spans", 2, 40))[HEADER_REASON]
    b'stale_timestamp'
    """
    return [
        (HEADER_REASON, reason.encode()),
        (HEADER_DETAIL, detail.encode()[:1024]),
        (HEADER_SOURCE_TOPIC, source_topic.encode()),
        (HEADER_SOURCE_PARTITION, str(source_partition).encode()),
        (HEADER_SOURCE_OFFSET, str(source_offset).encode()),
    ]
