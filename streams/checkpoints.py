"""Checkpointed state: the one way a stage's changelog-backed table is written and recovered.

Four stages keep state that must survive a crash and follow its partitions to another worker:
trace assembly (``open_traces``), the monitor (``monitor_state``), the notifier's delivery
ledger (``notifier_ledger``) and the engine alerts (``engine_conditions``). Each keeps its
state in a Faust table partitioned like the topic it reads, so the worker that owns a
partition of that topic also holds the state of its keys. A stage gives
:class:`CheckpointedTable` the table, that topic and its own ``restore(recovered)``; the table
does the rest, the same way for all four:

* after every rebalance (Faust has recovered the tables by then) it works out which
  partitions this worker owns now and which of them it did not own before, lets the stage
  ``release`` what it no longer owns, reads what recovery may have missed of the others
  (:func:`changelog_tail`, written into the table), and calls ``restore`` with every
  key's newest value, under the stage's lock when it has one, so no batch is applied to
  state that is being replaced;
* ``await write(changes)`` checkpoints through one acknowledged writer
  (:class:`streams.changelog.ChangelogWriter`), made on first use and closed at shutdown.

``restore`` is the stage's pure logic: keep the keys it still owns from memory, rebuild the
ones that moved to it from the values, drop the rest.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from driftline.streams.changelog import ChangelogWriter
from driftline.streams.codec import loads
from driftline.streams.runtime import Pipeline

__all__ = ["CheckpointedTable", "Recovered", "changelog_tail"]

CHANGELOG_TAIL_MARGIN: Final = 1000
CHANGELOG_FENCE_KEY: Final = b"\x00changelog-fence"  # deleted, never set: restores skip it
CHANGELOG_TAIL_IDLE_POLLS: Final = 3  # 3 x 0.2 s without a record: the end of the changelog


@dataclass(frozen=True, slots=True)
class Recovered:
    """What a stage restores from after a rebalance."""

    # Every key's newest value (decoded like the table's): the recovered table, completed by
    # the changelog's tail of the partitions taken over; deleted keys are left out.
    values: dict[bytes, Any]
    owned: frozenset[int]  # the source topic's partitions this worker owns now
    moved: frozenset[int]  # of those, the ones it did not own before this rebalance


class CheckpointedTable:
    """A stage's changelog-backed table: acknowledged writes and the restore after a rebalance.

    ``source_topic`` is the topic whose partitions decide who owns a key (the table uses the
    same partitioner on the same key); ``decode`` reads a raw changelog value the way the
    table's own value serializer does (JSON unless the table keeps raw bytes).
    """

    def __init__(
        self,
        p: Pipeline,
        table: Any,
        source_topic: str,
        restore: Callable[[Recovered], None],
        *,
        release: Callable[[frozenset[int]], None] | None = None,
        lock: asyncio.Lock | None = None,
        decode: Callable[[bytes], Any] = loads,
    ) -> None:
        self.table = table
        self._p = p
        self._source_topic = source_topic
        self._restore = restore
        self._release = release
        self._lock = lock
        self._decode = decode
        self._owned: frozenset[int] = frozenset()
        self._writer: ChangelogWriter | None = None
        p.after_rebalance(self._after_rebalance)
        p.app.on_before_shutdown.connect(self._close)  # type: ignore[arg-type]

    @property
    def owned(self) -> frozenset[int]:
        """The source topic's partitions this worker owned at the last restore."""
        return self._owned

    def assigned_now(self) -> set[int]:
        """The source topic's partitions assigned to this worker's consumer at this moment: a
        batch buffered before a revocation checks its records against it."""
        assignment = self._p.app.consumer.assignment()
        return {tp.partition for tp in assignment if tp.topic == self._source_topic}

    def saved(self) -> dict[bytes, Any]:
        """The table as Faust recovered and this worker has written it, by key bytes."""
        return {k if isinstance(k, bytes) else str(k).encode(): v for k, v in self.table.items()}

    async def write(self, changes: Sequence[tuple[bytes, Any]]) -> None:
        """Apply ``changes`` (value None deletes) in memory, then durably to the changelog."""
        if self._writer is None:
            self._writer = ChangelogWriter(self._p, self.table)
        await self._writer.write(changes)

    async def _after_rebalance(self, sender: Any) -> None:
        if self._lock is None:
            await self._recover()
            return
        async with self._lock:
            await self._recover()

    async def _recover(self) -> None:
        assigned = self._p.app.assignor.assigned_actives()
        owned = frozenset(tp.partition for tp in assigned if tp.topic == self._source_topic)
        moved = owned - self._owned
        if self._release is not None:
            # Before the tail is read: were the read to fail, the state of partitions now
            # another worker's must not go on being worked (traces closed twice).
            self._release(owned)
        tail = await asyncio.get_running_loop().run_in_executor(
            None, changelog_tail, self._p, self.table, set(moved)
        )
        # Newer than what recovery read (see changelog_tail): into the table too, so that
        # what reads the table later (a lazily built assembler, the ledger's merges) sees it.
        data = self.table.data
        for key, raw in tail.items():
            if raw is None:
                data.pop(key, None)
            else:
                data[key] = self._decode(raw)
        self._restore(Recovered(self.saved(), owned, moved))
        # Only once restored: a restore that failed reads the tail again next time.
        self._owned = owned

    async def _close(self, sender: Any, *args: Any, **kwargs: Any) -> None:
        if self._writer is not None:
            self._writer.close()
            # A round still running when shutdown begins (a timer's) writes through a new
            # writer, acknowledged as ever, rather than failing on a closed one.
            self._writer = None


