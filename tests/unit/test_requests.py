"""Request events published at decode: message framing, early flags, exactly-once at the monitor."""

from __future__ import annotations

from collections import Counter
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from driftline.config import BudgetSettings, WorkflowSettings
from driftline.schemas.event import EVENT_FIELD_NAMES, TRACE_FIELDS, from_wire, to_wire
from driftline.streams.app import encode_bounded, group_by_workflow
from driftline.streams.codec import dumps, loads
from driftline.streams.normalize import normalize_message
from driftline.streams.positions import SEQ_FIELD, SourceMarks
from driftline.streams.requests import (
    EARLY_FIELD,
    REQUESTS_PER_MESSAGE,
    encode_requests,
    monitored_at_decode,
    route_requests,
)
from driftline.streams.stages import (
    checkpoint_value,
    decode_closed,
    fresh_requests,
    parse_checkpoint,
)
from driftline.streams.traces import TraceAssembler

names = st.sampled_from(["", "chat", "rag", "*"])


@given(
    st.lists(
        st.dictionaries(st.sampled_from("abc"), st.integers(-(2**63), 2**63 - 1)), max_size=300
    ),
    st.integers(min_value=50, max_value=5000),
)
def test_request_messages_keep_order_and_bounds(records: list[dict[str, Any]], limit: int) -> None:
    parts = encode_requests(records, limit)
    docs = [loads(p) for p in parts]
    assert [r for d in docs for r in d["requests"]] == records
    assert all(len(d["requests"]) <= REQUESTS_PER_MESSAGE for d in docs)
    # Alone a record may exceed the limit; any message of two or more fits it.
    assert all(len(p) <= limit for p, d in zip(parts, docs, strict=True) if len(d["requests"]) > 1)
    # Every reader of llm_events finds the same keys in every message.
    assert all(d["events"] == d["early"] == d["traces"] == [] for d in docs)


@given(
    st.lists(
        st.fixed_dictionaries({"workflow": names, "tenant": names, "route": names}), max_size=20
    ),
    st.booleans(),
    st.booleans(),
)
def test_early_means_the_monitor_sees_what_assembly_would_give(
    events: list[dict[str, Any]], per_tenant: bool, per_route: bool
) -> None:
    budgets = {"x": BudgetSettings()}
    workflows = {
        "chat": WorkflowSettings(
            tenants=budgets if per_tenant else {}, routes=budgets if per_route else {}
        )
    }
    for i, event in enumerate(events):
        event["span_id"] = str(i)
    out: dict[str, list[dict[str, Any]]] = {}
    route_requests(events, (1, 9), workflows, out)
    for event in events:
        early = bool(event.get(EARLY_FIELD))
        assert early == monitored_at_decode(event, workflows)
        # Trace assembly only fills empty fields: whatever the monitor reads is already set.
        if early:
            assert event["workflow"]
            if event["workflow"] == "chat":
                assert event["tenant"] or not per_tenant
                assert event["route"] or not per_route
    published = sorted((r for records in out.values() for r in records), key=lambda r: r[SEQ_FIELD])
    assert [r["span_id"] for r in published] == [e["span_id"] for e in events if e.get(EARLY_FIELD)]
    assert [r[SEQ_FIELD] for r in published] == [[1, 9, i] for i in range(len(published))]
    assert all(r["workflow"] == w for w, records in out.items() for r in records)


