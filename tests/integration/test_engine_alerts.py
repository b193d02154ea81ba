"""Engine alerts through a real worker: vLLM reports on ``otlp_metrics`` -> page -> resolve.

The reports are what the Collector's Prometheus receiver writes for a vLLM scrape (OTLP
protobuf, ``vllm:`` names, ``model_name`` label, the target as ``service.instance.id``),
produced straight to ``otlp_metrics`` on the real broker; the worker's feed reads them, the
worker that owns the engine judges them, the transition goes through ``llm_alerts`` to the
store and the local PagerDuty receiver. Report times are in the past (a compressed
timeline): the conditions run on the engine's report time, not the wall clock.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AggregationTemporality,
    Gauge,
    Metric,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from driftline.streams import topics
from driftline.streams.engine_alerts import owner_partition
from driftline.streams.kafka import consumer_config, producer_config
from tests.integration.conftest import PARTITIONS, TopicReader
from tests.integration.test_scaling import Cluster, cluster
from tests.integration.test_self_alerts import wait_for

pytestmark = pytest.mark.integration

S = 1_000_000_000
CONFIG = "[engines]\ncondition_for_s = 20\nhold_down_s = 20\ncheck_s = 0.5\n"


def _kv(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def vllm_scrape(instance: str, model: str, at_ns: int, kv: float, waiting: float) -> bytes:
    """One scrape of a vLLM server as the Prometheus receiver forwards it."""
    labels = [_kv("model_name", model), _kv("engine", "0")]

    def gauge(name: str, value: float) -> Metric:
        point = NumberDataPoint(time_unix_nano=at_ns, as_double=value, attributes=labels)
        return Metric(name=name, gauge=Gauge(data_points=[point]))

    preemptions = Metric(
        name="vllm:num_preemptions_total",
        sum=Sum(
            data_points=[NumberDataPoint(time_unix_nano=at_ns, as_double=2.0, attributes=labels)],
            aggregation_temporality=AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE,
            is_monotonic=True,
        ),
    )
    resource = Resource(
        attributes=[_kv("service.name", "vllm"), _kv("service.instance.id", instance)]
    )
    metrics = [
        gauge("vllm:kv_cache_usage_perc", kv),
        gauge("vllm:num_requests_waiting", waiting),
        gauge("vllm:num_requests_running", 12),
        preemptions,
    ]
    return ExportMetricsServiceRequest(
        resource_metrics=[
            ResourceMetrics(resource=resource, scope_metrics=[ScopeMetrics(metrics=metrics)])
        ]
    ).SerializeToString()


def publish(c: Cluster, messages: list[tuple[int, bytes]]) -> None:
    producer = Producer(producer_config(c.settings.kafka, c.bootstrap))
    for partition, value in messages:
        producer.produce(topics.OTLP_METRICS, value=value, partition=partition)
    assert producer.flush(10) == 0, "reports not delivered"


def reports(
    instance: str, model: str, start_ns: int, kv: list[float], partition: int
) -> list[tuple[int, bytes]]:
    """One scrape every 5 s from ``start_ns``, KV as given, 3 requests waiting."""
    return [
        (partition, vllm_scrape(instance, model, start_ns + i * 5 * S, value, 3))
        for i, value in enumerate(kv)
    ]


def pages(c: Cluster, key: str, action: str) -> list[dict[str, Any]]:
    return [
        b
        for b in c.receiver.bodies()
        if b.get("dedup_key") == key and b.get("event_action") == action
    ]


def transitions(reader: TopicReader, key: str) -> list[dict[str, Any]]:
    reader.poll()
    return [r.json() for r in reader.records if r.json()["dedup_key"] == key]


def test_kv_held_at_097_pages_once_and_resolves_after_it_falls(tmp_path: Path) -> None:
    instance, model = "vllm-alert.internal:8000", f"org/llama-{uuid.uuid4().hex[:6]}"
    key = f"engine/{instance}/kv_cache_saturated/{model}"
    with cluster(tmp_path, CONFIG) as c:
        c.start_worker("worker")
        alerts = reader_of(c, topics.LLM_ALERTS)
        start = time.time_ns() - 240 * S
        # 60 s at 0.97 (the bound: 0.95 for 20 s), on a partition other than the owner's.
        partition = (owner_partition((model, instance), PARTITIONS) + 1) % PARTITIONS
        publish(c, reports(instance, model, start, [0.97] * 13, partition))
        trigger = wait_for(lambda: pages(c, key, "trigger"), "the kv_cache_saturated page")[0]
        assert trigger["payload"]["severity"] == "error"
        summary = trigger["payload"]["summary"]
        assert summary.startswith("engine: KV cache 97% full (bound 95%) on "), summary
        details = trigger["payload"]["custom_details"]
        assert details["kind"] == "engine" and details["transition"] == "open"
        time.sleep(3)  # still saturated at the last report: no resolve
        assert pages(c, key, "resolve") == []

        # Falls to 0.5 from 65 s: back within bounds for 20 s at 85 s.
        publish(c, reports(instance, model, start + 65 * S, [0.5] * 12, partition))
        wait_for(lambda: pages(c, key, "resolve"), "the kv_cache_saturated resolve")
        time.sleep(2)
        assert len(pages(c, key, "trigger")) == 1 and len(pages(c, key, "resolve")) == 1

        seen = wait_for(lambda: len(transitions(alerts, key)) >= 2 and transitions(alerts, key), "")
        assert [(t["transition"], t["event_ts"]) for t in seen] == [
            ("open", _iso(start + 20 * S)),
            ("resolve", _iso(start + 85 * S)),
        ]
        assert seen[0]["alert_id"] == seen[1]["alert_id"]
        # No other engine condition held (3 waiting, the preemption counter flat).
        others = [r.json()["dedup_key"] for r in alerts.records if r.json()["kind"] == "engine"]
        assert set(others) == {key}

        def stored() -> list[dict[str, Any]]:
            with c.store() as store:
                return store.query(
                    "SELECT transition FROM driftline.llm_alerts"
                    f" WHERE dedup_key = '{key}' ORDER BY event_ts"
                ).to_pylist()

        assert wait_for(lambda: len(stored()) == 2 and stored(), "the stored transitions") == [
            {"transition": "open"},
            {"transition": "resolve"},
        ]
        c.check_alive("worker")
        alerts.consumer.close()


def reader_of(c: Cluster, topic: str) -> TopicReader:
    consumer = Consumer(
        consumer_config(
            c.settings.kafka,
            f"test-{uuid.uuid4().hex[:8]}",
            c.bootstrap,
            **{"enable.auto.commit": False},
        )
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    return TopicReader(consumer, topic)


def _iso(ns: int) -> str:
    us = ns // 1000
    return datetime.fromtimestamp(us // 1_000_000, UTC).strftime("%Y-%m-%dT%H:%M:%S") + (
        f".{us % 1_000_000:06d}Z"
    )


def test_a_worker_killed_mid_incident_leaves_it_to_the_next_which_resolves_it(
    tmp_path: Path,
) -> None:
    """The first worker pages and is killed; the next restores the engine's state from the
    changelog (it does not open the alert again from the reports its feed re-reads) and
    resolves the same alert once KV falls: one trigger, one resolve."""
    instance, model = "vllm-takeover.internal:8000", f"org/llama-{uuid.uuid4().hex[:6]}"
    key = f"engine/{instance}/kv_cache_saturated/{model}"
    with cluster(tmp_path, CONFIG) as c:
        c.start_worker("first")
        alerts = reader_of(c, topics.LLM_ALERTS)
        changelog = reader_of(c, f"{c.settings.kafka.consumer_group}-engine_conditions-changelog")
        start = time.time_ns() - 240 * S
        publish(c, reports(instance, model, start, [0.97] * 13, 0))
        wait_for(lambda: pages(c, key, "trigger"), "the kv_cache_saturated page")

        def checkpointed() -> bool:
            changelog.poll()
            return any(key.encode() in r.value for r in changelog.records)

        wait_for(checkpointed, "the engine's checkpoint with its open alert")
        c.kill_worker("first")
        c.start_worker("second")
        publish(c, reports(instance, model, start + 65 * S, [0.5] * 12, 0))
        wait_for(lambda: pages(c, key, "resolve"), "the resolve from the second worker")
        time.sleep(2)
        assert len(pages(c, key, "trigger")) == 1 and len(pages(c, key, "resolve")) == 1
        seen = transitions(alerts, key)
        assert [(t["transition"], t["event_ts"]) for t in seen] == [
            ("open", _iso(start + 20 * S)),
            ("resolve", _iso(start + 85 * S)),
        ]
        assert seen[0]["alert_id"] == seen[1]["alert_id"]
        log = c.workers["second"].log_path.read_text(errors="replace")
        assert "engine alerts: state of 1 engines resumed from the changelog" in log
        c.check_alive("second")
        alerts.consumer.close()
        changelog.consumer.close()


def test_two_workers_judge_each_engine_once(tmp_path: Path) -> None:
    """Each engine is judged by the worker owning its partition of llm_events: with two
    workers and engines on both, every engine pages once, from one worker."""
    with cluster(tmp_path, CONFIG) as c:
        c.start_worker("a")
        c.start_worker("b")

        def split() -> dict[str, set[int]] | None:
            owned = {n: (c.assignments(n) or [{}])[-1].get(topics.LLM_EVENTS, set()) for n in "ab"}
            whole = owned["a"] | owned["b"] == set(range(PARTITIONS))
            return owned if whole and not owned["a"] & owned["b"] and all(owned.values()) else None

        owned = wait_for(split, "llm_events split between the two workers")
        tag = uuid.uuid4().hex[:6]
        engines: dict[str, tuple[str, str]] = {}  # dedup key -> (model, instance)
        per_worker = {"a": 0, "b": 0}
        for i in range(64):
            engine = (f"org/llama-{tag}", f"vllm-pair-{i}.internal:8000")
            judge_of = "a" if owner_partition(engine, PARTITIONS) in owned["a"] else "b"
            if per_worker[judge_of] < 2:
                per_worker[judge_of] += 1
                engines[f"engine/{engine[1]}/kv_cache_saturated/{engine[0]}"] = engine
        assert per_worker == {"a": 2, "b": 2}
        alerts = reader_of(c, topics.LLM_ALERTS)
        start = time.time_ns() - 240 * S
        for n, (model, instance) in enumerate(engines.values()):
            high = [0.97] * 13 + [0.5] * 12
            messages = reports(instance, model, start, high, n % PARTITIONS)
            publish(c, messages)
        for key in engines:
            wait_for(lambda key=key: pages(c, key, "resolve"), f"the resolve of {key}")
        time.sleep(2)
        judged_by: dict[str, list[str]] = {}
        logs = {n: c.workers[n].log_path.read_text(errors="replace") for n in "ab"}
        for key, (model, instance) in engines.items():
            assert len(pages(c, key, "trigger")) == 1 and len(pages(c, key, "resolve")) == 1
            seen = [t["transition"] for t in transitions(alerts, key)]
            assert seen == ["open", "resolve"], (key, seen)
            judged_by[key] = [n for n in "ab" if f"engine alert open: {key}" in logs[n]]
            expected = "a" if owner_partition((model, instance), PARTITIONS) in owned["a"] else "b"
            assert judged_by[key] == [expected], (key, judged_by[key], owned)
        assert {w for ws in judged_by.values() for w in ws} == {"a", "b"}
        c.check_alive("a", "b")
        alerts.consumer.close()
