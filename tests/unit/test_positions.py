"""Source positions: whatever is decoded or read again, the assembler applies each span once."""

from __future__ import annotations

import copy
import json
from collections import Counter
from typing import Any

from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given, settings
from hypothesis import strategies as st

from driftline.streams.normalize import normalize_message
from driftline.streams.positions import (
    SEQ_FIELD,
    SourceMarks,
    encode_ordered,
    marks_key,
    route_sourced,
    target_partition,
)
from tests.utils import otlp_factory as f

PARTITIONS = 3
SOURCES = 2


Message = tuple[int, int, list[str]]  # (source partition, offset, trace id of each span)


def span_id(source: int, offset: int, i: int) -> str:
    return f"{source}-{offset}-{i}"


def decode(messages: list[Message], limit: int) -> dict[int, list[bytes]]:
    """What decode sends for ``(source partition, offset, trace ids)`` messages, per target."""
    routed: dict[int, list[tuple[str, dict[str, Any]]]] = {}
    for source, offset, trace_ids in messages:
        spans = [
            {"trace_id": t, "span_id": span_id(source, offset, i), "pad": "x" * 40}
            for i, t in enumerate(trace_ids)
        ]
        events = [dict(s) for s in spans[::2]]  # every other span is an LLM call
        route_sourced(events, spans, (source, offset), PARTITIONS, routed)
    return {q: encode_ordered(records, limit) for q, records in routed.items()}


def sent(messages: list[Message]) -> dict[int, list[tuple[str, str]]]:
    """Per target partition, the records the messages hold: an event for every other span
    (a call: its event stands for its span record, which is not sent), the span record of
    each other one, on the partition Kafka's own partitioner gives their trace id."""
    kafka_partition = DefaultPartitioner()
    out: dict[int, list[tuple[str, str]]] = {q: [] for q in range(PARTITIONS)}
    for source, offset, trace_ids in messages:
        for i, trace_id in enumerate(trace_ids):
            q = kafka_partition(trace_id.encode(), list(range(PARTITIONS)), [])
            out[q].append(("events" if i % 2 == 0 else "spans", span_id(source, offset, i)))
    return {q: sorted(records) for q, records in out.items()}


def apply(marks: SourceMarks, values: list[bytes]) -> list[tuple[str, str]]:
    applied = []
    for value in values:
        doc = json.loads(value)
        events, spans = marks.fresh(doc["events"], doc["spans"])
        assert all(SEQ_FIELD not in r for r in events + spans)
        applied += [("events", e["span_id"]) for e in events]
        applied += [("spans", s["span_id"]) for s in spans]
    return applied


source_messages = st.lists(
    st.lists(st.sampled_from("abcdefgh"), min_size=1, max_size=6), min_size=1, max_size=12
)


@settings(max_examples=200, deadline=None)
@given(
    traces=source_messages,
    sources=st.data(),
    limit=st.sampled_from([150, 400, 100_000]),
    crash_at=st.data(),
)
def test_every_record_is_applied_once_whatever_is_read_again(
    traces: list[list[str]], sources: st.DataObject, limit: int, crash_at: st.DataObject
) -> None:
    # Messages per source partition in offset order, as decode reads them.
    partitions = sources.draw(
        st.lists(st.integers(0, SOURCES - 1), min_size=len(traces), max_size=len(traces))
    )
    next_offset = [0] * SOURCES
    messages = []
    for partition, trace_ids in zip(partitions, traces, strict=True):
        messages.append((partition, next_offset[partition], trace_ids))
        next_offset[partition] += 1
    expected = sent(messages)
    assert sum(map(len, expected.values())) == sum(len(ids) for _, _, ids in messages)

    # Decode runs up to a crash, then again from an earlier (committed) point; the
    # assembler reads its own input again from an earlier point too, then everything new.
    crash = crash_at.draw(st.integers(0, len(messages)))
    committed = crash_at.draw(st.integers(0, crash))
    first = decode(messages[:crash], limit)
    second = decode(messages[committed:], limit)
    assert set(first) | set(second) <= set(expected)
    for q, want in expected.items():
        before, after = first.get(q, []), second.get(q, [])
        reread_from = crash_at.draw(st.integers(0, len(before)))
        marks = SourceMarks()
        got = apply(marks, before)
        restored = SourceMarks.load(json.loads(json.dumps(marks.export())))
        got += apply(restored, before[reread_from:] + after)
        assert sorted(got) == want


def test_messages_of_a_split_batch_keep_positions_in_order() -> None:
    routed: dict[int, list[tuple[str, dict[str, Any]]]] = {}
    spans = [{"trace_id": "a", "span_id": str(i), "pad": "y" * 100} for i in range(40)]
    route_sourced([dict(s) for s in spans[:10]], spans, (1, 5), 1, routed)
    parts = encode_ordered(routed[0], 1000)
    assert len(parts) > 2
    positions = [
        tuple(r[SEQ_FIELD])
        for part in parts
        for r in sorted(
            json.loads(part)["events"] + json.loads(part)["spans"], key=lambda r: r[SEQ_FIELD]
        )
    ]
    # The ten calls' span records are not sent, and keep their positions (10-19).
    assert positions == sorted(positions) == [(1, 5, k) for k in (*range(10), *range(20, 50))]


def test_marks_keys_land_on_their_partition_and_are_not_trace_ids() -> None:
    for partitions in (1, 4, 12):
        for partition in range(partitions):
            key = marks_key(partition, partitions)
            assert target_partition(key, partitions) == partition
            assert not all(c in "0123456789abcdef" for c in key)


def _previous_release_route(
    events: list[dict[str, Any]], spans: list[dict[str, Any]], source: tuple[int, int]
) -> list[tuple[str, dict[str, Any]]]:
    """What decode sent before calls' span records were left out: every record, numbered."""
    out: list[tuple[str, dict[str, Any]]] = []
    for kind, records in (("events", events), ("spans", spans)):
        for record in records:
            out.append((kind, {**record, SEQ_FIELD: [source[0], source[1], len(out)]}))
    return out


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**16), st.integers(0, 30))
def test_a_message_decoded_again_after_an_upgrade_is_applied_once(seed: int, crash: int) -> None:
    """A worker of the previous release sent part of a source message's records and
    crashed; this release decodes the message again. Calls' records keep their positions,
    so every record is recognised: none applied twice, none skipped for good."""
    batch = normalize_message(f.realistic_message(200, seed=seed).SerializeToString())
    source = (0, 41)
    before = encode_ordered(_previous_release_route(batch.events, batch.spans, source), 20_000)
    marks, applied = SourceMarks(), Counter[tuple[str, str, str]]()

    def take(values: list[bytes]) -> None:
        for value in values:
            doc = json.loads(value)
            events, spans = marks.fresh(doc["events"], doc["spans"])
            applied.update(("events", r["trace_id"], r["span_id"]) for r in events)
            applied.update(("spans", r["trace_id"], r["span_id"]) for r in spans)

    take(before[: crash % (len(before) + 1)])
    routed: dict[int, list[tuple[str, dict[str, Any]]]] = {}
    route_sourced(copy.deepcopy(batch.events), copy.deepcopy(batch.spans), source, 1, routed)
    take(encode_ordered(routed[0], 20_000))
    calls = {(e["trace_id"], e["span_id"]) for e in batch.events}
    assert set(applied.values()) == {1}
    assert {k for k in applied if k[0] == "events"} == {("events", *c) for c in calls}
    others = {(s["trace_id"], s["span_id"]) for s in batch.spans} - calls
    assert {(t, s) for kind, t, s in applied if kind == "spans"} >= others
