"""Stream stages after trace assembly: storage, monitoring and paging.

Topology (DESIGN.md, "Data flow")::

    llm_events --store_events--> ClickHouse llm_requests / llm_traces
    llm_events --monitor-------> llm_alerts (key dedup key)   state: table monitor_state
    llm_alerts --store_alerts--> ClickHouse llm_alerts
    llm_alerts --notify--------> PagerDuty / webhooks, delivery log --> ClickHouse alert_deliveries
                                 state: table notifier_ledger (streams/paging.py)

Offsets: Faust acknowledges a ``take_events`` batch only after the agent body has finished
with it, so every body below writes (store, alerts topic, pages) before it returns; a crash
before that re-reads the batch, and every write is idempotent (insert dedup tokens and span
keys in the store, deterministic alert ids, the delivery ledger).

Re-delivery after a crash: Faust flushes the producer (alerts, changelogs) before it commits
offsets, so a restarted worker's state is never older than its committed offsets, but it can
be newer: the batches after the last commit are read again. Each ``monitor_state`` value
therefore carries the highest ``llm_events`` offset applied to that workflow (all of a
workflow's messages are on one partition), and the monitor skips what it has applied already;
otherwise baselines and budget windows would count those events twice, and a hit replayed
after its alert resolved would open (and page) the alert again.

Rebalance: on ``on_rebalance_complete`` (sent after the tables are recovered) the monitor keeps
the workflows it still owns from memory and resumes the ones that moved to it from the table;
batches from partitions revoked while they were buffered are left to their new owner. The
restore holds the monitor's lock while it reads the changelog's tail and swaps the state, so
no batch is applied to the monitor being replaced; the worker signals ready only after it.

Store unavailable: the body retries with exponential backoff and does not return, so the
agent stops taking from its topic (consumption pauses, memory stays bounded by Faust's stream
buffer) and resumes where it was when the store is back.

Partitioning: ``llm_events`` is keyed by workflow and ``llm_alerts`` by dedup key with the
producer's default partitioner, and the state tables use the same partitioner on the same key
(``use_partitioner=True``), so the worker owning a partition also owns its state.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Final, TypeVar

from driftline.schemas.alert import TRANSITION_FIELDS
from driftline.schemas.checks import record_problem
from driftline.schemas.event import EVENT_FIELDS, TRACE_FIELDS, from_wire, to_wire
from driftline.schemas.tables import BASELINES, DELIVERIES
from driftline.streams.checkpoints import CheckpointedTable, Recovered
from driftline.streams.notifier.routing import ENV_ROUTING_KEY
from driftline.streams.positions import SourceMarks
from driftline.streams.topics import REASON_BAD_LLM_EVENTS, REASON_STORE_REJECTED, dlq_headers

if TYPE_CHECKING:
    from driftline.store import Store
    from driftline.streams.monitor import Monitor
    from driftline.streams.notifier import Notifier
    from driftline.streams.runtime import Pipeline
    from driftline.streams.sink import EventSink

log = logging.getLogger(__name__)

T = TypeVar("T")

MONITOR_STATE_TABLE: Final = "monitor_state"
CHECKPOINT_MAGIC_V1: Final = b"DLPOS1 "  # monitor_state value: magic, offset, newline, snapshot
# ... then the workflow's request marks (JSON) after the offset, before the newline
CHECKPOINT_MAGIC: Final = b"DLPOS2 "
STORE_BATCH_MESSAGES: Final = 1000
MAX_STORE_BACKOFF_S: Final = 30.0


def store_backoff_s(failures: int) -> float:
    """Wait before the next try after ``failures`` failed ones: 0.5 s doubling, capped.

    >>> [store_backoff_s(n) for n in (1, 2, 3, 10)]
    [0.5, 1.0, 2.0, 30.0]
    """
    return min(0.5 * 2 ** max(failures - 1, 0), MAX_STORE_BACKOFF_S)


class StoreWriter:
    """The worker's one store connection, used from one thread.

    chdb and clickhouse-connect calls block; running them on a single dedicated thread keeps
    the event loop (heartbeats, other agents) responsive and every store call serialized.
    """

    def __init__(self, open_store: Callable[[], Store]) -> None:
        self._open = open_store
        self._store: Store | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="driftline-store")
        # One open attempt for every stage that needs the store: each stage retrying on its own
        # opened a store per stage, and one asleep in its backoff when another got through kept
        # its stage waiting (up to the 30 s backoff, longer if the store went down again).
        self._opening = asyncio.Lock()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def run_until_done(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        """:meth:`run`, retried with backoff while the store is unavailable (never gives up).

        A store that answers but is wrong for this worker (schema newer than the code, an
        embedded store held by another process) is raised: waiting would not fix it.
        """
        from driftline.store import StoreError
        from driftline.store.chdb_store import ChdbPathInUseError, StoreInUseError
        from driftline.store.migrations import MigrationChangedError, SchemaTooNewError

        fatal = (SchemaTooNewError, MigrationChangedError, StoreInUseError, ChdbPathInUseError)
        attempt = 0
        while True:
            try:
                return await self.run(fn, *args)
            except fatal:
                raise
            except StoreError as exc:
                attempt += 1
                delay = store_backoff_s(attempt)
                log.warning("store unavailable %s (%s); retry in %.1f s", what, exc, delay)
                await asyncio.sleep(delay)

    async def store(self) -> Store:
        """The open store, waiting for it while it cannot be reached."""
        async with self._opening:
            if self._store is None:
                self._store = await self.run_until_done("at start", self._open)
            return self._store

    async def close(self) -> None:
        if self._store is not None:
            await self.run(self._store.close)
            self._store = None
        self._executor.shutdown(wait=False)


@dataclass
class GovernanceState:
    """What the stages of one worker share."""

    writer: StoreWriter
    monitor: Monitor
    notifier: Notifier | None
    sinks: dict[str, EventSink] = field(default_factory=dict)
    # workflow -> highest llm_events offset already applied to its monitor state
    applied_offsets: dict[str, int] = field(default_factory=dict)
    # workflow -> highest source position of the requests applied (streams.requests)
    request_marks: dict[str, SourceMarks] = field(default_factory=dict)
    baselines_due: set[str] = field(default_factory=set)  # workflows changed since a snapshot
    # workflow -> bytes of its last monitor checkpoint (written or restored): the state's size
    snapshot_bytes: dict[str, int] = field(default_factory=dict)
    decoded: DecodedMessages = field(default_factory=lambda: DecodedMessages())
    # Held by the monitor agent for each batch and by the restore after a rebalance for the
    # whole swap: a batch applied while the restore waits on the changelog would go to the
    # monitor being replaced and be lost (its offsets committed all the same).
    monitor_lock: asyncio.Lock = field(default_factory=asyncio.Lock)


async def flush_until_stored(
    writer: StoreWriter,
    sink: EventSink,
    counters: Any,
    what: str,
    dead_letters: Any | None = None,
) -> None:
    """Write everything ``sink`` holds, retrying with backoff for as long as it takes.

    Records the store can never take (the sink sets them aside with a reason) go to
    ``dead_letters`` (the DLQ topic) with their ids and reason, not their content, so the
    batch's offsets can be committed without losing sight of them.
    """
    from driftline.store import StoreError

    clock = asyncio.get_running_loop().time
    while sink.pending_rows:
        started = clock()
        try:
            await writer.run(sink.flush)
            sink.write_seconds["ok"].observe(clock() - started)
        except StoreError as exc:
            sink.write_seconds["failed"].observe(clock() - started)
            counters["store.failures"] += 1
            delay = store_backoff_s(sink.failures)
            log.warning(
                "store unavailable writing %s (%s); holding %d rows, consumption paused, "
                "retry in %.1f s",
                what,
                exc,
                sink.pending_rows,
                delay,
            )
            await asyncio.sleep(delay)
    if sink.rollup_keys_not_rebuilt:
        log.warning(
            "%d (workflow, minute) rollup keys not recomputed after a repeated insert of %s:"
            " workflow names too long to list in one statement",
            sink.rollup_keys_not_rebuilt,
            what,
        )
        counters["store.rollup_keys_not_rebuilt"] += sink.rollup_keys_not_rebuilt
        sink.rollup_keys_not_rebuilt = 0
    for rejected in sink.take_rejected():
        counters[f"store.rejected.{rejected.kind}"] += 1
        log.error("%s record set aside: %s", rejected.kind, rejected.detail)
        if dead_letters is not None:
            topic, partition, offset = rejected.position or ("", -1, -1)
            await dead_letters.send(
                value=b"",
                headers=dlq_headers(
                    REASON_STORE_REJECTED, rejected.detail, topic, partition, offset
                ),
            )


@dataclass(frozen=True, slots=True)
class Decoded:
    """One ``llm_events`` message in internal form (``streams.requests`` has the layout)."""

    events: list[dict[str, Any]]  # completed events of closed traces: what the store writes
    traces: list[dict[str, Any]]  # trace summaries
    late: list[dict[str, Any]]  # the events the monitor has not had as requests
    requests: list[dict[str, Any]]  # events published at decode, each with its SEQ_FIELD
    # Why the message, or records of it, could not be used ("" when all is well): those
    # records are left out, and the store agent dead-letters the message with this reason.
    problem: str = ""

    @property
    def empty(self) -> bool:
        return not (self.events or self.traces or self.requests)


def decode_closed(value: bytes) -> Decoded:
    """One ``llm_events`` message back to internal records; never raises.

    A message that is not the layout of :mod:`streams.requests`, or records whose values
    are not of their fields' types (:func:`schemas.checks.record_problem`), are left out
    and named in :attr:`Decoded.problem`: anyone who can write the topic must not stop the
    store or poison a detector. Records come in internal form (the schema's fields,
    timestamps in microseconds, as :func:`streams.app.group_by_workflow` writes them); one
    with fields missing or timestamps in ISO 8601 (what the stages wrote before) is read
    through :func:`schemas.event.from_wire`.

    >>> d = decode_closed(b'{"events": [{"span_id": "a"}, {"span_id": "b"}], "early": [true]}')
    >>> [e["span_id"] for e in d.events], [e["span_id"] for e in d.late], d.empty
    (['a', 'b'], ['b'], False)
    >>> decode_closed(b"\\x00 not JSON").problem
    'not JSON'
    >>> bad = decode_closed(b'{"events": [{"span_id": "a", "input_tokens": -5}, {"span_id": "b"}]}')
    >>> [e["span_id"] for e in bad.events], bad.problem
    (['b'], 'events[0]: input_tokens: out of range')
    """
    from driftline.streams.codec import loads

    try:
        doc = loads(value)
    except ValueError:
        return Decoded([], [], [], [], problem="not JSON")
    if not isinstance(doc, dict):
        return Decoded([], [], [], [], problem=f"not an object: {type(doc).__name__}")
    problems: list[str] = []

    def records(key: str, fields: tuple[Any, ...], wire: bool) -> list[dict[str, Any] | None]:
        raw = doc.get(key) or []
        if not isinstance(raw, list):
            problems.append(f"{key}: not a list")
            return []
        out: list[dict[str, Any] | None] = []
        width = len(fields)
        for i, item in enumerate(raw):
            # In internal form, as the stages write it (the schema's fields exactly): taken as
            # it is once it passes the checks, which is what from_wire would have made of it.
            if (
                type(item) is dict
                and len(item) == width
                and record_problem(item, fields, every_field=True) is None
            ):
                out.append(item)
                continue
            record: Any = item
            if wire and isinstance(item, dict):
                try:
                    record = from_wire(item, fields)
                except (ValueError, TypeError, OverflowError) as exc:
                    # The exception's text may quote the value: name its type only.
                    problems.append(f"{key}[{i}]: unreadable ({type(exc).__name__})")
                    out.append(None)
                    continue
            problem = record_problem(record, fields)
            if problem is not None:
                problems.append(f"{key}[{i}]: {problem}")
                record = None
            out.append(record)
        return out

    checked = records("events", EVENT_FIELDS, True)
    early = doc.get("early") or []
    if not isinstance(early, list):
        problems.append("early: not a list")
        early = []
    events = [e for e in checked if e is not None]
    late = [e for i, e in enumerate(checked) if e is not None and not (i < len(early) and early[i])]
    traces = [t for t in records("traces", TRACE_FIELDS, True) if t is not None]
    # In internal form already (streams.requests); one without a position (not from decode)
    # is always applied.
    requests = [r for r in records("requests", EVENT_FIELDS, False) if r is not None]
    return Decoded(events, traces, late, requests, problem="; ".join(problems)[:1024])


class DecodedMessages:
    """``llm_events`` messages decoded once for the two agents that read each of them.

    The store and the monitor consume the same messages, each at its own pace: the monitor
    in steps of ``streams.batch_max_messages`` within a tenth of a second, the store in
    batches of up to ``STORE_BATCH_MESSAGES`` within ``store.batch_seconds``. The first to
    reach a message decodes it and leaves here what the other reads of it, the second takes
    that. The two are apart by up to a whole store batch, so the bound is what that batch
    may hold: a count of messages, and the encoded bytes of the messages whose records are
    held (their decoded records take a few times that). The store reads no requests, so
    what the monitor leaves of a message of requests holds no records. A reader that falls
    further behind decodes for itself. Neither reader changes the records.

    Measured (``bench/bench_pipeline.py``): with room for 32 messages nearly every message
    was decoded by both readers: 17% of the worker's samples in a profile.

    >>> cache = DecodedMessages(size=2)
    >>> first = cache.get(0, 5, b'{"events": [], "traces": [{"trace_id": "t"}]}', by_monitor=False)
    >>> cache.get(0, 5, b"not read again", by_monitor=True) is first, len(cache), cache.reused
    (True, 0, 1)
    >>> from driftline.streams.codec import dumps
    >>> request = from_wire({"trace_id": "t", "span_id": "a", "workflow": "w"}, EVENT_FIELDS)
    >>> requests = dumps({"requests": [request]})
    >>> len(cache.get(1, 7, requests, by_monitor=True).requests), cache.held_bytes
    (1, 0)
    >>> cache.get(1, 7, requests, by_monitor=False).requests, cache.reused
    ([], 2)
    >>> _ = cache.get(2, 9, requests, by_monitor=True)
    >>> len(cache.get(2, 9, requests, by_monitor=True).requests)  # the monitor again: whole
    1
    >>> cache.get(2, 9, requests, by_monitor=False).requests, cache.reused  # the store's copy
    ([], 3)
    >>> small = DecodedMessages(size=10, max_bytes=80)
    >>> for offset in range(3):
    ...     _ = small.get(0, offset, b'{"traces": [{"trace_id": "t"}]}', by_monitor=False)
    >>> len(small), small.held_bytes
    (2, 62)
    """

    def __init__(self, size: int = 2 * STORE_BATCH_MESSAGES, max_bytes: int = 64 << 20) -> None:
        self._size = size
        self._max_bytes = max_bytes
        # (partition, offset) -> (what the other reader takes, its weight, decoded by monitor?)
        self._items: OrderedDict[tuple[int, int], tuple[Decoded, int, bool]] = OrderedDict()
        self.held_bytes = 0
        self.reused = 0  # messages the second reader took decoded

    def __len__(self) -> int:
        return len(self._items)

    def get(self, partition: int, offset: int, value: bytes, *, by_monitor: bool) -> Decoded:
        key = (partition, offset)
        held = self._items.get(key)
        if held is not None and held[2] != by_monitor:
            del self._items[key]
            self.held_bytes -= held[1]
            self.reused += 1
            return held[0]
        decoded = decode_closed(value)
        if held is not None:
            # The same reader again (it reads from its committed offset after a seek or a
            # rebalance): what was left here is the other reader's, and may lack what this one
            # needs (the monitor leaves no requests), so this reader decodes for itself.
            return decoded
        left = replace(decoded, late=[], requests=[]) if by_monitor else decoded
        weight = len(value) if left.events or left.traces or left.requests else 0
        self._items[key] = (left, weight, by_monitor)
        self.held_bytes += weight
        while self._items and (len(self._items) > self._size or self.held_bytes > self._max_bytes):
            self.held_bytes -= self._items.popitem(last=False)[1][1]
        return decoded


def checkpoint_value(offset: int, snapshot: bytes, marks: SourceMarks | None = None) -> bytes:
    """A ``monitor_state`` value: the last applied ``llm_events`` offset and the highest
    request positions applied, then the snapshot.

    >>> offset, marks, snapshot = parse_checkpoint(
    ...     checkpoint_value(41, b"DLMON1\\n...", SourceMarks({3: (70, 2)})))
    >>> offset, marks.export(), snapshot
    (41, {'3': [70, 2]}, b'DLMON1\\n...')
    """
    from driftline.streams.codec import dumps

    exported = dumps(marks.export() if marks is not None else {})
    return CHECKPOINT_MAGIC + str(offset).encode() + b" " + exported + b"\n" + snapshot


def parse_checkpoint(value: bytes) -> tuple[int, SourceMarks, bytes]:
    """(offset, request marks, snapshot) of a ``monitor_state`` value; a bare snapshot has
    offset -1, and one written before requests existed has no marks.

    >>> offset, marks, snapshot = parse_checkpoint(b"DLPOS1 41\\nDLMON1")
    >>> offset, marks.export(), snapshot
    (41, {}, b'DLMON1')
    """
    from driftline.streams.codec import loads

    if value.startswith(CHECKPOINT_MAGIC):
        header, _, snapshot = value[len(CHECKPOINT_MAGIC) :].partition(b"\n")
        offset, _, marks = header.partition(b" ")
        return int(offset), SourceMarks.load(loads(marks)), snapshot
    if value.startswith(CHECKPOINT_MAGIC_V1):
        offset, _, snapshot = value[len(CHECKPOINT_MAGIC_V1) :].partition(b"\n")
        return int(offset), SourceMarks(), snapshot
    return -1, SourceMarks(), value


def fresh_records(
    events: list[dict[str, Any]],
    traces: list[dict[str, Any]],
    offset: int,
    applied: dict[str, int],
    advanced: dict[str, int],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The records of one ``llm_events`` message not yet applied to their workflow's state.

    All of a workflow's messages are on one partition, so its state remembers the offset it
    has applied up to; a message at or below it is a re-delivery after a crash (offsets are
    committed after the state is checkpointed) and must not count twice. ``advanced``
    collects the new offset per workflow.

    >>> applied = {"w": 7}
    >>> fresh_records([{"workflow": "w"}], [], 7, applied, {})
    ([], [])
    >>> advanced = {}
    >>> fresh_records([{"workflow": "w"}], [], 8, applied, advanced), advanced
    (([{'workflow': 'w'}], []), {'w': 8})
    """
    out: tuple[list[dict[str, Any]], list[dict[str, Any]]] = ([], [])
    for records, kept in ((events, out[0]), (traces, out[1])):
        for record in records:
            workflow = str(record.get("workflow") or "")
            if offset > applied.get(workflow, -1):
                kept.append(record)
                advanced[workflow] = max(offset, advanced.get(workflow, -1))
    return out


