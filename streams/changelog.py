"""Writing a Faust table's changelog directly, acknowledged before the caller goes on.

Faust writes a table change to its changelog through the worker's shared producer buffer, in
the background; the change is durable only after a later flush, and a flush waits for
everything else buffered (under a backlog: seconds). Two kinds of state cannot wait that long:

* the trace assembler's checkpoints: a closed trace's deletion must be durable right after its
  events were published, or a crash in between publishes the trace again;
* the notifier's delivery ledger: an entry must be durable right after PagerDuty accepted the
  event, or a crash in between pages again.

The closed traces themselves go out the same way (:class:`AcknowledgedSender`): behind the
shared buffer they would wait for every request decode queued before them on the same
``llm_events`` partitions, and that whole wait is a window in which a crash publishes them
twice (the deletion of their checkpoints follows their delivery).

:class:`ChangelogWriter` writes such a table's changes in memory and to its changelog through a
producer of its own, and returns once the broker acknowledged them (milliseconds). The records
are what Faust itself writes (raw key bytes, JSON value or a tombstone, the key's default
partition), so recovery reads them like any other. All writes of one table must go through one
writer: mixed with Faust's own buffered writes, an older value could land after a newer one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Final

from driftline.streams.codec import dumps
from driftline.streams.positions import target_partition

if TYPE_CHECKING:
    from driftline.streams.runtime import Pipeline

__all__ = ["AcknowledgedSender", "ChangelogWriter"]

WRITE_TIMEOUT_S: Final = 30.0


class ChangelogWriterError(RuntimeError):
    """The broker did not acknowledge a changelog write in time."""


Header = tuple[str, str | bytes | None]
Message = tuple[bytes, bytes | None, int, list[Header]]  # key, value, partition, headers


class AcknowledgedSender:
    """Messages to one topic through a producer of its own: ``await send(messages)`` returns
    once the broker acknowledged every one, in the order given."""

    def __init__(self, p: Pipeline, topic: str) -> None:
        from confluent_kafka import Producer

        from driftline.streams.kafka import producer_config

        self.topic = topic
        self._producer = Producer(
            producer_config(p.settings.kafka, p.bootstrap_servers, **{"linger.ms": 1})
        )
        # One thread: writes reach the broker in the order they were asked for.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=topic[-40:])

    async def send(self, messages: Sequence[Message]) -> None:
        if messages:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._send, messages)

    def _send(self, messages: Sequence[Message]) -> None:
        # A flush returns once every message is delivered or has failed for good: a failure
        # (too large, retries exhausted, no such partition) is only in its delivery report.
        failed: list[str] = []

        def on_delivery(error: Any, _message: Any) -> None:
            if error is not None:
                failed.append(str(error))

        from confluent_kafka import KafkaException

        produce = self._producer.produce
        try:
            for key, value, partition, headers in messages:
                produce(
                    self.topic,
                    key=key,
                    value=value,
                    partition=partition,
                    headers=headers,
                    on_delivery=on_delivery,
                )
        except (KafkaException, BufferError) as exc:  # refused before it left
            self._producer.flush(WRITE_TIMEOUT_S)
            raise ChangelogWriterError(f"{self.topic}: a write was refused ({exc})") from exc
        if self._producer.flush(WRITE_TIMEOUT_S):
            raise ChangelogWriterError(
                f"{self.topic}: the broker did not acknowledge {len(messages)} writes within "
                f"{WRITE_TIMEOUT_S:.0f} s"
            )
        if failed:
            raise ChangelogWriterError(
                f"{self.topic}: {len(failed)} of {len(messages)} writes failed ({failed[0]})"
            )

    def close(self) -> None:
        self._producer.flush(WRITE_TIMEOUT_S)
        self._executor.shutdown(wait=False)


class ChangelogWriter:
    """Acknowledged writes of one table: ``await write([(key, value or None), ...])``."""

    def __init__(self, p: Pipeline, table: Any) -> None:
        self._table = table
        self._partitions = p.settings.kafka.partitions
        self._sender = AcknowledgedSender(p, table.changelog_topic.get_topic_name())

    async def write(self, changes: Sequence[tuple[bytes, Any]]) -> None:
        """Apply ``changes`` (value None deletes) in memory, then durably to the changelog."""
        if not changes:
            return
        data = self._table.data
        messages: list[Message] = []
        for key, value in changes:
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value
            partition = target_partition(key, self._partitions)
            messages.append((key, None if value is None else dumps(value), partition, []))
        await self._sender.send(messages)

    def close(self) -> None:
        self._sender.close()
