"""Stream stages after trace assembly: storage, monitoring and paging.

Topology (DESIGN.md, "Data flow")::

    llm_events --store_events--> ClickHouse llm_requests / llm_traces
    llm_events --monitor-------> llm_alerts (key dedup key)   state: table monitor_state
    llm_alerts --store_alerts--> ClickHouse llm_alerts
    llm_alerts --notify--------> PagerDuty / webhooks, delivery log --> ClickHouse alert_deliveries
                                                                state: table notifier_ledger

Offsets: Faust acknowledges a ``take_events`` batch only after the agent body has finished
with it, so every body below writes (store, alerts topic, pages) before it returns; a crash
before that re-reads the batch, and every write is idempotent (insert dedup tokens and span
keys in the store, deterministic alert ids, the delivery ledger).

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
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, TypeVar

from schemas.alert import TRANSITION_FIELDS
from schemas.event import TRACE_FIELDS, Field, from_wire, to_wire

if TYPE_CHECKING:
    from driftline.store import Store
    from streams.app import Pipeline
    from streams.monitor import Monitor
    from streams.notifier import Notifier
    from streams.sink import EventSink

log = logging.getLogger(__name__)

T = TypeVar("T")

MONITOR_STATE_TABLE: Final = "monitor_state"
NOTIFIER_LEDGER_TABLE: Final = "notifier_ledger"
STORE_BATCH_MESSAGES: Final = 1000
MAX_STORE_BACKOFF_S: Final = 30.0
DELIVERY_TABLE: Final = "driftline.alert_deliveries"
DELIVERY_COLUMNS: Final[tuple[Field, ...]] = (
    Field("alert_id", "str"),
    Field("dedup_key", "str"),
    Field("event_action", "str"),
    Field("attempt", "int"),
    Field("status_code", "int"),
    Field("outcome", "str"),
    Field("error", "str"),
    Field("latency_ms", "float"),
    Field("sent_at", "ts"),
    Field("target", "str"),
)
ENV_ROUTING_KEY: Final = "PAGERDUTY_ROUTING_KEY"


class StoreWriter:
    """The worker's one store connection, used from one thread.

    chdb and clickhouse-connect calls block; running them on a single dedicated thread keeps
    the event loop (heartbeats, other agents) responsive and every store call serialized.
    """

    def __init__(self, open_store: Callable[[], Store]) -> None:
        self._open = open_store
        self._store: Store | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="driftline-store")

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def store(self) -> Store:
        if self._store is None:
            self._store = await self.run(self._open)
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


async def flush_until_stored(
    writer: StoreWriter, sink: EventSink, counters: Any, what: str
) -> None:
    """Write everything ``sink`` holds, retrying with backoff for as long as it takes."""
    from driftline.store import StoreError

    while sink.pending_rows:
        try:
            await writer.run(sink.flush)
        except StoreError as exc:
            counters["store.failures"] += 1
            delay = min(0.5 * 2 ** max(sink.failures - 1, 0), MAX_STORE_BACKOFF_S)
            log.warning(
                "store unavailable writing %s (%s); holding %d rows, consumption paused, "
                "retry in %.1f s",
                what,
                exc,
                sink.pending_rows,
                delay,
            )
            await asyncio.sleep(delay)
    if sink.rejected:
        for kind, _record, reason in sink.rejected:
            counters[f"store.rejected.{kind}"] += 1
            log.error("record of kind %s could not be stored: %s", kind, reason)
        sink.rejected.clear()


def decode_closed(value: bytes) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One ``llm_events`` message back to internal events and trace summaries."""
    from streams.app import loads

    doc = loads(value)
    events = [from_wire(e) for e in doc.get("events", ())]
    traces = [from_wire(t, TRACE_FIELDS) for t in doc.get("traces", ())]
    return events, traces


def build_state(p: Pipeline) -> GovernanceState:
    from driftline.store import open_store
    from streams.monitor import Monitor
    from streams.sink import EventSink

    settings = p.settings
    writer = StoreWriter(lambda: open_store(settings.store.url, settings.store))
    sinks = {
        name: EventSink(
            None,  # the store is attached once it is open, on the writer's thread
            batch_rows=settings.store.batch_rows,
            batch_seconds=settings.store.batch_seconds,
        )
        for name in ("events", "alerts")
    }
    return GovernanceState(writer, Monitor(settings), build_notifier(p), sinks)


def build_notifier(p: Pipeline) -> Notifier | None:
    """The pager, or None when nothing is configured to receive pages."""
    from streams.notifier import Notifier

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
    """Register the storage, monitoring and paging agents on ``p``."""
    _add_store_events(p, state)
    _add_monitor(p, state)
    _add_store_alerts(p, state)
    if state.notifier is not None:
        _add_notify(p, state)

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
                events, traces = decode_closed(event.value)
                for record in events:
                    sink.add("events", record, position)
                for record in traces:
                    sink.add("traces", record, position)
                if not events and not traces:
                    sink.seen(position)
            await flush_until_stored(state.writer, sink, p.counters, "events")