def fresh_requests(
    events: list[dict[str, Any]], marks: dict[str, SourceMarks], counters: Any
) -> list[dict[str, Any]]:
    """``events`` less the requests a workflow has applied already (source positions removed).

    Decode publishes the requests of a message again when it decodes that message again
    (after a crash or a rebalance), at new ``llm_events`` offsets; per workflow their source
    positions only grow, so each workflow's highest applied one tells them apart. Events
    of closed traces carry no position and always pass (their offset decided).

    >>> marks = {}
    >>> first = [{"workflow": "w", "span_id": "a", "_seq": [0, 5, 0]}]
    >>> again = [{"workflow": "w", "span_id": "a", "_seq": [0, 5, 0]}, {"workflow": "w"}]
    >>> from collections import Counter
    >>> counters = Counter()
    >>> [len(fresh_requests(batch, marks, counters)) for batch in (first, again)]
    [1, 1]
    >>> counters["monitor.requests_redecoded_skipped"]
    1
    """
    from driftline.streams.positions import SEQ_FIELD

    out: list[dict[str, Any]] = []
    by_workflow: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        if SEQ_FIELD in event:
            by_workflow.setdefault(str(event.get("workflow") or ""), []).append(event)
        else:
            out.append(event)
    for workflow, requests in by_workflow.items():
        workflow_marks = marks.get(workflow)
        if workflow_marks is None:
            workflow_marks = marks[workflow] = SourceMarks()
        before = workflow_marks.skipped
        out.extend(workflow_marks.fresh(requests, [])[0])
        counters["monitor.requests_redecoded_skipped"] += workflow_marks.skipped - before
    return out


