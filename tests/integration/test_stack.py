"""The embedded stack and `driftline up` with real tansu, rotel and worker processes."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from driftline.collectors.process import PortInUseError
from driftline.config import Settings, load_settings
from driftline.stack import EmbeddedStack
from driftline.streams.kafka import topic_partition_counts
from driftline.streams.topics import ALL_TOPICS
from tests.integration.conftest import descendants, pid_alive, wait_all_gone, write_config

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ENDPOINT_LINE = re.compile(r"OTLP (gRPC|HTTP)\s*:\s*(http://[\d.]+:\d+)")


def test_topics_have_the_configured_partitions(stack: EmbeddedStack, settings: Settings) -> None:
    assert stack.endpoints is not None
    counts = topic_partition_counts(settings.kafka, stack.endpoints.bootstrap_servers)
    for topic in ALL_TOPICS:
        assert counts[topic] == settings.kafka.partitions, topic
    # The worker's table changelog must match its source topic (llm_spans).
    changelog = f"{settings.kafka.consumer_group}-open_traces-changelog"
    assert counts[changelog] == settings.kafka.partitions
    print(
        f"\nstack start: broker {stack.times.broker_s:.2f}s, topics {stack.times.topics_s:.2f}s, "
        f"collector {stack.times.collector_s:.2f}s, worker {stack.times.worker_s:.2f}s, "
        f"total {stack.times.total_s:.2f}s"
    )


def test_collector_accepts_otlp_http(stack: EmbeddedStack) -> None:
    assert stack.endpoints is not None
    response = httpx.post(
        f"{stack.endpoints.otlp_http}/v1/traces",
        content=ExportTraceServiceRequest().SerializeToString(),
        headers={"content-type": "application/x-protobuf"},
        timeout=5,
    )
    assert response.status_code == 200


def test_taken_collector_port_is_a_clear_error_and_leaves_nothing(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        settings = load_settings(
            write_config(tmp_path, "port-test"), collector={"grpc_port": port, "http_port": 0}
        )
        stack = EmbeddedStack(settings, with_worker=False)
        with pytest.raises(PortInUseError, match=rf":{port} .*collector\.grpc_port"):
            stack.start()
    started = [p.pid for p in stack.processes if p.pid is not None]
    assert started, "the broker should have been started before the collector"
    assert not wait_all_gone(set(started), timeout_s=5)


def _start_up(config: Path) -> tuple[subprocess.Popen[str], dict[str, str], float]:
    """Run `driftline up`, read its output until the endpoints are printed."""
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "driftline.cli", "--config", str(config), "up"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    endpoints: dict[str, str] = {}
    lines = []
    deadline = time.monotonic() + 60
    while len(endpoints) < 2 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if match := ENDPOINT_LINE.search(line):
            endpoints[match.group(1)] = match.group(2)
    assert len(endpoints) == 2, "".join(lines)
    return proc, endpoints, time.monotonic() - started


def test_driftline_up_reports_endpoints_and_sigterm_leaves_no_orphans(tmp_path: Path) -> None:
    config = write_config(tmp_path, f"up-{uuid.uuid4().hex[:8]}")
    proc, endpoints, startup_s = _start_up(config)
    try:
        children = descendants(proc.pid)
        # tansu, rotel and the worker (a Python process running `driftline worker`).
        assert len(children) >= 3, children
        host, port = endpoints["gRPC"].removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=2):
            pass
        response = httpx.post(
            f"{endpoints['HTTP']}/v1/traces",
            content=ExportTraceServiceRequest().SerializeToString(),
            headers={"content-type": "application/x-protobuf"},
            timeout=5,
        )
        assert response.status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert not wait_all_gone(children), "orphans after SIGTERM"
        print(f"\n`driftline up` ready in {startup_s:.2f}s (process start to endpoints printed)")
    finally:
        proc.kill()


def test_killed_driftline_up_takes_its_children_along(tmp_path: Path) -> None:
    config = write_config(tmp_path, f"up-{uuid.uuid4().hex[:8]}")
    proc, _, _ = _start_up(config)
    try:
        children = descendants(proc.pid)
        assert all(pid_alive(p) for p in children)
        proc.kill()  # no chance to clean up: PR_SET_PDEATHSIG must do it
        proc.wait(timeout=10)
        assert not wait_all_gone(children), "orphans after SIGKILL of driftline up"
    finally:
        proc.kill()