def changelog_tail(
    p: Pipeline, table: Any, partitions: set[int], margin: int = CHANGELOG_TAIL_MARGIN
) -> dict[bytes, bytes | None]:
    """The last value per key in the tail of ``table``'s changelog partitions (None: deleted).

    Faust's recovery stops at the broker's high watermark; tansu reports it at the start of
    the last record batch, so the newest records of a partition can be missing from a
    recovered table. This reads from ``margin`` records before that watermark until nothing
    more arrives, counting records read rather than trusting offsets. Blocking: run it in an
    executor.
    """
    from confluent_kafka import Consumer, TopicPartition

    from driftline.streams.kafka import consumer_config

    if not partitions:
        return {}
    topic = table.changelog_topic.get_topic_name()
    consumer = Consumer(
        consumer_config(
            p.settings.kafka,
            f"{p.settings.kafka.consumer_group}-tail",
            p.bootstrap_servers,
            **{"enable.auto.commit": False},
        )
    )
    latest: dict[bytes, bytes | None] = {}
    try:
        assigned = []
        for partition in sorted(partitions):
            _low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=10
            )
            assigned.append(TopicPartition(topic, partition, max(0, high - margin)))
        _fence(p, topic, partitions)
        consumer.assign(assigned)
        idle_polls = 0
        while idle_polls < CHANGELOG_TAIL_IDLE_POLLS:
            messages = consumer.consume(1000, timeout=0.2)
            idle_polls = 0 if messages else idle_polls + 1
            for message in messages:
                key = message.key()
                if message.error() is None and key is not None:
                    latest[bytes(key)] = message.value() or None
    finally:
        consumer.close()
    return latest


def _fence(p: Pipeline, topic: str, partitions: set[int]) -> None:
    """A tombstone after whatever the partitions' previous owner wrote last.

    The broker may hold back a partition's last record batch until another follows it (tansu
    reports its high watermark at that batch's start); a previous owner killed right after a
    checkpoint leaves that checkpoint as the last batch. Fenced, it is read like the rest.
    """
    from confluent_kafka import Producer

    from driftline.streams.kafka import producer_config

    producer = Producer(producer_config(p.settings.kafka, p.bootstrap_servers))
    for partition in sorted(partitions):
        producer.produce(topic, key=CHANGELOG_FENCE_KEY, value=None, partition=partition)
    producer.flush(10)
