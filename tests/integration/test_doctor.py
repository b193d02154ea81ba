"""``driftline doctor`` against a real tansu broker and a real chdb store: it names missing
topics, a missing store and a lagging consumer group, and passes once all is in place."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from collectors.tansu import TansuBroker
from driftline.config import Settings, load_settings
from driftline.streams.kafka import consumer_config, create_topics, producer_config
from driftline.streams.topics import ALL_TOPICS, LLM_EVENTS

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
GROUP = "doctor-test"


@pytest.fixture()
def broker(tmp_path: Path) -> Iterator[TansuBroker]:
    running = TansuBroker(tmp_path)
    running.start(timeout_s=60)
    try:
        yield running
    finally:
        running.stop()


def doctor(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "driftline.cli", "--config", str(config), "doctor", *args],
        cwd=config.parent,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )


def test_doctor_names_what_is_missing_then_passes(broker: TansuBroker, tmp_path: Path) -> None:
    config = tmp_path / "driftline.toml"
    store = tmp_path / "db"
    config.write_text(
        f'[kafka]\nbootstrap_servers = "{broker.bootstrap_servers}"\npartitions = 2\n'
        f'consumer_group = "{GROUP}"\n[store]\nurl = "chdb://{store}"\n'
    )
    settings: Settings = load_settings(config)

    before = doctor(config)
    assert before.returncode == 1, before.stdout + before.stderr
    for topic in ALL_TOPICS:
        assert f"FAIL  kafka     {broker.bootstrap_servers}: {topic} missing" in before.stdout
    assert f"FAIL  store     no store at {store}" in before.stdout
    assert not store.exists()  # the doctor reads; it creates nothing

    create_topics(settings.kafka, ALL_TOPICS, broker.bootstrap_servers)
    created = subprocess.run(
        [
            sys.executable,
            "-m",
            "driftline.cli",
            "sql",
            "SELECT 1",
            "--write",
            "--store",
            f"chdb://{store}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(ROOT)},
    )
    assert created.returncode == 0, created.stderr
    # Five records on one partition, the group committed after the second: three behind.
    producer = Producer(producer_config(settings.kafka, broker.bootstrap_servers))
    for i in range(5):  # one request each: tansu counts a batch of several as one offset
        producer.produce(LLM_EVENTS, value=b"{}", key=str(i).encode(), partition=0)
        assert producer.flush(10) == 0
    consumer = Consumer(consumer_config(settings.kafka, GROUP, broker.bootstrap_servers))
    consumer.commit(offsets=[TopicPartition(LLM_EVENTS, 0, 2)], asynchronous=False)
    consumer.close()

    behind = doctor(config, "--max-lag", "2")
    assert behind.returncode == 1, behind.stdout
    assert f"FAIL  lag       group {GROUP} is 3 records behind on {LLM_EVENTS}" in behind.stdout

    after = doctor(config)
    assert after.returncode == 0, after.stdout + after.stderr
    assert f"ok    kafka     {broker.bootstrap_servers}: {len(ALL_TOPICS)} topics, 2 part" in (
        after.stdout
    )
    assert f"ok    lag       group {GROUP}: 3 records behind in all" in after.stdout
    assert "ok    store     chdb://" in after.stdout and "(current)" in after.stdout
    assert "FAIL" not in after.stdout
