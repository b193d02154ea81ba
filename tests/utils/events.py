"""Realistic normalized events and trace summaries for store, query and dashboard tests.

Three levels:

- :func:`make_event` / :func:`summarize_trace`: one hand-written record with sensible defaults,
  for tests whose expected totals are checked by hand;
- :func:`generate_traffic`: seeded multi-workflow traffic (agent loops, retries, cache hits,
  errors) as dicts in the internal form of ``schemas.event`` (timestamps in microseconds);
- :func:`event_table`: the same shape of data straight into Arrow with numpy, for benchmarks
  with millions of rows.

Costs use :data:`RATES` (USD per million tokens), priced as ``streams.pricing`` does:
uncached input + cache reads + cache writes + output at their own rates.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from driftline.schemas.event import EVENT_FIELDS, TRACE_FIELDS, bundle_id


@dataclass(frozen=True, slots=True)
class ModelRates:
    provider: str
    model: str
    input: float
    output: float
    cache_read: float
    cache_write: float


RATES: dict[str, ModelRates] = {
    r.model: r
    for r in (
        ModelRates("openai", "gpt-4o", 2.5, 10.0, 1.25, 2.5),
        ModelRates("openai", "gpt-4o-mini", 0.15, 0.6, 0.075, 0.15),
        ModelRates("anthropic", "claude-sonnet-4", 3.0, 15.0, 0.3, 3.75),
        ModelRates("vllm", "llama-3.1-8b", 0.05, 0.1, 0.05, 0.05),
    )
}

WORKFLOWS: dict[str, dict[str, Any]] = {
    "support-chat": {"models": ["gpt-4o", "gpt-4o-mini"], "routes": ["/chat", "/chat/escalate"]},
    "doc-summarize": {"models": ["claude-sonnet-4"], "routes": ["/summarize"]},
    "code-review": {"models": ["claude-sonnet-4", "gpt-4o"], "routes": ["/review"]},
    "rag-search": {"models": ["llama-3.1-8b", "gpt-4o-mini"], "routes": ["/search", "/answer"]},
}
TENANTS = ("acme", "globex", "initech", "umbrella", "hooli")
PROMPT_VERSIONS = ("p1", "p2", "p3")


def price(
    model: str, input_tokens: int, output_tokens: int, cache_read: int = 0, cache_write: int = 0
) -> float | None:
    """USD for one call at :data:`RATES`; None for a model without rates."""
    rates = RATES.get(model)
    if rates is None:
        return None
    uncached = max(input_tokens - cache_read - cache_write, 0)
    usd = (
        uncached * rates.input
        + cache_read * rates.cache_read
        + cache_write * rates.cache_write
        + output_tokens * rates.output
    ) / 1e6
    return round(usd, 10)


def make_event(**overrides: Any) -> dict[str, Any]:
    """One request event; priced from :data:`RATES` unless ``cost_usd`` is given."""
    event: dict[str, Any] = {
        "trace_id": "t" * 32,
        "span_id": "s" * 16,
        "parent_span_id": "",
        "start_ts": 1_767_225_600_000_000,  # 2026-01-01T00:00:00Z
        "end_ts": 0,
        "service": "svc",
        "environment": "prod",
        "workflow": "support-chat",
        "agent": "",
        "tenant": "acme",
        "user_hash": "",
        "session_id": "",
        "route": "/chat",
        "operation": "chat",
        "provider": "openai",
        "request_model": "gpt-4o",
        "response_model": "gpt-4o",
        "model_version": "",
        "prompt_version": "p1",
        "retrieval_index_version": "",
        "router_version": "",
        "bundle_id": "",
        "input_tokens": 1000,
        "output_tokens": 100,
        "cache_read_tokens": 0,
        "cache_write_tokens": 0,
        "reasoning_tokens": 0,
        "cost_usd": None,
        "price_source": "config",
        "latency_ms": 800.0,
        "ttft_ms": 200.0,
        "queue_ms": None,
        "kv_cache_usage": None,
        "retry_attempt": 0,
        "loop_depth": 1,
        "tool_calls": 0,
        "finish_reason": "stop",
        "output_chars": 400,
        "validation_failed": False,
        "error_type": "",
        "status": "ok",
        "attributes": {},
    }
    event.update(overrides)
    if not event["end_ts"]:
        event["end_ts"] = event["start_ts"] + int(event["latency_ms"] * 1000)
    if not event["bundle_id"]:
        event["bundle_id"] = bundle_id(
            event["response_model"] or event["request_model"],
            event["model_version"],
            event["prompt_version"],
            event["retrieval_index_version"],
            event["router_version"],
        )
    if "cost_usd" not in overrides:
        event["cost_usd"] = price(
            event["response_model"] or event["request_model"],
            event["input_tokens"],
            event["output_tokens"],
            event["cache_read_tokens"],
            event["cache_write_tokens"],
        )
        if event["cost_usd"] is None:
            event["price_source"] = "unknown"
    assert set(event) == {f.name for f in EVENT_FIELDS}, set(event) ^ {f.name for f in EVENT_FIELDS}
    return event


def summarize_trace(events: list[dict[str, Any]], closed_by: str = "root_end") -> dict[str, Any]:
    """The trace summary of one trace's events, computed as trace assembly does."""
    events = sorted(events, key=lambda e: e["start_ts"])
    root = events[0]
    input_tokens = sum(e["input_tokens"] for e in events)
    output_tokens = sum(e["output_tokens"] for e in events)
    costs = [e["cost_usd"] for e in events if e["cost_usd"] is not None]
    root_tokens = root["input_tokens"] + root["output_tokens"]
    trace = {
        "trace_id": root["trace_id"],
        "workflow": root["workflow"],
        "service": root["service"],
        "environment": root["environment"],
        "tenant": root["tenant"],
        "route": root["route"],
        "root_span_id": root["span_id"],
        "start_ts": root["start_ts"],
        "end_ts": max(e["end_ts"] for e in events),
        "span_count": len(events),
        "llm_call_count": len(events),
        "max_loop_depth": max(e["loop_depth"] for e in events),
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "total_tokens": input_tokens + output_tokens,
        "cost_usd": round(sum(costs), 10) if costs else None,
        "unpriced_calls": sum(e["cost_usd"] is None for e in events),
        "amplification": (input_tokens + output_tokens) / root_tokens if root_tokens else None,
        "retries": sum(e["retry_attempt"] > 0 for e in events),
        "error_count": sum(e["status"] == "error" for e in events),
        "closed_by": closed_by,
    }
    assert set(trace) == {f.name for f in TRACE_FIELDS}
    return trace