def restore_or_rebuild(monitor: Monitor, workflow: str, snapshot: bytes, counters: Any) -> None:
    """Restore ``workflow``'s monitor state; a snapshot that cannot be used (corrupt, of
    another version or other detector settings) is dropped and the workflow rebuilds from
    warm-up, instead of failing every restart on it."""
    from driftline.streams.monitor import SnapshotError

    try:
        monitor.restore(workflow, snapshot)
    except SnapshotError as exc:
        counters["monitor.snapshots_dropped"] += 1
        log.warning("monitor state of workflow %r dropped, rebuilding: %s", workflow, exc)


def control_transitions(
    monitor: Monitor,
    value: bytes,
    offset: int,
    applied: dict[str, int],
    advanced: dict[str, int],
    counters: Any,
) -> list[dict[str, Any]]:
    """Apply the control record of an ``llm_events`` message (``driftline baseline accept``)
    once: like a workflow's records, it is skipped when re-read at an offset already applied."""
    from driftline.streams.monitor.control import ControlError, parse_control

    try:
        control = parse_control(value)
    except ControlError as exc:
        counters["monitor.controls_refused"] += 1
        log.error("control record at llm_events offset %d refused: %s", offset, exc)
        return []
    if control is None:
        return []
    workflow = str(control["workflow"])
    if offset <= applied.get(workflow, -1):
        return []
    advanced[workflow] = max(offset, advanced.get(workflow, -1))
    counters["monitor.controls_applied"] += 1
    out = monitor.apply_control(control)
    log.info(
        "baseline of workflow %r accepted (metric %s, bundle %s, by %r): %d alert(s) resolved",
        workflow,
        control.get("metric") or "all",
        control.get("bundle_id") or "all",
        control.get("requested_by", ""),
        len(out),
    )
    return out


