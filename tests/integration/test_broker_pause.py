"""The broker stops answering mid-stream, then comes back: nothing lost, nothing stored twice.

The embedded broker (tansu) keeps its data in memory only (its storage engines here are
memory, postgres and S3), so a restart would start an empty broker: what this test can
make real is a broker that hangs. tansu is stopped with SIGSTOP for longer than the
consumer group's session timeout, while the collector is still receiving traffic, and
continued with SIGCONT: the collector has to hold what it could not send, the worker has
to ride out the silence, and the store must end with every request exactly once. (tansu's
coordinator was stopped too, so it kept the worker in the group: one assignment in the
runs so far; a rebalance is what the restart and scaling tests exercise.)
"""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from driftline.simulator import SimulatorConfig
from tests.integration.test_scaling import cluster, simulate, stored_totals, wait_until

pytestmark = pytest.mark.integration

PAUSE_S = 15.0  # longer than the group's session timeout (about 6 s)


def test_worker_rides_out_a_broker_that_stops_answering(tmp_path: Path) -> None:
    # At wall-clock pace, so the collector is still receiving while the broker is silent.
    traffic = SimulatorConfig(
        rate=20.0,
        duration_s=45.0,
        seed=17,
        clock="realtime",
        workflows=("support-chat", "rag-search", "agent-planner"),
    )
    with cluster(tmp_path, "") as c:
        assert c.stack.broker is not None
        broker_pid = c.stack.broker.process.pid
        assert broker_pid is not None
        c.start_worker("worker")
        store = c.store()
        try:
            sending = ThreadPoolExecutor(max_workers=1).submit(simulate, traffic, c.otlp_grpc)
            wait_until(lambda: stored_totals(store)[0] > 0, "traffic to reach the store", 60, 0.1)
            os.kill(broker_pid, signal.SIGSTOP)
            try:
                time.sleep(PAUSE_S)
                assert not sending.done(), "the traffic ended before the broker came back"
                c.check_alive("worker")
            finally:
                os.kill(broker_pid, signal.SIGCONT)
            sent = sending.result(timeout=240).events
            wait_until(lambda: stored_totals(store)[0] >= len(sent), "everything stored", 180)
            time.sleep(3)  # a duplicate would land now
            count, _, spans = stored_totals(store)
        finally:
            store.close()
        c.check_alive("worker")
        assignments = len(c.assignments("worker"))

    assert count == len(sent) == spans
    print(
        f"\nbroker paused {PAUSE_S:.0f} s mid-stream: {len(sent)} requests, each stored once;"
        f" {assignments} partition assignments"
    )
