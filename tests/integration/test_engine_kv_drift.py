"""A KV drift found through engine metrics alone: no span carries a KV figure.

The simulator's vLLM workflow sends its spans (vLLM's ``llm_request``, without
``driftline.kv_cache.usage``) and its servers' metrics (``vllm:kv_cache_usage_perc`` and the
queue and preemption series) through the OTel SDK's OTLP exporters to the real collector;
the worker joins each call to its server's KV usage as of the call's start, and the
per-workflow KV baseline catches the ``kv-pressure`` incident (0.4 -> 0.93).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from driftline.simulator import (
    GroundTruth,
    Simulator,
    SimulatorConfig,
    network_exporter,
    network_metric_exporter,
    parse_incident,
)
from driftline.simulator.engine import SERVERS, EnginePublisher, EngineReport
from driftline.simulator.workflows import batch_summarizer
from driftline.streams import topics
from driftline.streams.engine_attribution import ENGINE_INSTANCE
from tests.integration.test_engine_alerts import reader_of
from tests.integration.test_scaling import Cluster, cluster
from tests.integration.test_self_alerts import wait_for

pytestmark = pytest.mark.integration

INCIDENT_AT_S = 150
CONFIG = "[detectors]\nwarmup_events = 250\nwindow_events = 150\n"
KV_BEFORE_THE_TRAFFIC = 0.4


def report_before_the_traffic(c: Cluster, start: datetime) -> None:
    """The server reports once before the first request and that report is in
    ``otlp_metrics`` before the traffic goes, as for a server scraped since it started.

    Without it the first calls raced their server's first reports through the collector,
    whose metrics and traces pipelines flush to Kafka each on its own: on a loaded machine
    the earliest calls (466 of 2,708 in one run) were decoded before any report had been
    written, and kept no engine state.
    """
    publisher = EnginePublisher(network_metric_exporter("grpc", c.otlp_grpc))
    model = batch_summarizer.MODEL
    at_us = int(start.timestamp() * 1e6) - 1_000_000
    publisher.publish([EngineReport(SERVERS[model], model, at_us, KV_BEFORE_THE_TRAFFIC, 0.0)])
    publisher.shutdown()
    assert publisher.exported_points > 0 and publisher.failed_points == 0

    def stored() -> int:
        with c.store() as store:
            rows = store.query("SELECT count() AS n FROM driftline.engine_metrics").to_pylist()
        return int(rows[0]["n"])

    wait_for(stored, "the server's report before the traffic stored", 60)


def test_kv_pressure_is_caught_from_the_engine_metrics_alone(tmp_path: Path) -> None:
    start = datetime.now(UTC) - timedelta(minutes=10)
    config = SimulatorConfig(
        rate=2,
        duration_s=INCIDENT_AT_S + 90,
        seed=5,
        clock="simulated",
        start=start,
        workflows=("batch-summarizer",),
        incidents=(parse_incident(f"kv-pressure@{INCIDENT_AT_S}"),),
    )
    with cluster(tmp_path, CONFIG) as c:
        c.start_worker("worker")
        alerts = reader_of(c, topics.LLM_ALERTS)
        report_before_the_traffic(c, start)
        truth = GroundTruth()
        sent = time.monotonic()
        result = Simulator(config).run(
            [network_exporter("grpc", c.otlp_grpc)],
            truth,
            engine_metrics=network_metric_exporter("grpc", c.otlp_grpc),
        )
        assert not any(result.failed) and result.engine_points_failed == 0
        assert result.engine_points > 0

        def kv_drift() -> list[dict[str, Any]]:
            alerts.poll()
            return [
                r.json()
                for r in alerts.records
                if r.json()["transition"] == "open"
                and r.json()["workflow"] == batch_summarizer.NAME
                and r.json()["metric"] == "kv_pressure"
            ]

        (opened, *_) = wait_for(kv_drift, "a kv_pressure drift alert on batch-summarizer", 120)
        caught_s = time.monotonic() - sent
        incident_us = int(start.timestamp() * 1e6) + INCIDENT_AT_S * 1_000_000
        opened_us = int(datetime.fromisoformat(opened["opened_at"]).timestamp() * 1e6)
        assert incident_us <= opened_us < incident_us + 60 * 1_000_000
        # The detector's window at the open still holds calls from before the incident.
        assert opened["baseline_value"] < 0.45 < opened["current_value"]

        # Every vLLM call is stored, the failed ones too (rate limits, timeouts: no KV in the
        # ground truth, so not in ``expected``). Counting rows instead let the wait end while
        # the last calls were still on their way.
        every_call = {e["span_id"] for e in truth.events if e["provider"] == "vllm"}
        expected = {
            e["span_id"]: e["kv_cache_usage"]
            for e in truth.events
            if e["provider"] == "vllm" and e["kv_cache_usage"] is not None
        }

        def stored() -> list[dict[str, Any]]:
            with c.store() as store:
                return store.query(
                    "SELECT span_id, kv_cache_usage, attributes FROM driftline.llm_requests"
                    f" WHERE workflow = '{batch_summarizer.NAME}' AND provider = 'vllm'"
                ).to_pylist()

        def all_stored() -> dict[str, dict[str, Any]] | None:
            by_span = {r["span_id"]: r for r in stored()}
            return by_span if every_call <= by_span.keys() else None

        by_span = wait_for(all_stored, f"all {len(every_call)} vLLM calls stored", 90)
        assert by_span.keys() == every_call
        served = [by_span[s] for s in expected if s in by_span]
        assert len(served) == len(expected)
        exact = sum(r["kv_cache_usage"] == expected[r["span_id"]] for r in served)
        joined = [r for r in served if r["kv_cache_usage"] is not None]
        started_s = {e["span_id"]: e["start_ts"] / 1e6 - start.timestamp() for e in truth.events}
        unjoined_s = sorted(started_s[r["span_id"]] for r in served if r["kv_cache_usage"] is None)
        assert not unjoined_s, (
            f"{len(unjoined_s)} of {len(served)} calls have no engine state; they started"
            f" {unjoined_s[0]:.1f}-{unjoined_s[-1]:.1f} s into the traffic"
        )
        assert {dict(r["attributes"])[ENGINE_INSTANCE] for r in joined} == {
            SERVERS[batch_summarizer.MODEL]
        }
        c.check_alive("worker")
        alerts.consumer.close()
    print(
        f"\n{len(served)} vLLM calls, KV joined on all, equal to the server's report at the "
        f"call's start on {exact} ({exact / len(served):.1%}); kv_pressure drift opened "
        f"{(opened_us - incident_us) / 1e6:.1f} s of event time after the incident, "
        f"{caught_s:.1f} s after the traffic was sent"
    )
    # The rest met an earlier report of their server: traffic sent at full speed can reach
    # decode before the worker's feed has read the report made at the call's own start.
    assert exact >= 0.5 * len(served)