def build_state(p: Pipeline) -> GovernanceState:
    from driftline.store import open_store
    from driftline.streams.monitor import Monitor
    from driftline.streams.sink import EventSink

    settings = p.settings
    writer = StoreWriter(lambda: open_store(settings.store.url, settings.store))
    sinks = {
        # the store is attached once it is open, on the writer's thread
        name: EventSink(None, batch_rows=settings.store.batch_rows)
        for name in ("events", "alerts")
    }
    return GovernanceState(writer, Monitor(settings), build_notifier(p), sinks)


def build_notifier(p: Pipeline) -> Notifier | None:
    """The pager, or None when nothing is configured to receive pages."""
    from driftline.streams.notifier import Notifier

    pagerduty = p.settings.pagerduty
    if not pagerduty.routes and not os.environ.get(ENV_ROUTING_KEY):
        log.warning(
            "paging disabled: no pagerduty.routes configured and %s is not set; alerts are "
            "still published to llm_alerts and stored",
            ENV_ROUTING_KEY,
        )
        return None
    return Notifier.from_settings(pagerduty)


async def _attach_store(state: GovernanceState) -> None:
    store = await state.writer.store()
    for sink in state.sinks.values():
        sink.store = store


def add_governance(p: Pipeline, state: GovernanceState) -> None:
    """Register the storage and monitoring agents on ``p`` (paging: ``streams.paging``)."""
    _add_store_events(p, state)
    if p.settings.engines.enabled:
        _add_store_engine_metrics(p, state)
    _add_monitor(p, state)
    _add_store_alerts(p, state)

    async def close_store(sender: Any, *args: Any, **kwargs: Any) -> None:
        if state.notifier is not None:
            await state.notifier.aclose()
        await state.writer.close()

    p.app.on_before_shutdown.connect(close_store)  # type: ignore[arg-type]


