"""Where internal span records go, and where they came from, so each is applied once.

Decode reads ``otlp_spans`` and writes the normalized records of every message to the
``llm_spans`` partition of their trace (:func:`target_partition`). Both hops are at least
once: after a crash or a rebalance, the messages since the last offset commit are decoded
again (new ``llm_spans`` messages with the same spans) and ``llm_spans`` itself is read
again. Trace assembly dedups spans by span id only while their trace is open; a span of a
trace that closed in between would open a fragment of it again and publish its events a
second time, and the monitor would count them twice (budgets, baselines, alerts).

So every record carries its source position :data:`SEQ_FIELD` = ``[source partition,
source offset, index]`` (index: its place among the records of that source message bound
for the same ``llm_spans`` partition). Decode sends them in that order, and a split of a
large batch into several messages keeps it (:func:`encode_ordered`), so per source
partition the positions reaching one ``llm_spans`` partition only grow. The assembler of
that partition keeps the highest position applied per source partition
(:class:`SourceMarks`), checkpointed with its open traces, and drops anything at or below
it: a re-decoded or re-read record is recognised whatever its trace's state.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from aiokafka.partitioner import murmur2

from driftline.schemas.event import span_keys
from driftline.streams.codec import dumps, encode_in_parts

__all__ = [
    "SEQ_FIELD",
    "SourceMarks",
    "chunk_key",
    "encode_ordered",
    "marks_key",
    "parse_chunk_key",
    "route_sourced",
    "target_partition",
]

SEQ_FIELD: Final = "_seq"
MARKS_KEY_PREFIX: Final = "\x00source-marks/"  # never a trace id (those are hex)
CHUNK_KEY_PREFIX: Final = "\x00trace-chunk/"  # a trace checkpoint's full chunks

Position = tuple[int, int]  # (source offset, index)


@functools.lru_cache(maxsize=1 << 16)
def target_partition(key: str | bytes, partitions: int) -> int:
    """Partition of a key: Kafka's default key partitioner on its (UTF-8) bytes.

    The same function places a trace's spans on ``llm_spans`` and its checkpoint in the
    ``open_traces`` changelog, so both always live on the same partition. Remembered for
    the keys seen last: a trace id is hashed when its spans are routed, when its checkpoint
    is written and when it is deleted, and aiokafka's murmur2 is Python, byte by byte.

    >>> target_partition("4bf92f3577b34da6a3ce929d0e0e4736", 4)
    2
    >>> from aiokafka.partitioner import DefaultPartitioner
    >>> DefaultPartitioner()(b"4bf92f3577b34da6a3ce929d0e0e4736", [0, 1, 2, 3], [0])
    2
    """
    raw = key.encode() if isinstance(key, str) else key
    return (murmur2(raw) & 0x7FFFFFFF) % partitions


def marks_key(partition: int, partitions: int) -> str:
    """A table key that the default partitioner puts on ``partition`` (first one found).

    >>> key = marks_key(3, 4)
    >>> target_partition(key, 4), key.startswith(MARKS_KEY_PREFIX)
    (3, True)
    """
    n = 0
    while True:
        key = f"{MARKS_KEY_PREFIX}{partition}/{n}"
        if target_partition(key, partitions) == partition:
            return key
        n += 1


def chunk_key(trace_id: str, index: int, partitions: int) -> str:
    """Key of chunk ``index`` of a trace's checkpoint, on the trace's own partition.

    >>> key = chunk_key("4bf92f3577b34da6a3ce929d0e0e4736", 3, 4)
    >>> target_partition(key, 4), parse_chunk_key(key)
    (2, ('4bf92f3577b34da6a3ce929d0e0e4736', 3))
    """
    partition = target_partition(trace_id, partitions)
    n = 0
    while True:
        key = f"{CHUNK_KEY_PREFIX}{trace_id}/{index}/{n}"
        if target_partition(key, partitions) == partition:
            return key
        n += 1


def parse_chunk_key(key: str) -> tuple[str, int] | None:
    """(trace id, chunk index) of a :func:`chunk_key`; None for any other key."""
    if not key.startswith(CHUNK_KEY_PREFIX):
        return None
    trace_id, index, _n = key[len(CHUNK_KEY_PREFIX) :].rsplit("/", 2)
    return trace_id, int(index)


def route_sourced(
    events: list[dict[str, Any]],
    spans: Iterable[dict[str, Any]],
    source: tuple[int, int],
    partitions: int,
    out: dict[int, list[tuple[str, dict[str, Any]]]],
) -> None:
    """Append the records of one source message to ``out[partition]`` with their positions.

    A call's span record is not sent: its event stands for its span in trace assembly
    (``streams.traces``), and the record holds nothing the event does not. It keeps its
    position all the same, so a message decoded again by a worker of another release
    numbers its records alike and what was applied is still recognised
    (:meth:`SourceMarks.fresh`). Span ids are unique within a trace only: a call is its
    trace id and span id.

    >>> out = {}
    >>> events = [{"trace_id": "a", "span_id": "1"}]
    >>> spans = [{"trace_id": "a", "span_id": "1"}, {"trace_id": "c", "span_id": "1"}]
    >>> route_sourced(events, spans, (1, 7), 4, out)
    >>> [(p, kind, r[SEQ_FIELD]) for p, records in sorted(out.items()) for kind, r in records]
    [(0, 'events', [1, 7, 0]), (2, 'spans', [1, 7, 0])]
    """
    memo: dict[str, int] = {}
    index: dict[int, int] = {}
    calls = span_keys(events)
    for kind, records in (("events", events), ("spans", spans)):
        for record in records:
            trace_id = record["trace_id"]
            partition = memo.get(trace_id)
            if partition is None:
                partition = memo[trace_id] = target_partition(trace_id, partitions)
            k = index.get(partition, 0)
            index[partition] = k + 1
            if kind == "spans" and (trace_id, record["span_id"]) in calls:
                continue  # position 1 on partition 0 above: the call's record
            record[SEQ_FIELD] = [source[0], source[1], k]
            out.setdefault(partition, []).append((kind, record))


def encode_ordered(records: list[tuple[str, dict[str, Any]]], limit: int) -> list[bytes]:
    """``{"events": [...], "spans": [...]}`` messages of ``records``, split in order.

    Cut in consecutive parts until each message fits ``limit`` (:func:`streams.codec.
    encode_in_parts`); a part's records all come before the next part's, so positions keep
    growing from one message to the next. A single record over the limit is still sent alone
    (and fails loudly at the producer).

    >>> records = [("spans", {"i": i}) for i in range(100)]
    >>> parts = encode_ordered(records, 200)
    >>> len(parts) > 1, all(len(p) <= 200 for p in parts)
    (True, True)
    >>> from streams.codec import loads
    >>> [s["i"] for p in parts for s in loads(p)["spans"]] == list(range(100))
    True
    """

    def encode(start: int, end: int) -> bytes:
        doc: dict[str, list[dict[str, Any]]] = {"events": [], "spans": []}
        for kind, record in records[start:end]:
            doc[kind].append(record)
        return dumps(doc)

    return encode_in_parts(len(records), encode, limit)


class SourceMarks:
    """Highest source position applied per source partition, for one ``llm_spans`` partition.

    >>> marks = SourceMarks()
    >>> first = [{"span_id": "a", SEQ_FIELD: [0, 5, 0]}, {"span_id": "b", SEQ_FIELD: [0, 5, 1]}]
    >>> [r["span_id"] for r in marks.fresh([], first)[1]]
    ['a', 'b']
    >>> again = [{"span_id": "b", SEQ_FIELD: [0, 5, 1]}, {"span_id": "c", SEQ_FIELD: [0, 6, 0]}]
    >>> [r["span_id"] for r in marks.fresh([], again)[1]], marks.skipped
    (['c'], 1)
    >>> SourceMarks.load(marks.export()).export()
    {'0': [6, 0]}
    """

    def __init__(self, marks: dict[int, Position] | None = None) -> None:
        self._marks: dict[int, Position] = dict(marks or {})
        self.skipped = 0

    def fresh(
        self, events: list[dict[str, Any]], spans: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Events and spans of one message not applied yet, positions removed; then advance.

        Every record is judged against the marks as they were before this message, so the
        records of one message may come in any order. Records without a position (offline
        use) are always fresh.
        """
        start = self._marks
        advanced = dict(start)
        out: tuple[list[dict[str, Any]], list[dict[str, Any]]] = ([], [])
        for records, kept in ((events, out[0]), (spans, out[1])):
            for record in records:
                seq = record.pop(SEQ_FIELD, None)
                if seq is None:
                    kept.append(record)
                    continue
                source, position = int(seq[0]), (int(seq[1]), int(seq[2]))
                mark = start.get(source)
                if mark is not None and position <= mark:
                    self.skipped += 1
                    continue
                kept.append(record)
                if position > advanced.get(source, (-1, -1)):
                    advanced[source] = position
        self._marks = advanced
        return out

    def merge(self, other: SourceMarks) -> None:
        """Keep the higher mark of each source partition."""
        for source, position in other._marks.items():
            if position > self._marks.get(source, (-1, -1)):
                self._marks[source] = position

    def export(self) -> dict[str, list[int]]:
        return {str(source): list(position) for source, position in sorted(self._marks.items())}

    @classmethod
    def load(cls, doc: dict[str, Any] | None) -> SourceMarks:
        return cls({int(k): (int(v[0]), int(v[1])) for k, v in (doc or {}).items()})


def offsets_token(kind: str, bounds: Mapping[tuple[str, int], Sequence[int]]) -> str:
    """An insert's dedup token from the ``[lowest, highest]`` offset per topic-partition of
    its rows: the same batch read again after a crash gets the same token.

    >>> offsets_token("events", {("llm_events", 1): [4, 9]}) == offsets_token(
    ...     "events", {("llm_events", 1): (4, 9)})
    True
    """
    digest = hashlib.blake2b(digest_size=12)
    for (topic, partition), (low, high) in sorted(bounds.items()):
        digest.update(f"{topic}/{partition}/{low}-{high};".encode())
    return f"{kind}:offsets:{digest.hexdigest()}"
