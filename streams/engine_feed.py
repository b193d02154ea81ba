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

import asyncio
import contextlib
import logging
import math
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from driftline.config import KafkaSettings
from driftline.streams.engine_attribution import EngineAttribution
from driftline.streams.engine_metrics import decode_metrics_message
from driftline.streams.kafka import consumer_config
from driftline.streams.topics import OTLP_METRICS

log = logging.getLogger(__name__)

# How long decode waits for the feed to read what ``otlp_metrics`` held when a batch came.
ENGINE_JOIN_WAIT_S = 1.0
# The wait before the feed's first catch-up: connecting, finding its start by timestamp and
# reading the lookback takes seconds on a busy broker (each request may take up to 10 s),
# and a batch decoded meanwhile is stored with no engine state at all, for good.
FIRST_CATCH_UP_WAIT_S = 30.0
# The feed's poll, and the most a broker holds its fetch when nothing is new: how stale the
# end of the topic it compares its position with can be while idle.
CATCH_UP_POLL_S = 0.05
# Reports written this shortly before a batch may be missed (the collector's own batching
# delays them as much): in steady state decode then never waits on the feed's next poll.
CATCH_UP_SLACK_S = 0.25


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
            **{"enable.auto.commit": False, "fetch.wait.max.ms": int(CATCH_UP_POLL_S * 1000)},
        )
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        # When the feed last had read everything its latest fetch said the topic held.
        self._caught_up_at = -math.inf

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

    async def catch_up(self, max_wait_s: float | None = None) -> bool:
        """Wait until the feed has read what the topic held ``CATCH_UP_SLACK_S`` before this
        was called; False if it is still behind after ``max_wait_s`` (by default
        ``ENGINE_JOIN_WAIT_S``, ``FIRST_CATCH_UP_WAIT_S`` until the feed first caught up).

        Decode joins a call to the last report at or before its start: a report already
        written to the topic but not yet read would be missed, and a burst of traffic (a
        replayed backlog, a simulated clock) decodes spans faster than the feed's thread
        reads their reports.
        """
        if max_wait_s is None:
            first = self._caught_up_at == -math.inf
            max_wait_s = FIRST_CATCH_UP_WAIT_S if first else ENGINE_JOIN_WAIT_S
        clock = time.monotonic
        asked = clock()
        while self._caught_up_at < asked - CATCH_UP_SLACK_S:
            # A feed that stopped (its broker gone) holds nothing more back.
            alive = self._thread is not None and self._thread.is_alive()
            if clock() - asked >= max_wait_s or not alive:
                return False
            await asyncio.sleep(CATCH_UP_POLL_S)
        return True

    def _run(self) -> None:
        consumer = Consumer(self._config)
        try:
            start = self._start_positions(consumer)
            consumer.assign(start)
            while not self._stopping.is_set():
                messages = consumer.consume(500, timeout=CATCH_UP_POLL_S)
                for message in messages:
                    if message.error() is not None:
                        continue
                    rows = decode_metrics_message(message.value() or b"")
                    self.counters.messages += 1
                    self.counters.points += len(rows)
                    self.counters.rejects += len(rows.rejects)
                    with self._lock:
                        self.book.add(rows)
                if self._read_all(consumer, start):
                    self._caught_up_at = time.monotonic()
        except KafkaException as exc:  # the worker keeps running without engine state
            log.warning("engine metrics feed stopped: %s", exc)
        finally:
            consumer.close()

    @staticmethod
    def _read_all(consumer: Consumer, start: list[TopicPartition]) -> bool:
        """Whether every partition's position is at the end its latest fetch reported."""
        for tp, at in zip(consumer.position(start), start, strict=True):
            _low, high = consumer.get_watermark_offsets(tp, cached=True)
            if high < 0 or max(tp.offset, at.offset) < high:
                return False
        return True

    def _start_positions(self, consumer: Consumer) -> list[TopicPartition]:
        metadata = consumer.list_topics(self.topic, timeout=10)
        partitions = sorted(metadata.topics[self.topic].partitions)
        # The ends first: a record written after this is read whatever offsets_for_times says.
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=10)[1]
            for p in partitions
        }
        since_ms = int((time.time() - self.lookback_s) * 1000)
        wanted = [TopicPartition(self.topic, p, since_ms) for p in partitions]
        found = consumer.offsets_for_times(wanted, timeout=10)
        # No record since then (offsets_for_times answers -1): start at the end as it was
        # read above, an offset, not OFFSET_END, which the client resolves only when it
        # first fetches and which skipped the reports written meanwhile.
        start = [
            TopicPartition(
                self.topic, tp.partition, tp.offset if tp.offset >= 0 else ends[tp.partition]
            )
            for tp in found
        ]
        log.info(
            "engine metrics feed: reading %s from %s",
            self.topic,
            ", ".join(f"{tp.partition}@{tp.offset}" for tp in start),
        )
        return start