def _add_store_events(p: Pipeline, state: GovernanceState) -> None:
    sink = state.sinks["events"]
    within = p.settings.store.batch_seconds

    @p.app.agent(p.topics.llm_events, name="store_events")
    async def store_events(stream: Any) -> None:
        await _attach_store(state)
        async for batch in stream.take_events(STORE_BATCH_MESSAGES, within=within):
            for event in batch:
                m = event.message
                position = (m.topic, m.partition, m.offset)
                decoded = state.decoded.get(m.partition, m.offset, event.value, by_monitor=False)
                if decoded.problem:
                    # The store agent speaks for both readers of the message: one dead
                    # letter, its position, the reason; the records that were fine go on.
                    p.counters["llm_events.bad_messages"] += 1
                    log.error("llm_events %d@%d: %s", m.partition, m.offset, decoded.problem)
                    await p.topics.otlp_spans_dlq.send(
                        value=b"",
                        headers=dlq_headers(
                            REASON_BAD_LLM_EVENTS, decoded.problem, m.topic, m.partition, m.offset
                        ),
                    )
                for record in decoded.events:
                    sink.add("events", record, position)
                for record in decoded.traces:
                    sink.add("traces", record, position)
                if sink.pending_rows >= sink.batch_rows:
                    # A backlog batch holds many full messages: write as it fills, so memory
                    # stays at one insert batch whatever the backlog.
                    await flush_until_stored(
                        state.writer, sink, p.counters, "events", p.topics.otlp_spans_dlq
                    )
            await flush_until_stored(
                state.writer, sink, p.counters, "events", p.topics.otlp_spans_dlq
            )


