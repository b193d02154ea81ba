"""Every worker's own view of the serving engines: all of ``otlp_metrics``, recent points only.

A request event can come from any partition of ``otlp_spans`` and its engine's metrics from
any partition of ``otlp_metrics``, so the as-of join needs every engine's recent points in
every worker. Each worker therefore reads all partitions of ``otlp_metrics`` outside its
consumer group (assigned, never committed), starting ``lookback_s`` back by timestamp, and
keeps the points in an :class:`~driftline.streams.engine_attribution.EngineAttribution`.
Storing the points in ``engine_metrics`` is separate: the group-managed stage does it once.

The feed runs in a thread (confluent-kafka's consumer blocks); :meth:`attribute` takes the
lock for the short time of a batch's lookups.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_END, Consumer, KafkaException, TopicPartition

from driftline.config import KafkaSettings
from driftline.streams.engine_attribution import EngineAttribution
from driftline.streams.engine_metrics import decode_metrics_message
from driftline.streams.kafka import consumer_config
from driftline.streams.topics import OTLP_METRICS

log = logging.getLogger(__name__)


@dataclass(slots=True)
class FeedCounters:
    messages: int = 0
    points: int = 0
    rejects: int = 0
    attributed: int = 0


class EngineMetricsFeed:
    """Reads ``topic`` from ``lookback_s`` ago into ``book`` until :meth:`stop`."""

    def __init__(
        self,
        kafka: KafkaSettings,
        bootstrap_servers: str,
        book: EngineAttribution,
        *,
        topic: str = OTLP_METRICS,
        lookback_s: float = 300.0,
    ) -> None:
        self.book = book
        self.topic = topic
        self.lookback_s = lookback_s
        self.counters = FeedCounters()
        self._config = consumer_config(
            kafka,
            f"driftline-engine-feed-{uuid.uuid4().hex[:8]}",  # never joins or commits
            bootstrap_servers,
            **{"enable.auto.commit": False},
        )
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def started(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="engine-feed", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    @contextlib.contextmanager
    def locked(self) -> Iterator[EngineAttribution]:
        """The book, held from the feed's thread for the ``with`` block (keep it short)."""
        with self._lock:
            yield self.book

    def attribute(self, events: list[dict[str, Any]]) -> int:
        """Join the engine state onto ``events`` in place (see ``EngineAttribution``)."""
        with self._lock:
            attributed = self.book.attribute(events)
        self.counters.attributed += attributed
        return attributed

    def _run(self) -> None:
        consumer = Consumer(self._config)
        try:
            consumer.assign(self._start_positions(consumer))
            while not self._stopping.is_set():
                messages = consumer.consume(500, timeout=0.5)
                for message in messages:
                    if message.error() is not None:
                        continue
                    rows = decode_metrics_message(message.value() or b"")
                    self.counters.messages += 1
                    self.counters.points += len(rows)
                    self.counters.rejects += len(rows.rejects)
                    with self._lock:
                        self.book.add(rows)
        except KafkaException as exc:  # the worker keeps running without engine state
            log.warning("engine metrics feed stopped: %s", exc)
        finally:
            consumer.close()

    def _start_positions(self, consumer: Consumer) -> list[TopicPartition]:
        metadata = consumer.list_topics(self.topic, timeout=10)
        partitions = sorted(metadata.topics[self.topic].partitions)
        since_ms = int((time.time() - self.lookback_s) * 1000)
        wanted = [TopicPartition(self.topic, p, since_ms) for p in partitions]
        found = consumer.offsets_for_times(wanted, timeout=10)
        # No record since then: start at the end (offsets_for_times answers -1).
        return [
            TopicPartition(self.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_END)
            for tp in found
        ]
