"""Trace assembly: buffer the spans of each trace, close it, complete its events.

Spans of one trace arrive in any order, split across messages (and, before the
stream is repartitioned by trace id, across partitions). :class:`TraceAssembler`
keeps them per trace id and closes a trace

* ``grace_s`` after its root span (the span without a parent) was received:
  a root span is exported when it ends, so by then most children are in;
* ``timeout_s`` after the trace was first seen, when no root has arrived;
* when more than ``max_open_traces`` are open: the oldest first ("evicted");
* when it holds ``max_trace_spans`` spans or calls ("span_cap"): its spans so far
  are published, and later spans of the same id open it again (as after an eviction);
* on :meth:`TraceAssembler.flush`.

Times are processing-time seconds supplied by the caller (``now_s``); use the
wall clock (``time.time()``) when traces are checkpointed, so deadlines survive a
restart.

A checkpointing caller saves each open trace as a head (its times and its latest spans
and calls) and, once it holds more than ``CHUNK_RECORDS``, full chunks of that many in
arrival order, each written once: a growing trace rewrites only its head, and no record
outgrows a Kafka message (:meth:`TraceAssembler.checkpoint_changes`).

On close each LLM-call event is completed:

``loop_depth``
    The number of LLM calls and tool executions (operation ``execute_tool``) on
    the path from the root span to the call, the call itself included. Agent,
    workflow and other spans do not count. A top-level call (under the root or
    an agent span) is 1; a call inside a tool that the planner agent called is 2
    (tool, call); a tool span that an instrumentation nests under the chat span
    that requested it adds that call too (3). A parent that was never received
    breaks the chain: only the known part counts.
``workflow``
    When empty: the nearest ancestor span's workflow, else any span of the trace
    with a workflow (the root first, then by start time), else the root span's
    agent name, else the event's service.
``tenant``, ``route``, ``session_id``
    When empty: the nearest ancestor's value, else the root's, else any span's
    (by start time).
``tool_calls``
    When 0: the tool executions the call led to. A tool execution is a span with
    operation ``execute_tool`` (``gen_ai.operation.name``, OpenInference kind
    ``TOOL``, OpenLLMetry kind ``tool``), and it counts for at most one call, found
    by walking up from the tool span, nearest ancestor first:

    * an ancestor that is an LLM call owns it (an instrumentation that nests the
      tool under the chat span that asked for it);
    * else, among the LLM calls that are children of that ancestor (the tool's
      siblings first), the one that started last at or before the tool started
      owns it: the agent loop's "call, its tools, next call" (pydantic-ai puts the
      ``chat`` and ``execute_tool`` spans side by side under ``invoke_agent``).
      If that call failed, the tool is no call's: a failed call returned no tool
      request (a retry that answered is a later sibling, and owns what follows);
    * else the walk goes on up, but not past an agent (``invoke_agent``,
      ``create_agent``) or another tool: a tool an agent ran before its first call
      belongs to no call, and neither does one whose chain reaches a span that was
      never received.

    Embeddings calls own no tools. The count is of tools executed, not of tool
    calls the model asked for (a request nobody ran is not on the trace). A call's
    own ``driftline.tool_calls`` above 0 is kept; 0 and a missing attribute look the
    same once the event is built, so both take the trace's count.

The trace summary has exactly the fields of ``schemas.event.TRACE_FIELD_NAMES``;
``amplification`` is the trace's total tokens over the tokens (input + output) of
its first LLM call by start time. Re-delivered spans (same span id) count once.
The result depends only on the set of spans received, not on their order.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from driftline.schemas.attributes import (
    OP_CREATE_AGENT,
    OP_EMBEDDINGS,
    OP_EXECUTE_TOOL,
    OP_INVOKE_AGENT,
)
from driftline.schemas.event import TRACE_FIELD_NAMES, span_keys

__all__ = ["ClosedTraces", "TraceAssembler", "spans_without_calls", "tool_executions"]

CLOSED_BY_ROOT_END: Final = "root_end"
CLOSED_BY_TIMEOUT: Final = "timeout"
CLOSED_BY_FLUSH: Final = "flush"
CLOSED_BY_EVICTED: Final = "evicted"
CLOSED_BY_SPAN_CAP: Final = "span_cap"

_INHERITED_FIELDS: Final = ("tenant", "route", "session_id")
# Where the walk up from a tool span to the call that led to it stops.
_TOOL_OWNER_BOUNDARIES: Final = frozenset((OP_EXECUTE_TOOL, OP_INVOKE_AGENT, OP_CREATE_AGENT))
_EXPORT_VERSION: Final = 2
_INLINE_VERSION: Final = 1  # one record per trace, spans inline (read on restore only)
# Spans and calls per checkpoint chunk: a call is about 1 KB, 10 KB at most with every
# attribute at its size limit, so a chunk stays well below a Kafka message's limit.
CHUNK_RECORDS: Final = 64
DEFAULT_MAX_TRACE_SPANS: Final = 100_000


@dataclass(slots=True)
class ClosedTraces:
    """Completed events (by trace, each trace's in start order) and trace summaries."""

    events: list[dict[str, Any]] = field(default_factory=list)
    traces: list[dict[str, Any]] = field(default_factory=list)

    def extend(self, other: ClosedTraces) -> None:
        self.events.extend(other.events)
        self.traces.extend(other.traces)


@dataclass(slots=True)
class _OpenTrace:
    first_seen_s: float
    root_seen_s: float | None = None
    spans: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Spans and calls in arrival order (True: a call), and the full chunks of it saved.
    log: list[tuple[bool, dict[str, Any]]] = field(default_factory=list)
    chunks_saved: int = 0
    # Calls without a span record: decode sends none for a call (its event stands for it).
    calls_only: int = 0

    def size(self) -> int:
        """Distinct spans held: span records, and the calls that came without one."""
        return len(self.spans) + self.calls_only

    def add_span(self, span: dict[str, Any]) -> bool:
        span_id = span["span_id"]
        if span_id in self.spans:
            return False  # re-delivery
        self.spans[span_id] = span
        self.log.append((False, span))
        if span_id in self.events:
            self.calls_only -= 1
        return True

    def add_call(self, event: dict[str, Any]) -> bool:
        span_id = event["span_id"]
        if span_id in self.events:
            return False
        self.events[span_id] = event
        self.log.append((True, event))
        if span_id not in self.spans:
            self.calls_only += 1
        return True

    def records(self, start: int, end: int | None = None) -> dict[str, Any]:
        part = self.log[start:end]
        return {
            "spans": [record for is_call, record in part if not is_call],
            "events": [record for is_call, record in part if is_call],
        }

    def deadline(self, grace_s: float, timeout_s: float) -> float:
        if self.root_seen_s is not None:
            return self.root_seen_s + grace_s
        return self.first_seen_s + timeout_s


class TraceAssembler:
    """Per-trace buffer that closes traces and completes their events.

    Parameters
    ----------
    grace_s
        Seconds to wait after a trace's root span arrived, for late children.
    timeout_s
        Seconds after a trace was first seen to close it when no root arrived.
    max_open_traces
        Open traces kept at most; beyond it the oldest (first seen) is closed.
    max_trace_spans
        Spans (or calls) one open trace holds at most; at it the trace is closed.

    Examples
    --------
    >>> asm = TraceAssembler(grace_s=5, timeout_s=60, max_open_traces=1000)
    >>> root = {"trace_id": "t", "span_id": "a", "parent_span_id": "", "name": "agent",
    ...         "start_ts": 0, "end_ts": 9, "operation": "invoke_agent", "is_llm_call": False,
    ...         "agent": "planner", "workflow": "", "service": "svc", "environment": "",
    ...         "tenant": "", "route": "", "session_id": "", "status": "ok"}
    >>> call = {"trace_id": "t", "span_id": "b", "parent_span_id": "a", "start_ts": 1,
    ...         "workflow": "", "service": "svc", "input_tokens": 10, "output_tokens": 5,
    ...         "cost_usd": None, "retry_attempt": 0, "status": "ok"}
    >>> asm.add([call], [root], now_s=100.0)
    >>> asm.close_due(now_s=104.0).traces
    []
    >>> closed = asm.close_due(now_s=105.0)
    >>> closed.events[0]["loop_depth"], closed.events[0]["workflow"]
    (1, 'planner')
    >>> closed.traces[0]["closed_by"], closed.traces[0]["span_count"]
    ('root_end', 2)
    """

    def __init__(
        self,
        grace_s: float,
        timeout_s: float,
        max_open_traces: int,
        max_trace_spans: int = DEFAULT_MAX_TRACE_SPANS,
    ) -> None:
        if grace_s < 0:
            raise ValueError(f"grace_s must be >= 0, got {grace_s}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        if max_open_traces < 1:
            raise ValueError(f"max_open_traces must be >= 1, got {max_open_traces}")
        if max_trace_spans < 1:
            raise ValueError(f"max_trace_spans must be >= 1, got {max_trace_spans}")
        self.grace_s = grace_s
        self.timeout_s = timeout_s
        self.max_open_traces = max_open_traces
        self.max_trace_spans = max_trace_spans
        # Insertion order is first-seen order: eviction pops from the front.
        self._open: dict[str, _OpenTrace] = {}
        self._deadlines: list[tuple[float, str]] = []
        self._evicted: list[str] = []  # closed for room, emitted by the next close
        self._evicted_traces = ClosedTraces()
        self._dirty: set[str] = set()
        self._evicted_chunks: dict[str, int] = {}
        self.closed_trace_ids: list[str] = []
        # Chunks each closed trace had checkpointed: what a caller deletes with its head.
        self.closed_chunks: dict[str, int] = {}
        self.closed_counts: Counter[str] = Counter()

    @property
    def open_count(self) -> int:
        return len(self._open)

    @property
    def evicted_count(self) -> int:
        return self.closed_counts[CLOSED_BY_EVICTED]

    def add(self, events: list[dict[str, Any]], spans: list[dict[str, Any]], now_s: float) -> None:
        """Buffer events (LLM-call spans) and span records of any traces.

        A call needs no span record: its event stands for its span (decode sends none,
        :func:`spans_without_calls`), and a call without a parent is the trace's root.
        """
        for records, add in ((spans, _OpenTrace.add_span), (events, _OpenTrace.add_call)):
            for record in records:
                trace = self._trace(record["trace_id"], now_s)
                if not add(trace, record):
                    continue
                if not record.get("parent_span_id") and trace.root_seen_s is None:
                    trace.root_seen_s = now_s
                    self._push_deadline(record["trace_id"], trace)
                if trace.size() >= self.max_trace_spans:
                    self._close_early(record["trace_id"], CLOSED_BY_SPAN_CAP)
        self._evict_beyond_limit()

    def close_due(self, now_s: float) -> ClosedTraces:
        """Close traces whose deadline has passed, plus any evicted since the last call."""
        out, self._evicted_traces = self._evicted_traces, ClosedTraces()
        closed_ids, self._evicted = self._evicted, []
        self.closed_chunks, self._evicted_chunks = self._evicted_chunks, {}
        while self._deadlines and self._deadlines[0][0] <= now_s:
            _, trace_id = heapq.heappop(self._deadlines)
            trace = self._open.get(trace_id)
            # Entries are not removed when a deadline moves; skip stale ones.
            if trace is None or trace.deadline(self.grace_s, self.timeout_s) > now_s:
                continue
            closed_by = CLOSED_BY_TIMEOUT if trace.root_seen_s is None else CLOSED_BY_ROOT_END
            _note_chunks(self.closed_chunks, trace_id, trace)
            out.extend(self._close(trace_id, closed_by))
            closed_ids.append(trace_id)
        self._mark_reopened(closed_ids)
        self.closed_trace_ids = closed_ids
        return out

    def flush(self) -> ClosedTraces:
        """Close every open trace (closed_by "flush"), after any evicted ones."""
        out, self._evicted_traces = self._evicted_traces, ClosedTraces()
        closed_ids, self._evicted = self._evicted, []
        self.closed_chunks, self._evicted_chunks = self._evicted_chunks, {}
        for trace_id in list(self._open):
            _note_chunks(self.closed_chunks, trace_id, self._open[trace_id])
            out.extend(self._close(trace_id, CLOSED_BY_FLUSH))
            closed_ids.append(trace_id)
        self._deadlines.clear()
        self.closed_trace_ids = closed_ids
        return out

    def dirty_trace_ids(self) -> set[str]:
        """Open traces touched since the last call (to write to a changelog table).

        A checkpointing agent deletes :attr:`closed_trace_ids` first and then
        writes these: an evicted trace id can be open again by then.
        """
        dirty, self._dirty = self._dirty, set()
        return {trace_id for trace_id in dirty if trace_id in self._open}

    def checkpoint_changes(
        self, trace_id: str
    ) -> tuple[dict[str, Any], list[tuple[int, dict[str, Any]]]]:
        """What to save of one open trace since its last checkpoint: its head (times, the
        spans and calls after its full chunks) and the full chunks not saved yet, by index.
        :meth:`import_trace` restores them (JSON-able)."""
        trace = self._open[trace_id]
        full = len(trace.log) // CHUNK_RECORDS
        chunks = [
            (index, trace.records(index * CHUNK_RECORDS, (index + 1) * CHUNK_RECORDS))
            for index in range(trace.chunks_saved, full)
        ]
        trace.chunks_saved = full
        head = {
            "version": _EXPORT_VERSION,
            "first_seen_s": trace.first_seen_s,
            "root_seen_s": trace.root_seen_s,
            "chunks": full,
            **trace.records(full * CHUNK_RECORDS),
        }
        return head, chunks

    def export_trace(self, trace_id: str) -> dict[str, Any]:
        """The whole state of one open trace in one JSON-able value (for tests and tools;
        a checkpoint uses :meth:`checkpoint_changes`). :meth:`import_trace` restores it."""
        trace = self._open[trace_id]
        return {
            "version": _INLINE_VERSION,
            "first_seen_s": trace.first_seen_s,
            "root_seen_s": trace.root_seen_s,
            "spans": list(trace.spans.values()),
            "events": list(trace.events.values()),
        }

    def import_trace(
        self, trace_id: str, state: dict[str, Any], chunks: Iterable[dict[str, Any]] = ()
    ) -> None:
        """Restore a trace (replaces an open one): a head from :meth:`checkpoint_changes`
        with its chunks in index order, or one value from :meth:`export_trace`."""
        version = state.get("version")
        if version not in (_EXPORT_VERSION, _INLINE_VERSION):
            raise ValueError(
                f"trace state of {trace_id} has version {version!r}, expected "
                f"{_EXPORT_VERSION}; drop the checkpoint table to start fresh"
            )
        trace = _OpenTrace(first_seen_s=float(state["first_seen_s"]))
        root_seen = state.get("root_seen_s")
        trace.root_seen_s = None if root_seen is None else float(root_seen)
        chunks = list(chunks)
        for chunk in [*chunks, state]:
            for span in chunk["spans"]:
                trace.add_span(span)
            for event in chunk["events"]:
                trace.add_call(event)
        trace.chunks_saved = len(chunks)
        if len(trace.log) // CHUNK_RECORDS > len(chunks):
            self._dirty.add(trace_id)  # an inline value too large for one record: chunk it
        self._open.pop(trace_id, None)
        self._open[trace_id] = trace
        self._push_deadline(trace_id, trace)
        if trace.size() >= self.max_trace_spans:
            self._close_early(trace_id, CLOSED_BY_SPAN_CAP)
        self._evict_beyond_limit()

    # -- internals -------------------------------------------------------------

    def _trace(self, trace_id: str, now_s: float) -> _OpenTrace:
        self._dirty.add(trace_id)
        trace = self._open.get(trace_id)
        if trace is None:
            trace = self._open[trace_id] = _OpenTrace(first_seen_s=now_s)
            self._push_deadline(trace_id, trace)
        return trace

    def _mark_reopened(self, closed_ids: list[str]) -> None:
        # An evicted trace whose spans kept coming is open again under the same id: a
        # checkpointing caller deletes closed ids, so this one must be written again.
        self._dirty.update(trace_id for trace_id in closed_ids if trace_id in self._open)

    def _push_deadline(self, trace_id: str, trace: _OpenTrace) -> None:
        deadline = trace.deadline(self.grace_s, self.timeout_s)
        heapq.heappush(self._deadlines, (deadline, trace_id))

    def _close_early(self, trace_id: str, closed_by: str) -> None:
        """Close now, emitted by the next :meth:`close_due` (spans may still come)."""
        _note_chunks(self._evicted_chunks, trace_id, self._open[trace_id])
        self._evicted_traces.extend(self._close(trace_id, closed_by))
        self._evicted.append(trace_id)

    def _evict_beyond_limit(self) -> None:
        while len(self._open) > self.max_open_traces:
            self._close_early(next(iter(self._open)), CLOSED_BY_EVICTED)
        if len(self._deadlines) > 4 * len(self._open) + 64:
            # Stale heap entries pile up when evictions outpace deadlines.
            self._deadlines = [(d, t) for d, t in self._deadlines if t in self._open]
            heapq.heapify(self._deadlines)

    def _close(self, trace_id: str, closed_by: str) -> ClosedTraces:
        trace = self._open.pop(trace_id)
        self.closed_counts[closed_by] += 1
        events, summary = complete_trace(
            trace_id, trace.spans.values(), trace.events.values(), closed_by
        )
        return ClosedTraces(events=events, traces=[summary])


def _note_chunks(chunks: dict[str, int], trace_id: str, trace: _OpenTrace) -> None:
    # The most any incarnation of the id saved: every one of them is to be deleted.
    chunks[trace_id] = max(chunks.get(trace_id, 0), trace.chunks_saved)


def spans_without_calls(
    events: Iterable[dict[str, Any]], spans: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The span records an assembler needs beside ``events``: those of spans that are not
    calls (what decode sends, :func:`streams.positions.route_sourced`). A call's record
    holds nothing its event does not (:func:`_span_from_event` rebuilds it on close), and
    sending it through the repartition as well cost a worker about 5% of its CPU
    (``bench/bench_pipeline.py``: 70% of the spans are calls). Span ids are unique within
    a trace only.

    >>> calls = [{"trace_id": "t", "span_id": "b"}]
    >>> spans_without_calls(calls, [{"trace_id": "t", "span_id": "a"},
    ...                             {"trace_id": "t", "span_id": "b"},
    ...                             {"trace_id": "u", "span_id": "b"}])
    [{'trace_id': 't', 'span_id': 'a'}, {'trace_id': 'u', 'span_id': 'b'}]
    """
    calls = span_keys(events)
    if not calls:
        return spans
    return [span for span in spans if (span["trace_id"], span["span_id"]) not in calls]


def _start_key(record: dict[str, Any]) -> tuple[int, str]:
    return (record.get("start_ts") or 0, record["span_id"])


def _span_from_event(event: dict[str, Any]) -> dict[str, Any]:
    """A span record for an event whose span record was not received."""
    return {
        "trace_id": event["trace_id"],
        "span_id": event["span_id"],
        "parent_span_id": event.get("parent_span_id") or "",
        "start_ts": event.get("start_ts") or 0,
        "end_ts": event.get("end_ts") or 0,
        "operation": event.get("operation") or "",
        "is_llm_call": True,
        "agent": event.get("agent") or "",
        "workflow": event.get("workflow") or "",
        "service": event.get("service") or "",
        "environment": event.get("environment") or "",
        "tenant": event.get("tenant") or "",
        "route": event.get("route") or "",
        "session_id": event.get("session_id") or "",
        "status": event.get("status") or "",
    }


class _TraceTree:
    """Parent links and per-span depth of one trace's known spans.

    Each span's chain of ancestors is walked once and kept: a call's depth, workflow
    and inherited fields all read it.
    """

    def __init__(self, spans: dict[str, dict[str, Any]]) -> None:
        self.spans = spans
        self._depth: dict[str, int] = {}
        self._chains: dict[str, list[dict[str, Any]]] = {}
        self._first: dict[str, str] = {}
        self._by_start: list[dict[str, Any]] | None = None
        root: dict[str, Any] | None = None
        root_key: tuple[int, str] | None = None
        for span in spans.values():
            if not span.get("parent_span_id"):
                key = _start_key(span)
                if root_key is None or key < root_key:
                    root, root_key = span, key
        self.root = root  # the earliest span without a parent (by start, then id)

    @property
    def by_start(self) -> list[dict[str, Any]]:
        if self._by_start is None:
            self._by_start = sorted(self.spans.values(), key=_start_key)
        return self._by_start

    def ancestors(self, span_id: str) -> list[dict[str, Any]]:
        """Known ancestors, nearest first; stops at a missing parent or a cycle."""
        chain = self._chains.get(span_id)
        if chain is None:
            chain = []
            spans = self.spans
            seen = {span_id}
            parent_id = spans[span_id].get("parent_span_id") or ""
            while parent_id and parent_id not in seen and parent_id in spans:
                seen.add(parent_id)
                parent = spans[parent_id]
                chain.append(parent)
                parent_id = parent.get("parent_span_id") or ""
            self._chains[span_id] = chain
        return chain

    def depth(self, span_id: str) -> int:
        depth = self._depth.get(span_id)
        if depth is None:
            depth = int(_counts_for_depth(self.spans[span_id]))
            depth += sum(1 for span in self.ancestors(span_id) if _counts_for_depth(span))
            self._depth[span_id] = depth
        return depth

    def first_with(self, name: str) -> str:
        """The root's value of ``name``, else the first span's (by start) that has one."""
        first = self._first.get(name)
        if first is None:
            first = ""
            if self.root is not None and self.root.get(name):
                first = str(self.root[name])
            else:
                for span in self.by_start:
                    if span.get(name):
                        first = str(span[name])
                        break
            self._first[name] = first
        return first

    def inherited(self, span_id: str, name: str) -> str:
        for ancestor in self.ancestors(span_id):
            if ancestor.get(name):
                return str(ancestor[name])
        return self.first_with(name)

    def workflow_of(self, span_id: str, service: str) -> str:
        own = self.spans[span_id].get("workflow")
        if own:
            return str(own)
        workflow = self.inherited(span_id, "workflow")
        if not workflow and self.root is not None:
            workflow = self.root.get("agent") or ""
        return workflow or service


def _counts_for_depth(span: dict[str, Any]) -> bool:
    return bool(span.get("is_llm_call")) or span.get("operation") == OP_EXECUTE_TOOL


def tool_executions(
    spans: dict[str, dict[str, Any]], calls: list[dict[str, Any]]
) -> dict[str, int]:
    """Span id of an LLM call -> the tool executions it led to (the rule in the module
    docstring); calls without any are left out.

    ``spans``: every span of the trace by id; ``calls``: its LLM-call events in start order.

    >>> span = lambda i, p, op, t: {"span_id": i, "parent_span_id": p, "operation": op,
    ...                             "start_ts": t}
    >>> spans = {s["span_id"]: s for s in (
    ...     span("agent", "", "invoke_agent", 0), span("c1", "agent", "chat", 1),
    ...     span("t1", "agent", "execute_tool", 5), span("t2", "agent", "execute_tool", 5),
    ...     span("c2", "agent", "chat", 7))}
    >>> tool_executions(spans, [spans["c1"], spans["c2"]])
    {'c1': 2}
    """
    tools = [span for span in spans.values() if span.get("operation") == OP_EXECUTE_TOOL]
    if not tools:
        return {}
    owners: set[str] = set()
    by_parent: dict[str, list[dict[str, Any]]] = {}
    for call in calls:
        if call.get("operation") != OP_EMBEDDINGS:
            owners.add(call["span_id"])
            by_parent.setdefault(call.get("parent_span_id") or "", []).append(call)
    counts: dict[str, int] = {}
    for tool in tools:
        owner = _tool_owner(tool, spans, owners, by_parent)
        if owner:
            counts[owner] = counts.get(owner, 0) + 1
    return counts


def _tool_owner(
    tool: dict[str, Any],
    spans: dict[str, dict[str, Any]],
    owners: set[str],
    by_parent: dict[str, list[dict[str, Any]]],
) -> str:
    started = tool.get("start_ts") or 0
    seen = {tool["span_id"]}
    parent_id = tool.get("parent_span_id") or ""
    while parent_id and parent_id not in seen:
        seen.add(parent_id)
        if parent_id in owners:
            return parent_id
        latest = None
        for call in by_parent.get(parent_id, ()):  # in start order
            if (call.get("start_ts") or 0) > started:
                break
            latest = call
        if latest is not None:
            return "" if latest.get("status") == "error" else latest["span_id"]
        parent = spans.get(parent_id)
        if parent is None or parent.get("operation") in _TOOL_OWNER_BOUNDARIES:
            return ""
        parent_id = parent.get("parent_span_id") or ""
    return ""


def complete_trace(
    trace_id: str,
    spans: Iterable[dict[str, Any]],
    events: Iterable[dict[str, Any]],
    closed_by: str,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Complete the events of one trace in place and summarize the trace."""
    span_index = {span["span_id"]: span for span in spans}
    event_list = sorted(events, key=_start_key)
    for event in event_list:
        if event["span_id"] not in span_index:
            span_index[event["span_id"]] = _span_from_event(event)
    tree = _TraceTree(span_index)
    tool_counts = tool_executions(span_index, event_list)

    for event in event_list:
        span_id = event["span_id"]
        # An event is an LLM call even if its span record says otherwise: count it.
        own = 0 if _counts_for_depth(span_index[span_id]) else 1
        event["loop_depth"] = tree.depth(span_id) + own
        if not event.get("tool_calls"):
            event["tool_calls"] = tool_counts.get(span_id, 0)
        if not event.get("workflow"):
            event["workflow"] = tree.workflow_of(span_id, event.get("service") or "")
        for name in _INHERITED_FIELDS:
            if not event.get(name):
                event[name] = tree.inherited(span_id, name)

    top = tree.root or (tree.by_start[0] if tree.by_start else {})
    top_id = top.get("span_id", "")
    # One pass over the calls and one over the spans, each in the order the sums read them.
    ins, outs, priced, depths = [], [], [], []
    retries = 0
    for e in event_list:
        ins.append(e.get("input_tokens") or 0)
        outs.append(e.get("output_tokens") or 0)
        cost = e.get("cost_usd")
        if cost is not None:
            priced.append(cost)
        depths.append(e["loop_depth"])
        if (e.get("retry_attempt") or 0) > 0:
            retries += 1
    input_tokens, output_tokens = sum(ins), sum(outs)
    total_tokens = input_tokens + output_tokens
    amplification = None
    if event_list:
        first = event_list[0]
        first_tokens = (first.get("input_tokens") or 0) + (first.get("output_tokens") or 0)
        if first_tokens > 0:
            amplification = total_tokens / first_tokens
    starts, ends, errors = [], [], 0
    for span in span_index.values():
        starts.append(span.get("start_ts") or 0)
        ends.append(span.get("end_ts") or 0)
        if span.get("status") == "error":
            errors += 1
    summary = {
        "trace_id": trace_id,
        "workflow": tree.workflow_of(top_id, top.get("service") or "") if top_id else "",
        "service": top.get("service") or "",
        "environment": top.get("environment") or tree.first_with("environment"),
        "tenant": tree.inherited(top_id, "tenant") if top_id else "",
        "route": tree.inherited(top_id, "route") if top_id else "",
        "root_span_id": tree.root["span_id"] if tree.root is not None else "",
        "start_ts": min(starts, default=0),
        "end_ts": max(ends, default=0),
        "span_count": len(span_index),
        "llm_call_count": len(event_list),
        "max_loop_depth": max(depths, default=0),
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "total_tokens": total_tokens,
        "cost_usd": round(sum(priced), 12) if priced else None,
        "unpriced_calls": len(event_list) - len(priced),
        "amplification": amplification,
        "retries": retries,
        "error_count": errors,
        "closed_by": closed_by,
    }
    assert tuple(summary) == TRACE_FIELD_NAMES, "trace summary fields drifted from the schema"
    return event_list, summary