def _add_store_engine_metrics(p: Pipeline, state: GovernanceState) -> None:
    """``otlp_metrics`` into ``engine_metrics``: one insert per batch, rejects dead-lettered."""
    from driftline.streams.engine_stage import MetricsMessage, store_metrics

    ingest = p.settings.ingest

    def store_batch(messages: list[MetricsMessage], store: Store) -> Any:
        return store_metrics(
            messages, store, max_past_s=ingest.max_past_s, max_future_s=ingest.max_future_s
        )

    @p.app.agent(p.topics.otlp_metrics, name="store_engine_metrics")
    async def store_engine_metrics(stream: Any) -> None:
        store = await state.writer.store()
        async for batch in stream.take_events(
            STORE_BATCH_MESSAGES, within=p.settings.store.batch_seconds
        ):
            messages = [
                MetricsMessage(
                    event.value if event.value is not None else b"",
                    (event.message.topic, event.message.partition, event.message.offset),
                    int(event.message.timestamp * 1e9) if event.message.timestamp > 0 else None,
                )
                for event in batch
            ]
            stored = await state.writer.run_until_done(
                "writing engine metrics", store_batch, messages, store
            )
            p.counters["engine_metrics.rows"] += stored.rows
            for (topic, partition, offset), reject in stored.rejects:
                p.counters[f"rejects.metrics.{reject.reason}"] += 1
                await p.topics.otlp_spans_dlq.send(
                    value=b"",
                    headers=dlq_headers(reject.reason, reject.detail, topic, partition, offset),
                )


