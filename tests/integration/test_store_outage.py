"""ClickHouse unavailable: the worker waits, holds a bounded amount, loses nothing, catches up.

One worker writing to ClickHouse over HTTP (served from chdb; the test switches it to answering
every request with an error and back). The store is down when the worker starts, comes back,
then goes down again while traffic is flowing. The worker must stay up through both outages,
say in its log that it is waiting, and in the end hold every request exactly once.
"""

from __future__ import annotations

import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from driftline.simulator import SimulatorConfig
from tests.integration.test_scaling import cluster, simulate, stored_totals, wait_until

pytestmark = pytest.mark.integration

OUTAGE_S = 8.0


def test_worker_rides_out_clickhouse_outages(tmp_path: Path) -> None:
    traffic = SimulatorConfig(
        rate=20.0,
        duration_s=120.0,
        seed=5,
        clock="simulated",
        start=datetime.now(UTC) - timedelta(minutes=20),
        workflows=("support-chat", "rag-search"),
    )
    first, second = (
        dataclasses.replace(
            traffic,
            seed=traffic.seed + i,
            start=traffic.start + timedelta(seconds=i * traffic.duration_s),
        )
        for i in range(2)
    )
    # Small insert batches: the backlog after an outage then spans many inserts, and a batch
    # of consumed messages holds far more rows than the sink may buffer.
    with cluster(tmp_path, "", store_config="batch_rows = 300") as c:
        c.server.fail_with(210, "simulated outage: ClickHouse is restarting")
        c.start_worker("worker")
        sent = simulate(first, c.otlp_grpc).events
        time.sleep(OUTAGE_S)
        c.check_alive("worker")
        c.server.recover()
        store = c.store()
        try:
            wait_until(lambda: stored_totals(store)[0] >= len(sent), "the first part stored", 90)

            sending = ThreadPoolExecutor(max_workers=1).submit(simulate, second, c.otlp_grpc)
            wait_until(
                lambda: stored_totals(store)[0] > len(sent), "the second part to start", 60, 0.1
            )
            c.server.fail_with(210, "simulated outage: ClickHouse is restarting")
            sent += sending.result(timeout=120).events
            time.sleep(OUTAGE_S)
            c.check_alive("worker")
            c.server.recover()
            wait_until(lambda: stored_totals(store)[0] >= len(sent), "everything stored", 120)
            time.sleep(3)  # a duplicate would land now
            count, cost, spans = stored_totals(store)
        finally:
            store.close()
        c.check_alive("worker")
        log = c.workers["worker"].log_path.read_text(errors="replace")

    assert count == len(sent) == spans
    assert cost == pytest.approx(sum(e["cost_usd"] or 0.0 for e in sent), rel=1e-9)
    assert "store unavailable at start" in log
    assert "consumption paused" in log
    print(f"\nstore outage: {len(sent)} requests, each stored once after two outages")
