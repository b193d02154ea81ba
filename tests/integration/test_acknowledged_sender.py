"""Acknowledged writes against the real broker: a write that fails is an error, not a
write that counts as done (a checkpoint or a ledger entry lost without a word)."""

from __future__ import annotations

import asyncio
import socket
import uuid
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import Producer

from driftline.config import Settings
from driftline.stack import EmbeddedStack
from driftline.streams.changelog import AcknowledgedSender, ChangelogWriterError
from driftline.streams.kafka import create_topics, producer_config
from tests.integration.conftest import PARTITIONS, Kafka

pytestmark = pytest.mark.integration

OWN_TOPIC = f"acknowledged-writes-{uuid.uuid4().hex[:8]}"


def sender(stack: EmbeddedStack, settings: Settings) -> AcknowledgedSender:
    """A sender to a topic of this module's own: the shared stack's other tests read every
    record of theirs (a dead-letter test reads the DLQ's headers)."""
    assert stack.endpoints is not None
    bootstrap = stack.endpoints.bootstrap_servers
    create_topics(settings.kafka, [OWN_TOPIC], bootstrap)
    pipeline: Any = SimpleNamespace(settings=settings, bootstrap_servers=bootstrap)
    return AcknowledgedSender(pipeline, OWN_TOPIC)


def test_acknowledged_writes_arrive_in_order(
    stack: EmbeddedStack, settings: Settings, kafka: Kafka
) -> None:
    out = sender(stack, settings)
    reader = kafka.reader(OWN_TOPIC)
    marker = b"ack-order-"
    messages = [(b"k", marker + str(i).encode(), 1, []) for i in range(50)]
    asyncio.run(out.send(messages))
    out.close()
    records = reader.wait_for(lambda rs: sum(marker in r.value for r in rs) >= 50)
    assert [r.value for r in records if marker in r.value] == [m[1] for m in messages]


def test_a_write_refused_before_it_leaves_is_an_error(
    stack: EmbeddedStack, settings: Settings
) -> None:
    out = sender(stack, settings)
    asyncio.run(out.send([(b"k", b"fine", 0, [])]))  # the partitions are known from here on
    with pytest.raises(ChangelogWriterError, match="Unknown partition"):
        asyncio.run(out.send([(b"k", b"nowhere", PARTITIONS + 5, [])]))
    out.close()


def test_a_write_that_never_reaches_a_broker_is_an_error(settings: Settings) -> None:
    """Its failure is only in the delivery report: the flush itself returns."""
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{sock.getsockname()[1]}"
    pipeline: Any = SimpleNamespace(settings=settings, bootstrap_servers=closed)
    out = AcknowledgedSender(pipeline, OWN_TOPIC)
    out._producer = Producer(  # the same producer, told to give up within half a second
        producer_config(settings.kafka, closed, **{"message.timeout.ms": 500})
    )
    with pytest.raises(ChangelogWriterError, match=r"1 of 1 writes failed"):
        asyncio.run(out.send([(b"k", b"lost", 0, [])]))