def _add_monitor(p: Pipeline, state: GovernanceState) -> None:
    from driftline.streams.codec import dumps
    from driftline.streams.kafka import page_path_wait_s
    from driftline.streams.positions import target_partition

    settings = p.settings
    table = p.tables[MONITOR_STATE_TABLE]
    partitions = settings.kafka.partitions
    events_topic = p.topics.llm_events.get_topic_name()

    @p.app.agent(p.topics.llm_events, name="monitor")
    async def monitor_events(stream: Any) -> None:
        async for batch in stream.take_events(
            settings.streams.batch_max_messages, within=page_path_wait_s(settings.streams)
        ):
            async with state.monitor_lock:
                await apply_batch(batch)

    async def apply_batch(batch: list[Any]) -> None:
        owned = checkpoints.assigned_now()
        applied = state.applied_offsets
        monitor = state.monitor
        untracked, evicted = monitor.untracked_records, monitor.evicted_workflows
        untracked_bundles = monitor.untracked_bundle_records
        over_cap = monitor.alerts_over_cap
        transitions: list[dict[str, Any]] = []
        advanced: dict[str, int] = {}
        for event in batch:
            m = event.message
            if m.partition not in owned:
                # Revoked while buffered: its new owner re-reads it from the committed
                # offset; applying it here would write state this worker no longer owns.
                p.counters["monitor.revoked_skipped"] += 1
                continue
            decoded = state.decoded.get(m.partition, m.offset, event.value, by_monitor=True)
            if decoded.empty:  # no records: maybe an operator's control record
                transitions.extend(
                    control_transitions(
                        monitor, event.value, m.offset, applied, advanced, p.counters
                    )
                )
                continue
            e = [*decoded.late, *decoded.requests]
            fresh_e, fresh_t = fresh_records(e, decoded.traces, m.offset, applied, advanced)
            if len(fresh_e) + len(fresh_t) < len(e) + len(decoded.traces):
                p.counters["monitor.redelivered_skipped"] += 1
            fresh_e = fresh_requests(fresh_e, state.request_marks, p.counters)
            p.counters["monitor.events"] += len(fresh_e)
            p.counters["monitor.traces"] += len(fresh_t)
            # One message at a time, not the whole batch: batches are cut differently
            # when a message is read again after a crash, messages are not, so a
            # re-derived alert gets the same first hit, hence the same alert id.
            transitions.extend(monitor.process(fresh_e, fresh_t))
        # Publish before checkpointing: a crash in between re-derives the same
        # transitions (deterministic ids) instead of losing them.
        for record in transitions:
            await p.topics.llm_alerts.send(
                key=str(record["dedup_key"]).encode(),
                value=dumps(to_wire(record, TRANSITION_FIELDS)),
            )
            p.counters[f"alerts.{record['transition']}.{record['kind']}"] += 1
        if transitions:
            # Delivered before the state that remembers them is checkpointed: a crash in
            # between must re-derive them, not find them applied and lose them.
            await p.app.producer.flush()
        applied.update(advanced)
        p.counters["monitor.untracked_records"] += monitor.untracked_records - untracked
        p.counters["monitor.evicted_workflows"] += monitor.evicted_workflows - evicted
        p.counters["monitor.untracked_bundle_records"] += (
            monitor.untracked_bundle_records - untracked_bundles
        )
        p.counters["monitor.alerts_over_cap"] += monitor.alerts_over_cap - over_cap
        dirty = monitor.dirty_workflows()
        state.baselines_due |= dirty
        for workflow in dirty | set(advanced):
            if target_partition(workflow, partitions) in owned:
                value = checkpoint_value(
                    applied.get(workflow, -1),
                    monitor.snapshot(workflow),
                    state.request_marks.get(workflow),
                )
                table[workflow.encode()] = value
                state.snapshot_bytes[workflow] = len(value)

    def restore_monitor(recovered: Recovered) -> None:
        from driftline.streams.monitor import Monitor

        owned = recovered.owned
        previous, fresh = state.monitor, Monitor(settings)
        applied: dict[str, int] = {}
        marks: dict[str, SourceMarks] = {}
        kept = restored = 0
        # Workflows this worker keeps: its own memory is the newest state (a batch may have
        # been applied after its changelog write was read back by recovery).
        for workflow in previous.workflows():
            if target_partition(workflow, partitions) in owned:
                restore_or_rebuild(fresh, workflow, previous.snapshot(workflow), p.counters)
                applied[workflow] = state.applied_offsets.get(workflow, -1)
                marks[workflow] = state.request_marks.get(workflow) or SourceMarks()
                kept += 1
        # Workflows that moved here: their state as the previous owner checkpointed it.
        for key, value in recovered.values.items():
            workflow = key.decode()
            if not value or workflow in applied:
                continue
            if target_partition(workflow, partitions) in owned:
                offset, marks[workflow], snapshot = parse_checkpoint(value)
                restore_or_rebuild(fresh, workflow, snapshot, p.counters)
                applied[workflow] = offset
                state.snapshot_bytes[workflow] = len(value)
                restored += 1
        state.monitor = fresh
        state.applied_offsets = applied
        state.request_marks = marks
        log.info(
            "monitor: %d workflows kept, baselines of %d resumed from the changelog",
            kept,
            restored,
        )

    # The restore holds the monitor's lock for the whole swap (see GovernanceState).
    checkpoints = CheckpointedTable(
        p, table, events_topic, restore_monitor, lock=state.monitor_lock, decode=bytes
    )

    @p.app.timer(settings.store.baseline_snapshot_s, name="snapshot_baselines")
    async def snapshot_baselines() -> None:
        await write_baselines(state, p.counters)