def generate_traffic(
    n_traces: int, *, seed: int = 7, start_us: int = 1_767_225_600_000_000, span_s: float = 3600.0
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Seeded traffic: ``n_traces`` traces over ``span_s`` seconds; (events, traces)."""
    rng = random.Random(seed)
    events: list[dict[str, Any]] = []
    traces: list[dict[str, Any]] = []
    for i in range(n_traces):
        workflow = rng.choice(list(WORKFLOWS))
        spec = WORKFLOWS[workflow]
        trace_id = f"{rng.getrandbits(128):032x}"
        t0 = start_us + int(rng.random() * span_s * 1e6)
        route, tenant = rng.choice(spec["routes"]), rng.choice(TENANTS)
        prompt = rng.choice(PROMPT_VERSIONS)
        # agent loops: most traces are one call, a few loop deep
        calls = 1 if rng.random() < 0.6 else rng.randint(2, 6 if rng.random() < 0.9 else 15)
        trace_events = []
        parent = ""
        for depth in range(1, calls + 1):
            model = rng.choice(spec["models"])
            input_tokens = int(rng.lognormvariate(7.0, 0.6)) + 200 * (depth - 1)
            cache_read = int(input_tokens * rng.choice((0.0, 0.0, 0.5, 0.8)))
            cache_write = int(input_tokens * 0.1) if cache_read == 0 and rng.random() < 0.2 else 0
            output_tokens = int(rng.lognormvariate(5.0, 0.7))
            error = rng.random() < 0.03
            latency = rng.lognormvariate(6.5, 0.5)
            span_id = f"{rng.getrandbits(64):016x}"
            event = make_event(
                trace_id=trace_id,
                span_id=span_id,
                parent_span_id=parent,
                start_ts=t0 + int((depth - 1) * 1.5e6),
                latency_ms=round(latency, 3),
                ttft_ms=round(latency * 0.25, 3),
                workflow=workflow,
                service=f"{workflow}-svc",
                tenant=tenant,
                route=route,
                provider=RATES[model].provider,
                request_model=model,
                response_model=model,
                prompt_version=prompt,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cache_read_tokens=cache_read,
                cache_write_tokens=cache_write,
                retry_attempt=1 if rng.random() < 0.05 else 0,
                loop_depth=depth,
                status="error" if error else "ok",
                error_type="RateLimitError" if error else "",
                finish_reason="" if error else "stop",
                output_chars=output_tokens * 4,
                validation_failed=(not error) and rng.random() < 0.02,
                session_id=f"sess-{i % 97}",
                user_hash=f"u{i % 211:04d}",
            )
            trace_events.append(event)
            parent = span_id
        events.extend(trace_events)
        traces.append(summarize_trace(trace_events))
    return events, traces


def event_table(
    n_rows: int,
    *,
    seed: int = 11,
    start_us: int = 1_767_225_600_000_000,
    span_s: float = 14 * 86400.0,
) -> pa.Table:
    """``n_rows`` events as Arrow columns (EVENT_FIELDS order), generated with numpy."""
    rng = np.random.default_rng(seed)
    workflows = np.array(list(WORKFLOWS))
    models = np.array(list(RATES))
    wf = rng.integers(0, len(workflows), n_rows)
    md = rng.integers(0, len(models), n_rows)
    start = np.sort(start_us + (rng.random(n_rows) * span_s * 1e6).astype(np.int64))
    latency = rng.lognormal(6.5, 0.5, n_rows)
    inp = rng.lognormal(7.0, 0.6, n_rows).astype(np.int64)
    out = rng.lognormal(5.0, 0.7, n_rows).astype(np.int64)
    cache_read = (inp * rng.choice([0.0, 0.0, 0.5, 0.8], n_rows)).astype(np.int64)
    rate_in = np.array([RATES[m].input for m in models])[md]
    rate_out = np.array([RATES[m].output for m in models])[md]
    rate_cr = np.array([RATES[m].cache_read for m in models])[md]
    cost = ((inp - cache_read) * rate_in + cache_read * rate_cr + out * rate_out) / 1e6
    status_err = rng.random(n_rows) < 0.03
    trace_ids = rng.integers(0, 2**62, n_rows // 2 + 1)[rng.integers(0, n_rows // 2 + 1, n_rows)]
    span_ids = rng.integers(0, 2**63, n_rows, dtype=np.int64).astype(np.uint64)

    def hex_ids(values: np.ndarray, words: int) -> pa.Array:
        # Vectorized hex of `words` 64-bit words per id: np.char.mod is 20x slower.
        raw = np.ascontiguousarray(values, dtype=">u8").reshape(len(values), -1)[:, :words]
        digits = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
        as_bytes = raw.view(np.uint8).reshape(len(values), -1)
        hexed = np.empty((len(values), as_bytes.shape[1] * 2), dtype=np.uint8)
        hexed[:, 0::2] = digits[as_bytes >> 4]
        hexed[:, 1::2] = digits[as_bytes & 15]
        width = hexed.shape[1]
        offsets = np.arange(0, (len(values) + 1) * width, width, dtype=np.int32)
        return pa.StringArray.from_buffers(
            len(values), pa.py_buffer(offsets), pa.py_buffer(hexed.tobytes())
        )

    def dictionary(choices: np.ndarray, index: np.ndarray) -> pa.Array:
        return pa.DictionaryArray.from_arrays(
            pa.array(index.astype(np.int32)), pa.array(choices.astype(str))
        ).cast(pa.string())

    tenants = np.array(TENANTS)
    prompts = np.array(PROMPT_VERSIONS)
    routes = np.array(["/chat", "/chat/escalate", "/summarize", "/review", "/search", "/answer"])
    empty = dictionary(np.array([""]), np.zeros(n_rows, dtype=np.int32))
    ts = pa.timestamp("us", tz="UTC")
    depth = rng.geometric(0.5, n_rows).astype(np.int64)
    columns: dict[str, pa.Array] = {
        "trace_id": hex_ids(
            np.stack([trace_ids.astype(np.uint64), ~trace_ids.astype(np.uint64)], axis=1), 2
        ),
        "span_id": hex_ids(span_ids, 1),
        "parent_span_id": empty,
        "start_ts": pa.array(start, ts),
        "end_ts": pa.array(start + (latency * 1000).astype(np.int64), ts),
        "service": dictionary(np.char.add(workflows, "-svc"), wf),
        "environment": dictionary(np.array(["prod"]), np.zeros(n_rows, dtype=np.int32)),
        "workflow": dictionary(workflows, wf),
        "agent": empty,
        "tenant": dictionary(tenants, rng.integers(0, len(tenants), n_rows)),
        "user_hash": dictionary(np.char.mod("u%04d", np.arange(211)), rng.integers(0, 211, n_rows)),
        "session_id": empty,
        "route": dictionary(routes, rng.integers(0, len(routes), n_rows)),
        "operation": dictionary(np.array(["chat"]), np.zeros(n_rows, dtype=np.int32)),
        "provider": dictionary(np.array([RATES[m].provider for m in models]), md),
        "request_model": dictionary(models, md),
        "response_model": dictionary(models, md),
        "model_version": empty,
        "prompt_version": dictionary(prompts, rng.integers(0, len(prompts), n_rows)),
        "retrieval_index_version": empty,
        "router_version": empty,
        "bundle_id": dictionary(np.char.mod("b%015d", np.arange(len(models))), md),
        "input_tokens": pa.array(inp),
        "output_tokens": pa.array(out),
        "cache_read_tokens": pa.array(cache_read),
        "cache_write_tokens": pa.array(np.zeros(n_rows, dtype=np.int64)),
        "reasoning_tokens": pa.array(np.zeros(n_rows, dtype=np.int64)),
        "cost_usd": pa.array(cost),
        "price_source": dictionary(np.array(["config"]), np.zeros(n_rows, dtype=np.int32)),
        "latency_ms": pa.array(latency),
        "ttft_ms": pa.array(latency * 0.25),
        "queue_ms": pa.nulls(n_rows, pa.float64()),
        "kv_cache_usage": pa.nulls(n_rows, pa.float64()),
        "retry_attempt": pa.array((rng.random(n_rows) < 0.05).astype(np.int64)),
        "loop_depth": pa.array(depth),
        "tool_calls": pa.array(np.zeros(n_rows, dtype=np.int64)),
        "finish_reason": dictionary(np.array(["stop", ""]), status_err.astype(np.int32)),
        "output_chars": pa.array(out * 4),
        "validation_failed": pa.array(rng.random(n_rows) < 0.02),
        "error_type": dictionary(np.array(["", "RateLimitError"]), status_err.astype(np.int32)),
        "status": dictionary(np.array(["ok", "error"]), status_err.astype(np.int32)),
        "attributes": pa.array([[]] * n_rows, pa.map_(pa.string(), pa.string())),
    }
    assert list(columns) == [f.name for f in EVENT_FIELDS]
    return pa.table(columns)


def chunks(table: pa.Table, rows: int) -> Iterator[pa.Table]:
    for offset in range(0, table.num_rows, rows):
        yield table.slice(offset, rows)


def reset_store(store: Any, ttl_days: int = 3650) -> None:
    """Drop the driftline database and create the schema again: a fresh store in one session.

    chdb opens one data path per process, so tests share a store and reset it instead of
    opening new ones. (TRUNCATE would keep insert-deduplication state across tests.)
    ``ttl_days`` is long because the fixed test timestamps are in the past.
    """
    from driftline.store.migrations import migrate

    store.command("DROP DATABASE IF EXISTS driftline SYNC")
    migrate(store, ttl_days)
