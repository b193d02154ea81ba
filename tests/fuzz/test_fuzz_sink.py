"""Events and trace summaries of hostile spans through the sink into a real chdb store.

Whatever survives normalization must be stored or set aside with a reason, never raise, and
a second delivery of the same records at the same Kafka positions must store nothing new.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.proto.trace.v1.trace_pb2 import TracesData

from driftline.config import StoreSettings
from driftline.schemas.tables import REQUESTS, TRACES
from driftline.store import ChdbStore, open_store
from driftline.streams.pipeline import OfflinePipeline
from driftline.streams.sink import TABLES, EventSink, RecordKind
from tests.fuzz.profiles import fuzz_settings
from tests.fuzz.strategies import encoded, traces_message

pytestmark = pytest.mark.fuzz

TOPIC = "llm_events"
# Ids unique to each example, so one example's rows never meet another's in the shared store
# (the strategies reuse a few ids on purpose, to collide inside a message).
_serial = itertools.count()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChdbStore]:
    store = open_store(f"chdb://{tmp_path_factory.mktemp('chdb')}", StoreSettings(ttl_days=3650))
    assert isinstance(store, ChdbStore)
    yield store
    store.close()


def _records(messages: list[TracesData], as_json: bool) -> dict[RecordKind, list[dict[str, Any]]]:
    pipeline = OfflinePipeline()
    for message in messages:
        pipeline.feed(encoded(message, as_json))
    result = pipeline.finish()
    run = next(_serial)
    for event in result.events:
        event["trace_id"] = f"fz{run}-{event['trace_id']}"
        event["span_id"] = f"fz{run}-{event['span_id']}"
    for trace in result.traces:
        trace["trace_id"] = f"fz{run}-{trace['trace_id']}"
    return {"events": result.events, "traces": result.traces}


def _physical_rows(store: ChdbStore, table: str, column: str, ids: list[str]) -> int:
    if not ids:
        return 0
    found = store.query(
        f"SELECT count() AS n FROM {table} WHERE {column} IN {{ids:Array(String)}}", {"ids": ids}
    )
    return int(found.column("n")[0].as_py())


def _distinct_keys(kind: RecordKind, records: list[dict[str, Any]]) -> int:
    return len({tuple(r.get(k) for k in TABLES[kind].key) for r in records})


@fuzz_settings(share=0.5)
@given(messages=st.lists(traces_message(), min_size=1, max_size=3), as_json=st.booleans())
def test_every_record_is_stored_or_set_aside_once(
    store: ChdbStore, messages: list[TracesData], as_json: bool
) -> None:
    records = _records(messages, as_json)
    offsets = itertools.count(next(_serial) * 1_000_000)
    positions = {
        kind: [(TOPIC, 0, next(offsets)) for _ in batch] for kind, batch in records.items()
    }

    sink = EventSink(store, max_partitions_per_insert=3)
    for kind, batch in records.items():
        for record, position in zip(batch, positions[kind], strict=True):
            sink.add(kind, record, position)
    result = sink.flush()
    rejected = sink.take_rejected()

    assert sink.pending_rows == 0
    assert all(r.reason and r.position is not None for r in rejected)
    event_ids = [e["span_id"] for e in records["events"]]
    trace_ids = [t["trace_id"] for t in records["traces"]]
    stored = {
        "events": _physical_rows(store, REQUESTS.name, "span_id", event_ids),
        "traces": _physical_rows(store, TRACES.name, "trace_id", trace_ids),
    }
    for kind in ("events", "traces"):
        set_aside = sum(1 for r in rejected if r.kind == kind)
        # Duplicates inside the batch (same natural key) collapse to one row.
        assert result.rows.get(kind, 0) + set_aside == _distinct_keys(kind, records[kind]), kind
        assert stored[kind] == result.rows.get(kind, 0), kind

    again = EventSink(store, max_partitions_per_insert=3)
    for kind, batch in records.items():
        for record, position in zip(batch, positions[kind], strict=True):
            again.add(kind, record, position)
    again.flush()
    again.take_rejected()
    assert _physical_rows(store, REQUESTS.name, "span_id", event_ids) == stored["events"]
    assert _physical_rows(store, TRACES.name, "trace_id", trace_ids) == stored["traces"]
