"""The Faust app: topics, tables and agents of the driftline stream, declared in one place.

Topology (DESIGN.md, "Data flow")::

    otlp_spans --decode--> llm_spans (partition = murmur2(trace id))   rejects --> otlp_spans_dlq
    otlp_spans --decode--> llm_events (key workflow; requests: events the monitor takes at once)
    llm_spans --assemble--> llm_events (key workflow; completed events + trace summaries)
    llm_events, llm_alerts --> storage, monitoring, paging (streams/stages.py)

Request events do not wait for their trace: decode publishes every event that names its own
workflow to ``llm_events`` at once, for the per-request detectors, budgets and routing
(``streams.requests``); trace assembly still completes every event for the store and
publishes the trace summaries, which carry the trace conditions (loop depth,
amplification, trace cost).

``create_app(settings)`` builds the app. Each stage is one ``_add_<stage>`` function
registering a thin agent that calls pure functions (``streams.normalize``,
``streams.pricing``, ``streams.traces`` and the helpers below); adding a stage is a
topic in :class:`Topics` and one more ``_add_`` call in :func:`create_app`.

Crash safety of trace assembly: after each batch from ``llm_spans`` the touched
open traces are written to the changelog-backed table ``open_traces`` (key: trace
id bytes; value: the assembler's export), and closed traces are deleted from it.
The table's changelog is partitioned by the producer's default partitioner
(``use_partitioner=True``: murmur2 of the key), which is exactly how decode picks
the ``llm_spans`` partition of a trace, so the worker that owns a ``llm_spans``
partition also holds the checkpoints of that partition's traces. On a crash the
input offsets not yet committed are re-read, the assemblers are rebuilt from the
table on assignment, and re-delivered spans count once: every span record carries
its ``otlp_spans`` position and each partition's checkpoint the highest position it
applied (``streams.positions``), so a span decoded or read again is dropped even when
its trace has closed since. Delivery to ``llm_events`` is at least once only in one
narrow window: a crash after a closed trace was published and before its deletion
reached the changelog publishes that trace again (the store deduplicates by span id /
trace id).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Final

import faust
from faust.sensors import Sensor

from driftline.config import Settings
from driftline.schemas.event import TRACE_FIELDS, internal_copy
from driftline.streams import topics as names
from driftline.streams.changelog import AcknowledgedSender, Header, Message
from driftline.streams.checkpoints import CheckpointedTable, Recovered
from driftline.streams.codec import dumps, encode_in_parts, loads
from driftline.streams.commits import guard_commits
from driftline.streams.engine_alerts import add_engine_alerts
from driftline.streams.engine_attribution import EngineAttribution
from driftline.streams.engine_feed import EngineMetricsFeed
from driftline.streams.kafka import bootstrap_of, faust_settings, page_path_wait_s
from driftline.streams.paging import NOTIFIER_LEDGER_TABLE, add_notify
from driftline.streams.positions import (
    MARKS_KEY_PREFIX,
    SEQ_FIELD,
    SourceMarks,
    chunk_key,
    encode_ordered,
    marks_key,
    parse_chunk_key,
    route_sourced,
    target_partition,
)
from driftline.streams.requests import EARLY_FIELD, encode_requests, route_requests
from driftline.streams.runtime import Pipeline, Topics
from driftline.streams.stages import MONITOR_STATE_TABLE, add_governance, build_state

__all__ = ["Pipeline", "create_app", "group_by_workflow", "target_partition"]

log = logging.getLogger(__name__)

OPEN_TRACES_TABLE: Final = "open_traces"
CLOSE_INTERVAL_S: Final = 0.5  # how often due traces are closed and published
STATS_INTERVAL_S: Final = 30.0
# Objects allocated between young collections (CPython's default: 700); see _tune_gc.
GC_YOUNG_THRESHOLD: Final = 50_000
FETCH_MAX_WAIT_MS: Final = 100  # see _fetch_promptly
STREAMS_DRAIN_S: Final = 10.0  # see _bound_wait_for_streams
RECORD_TYPE_SPANS: Final = b"spans"
RECORD_TYPE_CLOSED: Final = b"events+traces"  # llm_events value: see streams.requests
RECORD_TYPE_REQUESTS: Final = b"requests"  # llm_events value: events published at decode


# -- pure helpers ---------------------------------------------------------------


def message_limit(settings: Settings) -> int:
    """Bytes one internal message may take: the producer's limit less room for headers."""
    return settings.kafka.max_message_bytes * 9 // 10