def _add_monitor(p: Pipeline, state: GovernanceState) -> None:
    from streams.app import dumps

    settings = p.settings
    table = p.tables[MONITOR_STATE_TABLE]
    partitions = settings.kafka.partitions

    @p.app.agent(p.topics.llm_events, name="monitor")
    async def monitor_events(stream: Any) -> None:
        async for batch in stream.take_events(
            settings.streams.batch_max_messages, within=settings.streams.batch_max_wait_s
        ):
            events: list[dict[str, Any]] = []
            traces: list[dict[str, Any]] = []
            for event in batch:
                e, t = decode_closed(event.value)
                events.extend(e)
                traces.extend(t)
            monitor = state.monitor
            transitions = monitor.process(events, traces)
            # Publish before checkpointing: a crash in between re-derives the same
            # transitions (deterministic ids) instead of losing them.
            for record in transitions:
                await p.topics.llm_alerts.send(
                    key=str(record["dedup_key"]).encode(),
                    value=dumps(to_wire(record, TRANSITION_FIELDS)),
                )
                p.counters[f"alerts.{record['transition']}"] += 1
            for workflow in monitor.dirty_workflows():
                table[workflow.encode()] = monitor.snapshot(workflow)

    async def restore_monitor(sender: Any, *args: Any, **kwargs: Any) -> None:
        from streams.app import target_partition
        from streams.monitor import Monitor

        owned = {
            tp.partition
            for tp in p.app.assignor.assigned_actives()
            if tp.topic == p.topics.llm_events.get_topic_name()
        }
        fresh = Monitor(settings)
        restored = 0
        for key, snapshot in list(table.items()):
            workflow = key.decode() if isinstance(key, bytes) else str(key)
            if snapshot and target_partition(workflow, partitions) in owned:
                fresh.restore(workflow, snapshot)
                restored += 1
        state.monitor = fresh
        if restored:
            log.info("monitor: resumed baselines of %d workflows", restored)

    p.app.on_rebalance_complete.connect(restore_monitor)  # type: ignore[arg-type]


def _add_store_alerts(p: Pipeline, state: GovernanceState) -> None:
    sink = state.sinks["alerts"]

    @p.app.agent(p.topics.llm_alerts, name="store_alerts")
    async def store_alerts(stream: Any) -> None:
        from streams.app import loads

        await _attach_store(state)
        async for batch in stream.take_events(STORE_BATCH_MESSAGES, within=0.5):
            for event in batch:
                m = event.message
                record = from_wire(loads(event.value), TRANSITION_FIELDS)
                sink.add("alerts", record, (m.topic, m.partition, m.offset))
            await flush_until_stored(state.writer, sink, p.counters, "alerts")


def _add_notify(p: Pipeline, state: GovernanceState) -> None:
    from driftline.store import StoreError
    from streams.sink import to_arrow

    notifier = state.notifier
    assert notifier is not None
    table = p.tables[NOTIFIER_LEDGER_TABLE]

    async def store_deliveries(records: Sequence[dict[str, Any]]) -> None:
        if not records:
            return
        store = await state.writer.store()
        data = to_arrow(records, DELIVERY_COLUMNS)
        attempt = 0
        while True:
            try:
                await state.writer.run(store.insert_arrow, DELIVERY_TABLE, data, None)
                return
            except StoreError as exc:
                attempt += 1
                delay = min(0.5 * 2 ** (attempt - 1), MAX_STORE_BACKOFF_S)
                log.warning(
                    "store unavailable writing deliveries (%s); retry in %.1f s", exc, delay
                )
                await asyncio.sleep(delay)

    @p.app.agent(p.topics.llm_alerts, name="notify")
    async def notify(stream: Any) -> None:
        from streams.app import loads

        async for batch in stream.take_events(
            p.settings.streams.batch_max_messages, within=p.settings.streams.batch_max_wait_s
        ):
            transitions = [from_wire(loads(e.value), TRANSITION_FIELDS) for e in batch]
            records = await notifier.deliver(transitions)
            changed: dict[str, dict[str, dict[str, Any]]] = {}
            for ledger_key, entry in notifier.ledger.pop_changes().items():
                changed.setdefault(str(entry.get("dedup_key", "")), {})[ledger_key] = entry
            for dedup_key, entries in changed.items():
                merged = dict(table.get(dedup_key.encode()) or {})
                merged.update(entries)
                table[dedup_key.encode()] = merged
            for record in records:
                p.counters[f"pages.{record['outcome']}"] += 1
            await store_deliveries(records)

    async def restore_ledger(sender: Any, *args: Any, **kwargs: Any) -> None:
        entries: dict[str, dict[str, Any]] = {}
        for _key, value in list(table.items()):
            if value:
                entries.update(value)
        if entries:
            notifier.import_state(entries)
            log.info("notifier: resumed delivery state of %d alerts", len(entries))

    p.app.on_rebalance_complete.connect(restore_ledger)  # type: ignore[arg-type]