@settings(max_examples=200)
@given(
    st.lists(st.tuples(st.text("ab", max_size=2), st.booleans()), min_size=1, max_size=60),
    st.integers(min_value=200, max_value=3000),
)
def test_closed_messages_keep_each_event_with_its_early_flag_when_split(
    calls: list[tuple[str, bool]], limit: int
) -> None:
    events = [
        {"workflow": "w", "span_id": f"{i}-{name}", EARLY_FIELD: early}
        for i, (name, early) in enumerate(calls)
    ]
    traces = [{"workflow": "w", "trace_id": str(i)} for i in range(len(calls) // 3)]
    (group,) = group_by_workflow(events, traces).values()
    parts = [decode_closed(p) for p in encode_bounded(group, limit)]
    assert [e["span_id"] for d in parts for e in d.events] == [e["span_id"] for e in events]
    late = [e["span_id"] for d in parts for e in d.late]
    assert late == [e["span_id"] for e in events if not e[EARLY_FIELD]]
    assert sum(len(d.traces) for d in parts) == len(traces)


@given(st.data())
def test_requests_decoded_again_count_once(data: st.DataObject) -> None:
    """Decode publishes each source message's requests in order per workflow; after a crash
    it publishes the messages since the last commit again. The monitor applies each once."""
    sources = data.draw(st.lists(st.integers(0, 2), min_size=1, max_size=30))
    published: list[list[dict[str, Any]]] = []
    offsets: Counter[int] = Counter()
    for partition in sources:
        offset = offsets[partition]
        offsets[partition] += 1
        count = data.draw(st.integers(1, 4))
        workflows = data.draw(st.lists(st.sampled_from("xy"), min_size=count, max_size=count))
        published.append(
            [
                {
                    "workflow": w,
                    "span_id": f"{partition}/{offset}/{i}",
                    SEQ_FIELD: [partition, offset, i],
                }
                for i, w in enumerate(workflows)
            ]
        )
    # A crash: decode starts again from an earlier message, publishing it and the rest again.
    restart = data.draw(st.integers(0, len(published) - 1))
    log = published + [[dict(r) for r in message] for message in published[restart:]]
    marks: dict[str, SourceMarks] = {}
    counters: Counter[str] = Counter()
    applied = [r for message in log for r in fresh_requests(message, marks, counters)]
    expected = [r for message in published for r in message]
    for workflow in "xy":  # once each, and in order within each workflow
        assert [r["span_id"] for r in applied if r["workflow"] == workflow] == [
            r["span_id"] for r in expected if r["workflow"] == workflow
        ]
    assert all(SEQ_FIELD not in r for r in applied)
    assert counters["monitor.requests_redecoded_skipped"] == sum(
        len(m) for m in published[restart:]
    )


@given(
    st.integers(-1, 10**12),
    st.dictionaries(st.integers(0, 63), st.tuples(st.integers(0, 10**9), st.integers(0, 10**4))),
    st.binary(max_size=64),
)
def test_monitor_checkpoint_round_trips(
    offset: int, marks: dict[int, tuple[int, int]], snapshot: bytes
) -> None:
    got_offset, got_marks, got_snapshot = parse_checkpoint(
        checkpoint_value(offset, snapshot, SourceMarks(marks))
    )
    assert (got_offset, got_marks.export(), got_snapshot) == (
        offset,
        SourceMarks(marks).export(),
        snapshot,
    )


@given(st.integers(0, 2**16), st.integers(20, 400))
@settings(max_examples=20, deadline=None)
def test_closed_records_in_internal_form_read_back_as_the_wire_form_did(
    seed: int, spans: int
) -> None:
    """Completed events and traces travel in internal form and are taken as they are; the
    same records in the older wire form (ISO 8601 timestamps) read back to the same dicts."""
    from tests.utils.otlp_factory import realistic_message

    batch = normalize_message(realistic_message(spans, seed=seed).SerializeToString())
    assembler = TraceAssembler(0.0, 60.0, 10_000, 10_000)
    assembler.add(batch.events, batch.spans, 0.0)
    closed = assembler.close_due(1.0)
    assert closed.events
    decoded = [
        decode_closed(v)
        for g in group_by_workflow(closed.events, closed.traces).values()
        for v in encode_bounded(g, 1 << 20)
    ]
    assert all(d.problem == "" for d in decoded)
    events = [e for d in decoded for e in d.events]
    assert all(tuple(e) == EVENT_FIELD_NAMES for e in events)
    assert sorted(events, key=lambda e: e["span_id"]) == sorted(
        (from_wire(to_wire(e)) for e in closed.events), key=lambda e: e["span_id"]
    )
    traces = [t for d in decoded for t in d.traces]
    assert len(traces) == len(closed.traces)
    wire = dumps(
        {
            "events": [to_wire(e) for e in events],
            "early": [],
            "traces": [to_wire(t, TRACE_FIELDS) for t in traces],
            "requests": [],
        }
    )
    again = decode_closed(wire)
    assert (again.events, again.traces, again.problem) == (events, traces, "")


def test_a_record_with_the_schemas_width_but_not_its_fields_is_not_taken_as_it_is() -> None:
    """A writer of llm_events swapping a field that may be None for a key of its own: the
    record is read through from_wire (every field, nothing else), not taken as it is."""
    event = from_wire({"trace_id": "t", "span_id": "a", "workflow": "w", "input_tokens": 3})
    swapped = {k: v for k, v in event.items() if k != "ttft_ms"} | {"extra": "x" * 100}
    assert len(swapped) == len(event)
    decoded = decode_closed(dumps({"events": [swapped], "early": [False]}))
    assert decoded.problem == ""
    (record,) = decoded.events
    assert tuple(record) == EVENT_FIELD_NAMES and record["ttft_ms"] is None


def test_a_request_holds_exactly_the_schema_fields_whatever_the_event_carried() -> None:
    # An event already flagged, one schema field swapped for a key of its own: as wide as
    # the schema once the flag is gone, but not its fields.
    event: dict[str, Any] = {name: None for name in EVENT_FIELD_NAMES}
    event.update(workflow="w", trace_id="t", span_id="s")
    del event["response_model"]
    event["foreign"] = "x"
    event[EARLY_FIELD] = True
    out: dict[str, list[dict[str, Any]]] = {}
    route_requests([event], (0, 1), {}, out)
    (request,) = out["w"]
    assert set(request) == {*EVENT_FIELD_NAMES, SEQ_FIELD}
    assert request["response_model"] is None