def encode_bounded(lists: dict[str, list[Any]], limit: int) -> list[bytes]:
    """JSON messages of the records in ``lists``, cut in parts until each fits ``limit``.

    A backlog makes batches large; one message over the broker's limit would fail every
    retry and stall the stage, so a batch is cut rather than sent whole (each list at the
    same share of its length: lists of equal length, events and their early flags, are cut
    at the same index). A single record larger than the limit is still sent alone (and
    fails loudly).

    >>> parts = encode_bounded({"events": list(range(1000)), "spans": []}, 1000)
    >>> len(parts) > 1, all(len(p) <= 1000 for p in parts)
    (True, True)
    >>> sum(len(loads(p)["events"]) for p in parts)
    1000
    """
    count = max((len(v) for v in lists.values()), default=0)
    if count == 0:
        return [dumps(lists)]

    def encode(start: int, end: int) -> bytes:
        return dumps(
            {k: v[start * len(v) // count : end * len(v) // count] for k, v in lists.items()}
        )

    return encode_in_parts(count, encode, limit)


def group_by_workflow(
    events: Iterable[dict[str, Any]], traces: Iterable[dict[str, Any]]
) -> dict[str, dict[str, list[Any]]]:
    """Closed events and trace summaries in internal form (:func:`schemas.event.internal`:
    the schema's fields, timestamps in microseconds), grouped by workflow.

    ``early`` runs beside ``events`` (same length, so a split keeps them aligned): whether
    the event already went to the monitor as a request (``streams.requests``).

    >>> out = group_by_workflow([{"workflow": "w", "start_ts": 7}], [{"workflow": "w"}])
    >>> list(out), len(out["w"]["events"]), out["w"]["events"][0]["start_ts"], out["w"]["early"]
    (['w'], 1, 7, [False])
    """
    out: dict[str, dict[str, list[Any]]] = {}

    def group_of(record: dict[str, Any]) -> dict[str, list[Any]]:
        workflow = record.get("workflow") or ""
        group = out.get(workflow)
        if group is None:
            group = out[workflow] = {"events": [], "early": [], "traces": [], "requests": []}
        return group

    for event in events:
        group = group_of(event)
        # An event holds the schema's fields and the stages' two marks.
        group["early"].append(bool(event.get(EARLY_FIELD, False)))
        group["events"].append(internal_copy(event, marks=(EARLY_FIELD, SEQ_FIELD)))
    for trace in traces:
        group_of(trace)["traces"].append(internal_copy(trace, TRACE_FIELDS))
    return out


def describe_assignment(assigned: Iterable[Any]) -> str:
    """Assigned topic partitions as ``topic=0,2 topic2=1`` (source topics, no changelogs).

    >>> from collections import namedtuple
    >>> TP = namedtuple("TP", "topic partition")
    >>> describe_assignment([TP("llm_events", 2), TP("llm_events", 0), TP("x-changelog", 1)])
    'llm_events=0,2'
    """
    by_topic: dict[str, list[int]] = {}
    for tp in assigned:
        if not tp.topic.endswith("-changelog"):
            by_topic.setdefault(tp.topic, []).append(tp.partition)
    return " ".join(
        f"{topic}={','.join(map(str, sorted(parts)))}" for topic, parts in sorted(by_topic.items())
    )


# -- declarations ---------------------------------------------------------------


def _declare_topics(app: faust.App, partitions: int) -> Topics:
    def raw(name: str) -> Any:
        return app.topic(
            name,
            partitions=partitions,
            key_serializer="raw",
            value_serializer="raw",
            allow_empty=True,
        )

    return Topics(
        otlp_spans=raw(names.OTLP_SPANS),
        otlp_spans_dlq=raw(names.OTLP_SPANS_DLQ),
        otlp_metrics=raw(names.OTLP_METRICS),
        llm_spans=raw(names.LLM_SPANS),
        llm_events=raw(names.LLM_EVENTS),
        llm_alerts=raw(names.LLM_ALERTS),
    )


def _build_faust_app(settings: Settings, bootstrap_servers: str | None) -> faust.App:
    # The app id is the consumer group and the prefix of Faust's internal topics.
    # Faust keeps a directory per app even with in-memory tables; not in the working dir.
    datadir = settings.embedded.data_dir / "faust" / settings.kafka.consumer_group
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.kafka.consumer_group,
        autodiscover=False,
        web_enabled=False,
        store="memory://",
        datadir=datadir,
        table_standby_replicas=0,
        processing_guarantee="at_least_once",
        **faust_settings(settings.kafka, bootstrap_servers),
    )
    _seek_uncommitted_to_beginning(app)
    _fetch_promptly(app)
    _bound_wait_for_streams(app)
    return app


def _fetch_promptly(app: faust.App) -> None:
    """Cap how long the broker may hold an empty fetch at FETCH_MAX_WAIT_MS (Faust: 1.5 s).

    A broker answers a fetch as soon as data arrives or when the wait is over; tansu was
    measured answering only at the end of the wait (a record waited 0.28 s at the median
    and 0.66 s at worst for its consumer with Faust's 1.5 s, 14 ms with 0.1 s), and a page
    crosses three consumers (decode, monitor, notify). An idle worker pays ten empty fetches
    a second for it.
    """
    thread: Any = app.consumer._thread  # type: ignore[attr-defined]  # aiokafka driver
    create_worker_consumer = thread._create_worker_consumer

    def create_with_prompt_fetch(transport: Any) -> Any:
        consumer = create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read when the fetcher starts
        return consumer

    thread._create_worker_consumer = create_with_prompt_fetch


def _bound_wait_for_streams(app: faust.App) -> None:
    """Wait at most STREAMS_DRAIN_S for in-flight messages when partitions are revoked.

    Before a rebalance completes, Faust waits until every message handed to the agents is
    acknowledged (``Consumer.wait_empty``), with no bound. A message that a stream took in
    while its flow was being suspended can stay unacknowledged for good (measured: after a
    kill -9 of the other worker, three ``llm_events`` messages held the survivor's
    rebalance, and with it every stage, until the end of the run; Faust's own issues show
    the same ``wait_empty: Waiting for tasks``). Past the bound the revocation goes on:
    what was acknowledged is committed, and the rest is read again by the partition's next
    owner, which every stage tolerates as it tolerates a crash.
    """
    import gc

    consumer: Any = app.consumer

    async def wait_empty_bounded() -> None:
        deadline = time.monotonic() + STREAMS_DRAIN_S
        while not consumer.should_stop and consumer._unacked_messages:
            gc.collect()  # the set is weak: messages dropped with a cleared queue leave it
            consumer._clean_unacked_messages()
            if not consumer._unacked_messages:
                break
            if time.monotonic() > deadline:
                held = sorted(
                    f"{m.tp.topic}/{m.tp.partition}@{m.offset}"
                    for m in list(consumer._unacked_messages)
                )
                log.warning(
                    "rebalance: %d messages still unacknowledged after %.0f s (%s); going "
                    "on without them: their offsets are not committed, so they are read again",
                    len(held),
                    STREAMS_DRAIN_S,
                    ", ".join(held[:10]),
                )
                break
            await consumer.commit()
            await consumer._wait_for_ack(timeout=1)
        await consumer.commit_and_end_transactions()

    consumer.wait_empty = wait_empty_bounded


def _seek_uncommitted_to_beginning(app: faust.App) -> None:
    """After every seek to the committed offsets, put never-committed partitions at offset 0.

    Faust drops the records it fetches while its flow is paused (during recovery, right
    after a rebalance) and then seeks back to the committed offsets; aiokafka's
    ``seek_to_committed`` skips a partition whose committed offset is absent or 0, so a
    message that reached such a partition in that window was silently lost (measured:
    every time when a span arrived within a second of a worker's start on a partition that
    had never been committed). Seeking them to the beginning is what
    ``auto.offset.reset = earliest`` means, and re-reading is safe: every stage is
    idempotent for a record read twice.
    """
    consumer: Any = app.consumer  # the aiokafka driver's Consumer
    perform_seek = consumer.perform_seek
    sources = set(names.SOURCE_TOPICS)

    async def seek_then_rewind_uncommitted() -> None:
        await perform_seek()
        committed = consumer._committed_offset  # filled by perform_seek
        for tp in consumer.assignment():
            if tp.topic in sources and not committed.get(tp):
                # Offset 0 (or, when retention removed it, the earliest kept: the fetcher
                # resets an out-of-range position by auto.offset.reset = earliest).
                await consumer.seek(tp, 0)

    consumer.perform_seek = seek_then_rewind_uncommitted


def create_app(
    settings: Settings,
    *,
    bootstrap_servers: str | None = None,
    ready_file: Path | None = None,
    with_governance: bool = True,
) -> Pipeline:
    """The configured app with every stage registered.

    ``with_governance`` adds storage, monitoring and paging (:mod:`streams.stages`).
    ``ready_file`` is written once the first partition assignment has completed
    (tables recovered, agents consuming): ``driftline up`` waits for it.
    """
    app = _build_faust_app(settings, bootstrap_servers)
    partitions = settings.kafka.partitions
    topics = _declare_topics(app, partitions)
    open_traces = app.Table(
        OPEN_TRACES_TABLE,
        default=None,
        partitions=partitions,
        use_partitioner=True,  # written from inside take_events() batches and a timer
        key_type=bytes,  # raw key bytes: the changelog partition is murmur2(trace id)
    )
    tables = {
        OPEN_TRACES_TABLE: open_traces,
        # workflow bytes -> Monitor.snapshot(workflow): baselines, budgets, open alerts
        MONITOR_STATE_TABLE: app.Table(
            MONITOR_STATE_TABLE,
            default=None,
            partitions=partitions,
            use_partitioner=True,
            key_type=bytes,
            value_type=bytes,  # raw changelog values
        ),
        # dedup key bytes -> {ledger key: last delivered event}: no page twice after a restart
        NOTIFIER_LEDGER_TABLE: app.Table(
            NOTIFIER_LEDGER_TABLE,
            default=None,
            partitions=partitions,
            use_partitioner=True,
            key_type=bytes,
        ),
    }
    pipeline = Pipeline(
        settings=settings,
        app=app,
        topics=topics,
        open_traces=open_traces,
        tables=tables,
        bootstrap_servers=bootstrap_servers,
    )
    if settings.engines.enabled and with_governance:
        _add_engine_feed(pipeline)
    _add_decode(pipeline)
    _add_assemble(pipeline)
    if with_governance:
        state = pipeline.governance = build_state(pipeline)
        add_governance(pipeline, state)
        if state.notifier is not None:
            add_notify(pipeline, state)
        if pipeline.engine_feed is not None and settings.engines.alerts:
            add_engine_alerts(pipeline)
    _add_gc_tuning(pipeline)
    guard_commits(app, pipeline.counters)
    _add_stats(pipeline)
    if settings.worker.metrics_port:
        _add_telemetry(pipeline)
    if settings.worker.self_alerts or settings.worker.heartbeat_url_env:
        _add_self_watch(pipeline, with_governance)
    _add_readiness(pipeline, ready_file)  # last: ready once every state is restored
    _run_rebalance_steps(pipeline)
    return pipeline


def _run_rebalance_steps(p: Pipeline) -> None:
    async def run_steps(sender: Any, *args: Any, **kwargs: Any) -> None:
        for step in p.rebalance_steps:
            await step(sender)

    p.app.on_rebalance_complete.connect(run_steps)  # type: ignore[arg-type]


# -- the engines' state, read by every worker for the as-of join at decode ----------


def _add_engine_feed(p: Pipeline) -> None:
    settings = p.settings
    feed = EngineMetricsFeed(
        settings.kafka,
        bootstrap_of(settings.kafka, p.bootstrap_servers),
        EngineAttribution(
            staleness_s=settings.engines.staleness_s, max_engines=settings.engines.max_engines
        ),
        lookback_s=settings.engines.lookback_s,
    )
    p.engine_feed = feed

    async def start_feed(sender: Any, *args: Any, **kwargs: Any) -> None:
        if feed.started:
            return
        feed.start()

    async def stop_feed(sender: Any, *args: Any, **kwargs: Any) -> None:
        feed.stop()

    p.after_rebalance(start_feed)
    p.app.on_before_shutdown.connect(stop_feed)  # type: ignore[arg-type]


# -- stage: decode + normalize + price + repartition by trace id -------------------


def _add_decode(p: Pipeline) -> None:
    from driftline.streams.normalize import IngestPolicy, normalize_message
    from driftline.streams.pricing import PriceBook

    settings = p.settings
    prices = PriceBook(settings.prices)
    partitions = settings.kafka.partitions
    policy = IngestPolicy.from_settings(settings.ingest)
    workflows = settings.workflows

    @p.app.agent(p.topics.otlp_spans, name="decode")
    async def decode(stream: Any) -> None:
        async for batch in stream.take_events(
            settings.streams.batch_max_messages, within=page_path_wait_s(settings.streams)
        ):
            routed: dict[int, list[tuple[str, dict[str, Any]]]] = {}
            # (workflow, requests) per source message: the monitor takes each llm_events
            # message as one step, so a step holds what one export request held, as the
            # app grouped it, not a whole batch (a backlog's batch spans minutes).
            requests: list[tuple[str, list[dict[str, Any]]]] = []
            if p.engine_feed is not None and not await p.engine_feed.catch_up():
                p.counters["engines.join_waits_timed_out"] += 1
            for event in batch:
                message = event.message
                payload = event.value if event.value is not None else b""
                result = normalize_message(
                    payload,
                    content_type=settings.kafka.input_format,
                    max_attributes=settings.streams.max_span_attributes,
                    max_attribute_chars=settings.streams.max_attribute_chars,
                    policy=policy,
                    # Span times are judged against when the collector produced the message.
                    arrival_ns=int(message.timestamp * 1e9) if message.timestamp > 0 else None,
                )
                for reject in result.rejects:
                    p.counters[f"rejects.{reject.reason}"] += 1
                    await p.topics.otlp_spans_dlq.send(
                        value=reject.payload if reject.payload is not None else payload,
                        headers=names.dlq_headers(
                            reject.reason,
                            reject.detail,
                            message.topic,
                            message.partition,
                            message.offset,
                        ),
                    )
                prices.apply(result.events)
                if p.engine_feed is not None:
                    p.counters["events.engine_state"] += p.engine_feed.attribute(result.events)
                    p.counters["engines.untracked_points"] = p.engine_feed.book.untracked_points
                source = (message.partition, message.offset)
                by_workflow: dict[str, list[dict[str, Any]]] = {}
                route_requests(result.events, source, workflows, by_workflow)
                requests.extend(by_workflow.items())
                route_sourced(result.events, result.spans, source, partitions, routed)
                p.counters["spans.in"] += result.span_count
                p.counters["events.decoded"] += len(result.events)
                p.counters.update(result.counters())  # decode.tokenless.*, rejects.*
            p.counters["events.unpriced"] = sum(prices.unknown_models.values())
            # Requests first: they are what a page waits for.
            for workflow, wire_events in requests:
                p.counters["events.requests"] += len(wire_events)
                for value in encode_requests(wire_events, message_limit(settings)):
                    await p.topics.llm_events.send(
                        key=workflow.encode(),
                        value=value,
                        headers=[(names.HEADER_RECORD_TYPE, RECORD_TYPE_REQUESTS)],
                    )
            for partition, records in routed.items():
                for value in encode_ordered(records, message_limit(settings)):
                    await p.topics.llm_spans.send(
                        value=value,
                        partition=partition,
                        headers=[(names.HEADER_RECORD_TYPE, RECORD_TYPE_SPANS)],
                    )


# -- stage: trace assembly, checkpointed in a changelog-backed table -----------------


def _add_assemble(p: Pipeline) -> None:
    from driftline.streams.traces import TraceAssembler

    settings = p.settings
    partitions = settings.kafka.partitions
    table = p.open_traces

    def assembler_for(partition: int, saved: dict[bytes, Any] | None = None) -> TraceAssembler:
        """The partition's assembler, rebuilt from ``saved`` (default: the table as it is)
        the first time it is asked for."""
        assembler = p.assemblers.get(partition)
        if assembler is None:
            assembler = p.assemblers[partition] = TraceAssembler(
                settings.streams.trace_grace_s,
                settings.streams.trace_timeout_s,
                settings.streams.max_open_traces,
                settings.streams.max_trace_spans,
            )
            if saved is None:
                saved = checkpoints.saved()
            saved_marks = saved.get(marks_key(partition, partitions).encode())
            p.marks[partition] = SourceMarks.load(saved_marks)
            heads: dict[str, dict[str, Any]] = {}
            chunks: dict[str, dict[int, dict[str, Any]]] = {}
            for key, state in saved.items():
                trace_id = key.decode()
                if state is None or trace_id.startswith(MARKS_KEY_PREFIX):
                    continue
                chunk = parse_chunk_key(trace_id)
                if chunk is not None:
                    chunks.setdefault(chunk[0], {})[chunk[1]] = state
                elif target_partition(trace_id, partitions) == partition:
                    heads[trace_id] = state
            restored = 0
            for trace_id, head in heads.items():
                # Chunks without a head are left from a trace closed by a crash in between.
                parts = chunks.get(trace_id, {})
                assembler.import_trace(trace_id, head, [parts[i] for i in sorted(parts)])
                restored += 1
            if restored:
                log.info("partition %d: restored %d open traces", partition, restored)
        return assembler

    def release_assemblers(owned: frozenset[int]) -> None:
        for partition in list(p.assemblers):
            if partition not in owned:
                p.closed_elsewhere.update(p.assemblers[partition].closed_counts)
                del p.assemblers[partition]  # another worker rebuilds it from the table
                p.marks.pop(partition, None)

    def restore_assemblers(recovered: Recovered) -> None:
        # Traces checkpointed on partitions this worker now owns resume here, even if no new
        # span arrives for them; the recovered values hold what Faust's recovery missed, a
        # closed trace's deletion among them, which would otherwise reopen the trace and
        # publish its events a second time, late.
        for partition in recovered.owned:
            assembler_for(partition, recovered.values)

    # Held by each batch, each closing round and the restore after a rebalance: a batch
    # that reached a newly assigned partition while the restore read the changelog's tail
    # built that partition's assembler without the tail (closed traces' deletions, the
    # latest marks), and the restore then kept it: closed traces reopened and their events
    # were published again. Seen once in test_scaling after a kill: 1,553 of 12,968 events
    # published twice, and of the two partitions taken over only one restored its traces.
    lock = asyncio.Lock()
    checkpoints = CheckpointedTable(
        p,
        table,
        p.topics.llm_spans.get_topic_name(),
        restore_assemblers,
        release=release_assemblers,
        lock=lock,
    )

    async def checkpoint(
        partition: int, closed: Sequence[str] = (), marks_changed: bool = False
    ) -> None:
        """Deletions of closed traces, then touched open traces, then the marks covering them:
        one acknowledged write, in that order (an evicted trace can be open again by now)."""
        assembler = p.assemblers[partition]
        changes: list[tuple[bytes, Any]] = []
        for trace_id in closed:
            changes.append((trace_id.encode(), None))
            for index in range(assembler.closed_chunks.get(trace_id, 0)):
                changes.append((chunk_key(trace_id, index, partitions).encode(), None))
        for trace_id in assembler.dirty_trace_ids():
            head, full_chunks = assembler.checkpoint_changes(trace_id)
            for index, chunk in full_chunks:
                changes.append((chunk_key(trace_id, index, partitions).encode(), chunk))
            changes.append((trace_id.encode(), head))
        if marks_changed:
            changes.append((marks_key(partition, partitions).encode(), p.marks[partition].export()))
        await checkpoints.write(changes)

    @p.app.agent(p.topics.llm_spans, name="assemble")
    async def assemble(stream: Any) -> None:
        async for batch in stream.take_events(
            settings.streams.batch_max_messages, within=settings.streams.batch_max_wait_s
        ):
            async with lock:
                await add_spans(batch)

    async def add_spans(batch: list[Any]) -> None:
        now_s = time.time()
        touched = set()
        for event in batch:
            doc = loads(event.value)
            partition = event.message.partition
            assembler = assembler_for(partition)
            marks = p.marks[partition]
            skipped = marks.skipped
            events, spans = marks.fresh(doc["events"], doc["spans"])
            p.counters["spans.redelivered_skipped"] += marks.skipped - skipped
            assembler.add(events, spans, now_s)
            touched.add(partition)
        for partition in touched:
            await checkpoint(partition, marks_changed=True)

    closed_sender: AcknowledgedSender | None = None

    @p.app.timer(CLOSE_INTERVAL_S, name="close_traces")
    async def close_traces() -> None:
        async with lock:
            await close_due()

    async def close_due() -> None:
        now_s = time.time()
        for partition, assembler in list(p.assemblers.items()):
            closed = assembler.close_due(now_s)
            if closed.traces:
                # Delivered before the checkpoints are deleted: were the deletion to reach
                # the changelog and the events not, a crash would lose these traces. Sent
                # by a producer of their own, not queued behind what decode buffered for
                # the same partitions, and the deletion is acknowledged right after: a
                # crash in between (the one way a trace is published twice) has
                # milliseconds to strike, not a backlog's flush time.
                nonlocal closed_sender
                if closed_sender is None:
                    closed_sender = AcknowledgedSender(p, p.topics.llm_events.get_topic_name())
                await closed_sender.send(closed_messages(p, closed.events, closed.traces))
            # Also traces restored or evicted since the last batch.
            await checkpoint(partition, closed=assembler.closed_trace_ids)


def closed_messages(
    p: Pipeline, events: Sequence[dict[str, Any]], traces: Sequence[dict[str, Any]]
) -> list[Message]:
    """One ``llm_events`` message per workflow: its closed events and trace summaries, on
    the workflow's partition (the default partitioner's, as for every message keyed by it)."""
    messages: list[Message] = []
    partitions = p.settings.kafka.partitions
    headers: list[Header] = [(names.HEADER_RECORD_TYPE, RECORD_TYPE_CLOSED)]
    for workflow, group in group_by_workflow(events, traces).items():
        key = workflow.encode()
        partition = target_partition(key, partitions)
        for value in encode_bounded(group, message_limit(p.settings)):
            messages.append((key, value, partition, headers))
    p.counters["events.out"] += len(events)
    p.counters["traces.out"] += len(traces)
    return messages


# -- readiness and counters ---------------------------------------------------------


def _add_readiness(p: Pipeline, ready_file: Path | None) -> None:
    async def signal_ready(sender: Any, *args: Any, **kwargs: Any) -> None:
        # Which partitions (and so which workflows' state) this worker owns now: the one
        # line an operator needs to follow a rebalance across workers.
        log.info("partitions assigned: %s", describe_assignment(p.app.assignor.assigned_actives()))
        if p.counters["worker.ready"]:
            return
        p.counters["worker.ready"] = 1
        log.info("driftline worker ready")
        if ready_file is not None:
            ready_file.parent.mkdir(parents=True, exist_ok=True)
            ready_file.write_text(f"{time.time():.3f}\n")

    p.after_rebalance(signal_ready)


def _add_gc_tuning(p: Pipeline) -> None:
    """Once the worker is up, leave what it loaded out of garbage collections, and collect
    young objects less often.

    Every span becomes a few dicts that live for one batch (decoded, routed, encoded), and
    with CPython's default young-generation threshold (700 allocations) most of them live
    through two collections and reach the old generation, whose full collections then scan
    the whole heap: the worker's modules, open traces and monitor state (8% of the worker's
    samples in a profile of ``bench/bench_pipeline.py``, in ``gc_collect``). A batch's
    objects now die young; reference cycles are still collected, later.
    """
    done = False

    async def tune_gc(sender: Any, *args: Any, **kwargs: Any) -> None:
        nonlocal done
        if done:
            return
        done = True
        gc.collect()
        gc.freeze()  # modules, settings and restored state: never garbage, never scanned
        _young, middle, old = gc.get_threshold()
        gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)

    p.after_rebalance(tune_gc)


