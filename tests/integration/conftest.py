"""Real processes for integration tests: tansu, rotel and the driftline worker.

One embedded stack per test session (started once, torn down at the end, with a
check that none of its processes survived), a driftline.toml written for it with
free ports and short trace timers, and small Kafka helpers that read topics from
the beginning by assignment (no group join wait) and match records by trace id.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, Producer, TopicPartition

from driftline.config import Settings, load_settings
from driftline.stack import EmbeddedStack
from driftline.streams.kafka import consumer_config, producer_config

# Test modules import tests.utils and these helpers as packages of the repository root.
ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TRACE_GRACE_S = 1.0
TRACE_TIMEOUT_S = 8.0
PARTITIONS = 4


def write_config(directory: Path, group: str) -> Path:
    """A driftline.toml for tests: free ports, data under ``directory``, quick trace closing."""
    path = directory / "driftline.toml"
    path.write_text(
        f"""
[kafka]
partitions = {PARTITIONS}
consumer_group = "{group}"

[collector]
grpc_port = 0
http_port = 0
batch_timeout_ms = 100

[embedded]
data_dir = "{directory / "var"}"
start_timeout_s = 60

[streams]
trace_grace_s = {TRACE_GRACE_S}
trace_timeout_s = {TRACE_TIMEOUT_S}
batch_max_wait_s = 0.05
"""
    )
    return path


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (read from /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def descendants(pid: int) -> set[int]:
    """All live descendants of ``pid`` (walks /proc parent links)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def wait_all_gone(pids: set[int], timeout_s: float = 10.0) -> set[int]:
    """The pids still alive after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    alive = {p for p in pids if pid_alive(p)}
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = {p for p in alive if pid_alive(p)}
    return alive


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: dict[str, bytes]
    received_s: float  # when this reader got it
    timestamp_s: float  # the record's Kafka timestamp (producer create time)

    def json(self) -> Any:
        return json.loads(self.value)


def _record(message: Message) -> Record:
    headers: dict[str, bytes] = {}
    for header in message.headers() or []:
        name, value = header[0], header[1]
        headers[name] = value.encode() if isinstance(value, str) else value or b""
    key, value = message.key(), message.value()
    return Record(
        topic=message.topic() or "",
        partition=message.partition() or 0,
        offset=message.offset() or 0,
        key=key.encode() if isinstance(key, str) else key,
        value=value.encode() if isinstance(value, str) else value or b"",
        headers=headers,
        received_s=time.time(),
        timestamp_s=message.timestamp()[1] / 1000.0,
    )


@dataclass
class TopicReader:
    """Reads every partition of a topic from the beginning; keeps all records seen, once.

    tansu at times returns a partition's later records before earlier ones it has not
    served yet (a fetch from offset 0 answered from offset 3): a reader that trusted it
    would skip the first alert of a key for good. A record past the first offset this
    reader has not seen of its partition sends the reader back to that offset, once per
    such gap; what it reads again twice is kept once. A gap that stays empty after that
    (a compacted changelog's) holds the partition's first unseen offset there, so a later
    jump on that partition is not read again.
    """

    consumer: Consumer
    topic: str
    records: list[Record] = field(default_factory=list)
    rereads: int = 0  # gaps read again
    _seen: set[tuple[int, int]] = field(default_factory=set)
    _unseen: dict[int, int] = field(default_factory=dict)  # first offset not seen
    _gaps_read: set[tuple[int, int]] = field(default_factory=set)

    def poll(self, timeout_s: float = 0.2) -> None:
        for message in self.consumer.consume(500, timeout=timeout_s):
            if message.error() is not None:
                continue
            record = _record(message)
            at = (record.partition, record.offset)
            if at in self._seen:
                continue
            self._seen.add(at)
            self.records.append(record)
            first_unseen = self._unseen.get(record.partition, 0)
            while (record.partition, first_unseen) in self._seen:
                first_unseen += 1
            self._unseen[record.partition] = first_unseen
            gap = (record.partition, first_unseen)
            if record.offset > first_unseen and gap not in self._gaps_read:
                self._gaps_read.add(gap)
                self.rereads += 1
                self.consumer.seek(TopicPartition(self.topic, *gap))

    def drain(self, quiet_s: float = 2.0, timeout_s: float = 30.0) -> list[Record]:
        """Poll until nothing new arrived for ``quiet_s``: everything published so far."""
        deadline = time.monotonic() + timeout_s
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < quiet_s and time.monotonic() < deadline:
            seen = len(self.records)
            self.poll()
            if len(self.records) != seen:
                quiet_since = time.monotonic()
        return self.records

    def wait_for(
        self, predicate: Callable[[list[Record]], bool], timeout_s: float = 30.0
    ) -> list[Record]:
        """Poll until ``predicate(records)`` holds; fail with what was seen otherwise."""
        deadline = time.monotonic() + timeout_s
        while not predicate(self.records):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout_s}s waiting on {self.topic}; "
                    f"{len(self.records)} records seen"
                )
            self.poll()
        return self.records


@dataclass
class Kafka:
    settings: Settings
    bootstrap: str
    readers: list[TopicReader] = field(default_factory=list)

    def reader(self, topic: str) -> TopicReader:
        consumer = Consumer(
            consumer_config(
                self.settings.kafka,
                f"test-{uuid.uuid4().hex[:8]}",
                self.bootstrap,
                **{"enable.auto.commit": False},
            )
        )
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
        reader = TopicReader(consumer, topic)
        self.readers.append(reader)
        return reader

    def produce(self, topic: str, value: bytes, partition: int) -> None:
        producer = Producer(producer_config(self.settings.kafka, self.bootstrap))
        producer.produce(topic, value=value, partition=partition)
        assert producer.flush(10) == 0, "message not delivered"

    def close(self) -> None:
        for reader in self.readers:
            reader.consumer.close()


@pytest.fixture(scope="session")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("driftline")
    return write_config(directory, f"driftline-test-{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="session")
def settings(config_file: Path) -> Settings:
    return load_settings(config_file)


@pytest.fixture(scope="session")
def stack(settings: Settings, config_file: Path) -> Iterator[EmbeddedStack]:
    embedded = EmbeddedStack(settings, config_file=config_file)
    embedded.start()
    pids = {p.pid for p in embedded.processes if p.pid is not None}
    try:
        yield embedded
    finally:
        embedded.stop()
        survivors = wait_all_gone(pids)
        assert not survivors, f"processes survived the stack: {survivors}"


@pytest.fixture
def kafka(stack: EmbeddedStack, settings: Settings) -> Iterator[Kafka]:
    assert stack.endpoints is not None
    helper = Kafka(settings, stack.endpoints.bootstrap_servers)
    yield helper
    helper.close()
