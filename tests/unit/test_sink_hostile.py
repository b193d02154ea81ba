"""Whatever a record carries, a flush stores it or sets it aside with a reason; it never raises.

Records with hostile values (nulls, NaN and infinities, integers past 64 bits, times before
1900 or after 2299 or past any calendar, wrong types, odd attribute maps) go through the
sink into the real store, split into pieces of at most two days so splitting runs too.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from driftline.config import StoreSettings
from driftline.store import ChdbStore, open_store
from driftline.streams.sink import EventSink
from tests.utils.events import make_event

DAY_US = 86_400_000_000
JAN_2026 = 1_767_225_600_000_000
_serial = itertools.count()

hostile_int = st.one_of(
    st.integers(-(2**70), 2**70), st.sampled_from([0, -1, 2**63 - 1, 2**64]), st.none()
)
hostile_float = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([1e308, -0.0]), st.none()
)
hostile_text = st.one_of(st.text(max_size=40), st.none(), st.integers(), st.binary(max_size=8))
timestamps = st.one_of(
    st.integers(JAN_2026 - 30 * DAY_US, JAN_2026 + 30 * DAY_US),
    st.sampled_from([-(2**62), 2**62, 13_569_465_600_000_000, -2_208_988_800_000_001]),
    st.integers(-(2**63), 2**63 - 1),
)
overrides = st.fixed_dictionaries(
    {},
    optional={
        "start_ts": timestamps,
        "end_ts": timestamps,
        "workflow": hostile_text,
        "model_version": hostile_text,
        "input_tokens": hostile_int,
        "output_tokens": hostile_int,
        "retry_attempt": hostile_int,
        "latency_ms": hostile_float,
        "ttft_ms": hostile_float,
        "kv_cache_usage": hostile_float,
        "cost_usd": hostile_float,
        "validation_failed": st.one_of(st.booleans(), hostile_text),
        "attributes": st.one_of(
            st.none(),
            st.dictionaries(st.text(max_size=10), hostile_text, max_size=4),
            st.text(max_size=5),
        ),
    },
)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChdbStore]:
    store = open_store(f"chdb://{tmp_path_factory.mktemp('chdb')}", StoreSettings(ttl_days=3650))
    assert isinstance(store, ChdbStore)
    yield store
    store.close()


def _record(changes: dict[str, Any]) -> dict[str, Any]:
    serial = next(_serial)
    record = make_event(
        trace_id=f"{serial:032x}",
        span_id=f"h{serial:015d}",
        start_ts=JAN_2026 + (serial % 5) * DAY_US,
    )
    record.update(changes)
    return record


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batch=st.lists(overrides, min_size=1, max_size=8))
def test_a_flush_stores_or_sets_aside_every_record(
    store: ChdbStore, batch: list[dict[str, Any]]
) -> None:
    records = [_record(changes) for changes in batch]
    sink = EventSink(store, max_partitions_per_insert=2)
    for record in records:  # offsets never seen before: the same offsets would be a repeat
        sink.add("events", record, ("llm_events", 0, next(_serial)))
    result = sink.flush()  # anything but a store outage raising here is the bug

    rejected = sink.take_rejected()
    assert sink.pending_rows == 0
    assert result.rows.get("events", 0) + len(rejected) == len(records)
    assert all(r.reason and r.position is not None for r in rejected)
    set_aside = {r.record["span_id"] for r in rejected}
    spans = [r["span_id"] for r in records]
    stored = store.query(
        "SELECT span_id FROM driftline.llm_requests_raw WHERE span_id IN {ids:Array(String)}",
        {"ids": spans},
    ).column("span_id")
    assert sorted(stored.to_pylist()) == sorted(set(spans) - set_aside)
    for record in records:
        start = record["start_ts"]
        if isinstance(start, int) and not -2_208_988_800_000_000 <= start < 10_413_792_000_000_000:
            assert record["span_id"] in set_aside  # a time the store would silently change
    assert not any(isinstance(v, float) and math.isnan(v) for r in rejected for v in r.ids)