def _add_stats(p: Pipeline) -> None:
    @p.app.timer(STATS_INTERVAL_S, name="log_stats")
    async def log_stats() -> None:
        open_traces = sum(a.open_count for a in p.assemblers.values())
        stats = " ".join(f"{k}={v}" for k, v in sorted(p.counters.items()))
        reused = p.governance.decoded.reused if p.governance is not None else 0
        log.info("stats: %s open_traces=%d llm_events_decoded_once=%d", stats, open_traces, reused)


# -- the worker's own telemetry: /metrics, /healthz, /readyz (streams/telemetry.py) -------


def _add_telemetry(p: Pipeline) -> None:
    """Serve the worker's metrics and probes from its start to its shutdown."""
    from driftline.streams.telemetry import (
        ReadDelays,
        TelemetryServer,
        worker_families,
        worker_health,
        worker_readiness,
    )

    p.read_delays = ReadDelays()
    p.app.sensors.add(_ReadDelaySensor(p.read_delays))
    worker = p.settings.worker
    server = TelemetryServer(
        worker.metrics_host,
        worker.metrics_port,
        collect=lambda: worker_families(p),
        ready=lambda: worker_readiness(p),
        healthy=lambda: worker_health(p),
    )

    started = False

    async def start_telemetry(sender: Any, *args: Any, **kwargs: Any) -> None:
        # At the first rebalance's start, so /healthz and /readyz (503: waiting for the
        # assignment) answer while tables recover; Faust starts its own tasks only after.
        nonlocal started
        if not started:
            started = True
            await server.start()

    async def stop_telemetry(sender: Any, *args: Any, **kwargs: Any) -> None:
        await server.stop()

    for signal in (p.app.on_partitions_revoked, p.app.on_partitions_assigned):
        signal.connect(start_telemetry)  # type: ignore[arg-type]
    p.after_rebalance(start_telemetry)
    p.app.on_before_shutdown.connect(stop_telemetry)  # type: ignore[arg-type]


