"""Serving-engine and GenAI metrics driftline reads, as the engines name them.

KV-cache pressure lives in the serving engine's metrics, not in any span: vLLM, SGLang and
TensorRT-LLM (through Triton) publish it on their Prometheus ``/metrics``, which the OTel
Collector's Prometheus receiver scrapes and its Kafka exporter writes to ``otlp_metrics``.
This module maps each published name (deprecated ones too) to one canonical metric, says
which labels and resource attributes identify the engine, and is the only place those names
are spelled. Metrics not listed here are ignored by name, before their points are read.

Names are as documented by each engine (vLLM production metrics, v0.5 to v0.11; SGLang's
``sglang:`` metrics; Triton's TensorRT-LLM backend metrics) and by the OTel GenAI semantic
conventions. A Prometheus counter is exposed with a ``_total`` suffix, which the Collector's
Prometheus receiver keeps unless its name normalization is turned on; both spellings map.

>>> SOURCE_METRICS["vllm:gpu_cache_usage_perc"]
EngineMetric(engine='vllm', metric='kv_cache_usage', kind='gauge', deprecated=True)
>>> SOURCE_METRICS["vllm:num_preemptions_total"] == SOURCE_METRICS["vllm:num_preemptions"]
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

MetricKind = Literal["gauge", "counter", "histogram"]

# Canonical metrics (the `metric` column of driftline.engine_metrics).
KV_CACHE_USAGE: Final = "kv_cache_usage"  # fraction of KV-cache blocks in use, 0..1
REQUESTS_WAITING: Final = "requests_waiting"  # queue depth
REQUESTS_RUNNING: Final = "requests_running"
PREEMPTIONS: Final = "preemptions"  # cumulative count
PREFIX_CACHE_QUERIES: Final = "prefix_cache_queries"  # cumulative tokens queried
PREFIX_CACHE_HITS: Final = "prefix_cache_hits"  # cumulative tokens hit
PREFIX_CACHE_HIT_RATE: Final = "prefix_cache_hit_rate"  # 0..1, where the engine reports a rate
# OTel GenAI metrics (histograms: stored as their running count and sum).
CLIENT_TOKEN_USAGE: Final = "gen_ai.client.token.usage"
CLIENT_OPERATION_DURATION: Final = "gen_ai.client.operation.duration"
SERVER_REQUEST_DURATION: Final = "gen_ai.server.request.duration"
SERVER_TIME_TO_FIRST_TOKEN: Final = "gen_ai.server.time_to_first_token"
SERVER_TIME_PER_OUTPUT_TOKEN: Final = "gen_ai.server.time_per_output_token"

# Canonical metrics whose values are fractions (checked to lie in 0..1 on the way in).
FRACTIONS: Final = frozenset({KV_CACHE_USAGE, PREFIX_CACHE_HIT_RATE})


@dataclass(frozen=True, slots=True)
class EngineMetric:
    engine: str  # "vllm" | "sglang" | "trtllm" | "otel" (GenAI conventions, any engine)
    metric: str  # canonical name
    kind: MetricKind
    deprecated: bool = False


def _counter(engine: str, name: str, metric: str) -> dict[str, EngineMetric]:
    entry = EngineMetric(engine, metric, "counter")
    return {name: entry, f"{name}_total": entry}


# vLLM's names for what the simulator's engine publishes too (as a scrape forwards them).
VLLM_KV_CACHE_USAGE: Final = "vllm:kv_cache_usage_perc"
VLLM_REQUESTS_WAITING: Final = "vllm:num_requests_waiting"
VLLM_REQUESTS_RUNNING: Final = "vllm:num_requests_running"
VLLM_PREEMPTIONS: Final = "vllm:num_preemptions"
VLLM_MODEL_LABEL: Final = "model_name"

SOURCE_METRICS: Final[dict[str, EngineMetric]] = {
    # vLLM
    VLLM_KV_CACHE_USAGE: EngineMetric("vllm", KV_CACHE_USAGE, "gauge"),
    # Renamed to kv_cache_usage_perc in the V1 engine; still what older servers publish.
    "vllm:gpu_cache_usage_perc": EngineMetric("vllm", KV_CACHE_USAGE, "gauge", deprecated=True),
    VLLM_REQUESTS_WAITING: EngineMetric("vllm", REQUESTS_WAITING, "gauge"),
    VLLM_REQUESTS_RUNNING: EngineMetric("vllm", REQUESTS_RUNNING, "gauge"),
    **_counter("vllm", VLLM_PREEMPTIONS, PREEMPTIONS),
    **_counter("vllm", "vllm:prefix_cache_queries", PREFIX_CACHE_QUERIES),
    **_counter("vllm", "vllm:prefix_cache_hits", PREFIX_CACHE_HITS),
    # SGLang
    "sglang:token_usage": EngineMetric("sglang", KV_CACHE_USAGE, "gauge"),
    "sglang:num_queue_reqs": EngineMetric("sglang", REQUESTS_WAITING, "gauge"),
    "sglang:num_running_reqs": EngineMetric("sglang", REQUESTS_RUNNING, "gauge"),
    "sglang:cache_hit_rate": EngineMetric("sglang", PREFIX_CACHE_HIT_RATE, "gauge"),
    # TensorRT-LLM through Triton: one gauge, the block kind in a label (TRTLLM_BLOCK_LABEL).
    "nv_trt_llm_kv_cache_block_metrics": EngineMetric("trtllm", KV_CACHE_USAGE, "gauge"),
    "nv_trt_llm_request_metrics": EngineMetric("trtllm", REQUESTS_WAITING, "gauge"),
    # OTel GenAI semantic conventions
    CLIENT_TOKEN_USAGE: EngineMetric("otel", CLIENT_TOKEN_USAGE, "histogram"),
    CLIENT_OPERATION_DURATION: EngineMetric("otel", CLIENT_OPERATION_DURATION, "histogram"),
    SERVER_REQUEST_DURATION: EngineMetric("otel", SERVER_REQUEST_DURATION, "histogram"),
    SERVER_TIME_TO_FIRST_TOKEN: EngineMetric("otel", SERVER_TIME_TO_FIRST_TOKEN, "histogram"),
    SERVER_TIME_PER_OUTPUT_TOKEN: EngineMetric("otel", SERVER_TIME_PER_OUTPUT_TOKEN, "histogram"),
}

# Triton's TensorRT-LLM gauges keep their meaning in a label: the KV gauge reports blocks
# "max", "free", "used", "tokens_per" (and, on newer backends, "fraction"); the request gauge
# reports "active", "max", "scheduled", "context" and "waiting" requests.
TRTLLM_BLOCK_LABEL: Final = "kv_cache_block_type"
TRTLLM_REQUEST_LABEL: Final = "request_type"
TRTLLM_REQUEST_WAITING: Final = "waiting"

# What identifies the engine a point came from, in order of preference. The Prometheus
# receiver sets service.instance.id to the scrape target's host:port; a collector that
# relabels can set server.address / server.port instead.
TOKEN_TYPE_LABEL: Final = "gen_ai.token.type"  # input | output, on token-usage points
VLLM_ENGINE_LABEL: Final = "engine"  # data-parallel engine index on vLLM V1 metrics
MODEL_LABELS: Final = ("model_name", "model", "gen_ai.request.model", "gen_ai.response.model")
INSTANCE_RESOURCE_ATTRIBUTES: Final = ("service.instance.id", "host.name")
SERVER_ADDRESS: Final = "server.address"
SERVER_PORT: Final = "server.port"


def instance_of(address: str, port: object) -> str:
    """The instance key ``host:port`` (or ``host``) that engine points and request spans share.

    >>> instance_of("vllm-0.internal", 8000), instance_of("vllm-0.internal", None)
    ('vllm-0.internal:8000', 'vllm-0.internal')
    """
    if port is None or port == "":
        return address
    return f"{address}:{port}"
