"""Engine /metrics scraped by driftline itself, through a real broker to the worker's decoder.

A local HTTP server plays a vLLM server whose KV usage grows by 0.05 at every scrape, so each
message read back names the scrape it came from.
"""

from __future__ import annotations

import http.server
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from driftline.collectors.scrape import EngineScraper, KafkaPublisher
from driftline.config import Settings, load_settings
from driftline.schemas import engine_metrics as em
from driftline.stack import EmbeddedStack
from driftline.streams.engine_metrics import EngineMetricRows, decode_metrics_message
from driftline.streams.kafka import create_topics, producer_config
from driftline.streams.topics import OTLP_METRICS
from tests.integration.conftest import (
    Kafka,
    Record,
    descendants,
    wait_all_gone,
    write_config,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MODEL = "Qwen/Qwen2.5-7B-Instruct"
KAFKA_LINE = re.compile(r"Kafka\s*:\s*([\d.]+:\d+)")


@dataclass
class FakeVllm:
    port: int = 0
    scrapes: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    @property
    def instance(self) -> str:
        return f"127.0.0.1:{self.port}"

    def body(self) -> bytes:
        self.scrapes += 1
        return (
            "# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.\n"
            "# TYPE vllm:kv_cache_usage_perc gauge\n"
            f'vllm:kv_cache_usage_perc{{engine="0",model_name="{MODEL}"}} '
            f"{kv_at(self.scrapes)}\n"
            "# TYPE vllm:num_requests_waiting gauge\n"
            f'vllm:num_requests_waiting{{engine="0",model_name="{MODEL}"}} 4.0\n'
            "# TYPE vllm:num_preemptions_total counter\n"
            f'vllm:num_preemptions_total{{engine="0",model_name="{MODEL}"}} {self.scrapes}.0\n'
            "# TYPE vllm:time_to_first_token_seconds histogram\n"
            f'vllm:time_to_first_token_seconds_bucket{{le="+Inf",model_name="{MODEL}"}} 3\n'
            f'vllm:time_to_first_token_seconds_count{{model_name="{MODEL}"}} 3\n'
            f'vllm:time_to_first_token_seconds_sum{{model_name="{MODEL}"}} 0.6\n'
        ).encode()


def kv_at(scrape: int) -> float:
    return round(0.05 * scrape, 2)


@pytest.fixture
def fake_vllm() -> Iterator[FakeVllm]:
    state = FakeVllm()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = state.body()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def decoded(record: Record) -> EngineMetricRows:
    rows = decode_metrics_message(record.value, arrival_ns=int(record.timestamp_s * 1e9))
    assert not rows.rejects, rows.rejects
    return rows


def kv_points(rows: EngineMetricRows) -> list[tuple[str, str, float]]:
    return [
        (instance, model, value)
        for metric, instance, model, value in zip(
            rows.metric, rows.instance, rows.model, rows.value, strict=True
        )
        if metric == em.KV_CACHE_USAGE
    ]


def test_scrapes_reach_the_worker_decoder_through_the_broker(
    stack: EmbeddedStack, settings: Settings, kafka: Kafka, fake_vllm: FakeVllm
) -> None:
    assert stack.endpoints is not None
    bootstrap = stack.endpoints.bootstrap_servers
    # A topic of its own: the shared stack's worker reads otlp_metrics.
    topic = f"engine-scrape-{uuid.uuid4().hex[:8]}"
    create_topics(settings.kafka, [topic], bootstrap)
    reader = kafka.reader(topic)
    publisher = KafkaPublisher(producer_config(settings.kafka, bootstrap), topic)
    scraper = EngineScraper([fake_vllm.url], 0.3, publisher.publish)
    scraper.start()
    try:
        records = reader.wait_for(lambda rs: len(rs) >= 3, timeout_s=30)
    finally:
        scraper.stop()
        assert publisher.close() == 0
    assert publisher.failed == 0
    stats = scraper.stats[fake_vllm.url]
    assert stats.failures == {} and stats.messages == fake_vllm.scrapes

    records = reader.drain(quiet_s=1.0)
    assert len(records) == fake_vllm.scrapes
    # One target's scrapes share a key, so they arrive in the order they were made.
    assert {record.key for record in records} == {fake_vllm.instance.encode()}
    assert [kv_points(decoded(record)) for record in records] == [
        [(fake_vllm.instance, MODEL, kv_at(n))] for n in range(1, len(records) + 1)
    ]
    last = decoded(records[-1])
    assert sorted(zip(last.metric, last.value, strict=True)) == [
        (em.KV_CACHE_USAGE, kv_at(len(records))),
        (em.PREEMPTIONS, float(len(records))),
        (em.REQUESTS_WAITING, 4.0),
    ]  # the histogram vLLM publishes and driftline does not read is not sent
    assert last.metrics_ignored == 0


def test_driftline_up_scrapes_its_targets_and_stops_on_sigterm(
    tmp_path: Path, fake_vllm: FakeVllm
) -> None:
    with socket.socket() as sock:  # a target nothing answers on
        sock.bind(("127.0.0.1", 0))
        dead_url = f"http://127.0.0.1:{sock.getsockname()[1]}/metrics"
    config = write_config(tmp_path, f"scrape-up-{uuid.uuid4().hex[:8]}")
    config.write_text(
        config.read_text()
        + f'\n[engines]\nscrape_targets = ["{fake_vllm.url}", "{dead_url}"]\n'
        + "scrape_interval_s = 0.5\n"
    )
    # Its own broker: `--no-worker` starts broker and collector, and the scraper with them.
    proc = subprocess.Popen(
        [sys.executable, "-m", "driftline.cli", "--config", str(config), "up", "--no-worker"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        bootstrap = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if match := KAFKA_LINE.search(line):
                bootstrap = match.group(1)
            if line.startswith("logs in"):
                break
        assert bootstrap is not None, "".join(lines)
        assert any(line.startswith("scraper    2 engine") for line in lines), "".join(lines)
        children = descendants(proc.pid)
        reader = Kafka(load_settings(config), bootstrap).reader(OTLP_METRICS)
        records = reader.wait_for(lambda rs: len(rs) >= 4, timeout_s=30)
        assert {kv_points(decoded(r))[0][:2] for r in records} == {(fake_vllm.instance, MODEL)}
        reader.consumer.close()
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=30)
        lines.append(rest)
        assert proc.returncode == 0, "".join(lines)
        assert not wait_all_gone(children), "orphans after SIGTERM"
    finally:
        proc.kill()
    output = "".join(lines)
    # The dead target failed at every scrape and was reported once.
    assert output.count(f"engine scrape of {dead_url} failed (connect)") == 1, output
    stopped = re.search(r"scraper    stopped: 2 targets, (\d+) scrapes, (\d+) failed", output)
    assert stopped is not None, output
    scrapes, failed = int(stopped.group(1)), int(stopped.group(2))
    assert failed >= 4 and scrapes >= 2 * failed - 1, output