class _ReadDelaySensor(Sensor):
    """Faust's hook on every message handed to the streams: feeds ``ReadDelays``."""

    def __init__(self, delays: Any) -> None:
        super().__init__()
        self._note = delays.note

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        self._note(tp.topic, tp.partition, message.timestamp)


def _add_self_watch(p: Pipeline, with_governance: bool) -> None:
    """Alerts about the worker itself, sent straight to the paging routes, and its heartbeat.

    The pipeline alerts get a notifier of their own over the same routes: the notify agent's
    one checkpoints its deliveries to Kafka, and Kafka may be what is broken.
    """
    import os
    import socket

    from driftline.streams.notifier import Notifier
    from driftline.streams.notifier.routing import ENV_ROUTING_KEY
    from driftline.streams.selfalerts import Rules, SelfAlerts
    from driftline.streams.telemetry import (
        SelfWatch,
        self_reading,
        worker_health,
        worker_readiness,
    )

    settings = p.settings
    worker = settings.worker
    name = worker.name or socket.gethostname() or "worker"
    paging = bool(settings.pagerduty.routes or os.environ.get(ENV_ROUTING_KEY))
    notifier = (
        Notifier.from_settings(settings.pagerduty)
        if worker.self_alerts and with_governance and paging
        else None
    )
    heartbeat_url = os.environ.get(worker.heartbeat_url_env) if worker.heartbeat_url_env else None

    def read(now_s: float) -> Any:
        return self_reading(p, now_s, [notifier])

    def healthy() -> bool:
        return worker_readiness(p).ok and worker_health(p).ok

    watch = SelfWatch(
        SelfAlerts(name, Rules.from_settings(worker), settings.alerts.runbook_base_url),
        read,
        healthy,
        p.counters,
        check_s=worker.self_alert_check_s,
        evaluate=worker.self_alerts,
        notifier=notifier,
        heartbeat_url=heartbeat_url or None,
        heartbeat_s=worker.heartbeat_s,
        heartbeat_method=worker.heartbeat_method,
        # Open alerts survive a restart (else an incident stays open with nobody to resolve it).
        state_file=settings.embedded.data_dir / "self_alerts" / f"{name}.json",
    )
    p.self_watch = watch
    started = False

    async def start_watch(sender: Any, *args: Any, **kwargs: Any) -> None:
        nonlocal started
        if not started:
            started = True
            watch.start()

    async def stop_watch(sender: Any, *args: Any, **kwargs: Any) -> None:
        await watch.stop()

    for signal in (p.app.on_partitions_revoked, p.app.on_partitions_assigned):
        signal.connect(start_watch)  # type: ignore[arg-type]
    p.after_rebalance(start_watch)
    p.app.on_before_shutdown.connect(stop_watch)  # type: ignore[arg-type]
