"""Hostile OTLP spans through the normalizer and the offline pipeline.

Every span of a message ends as a span record (and maybe an event) or a reject with a
reason; events hold only bounded finite numbers, safe names and allowed attributes; no
content reaches an event, a span record or a dead letter; assembled events survive the wire
format unchanged.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, TracesData

import driftline.streams.normalize as normalize_module
from driftline.commands.records import AttributeBounds, checked_record
from driftline.schemas.event import (
    EARLIEST_TIME_NS,
    EVENT_FIELDS,
    LATEST_TIME_NS,
    TRACE_FIELDS,
    from_wire,
    to_wire,
)
from driftline.streams.normalize import DEFAULT_POLICY, NormalizedBatch, normalize_message
from driftline.streams.pipeline import OfflinePipeline
from tests.fuzz.checks import check_event, strict_json
from tests.fuzz.profiles import fuzz_settings
from tests.fuzz.strategies import ARRIVAL_NS, CONTENT_MARKER, encoded, traces_message
from tests.utils.otlp_factory import realistic_message

pytestmark = pytest.mark.fuzz

WINDOW_NS = (
    max(EARLIEST_TIME_NS, ARRIVAL_NS - int(DEFAULT_POLICY.max_past_s * 1e9)),
    min(LATEST_TIME_NS, ARRIVAL_NS + int(DEFAULT_POLICY.max_future_s * 1e9)),
)
# Codes that mean "the normalizer caught its own exception", not a verdict on the span.
INTERNAL_ERROR = "internal_error"


def _spans_in(message: TracesData) -> int:
    return sum(len(ss.spans) for rs in message.resource_spans for ss in rs.scope_spans)


@fuzz_settings()
@given(message=traces_message(), as_json=st.booleans())
def test_every_span_is_a_bounded_record_or_a_reject_with_a_reason(
    message: TracesData, as_json: bool
) -> None:
    batch = normalize_message(
        encoded(message, as_json), policy=DEFAULT_POLICY, arrival_ns=ARRIVAL_NS
    )

    assert batch.span_count == _spans_in(message)
    assert len(batch.spans) + len(batch.rejects) == batch.span_count
    for reject in batch.rejects:
        assert reject.reason and reject.detail, reject
        assert reject.reason != INTERNAL_ERROR, reject.detail
        assert CONTENT_MARKER.encode() not in reject.payload
    record_ids = [(r["trace_id"], r["span_id"]) for r in batch.spans]
    assert {(e["trace_id"], e["span_id"]) for e in batch.events} <= set(record_ids)
    for event in batch.events:
        check_event(event, WINDOW_NS)
    assert CONTENT_MARKER not in repr(batch.events) + repr(batch.spans)


def _exact_only(*args: object) -> bool:
    raise RuntimeError("the exact path decides")


def _outcome(batch: NormalizedBatch) -> tuple[object, ...]:
    rejects = [(r.reason, r.detail, r.trace_id, r.span_id, r.payload) for r in batch.rejects]
    return (batch.events, batch.spans, rejects, batch.span_count, batch.tokenless)


@fuzz_settings()
@given(message=traces_message(), as_json=st.booleans())
def test_the_fast_path_agrees_with_the_exact_path(message: TracesData, as_json: bool) -> None:
    """The normalizer's fast path (one read per attribute, repetition cached) is a speed-up,
    never a second mapping: with it turned off, every span ends the same, event for event,
    record for record and reject for reject."""
    payload = encoded(message, as_json)
    fast = normalize_message(payload, policy=DEFAULT_POLICY, arrival_ns=ARRIVAL_NS)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(normalize_module, "_normalize_span_fast", _exact_only)
        exact = normalize_message(payload, policy=DEFAULT_POLICY, arrival_ns=ARRIVAL_NS)

    assert _outcome(fast) == _outcome(exact)


@fuzz_settings(share=0.5)
@given(seed=st.integers(0, 2**32 - 1))
def test_the_fast_path_agrees_on_mixed_conventions(seed: int) -> None:
    """The same on well-formed calls in every convention the factory writes (GenAI,
    OpenInference, OpenLLMetry, ...), where the fast path's caches do their work."""
    payload = realistic_message(300, seed=seed).SerializeToString()
    fast = normalize_message(payload, policy=DEFAULT_POLICY)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(normalize_module, "_normalize_span_fast", _exact_only)
        exact = normalize_message(payload, policy=DEFAULT_POLICY)

    assert fast.events and _outcome(fast) == _outcome(exact)


@fuzz_settings()
@given(messages=st.lists(traces_message(), min_size=1, max_size=3), as_json=st.booleans())
def test_assembled_events_are_bounded_and_survive_the_wire(
    messages: list[TracesData], as_json: bool
) -> None:
    pipeline = OfflinePipeline()
    for message in messages:
        pipeline.feed(encoded(message, as_json))
    result = pipeline.finish()

    assert result.documents == len(messages)
    for event in result.events:
        check_event(event)
        wire = to_wire(event)
        strict_json(wire)
        assert from_wire(wire) == event
    for trace in result.traces:
        assert trace["llm_call_count"] >= 0 and trace["span_count"] >= trace["llm_call_count"]
        strict_json(to_wire(trace, TRACE_FIELDS))


@fuzz_settings()
@given(messages=st.lists(traces_message(), min_size=1, max_size=2), as_json=st.booleans())
def test_events_the_normalizer_writes_load_unchanged(
    messages: list[TracesData], as_json: bool
) -> None:
    """``driftline load`` holds a file to the normalizer's bounds: what the normalizer wrote
    (hostile names made safe, attributes at its limits, originals on top) passes them as is."""
    pipeline = OfflinePipeline()
    for message in messages:
        pipeline.feed(encoded(message, as_json))
    for event in pipeline.finish().events:
        record = from_wire(to_wire(event))
        assert checked_record(record, EVENT_FIELDS, AttributeBounds()) is None
        assert record == event


@pytest.mark.parametrize("seed", range(3))
def test_priced_events_of_every_convention_load_unchanged(seed: int) -> None:
    pipeline = OfflinePipeline()
    pipeline.feed(realistic_message(1000, seed=seed).SerializeToString())
    events = pipeline.finish().events
    assert sum(e["cost_usd"] is not None for e in events) > len(events) // 2
    for event in events:
        record = from_wire(to_wire(event))
        assert checked_record(record, EVENT_FIELDS, AttributeBounds()) is None
        assert record == event


def test_a_protobuf_message_that_starts_like_json_is_read_as_protobuf() -> None:
    span = Span(
        trace_id=b"\x01" * 16,
        span_id=b"\x02" * 8,
        start_time_unix_nano=ARRIVAL_NS,
        end_time_unix_nano=ARRIVAL_NS,
        attributes=[KeyValue(key="k", value=AnyValue(string_value="v" * 64))],
    )
    message = TracesData(resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=[span])])])
    payload = message.SerializeToString()
    assert payload[:2] == b"\n{"  # field 1, length 123: "{" after a newline

    batch = normalize_message(payload, arrival_ns=ARRIVAL_NS)

    assert batch.span_count == 1 and not batch.rejects