async def store_deliveries(state: GovernanceState, records: Sequence[dict[str, Any]]) -> None:
    """Write delivery records to ``alert_deliveries``, retrying while the store is down."""
    from driftline.streams.sink import to_arrow

    if not records:
        return
    store = await state.writer.store()
    data = to_arrow(records, DELIVERIES.fields)
    await state.writer.run_until_done(
        "writing deliveries", store.insert_arrow, DELIVERIES.name, data, None
    )


async def write_baselines(state: GovernanceState, counters: Any) -> None:
    """Write the baselines of workflows changed since the last snapshot (best effort: on a
    store error they stay due and go with the next one)."""
    from driftline.store import StoreError
    from driftline.streams.baselines import baseline_rows
    from driftline.streams.sink import to_arrow

    due = sorted(w for w in state.baselines_due if w in set(state.monitor.workflows()))
    if not due:
        return
    rows = baseline_rows(state.monitor, due, state.monitor.watermark)
    state.baselines_due.clear()
    if not rows:
        return
    try:
        store = await state.writer.store()
        data = to_arrow(rows, BASELINES.fields)
        await state.writer.run(store.insert_arrow, BASELINES.name, data, None)
        counters["baselines.rows"] += len(rows)
    except StoreError as exc:
        state.baselines_due.update(due)
        log.warning("baseline snapshot not written (%s); retrying with the next one", exc)


def _add_store_alerts(p: Pipeline, state: GovernanceState) -> None:
    sink = state.sinks["alerts"]

    @p.app.agent(p.topics.llm_alerts, name="store_alerts")
    async def store_alerts(stream: Any) -> None:
        from driftline.streams.codec import loads

        await _attach_store(state)
        async for batch in stream.take_events(STORE_BATCH_MESSAGES, within=0.5):
            for event in batch:
                m = event.message
                record = from_wire(loads(event.value), TRANSITION_FIELDS)
                sink.add("alerts", record, (m.topic, m.partition, m.offset))
            await flush_until_stored(
                state.writer, sink, p.counters, "alerts", p.topics.otlp_spans_dlq
            )
