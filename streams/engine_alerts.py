"""Engine alerts in the worker: the conditions of the engines this worker owns, paged.

Every worker's :class:`~driftline.streams.engine_feed.EngineMetricsFeed` reads all of
``otlp_metrics``, so every worker sees every engine's reports whatever partition the
collector put them on. Which worker judges an engine is therefore decided by the engine,
not by its reports: engine (model, instance) is judged by the worker that owns partition
:func:`owner_partition` (murmur2 of ``"<instance>/<model>"``) of ``llm_events``. The
consumer group gives each partition to exactly one worker, so each engine has one judge.

Its state (:class:`~driftline.streams.monitor.engine_conditions.EngineConditions`: the last
report applied per metric, the runs of bad reports, the open alerts) is checkpointed in the
table ``engine_conditions`` under the same key and partitioner. The worker that takes a
partition over (a rebalance, a crash) restores its engines from the table and continues with
the reports after the restored ones, which its own feed holds (15 minutes of them). An engine
never checkpointed starts from the reports the feed holds: the last ``engines.lookback_s``
after a start.

Transitions go to ``llm_alerts`` keyed by dedup key, then to the store and the pager as every
alert. They are published before the state that remembers them is checkpointed; alert ids
are deterministic (dedup key and open time), so a transition published twice (a crash in
between, two owners for a moment during a rebalance) is stored once and paged once.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Final

from driftline.schemas.alert import TRANSITION_FIELDS
from driftline.schemas.event import to_wire
from driftline.streams.checkpoints import CheckpointedTable, Recovered
from driftline.streams.codec import dumps, loads
from driftline.streams.engine_attribution import EngineAttribution
from driftline.streams.monitor import SnapshotError
from driftline.streams.monitor.engine_conditions import (
    SNAPSHOT_MAGIC,
    EngineConditions,
    EngineKey,
)
from driftline.streams.positions import target_partition

if TYPE_CHECKING:
    from driftline.streams.runtime import Pipeline

__all__ = ["ENGINE_CONDITIONS_TABLE", "add_engine_alerts", "engine_id", "judge", "owner_partition"]

log = logging.getLogger(__name__)

ENGINE_CONDITIONS_TABLE: Final = "engine_conditions"
IDLE_AFTER_US: Final = 3600 * 1_000_000  # an engine with no report for this long is forgotten


def engine_id(engine: EngineKey) -> str:
    """The key of an engine's state: ``<instance>/<model>`` (instances hold no ``/``).

    >>> engine_id(("meta-llama/Llama-3.1-8B", "vllm-0:8000"))
    'vllm-0:8000/meta-llama/Llama-3.1-8B'
    >>> engine_of_id(engine_id(("meta-llama/Llama-3.1-8B", "vllm-0:8000")))
    ('meta-llama/Llama-3.1-8B', 'vllm-0:8000')
    """
    model, instance = engine
    return f"{instance}/{model}"


def engine_of_id(text: str) -> EngineKey:
    instance, _, model = text.partition("/")
    return (model, instance)


def owner_partition(engine: EngineKey, partitions: int) -> int:
    """The ``llm_events`` partition whose owner judges ``engine``."""
    return target_partition(engine_id(engine), partitions)


def judge(
    watch: EngineConditions, book: EngineAttribution, owned: set[int], partitions: int
) -> list[dict[str, Any]]:
    """Apply the reports in ``book`` newer than ``watch`` has seen, for the engines whose
    owner partition is in ``owned``; then resolve what engines that went quiet left open.
    Transitions in event-time order."""
    out: list[dict[str, Any]] = []
    for engine in book.engine_keys():
        if owner_partition(engine, partitions) not in owned:
            continue
        for metric in watch.metrics:
            clock_us = watch.clock(engine, metric)
            after_ns = clock_us * 1000 + 999 if clock_us >= 0 else -1
            times_ns, values = book.points_after(engine, metric, after_ns)
            if times_ns:
                out.extend(watch.update(engine, metric, [t // 1000 for t in times_ns], values))
    if book.newest_ns:
        out.extend(watch.review(book.newest_ns // 1000))
    out.sort(key=lambda t: int(t["event_ts"]))
    return out


def _snapshot_bytes(value: Any) -> bytes:
    """A table value as :meth:`EngineConditions.restore` takes it: the table holds the
    snapshot as text, the changelog's tail as the JSON of that text.

    >>> _snapshot_bytes('DLENG1\\n{}') == _snapshot_bytes(b'"DLENG1\\\\n{}"') == b'DLENG1\\n{}'
    True
    """
    if isinstance(value, bytes | bytearray):
        raw = bytes(value)
        value = raw if raw.startswith(SNAPSHOT_MAGIC) else loads(raw)
    return value if isinstance(value, bytes) else str(value).encode()


def add_engine_alerts(p: Pipeline) -> None:
    """Register on ``p`` the engine alerts' table, the timer that judges new reports and the
    restore on rebalance; needs the feed (``engines.enabled`` and governance)."""
    feed = p.engine_feed
    if feed is None:
        raise ValueError("engine alerts need the engine metrics feed (engines.enabled)")
    settings = p.settings
    partitions = settings.kafka.partitions
    table = p.app.Table(
        ENGINE_CONDITIONS_TABLE,
        default=None,
        partitions=partitions,
        use_partitioner=True,  # written from a timer; changelog partition = owner_partition
        key_type=bytes,  # engine_id; value: EngineConditions.snapshot as text
    )
    p.tables[ENGINE_CONDITIONS_TABLE] = table
    watch = EngineConditions(settings.engines, settings.alerts)

    def release_engines(owned: frozenset[int]) -> None:
        for engine in watch.engines():
            if owner_partition(engine, partitions) not in owned:
                watch.drop(engine)  # its new owner continues from the table

    def restore_engines(recovered: Recovered) -> None:
        restored = 0
        for key, value in recovered.values.items():
            engine = engine_of_id(key.decode())
            if not value or owner_partition(engine, partitions) not in recovered.moved:
                continue
            try:
                watch.restore(engine, _snapshot_bytes(value))
                restored += 1
            except SnapshotError as exc:
                log.warning("engine state %r dropped, starting again: %s", key, exc)
        if restored:
            log.info("engine alerts: state of %d engines resumed from the changelog", restored)

    # Held by each judging round and by the restore: a round in the middle of a restore would
    # judge engines of partitions this worker has just lost.
    lock = asyncio.Lock()
    conditions = CheckpointedTable(
        p,
        table,
        p.topics.llm_events.get_topic_name(),
        restore_engines,
        release=release_engines,
        lock=lock,
        decode=bytes,
    )

    @p.app.timer(settings.engines.check_s, name="engine_alerts")
    async def judge_engines() -> None:
        async with lock:
            await judge_and_checkpoint()

    async def judge_and_checkpoint() -> None:
        owned = set(conditions.owned)
        if not owned:
            return
        with feed.locked() as book:
            transitions = judge(watch, book, owned, partitions)
            newest_us = book.newest_ns // 1000
        for record in transitions:
            await p.topics.llm_alerts.send(
                key=str(record["dedup_key"]).encode(),
                value=dumps(to_wire(record, TRANSITION_FIELDS)),
            )
            log.info("engine alert %s: %s", record["transition"], record["dedup_key"])
            p.counters[f"alerts.{record['transition']}.{record['kind']}"] += 1  # like the monitor's
        if transitions:
            # Delivered before the state that remembers them is checkpointed.
            await p.app.producer.flush()
        changes: list[tuple[bytes, str | None]] = [
            (engine_id(engine).encode(), watch.snapshot(engine).decode())
            for engine in sorted(watch.dirty())
            if owner_partition(engine, partitions) in owned
        ]
        # Engines silent for longer than the feed keeps reports: their state goes (tombstones).
        gone = watch.forget_idle(newest_us, IDLE_AFTER_US) if newest_us else []
        changes += [(engine_id(engine).encode(), None) for engine in gone]
        if changes:
            # Acknowledged at once (not behind the shared producer buffer): a worker killed
            # right after a page must leave the state that remembers it.
            await conditions.write(changes)
