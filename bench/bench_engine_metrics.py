"""Throughput of engine-metric ingestion: OTLP metrics bytes -> rows -> chdb.

Builds messages as the Collector's Prometheus receiver writes a scrape of a vLLM server:
per target, the five series driftline reads (KV usage, waiting, running, preemptions, prefix
cache) beside 40 it does not (histograms with 20 buckets, gauges), several targets per
message. Measures, interleaved in the same run so a busy machine slows all alike:

  (a) parse ceiling: ``ExportMetricsServiceRequest.FromString`` + walking every data point
  (b) decode:        ``streams.engine_metrics.decode_metrics_message``
  (c) decode + Arrow + one insert of all messages into an embedded chdb store

and prints data points/s of known metrics for each (best of the repeats), the ratios, and
how many points were skipped by name.

    python bench/bench_engine_metrics.py [--messages 50] [--targets 8] [--repeats 5]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from driftline.config import StoreSettings
from driftline.schemas.tables import ENGINE_METRICS
from driftline.store import Store, open_store
from driftline.streams.engine_metrics import EngineMetricRows, decode_metrics_message

KNOWN = (
    ("vllm:kv_cache_usage_perc", "gauge"),
    ("vllm:num_requests_waiting", "gauge"),
    ("vllm:num_requests_running", "gauge"),
    ("vllm:num_preemptions_total", "sum"),
    ("vllm:prefix_cache_hits_total", "sum"),
)
UNKNOWN_HISTOGRAMS = 20
UNKNOWN_GAUGES = 20
BUCKETS = 20


def _kv(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def scrape_message(seed: int, targets: int, time_ns: int) -> bytes:
    rng = random.Random(seed)
    resources = []
    for target in range(targets):
        labels = [_kv("model_name", f"org/model-{target % 3}"), _kv("engine", "0")]

        def number(value: float, labels: list[KeyValue] = labels) -> NumberDataPoint:
            return NumberDataPoint(time_unix_nano=time_ns, as_double=value, attributes=labels)

        metrics = []
        for name, kind in KNOWN:
            value = rng.random() if kind == "gauge" else float(rng.randrange(10**6))
            if kind == "gauge":
                metrics.append(Metric(name=name, gauge=Gauge(data_points=[number(value)])))
            else:
                metrics.append(Metric(name=name, sum=Sum(data_points=[number(value)])))
        for i in range(UNKNOWN_GAUGES):
            metrics.append(
                Metric(name=f"vllm:other_{i}", gauge=Gauge(data_points=[number(rng.random())]))
            )
        for i in range(UNKNOWN_HISTOGRAMS):
            counts = [rng.randrange(1000) for _ in range(BUCKETS + 1)]
            point = HistogramDataPoint(
                time_unix_nano=time_ns,
                count=sum(counts),
                sum=rng.random() * 1e4,
                bucket_counts=counts,
                explicit_bounds=[2.0**b for b in range(BUCKETS)],
                attributes=labels,
            )
            metrics.append(
                Metric(name=f"vllm:latency_{i}_seconds", histogram=Histogram(data_points=[point]))
            )
        resource = Resource(
            attributes=[
                _kv("service.name", "vllm"),
                _kv("service.instance.id", f"vllm-{target}:8000"),
            ]
        )
        resources.append(
            ResourceMetrics(resource=resource, scope_metrics=[ScopeMetrics(metrics=metrics)])
        )
    return ExportMetricsServiceRequest(resource_metrics=resources).SerializeToString()


def parse_only(payloads: list[bytes]) -> int:
    points = 0
    for payload in payloads:
        for rm in ExportMetricsServiceRequest.FromString(payload).resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    kind = metric.WhichOneof("data")
                    points += len(getattr(metric, kind).data_points) if kind else 0
    return points


def decode(payloads: list[bytes]) -> list[EngineMetricRows]:
    return [decode_metrics_message(p) for p in payloads]


def decode_and_store(payloads: list[bytes], store: Store) -> int:
    """All messages in one insert, as a consumer batch would be (chdb costs ~50 ms an insert)."""
    batches = decode(payloads)
    table = pa.concat_tables([rows.to_arrow() for rows in batches])
    token = "bench:" + "-".join(rows.dedup_token()[-8:] for rows in batches)
    store.insert_arrow(ENGINE_METRICS.name, table, token)
    return table.num_rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=50)
    parser.add_argument("--targets", type=int, default=8, help="scrape targets per message")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    now_ns = time.time_ns()
    payloads = [
        scrape_message(seed, args.targets, now_ns + seed * 15 * 10**9)
        for seed in range(args.messages)
    ]
    sample = decode(payloads[:1])[0]
    all_points = parse_only(payloads)
    known_points = sum(len(rows) for rows in decode(payloads))
    print(
        f"{args.messages} messages x {args.targets} targets, "
        f"{sum(map(len, payloads)) / len(payloads) / 1024:.0f} KiB each; "
        f"{all_points} data points, {known_points} of known metrics "
        f"({sample.metrics_ignored} metrics skipped by name per message), "
        f"{len(sample.rejects)} rejects"
    )
    with tempfile.TemporaryDirectory() as directory:
        store = open_store(f"chdb://{directory}", StoreSettings(ttl_days=30))
        best = {
            "(a) parse + walk": float("inf"),
            "(b) decode": float("inf"),
            "(c) decode + store": float("inf"),
        }
        for repeat in range(args.repeats):
            for label in best:
                started = time.perf_counter()
                if label.startswith("(a)"):
                    parse_only(payloads)
                elif label.startswith("(b)"):
                    decode(payloads)
                else:
                    # a fresh timeline per repeat, so no insert is dropped as a duplicate
                    shifted = [
                        scrape_message(
                            seed, args.targets, now_ns + (repeat * 10_000 + seed) * 10**9
                        )
                        for seed in range(args.messages)
                    ]
                    started = time.perf_counter()
                    decode_and_store(shifted, store)
                best[label] = min(best[label], time.perf_counter() - started)
        rows = store.query("SELECT count() AS n FROM driftline.engine_metrics").to_pylist()[0]["n"]
        store.close()

    print(f"{'stage':<24}{'known points/s':>16}{'messages/s':>12}")
    for label, seconds in best.items():
        print(f"{label:<24}{known_points / seconds:>16,.0f}{args.messages / seconds:>12,.1f}")
    a, b, c = (known_points / s for s in best.values())
    print(f"ratio (b)/(a) = {b / a:.2f}   ratio (c)/(b) = {c / b:.2f}")
    expected = known_points * args.repeats
    print(f"stored {rows} rows of {expected} inserted ({'all' if rows == expected else 'MISSING'})")
    return 0 if rows == expected else 1


if __name__ == "__main__":
    raise SystemExit(main())
