"""Labeled LLM workflows as normalized events, for ``bench/bench_replay.py``.

Written apart from ``bench/families.py`` and on other structures: a workflow here is a
day of agent traces, not a stream of values. Each workflow has

- trace arrivals that follow a daily cycle (amplitude 30-70%) with bursts (2-4x for
  5-30 minutes), drawn by inverting the cumulative intensity;
- traces of 1-12 calls (geometric), run one after another with tool gaps between
  them; input tokens grow with the step (the history is resent), non-final steps
  finish with ``tool_calls``;
- output tokens: lognormal, with an AR(1) component over the workflow's calls
  (phi 0-0.5), a per-trace random effect, Student-t innovations for some workflows,
  rare outliers (x5-x30), and a daily cycle of at most +-3%;
- latency = TTFT (growing with input tokens) + output tokens x a per-token time, both
  at most 3% slower under load (the arrival cycle and bursts); a failed attempt (rate
  limit or timeout) is its own event before a retried call;
- validation failures and retries at low base rates (0.5-3%) whose odds wander slowly
  (clustered), a finish mix of ``stop``, ``tool_calls``, ``length`` (1-2.5%) and rare
  ``content_filter``;
- a primary model, and for some workflows a fallback model on 10-20% of the calls
  (another bundle, other levels).

A shifted workflow has one change, applied to the calls that start at or after its
change time; the metrics it moves besides its target are listed as *related* (more
output tokens take longer and print more characters). Ids are random hex as OTel
writes them; times are microseconds since the epoch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

import numpy as np

from driftline.schemas.event import bundle_id, micros_to_iso

DAY_US: Final = 86_400_000_000
T0_US: Final = 1_793_577_600_000_000  # 2026-11-02T00:00:00Z
GRID_S: Final = 60
MAX_CALLS: Final = 12


@dataclass(frozen=True)
class Shift:
    """One labeled change: ``kind`` none | level | rate | mix | transient | creep."""

    kind: str
    metric: str = ""
    factor: float = 1.0  # level multiplier, or rate multiplier for rate and mix
    span: int = 0  # events: a transient's length, a creep's ramp
    related: tuple[str, ...] = ()


@dataclass(frozen=True)
class Family:
    name: str
    shift: Shift
    base_rate: float | None = None  # the target rate before a rate change, fixed


OUTPUT_RELATED: Final = ("output_length", "latency")
FAMILIES: Final = (
    Family("control", Shift("none")),
    Family("output x1.2", Shift("level", "output_tokens", 1.2, related=OUTPUT_RELATED)),
    Family("output x2", Shift("level", "output_tokens", 2.0, related=OUTPUT_RELATED)),
    Family("latency x1.5", Shift("level", "latency", 1.5)),
    Family("input x1.3", Shift("level", "input_tokens", 1.3, related=("ttft", "latency"))),
    Family("validation 1%->3%", Shift("rate", "validation_failure", 3.0), base_rate=0.01),
    Family("retries 2%->10%", Shift("rate", "retries", 5.0), base_rate=0.02),
    Family("finish length x3", Shift("mix", "finish_reason", 3.0), base_rate=0.02),
    Family(
        "transient out x1.5",
        Shift("transient", "output_tokens", 1.5, span=1_500, related=OUTPUT_RELATED),
    ),
    Family("creep latency x1.4", Shift("creep", "latency", 1.4, span=4_000)),
)
FAMILY_BY_NAME: Final = {f.name: f for f in FAMILIES}

_WORKFLOW_NAMES: Final = (
    "support-chat",
    "doc-summarize",
    "agent-planner",
    "code-review",
    "rag-search",
    "ticket-triage",
    "sql-assistant",
    "email-draft",
    "contract-qa",
    "voice-notes",
)
_MODELS: Final = (
    ("openai", "gpt-4o-2024-08-06", "gpt-4o-mini-2024-07-18"),
    ("anthropic", "claude-3-5-sonnet-20241022", "claude-3-5-haiku-20241022"),
    ("openai", "gpt-4.1-2025-04-14", "gpt-4.1-mini-2025-04-14"),
)


@dataclass
class Workflow:
    """One generated workflow: its events as columns (start order) and its label."""

    name: str
    family: Family
    columns: dict[str, np.ndarray]
    change_ts: int | None = None  # calls starting at or after it are changed
    end_ts: int | None = None  # a transient's end
    primary_bundle: str = ""
    params: dict[str, float] = field(default_factory=dict)

    @property
    def n_events(self) -> int:
        return int(self.columns["end_ts"].shape[0])


def _arrivals(rng: np.random.Generator, n: int, duration_us: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` sorted trace start times over ``duration_us``, and the load at each (mean 1)."""
    cells = duration_us // (GRID_S * 1_000_000)
    t = np.arange(cells) * GRID_S * 1e6
    amplitude = rng.uniform(0.3, 0.7)
    phase = rng.uniform(0, 2 * math.pi)
    intensity = 1.0 + amplitude * np.sin(2 * math.pi * t / DAY_US + phase)
    for _ in range(rng.poisson(4)):
        at = rng.integers(0, cells)
        length = rng.integers(5, 31)
        intensity[at : at + length] *= rng.uniform(2.0, 4.0)
    cumulative = np.concatenate([[0.0], np.cumsum(intensity)])
    u = np.sort(rng.uniform(0, cumulative[-1], n))
    cell_pos = np.interp(u, cumulative, np.arange(cells + 1, dtype=np.float64))
    starts = (cell_pos * GRID_S * 1e6).astype(np.int64)
    load = intensity[np.minimum(cell_pos.astype(np.int64), cells - 1)] / intensity.mean()
    return starts, load


def _ar1(rng: np.random.Generator, n: int, phi: float) -> np.ndarray:
    """Unit-variance AR(1) noise."""
    z = rng.standard_normal(n)
    out = np.empty(n)
    scale = math.sqrt(1.0 - phi * phi)
    prev = rng.standard_normal()
    for i in range(n):  # n <= ~40k per workflow: fast enough, and exact
        prev = phi * prev + scale * z[i]
        out[i] = prev
    return out


def _hex_ids(rng: np.random.Generator, n: int, digits: int) -> list[str]:
    words = rng.integers(0, 2**63, size=(n, digits // 16), dtype=np.int64)
    return ["".join(f"{w:016x}" for w in row) for row in words]


def generate(
    rng: np.random.Generator, name: str, family: Family, n_calls: int, duration_us: int = DAY_US
) -> Workflow:
    """One workflow of about ``n_calls`` successful calls (plus failed attempts)."""
    mean_calls = rng.uniform(1.5, 4.0)
    per_trace = np.minimum(rng.geometric(1.0 / mean_calls, size=n_calls), MAX_CALLS)
    cum = np.cumsum(per_trace)
    n_traces = int(np.searchsorted(cum, n_calls) + 1)
    per_trace = per_trace[:n_traces]
    n = int(per_trace.sum())
    trace_starts, trace_load = _arrivals(rng, n_traces, duration_us)
    trace_starts += T0_US
    trace_of = np.repeat(np.arange(n_traces), per_trace)
    step = np.arange(n) - np.repeat(np.cumsum(per_trace) - per_trace, per_trace)
    last = step == per_trace[trace_of] - 1
    load = trace_load[trace_of]

    # The change: at the start of the trace where about `at` calls have been made.
    shift = family.shift
    change_ts = end_ts = None
    changed = np.zeros(n, dtype=bool)
    ramp = np.zeros(n)
    if shift.kind != "none":
        at = int(rng.uniform(0.35, 0.5) * n)
        change_trace = int(trace_of[at])
        change_ts = int(trace_starts[change_trace])
        changed = trace_starts[trace_of] >= change_ts
        if shift.kind == "transient":
            end_trace = int(trace_of[min(at + shift.span, n - 1)])
            end_ts = int(trace_starts[end_trace])
            changed &= trace_starts[trace_of] < end_ts
        if shift.kind == "creep":
            ramp_trace = int(trace_of[min(at + shift.span, n - 1)])
            ramp_ts = int(trace_starts[ramp_trace])
            ramp = np.clip(
                (trace_starts[trace_of] - change_ts) / max(ramp_ts - change_ts, 1), 0.0, 1.0
            )

    def level(metric: str) -> np.ndarray:
        """log multiplier of ``metric`` from the shift, per call."""
        if shift.metric != metric or shift.kind not in ("level", "transient", "creep"):
            return np.zeros(n)
        if shift.kind == "creep":
            return math.log(shift.factor) * ramp
        return math.log(shift.factor) * changed

    def rate(metric: str, base: float) -> np.ndarray:
        out = np.full(n, base)
        if shift.metric == metric and shift.kind in ("rate", "mix"):
            out[changed] *= shift.factor
        return out

    provider, primary, fallback = _MODELS[int(rng.integers(len(_MODELS)))]
    fallback_share = rng.uniform(0.1, 0.2) if rng.random() < 0.4 else 0.0
    on_fallback = rng.random(n) < fallback_share
    # The day's time of the trace: a +-3% cycle of what users ask.
    day_phase = 2 * math.pi * trace_starts[trace_of] / DAY_US + rng.uniform(0, 2 * math.pi)

    # Output tokens.
    sigma = rng.uniform(0.4, 0.9)
    phi = rng.uniform(0.0, 0.5)
    trace_sd = rng.uniform(0.0, 0.5)
    df = float(rng.choice([3.0, 5.0, 1e9]))
    innovations = (
        rng.standard_t(df, n) / math.sqrt(df / (df - 2.0)) if df < 1e8 else rng.standard_normal(n)
    )
    shared = math.sqrt(phi)  # part of the variance carried by the AR(1) component
    noise = (
        shared * _ar1(rng, n, phi)
        + math.sqrt(max(1.0 - shared**2 - trace_sd**2, 0.05)) * innovations
        + trace_sd * rng.standard_normal(n_traces)[trace_of]
    )
    outliers = rng.random(n) < rng.uniform(0.001, 0.003)
    cycle = rng.uniform(0.0, 0.03) * np.sin(day_phase)
    log_out = (
        math.log(rng.uniform(80, 800))
        + sigma * noise
        + cycle
        + np.where(outliers, np.log(rng.uniform(5, 30, n)), 0.0)
        + np.where(on_fallback, math.log(0.85), 0.0)
        + level("output_tokens")
    )
    output_tokens = np.clip(np.round(np.exp(log_out)), 1.0, 16_384.0)  # max_tokens

    # Input tokens: the prompt, plus the history resent at every step.
    log_in = (
        math.log(rng.uniform(300, 4000))
        + np.log1p(0.4 * np.minimum(step, 8))
        + rng.uniform(0.2, 0.5) * _ar1(rng, n, rng.uniform(0.0, 0.5))
        + rng.uniform(0.1, 0.4) * rng.standard_normal(n_traces)[trace_of]
        + level("input_tokens")
    )
    input_tokens = np.clip(np.round(np.exp(log_in)), 1.0, 128_000.0)  # the context
    output_chars = np.round(output_tokens * 3.8 * np.exp(rng.normal(0.0, 0.12, n)))

    # Time: TTFT grows with the prompt, decoding with the answer; both slower under load.
    # At most +-3%: a burst that slowed calls by more would be a real (unlabeled) change.
    slowdown = 1.0 + rng.uniform(0.0, 0.03) * np.tanh(load - 1.0)
    model_speed = np.where(on_fallback, 0.6, 1.0)
    ttft = (
        rng.uniform(150, 600)
        * (input_tokens / 1000.0) ** 0.25
        * np.exp(rng.normal(0.0, 0.35, n))
        * slowdown
        * model_speed
        * np.exp(level("ttft"))
    )
    per_token = rng.uniform(8, 35) * np.exp(rng.normal(0.0, 0.2, n)) * model_speed
    latency = (ttft + output_tokens * per_token * slowdown) * np.exp(level("latency"))

    # Rates whose odds wander slowly: failures come in clusters.
    def wander() -> np.ndarray:
        return np.exp(0.25 * _ar1(rng, n, 0.98) - 0.25**2 / 2)

    p_invalid = rate("validation_failure", family.base_rate or rng.uniform(0.005, 0.02))
    invalid = rng.random(n) < np.clip(p_invalid * wander(), 0, 1)
    p_retry = rate("retries", family.base_rate or rng.uniform(0.005, 0.03))
    retried = rng.random(n) < np.clip(p_retry * wander(), 0, 1)
    attempts = np.where(retried, np.where(rng.random(n) < 0.1, 2, 1), 0)

    finish = np.where(last, "stop", np.where(rng.random(n) < 0.95, "tool_calls", "stop"))
    p_length = rate("finish_reason", family.base_rate or rng.uniform(0.01, 0.025))
    finish = np.where(rng.random(n) < p_length, "length", finish)
    finish = np.where(rng.random(n) < 0.001, "content_filter", finish)
    invalid &= finish != "content_filter"

    # Calls of a trace run one after another, each retried call after its failed attempts.
    gaps = np.exp(rng.normal(math.log(600.0), 0.8, n)) * 1000  # tool time, us
    timeout = rng.random(n) < 0.3  # else a rate limit, answered at once
    failed_us = np.where(timeout, 30_000_000, 80_000) * (attempts > 0)
    backoff = np.where(attempts > 0, 1_000_000 * attempts, 0)
    duration = (latency * 1000).astype(np.int64)
    busy = gaps.astype(np.int64) + failed_us * attempts + backoff + duration
    # Per-trace running offsets: cumulative busy time since the trace started.
    trace_first = np.cumsum(per_trace) - per_trace
    running = np.cumsum(busy)
    running_before = np.where(trace_first > 0, running[trace_first - 1], 0)[trace_of]
    offset = running - running_before
    call_end = trace_starts[trace_of] + offset
    call_start = call_end - duration

    ids = _hex_ids(rng, n_traces, 32)
    root_spans = _hex_ids(rng, n_traces, 16)
    spans = _hex_ids(rng, n + int(attempts.sum()), 16)
    tenants = np.array([f"tenant-{i:02d}" for i in range(7)])[rng.integers(0, 7, n_traces)]
    models = np.where(on_fallback, fallback, primary)
    primary_bundle = bundle_id(primary, "", "p7", "idx-3", "")

    # Failed attempts: an event each, dated before the call they precede.
    fail_rows = np.repeat(np.arange(n), attempts)
    fail_k = (
        np.concatenate([np.arange(a) for a in attempts[attempts > 0]])
        if attempts.any()
        else (np.zeros(0, dtype=np.int64))
    )
    fail_end = (
        call_start[fail_rows]
        - backoff[fail_rows]
        - (attempts[fail_rows] - 1 - fail_k) * failed_us[fail_rows]
    )
    fail_start = fail_end - failed_us[fail_rows]

    def both(call: np.ndarray, failed: np.ndarray) -> np.ndarray:
        return np.concatenate([call, failed])

    m = fail_rows.shape[0]
    columns: dict[str, np.ndarray] = {
        "trace_id": np.array(ids, dtype=object)[both(trace_of, trace_of[fail_rows])],
        "span_id": np.array(spans, dtype=object),
        "parent_span_id": np.array(root_spans, dtype=object)[both(trace_of, trace_of[fail_rows])],
        "start_ts": both(call_start, fail_start),
        "end_ts": both(call_end, fail_end),
        "tenant": both(tenants[trace_of], tenants[trace_of[fail_rows]]),
        "model": both(models, models[fail_rows]),
        "input_tokens": both(input_tokens, np.zeros(m)).astype(np.int64),
        "output_tokens": both(output_tokens, np.zeros(m)).astype(np.int64),
        "output_chars": both(output_chars, np.zeros(m)).astype(np.int64),
        "latency_ms": both(latency, failed_us[fail_rows] / 1000.0),
        "ttft_ms": both(ttft, np.full(m, np.nan)),
        "retry_attempt": both(attempts, fail_k),
        "loop_depth": both(step, step[fail_rows]),
        "finish_reason": both(finish, np.full(m, "", dtype=finish.dtype)),
        "validation_failed": both(invalid, np.zeros(m, dtype=bool)),
        "error_type": both(
            np.full(n, "", dtype=object),
            np.where(timeout[fail_rows], "APITimeoutError", "RateLimitError").astype(object),
        ),
        "fallback": both(on_fallback, on_fallback[fail_rows]),
        "provider": np.full(n + m, provider, dtype=object),
        "slowdown": both(slowdown, slowdown[fail_rows]),
    }
    bundle_of = {mod: bundle_id(mod, "", "p7", "idx-3", "") for mod in (primary, fallback)}
    columns["bundle_id"] = np.array([bundle_of[mod] for mod in columns["model"]], dtype=object)
    order = np.argsort(columns["end_ts"], kind="stable")
    columns = {k: v[order] for k, v in columns.items()}
    return Workflow(
        name=name,
        family=family,
        columns=columns,
        change_ts=change_ts,
        end_ts=end_ts,
        primary_bundle=primary_bundle,
        params={
            "sigma": sigma,
            "phi": phi,
            "trace_sd": trace_sd,
            "df": df,
            "fallback_share": fallback_share,
            "mean_calls": mean_calls,
        },
    )


def day_of(seed: int, calls: int, controls: int, per_family: int) -> Iterator[Workflow]:
    """One seed's workflows in the bench's order: ``controls`` stationary ones and
    ``per_family`` of each shifted family, shuffled, drawn one after another from the seed."""
    rng = np.random.default_rng(seed)
    plan: list[Family] = []
    for family in FAMILIES:
        plan.extend([family] * (controls if family.shift.kind == "none" else per_family))
    for index, pick in enumerate(rng.permutation(len(plan))):
        yield generate(rng, workflow_name(index, plan[pick], seed), plan[pick], calls)


def workflow_name(index: int, family: Family, seed: int) -> str:
    base = _WORKFLOW_NAMES[index % len(_WORKFLOW_NAMES)]
    return f"{base}-{seed % 1000:03d}-{index:02d}"


def event_lines(workflows: list[Workflow]) -> list[str]:
    """Every workflow's events as ``driftline normalize`` NDJSON lines, interleaved in the
    order an exporter would ship them (end time plus up to 5 s of batching)."""
    rows: list[tuple[int, int, int]] = []
    for w_index, w in enumerate(workflows):
        ship = w.columns["end_ts"] + np.random.default_rng(w_index).integers(
            0, 5_000_000, w.n_events
        )
        rows.extend(zip(ship.tolist(), [w_index] * w.n_events, range(w.n_events), strict=True))
    rows.sort()
    lines = []
    for _, w_index, i in rows:
        lines.append(_line(workflows[w_index], i))
    return lines


def _line(w: Workflow, i: int) -> str:
    c = w.columns
    error = str(c["error_type"][i])
    ttft = c["ttft_ms"][i]
    model = str(c["model"][i])
    fields = [
        f'"trace_id":"{c["trace_id"][i]}"',
        f'"span_id":"{c["span_id"][i]}"',
        f'"parent_span_id":"{c["parent_span_id"][i]}"',
        f'"start_ts":"{micros_to_iso(int(c["start_ts"][i]))}"',
        f'"end_ts":"{micros_to_iso(int(c["end_ts"][i]))}"',
        f'"service":"{w.name.rsplit("-", 2)[0]}-svc"',
        '"environment":"prod"',
        f'"workflow":"{w.name}"',
        f'"agent":"{"executor" if c["loop_depth"][i] else "planner"}"',
        f'"tenant":"{c["tenant"][i]}"',
        '"operation":"chat"',
        f'"provider":"{c["provider"][i]}"',
        f'"request_model":"{model}"',
        f'"response_model":"{model}"',
        '"prompt_version":"p7"',
        '"retrieval_index_version":"idx-3"',
        f'"bundle_id":"{c["bundle_id"][i]}"',
        f'"input_tokens":{int(c["input_tokens"][i])}',
        f'"output_tokens":{int(c["output_tokens"][i])}',
        f'"latency_ms":{float(c["latency_ms"][i]):.3f}',
        f'"ttft_ms":{"null" if np.isnan(ttft) else f"{float(ttft):.3f}"}',
        f'"retry_attempt":{int(c["retry_attempt"][i])}',
        f'"loop_depth":{int(c["loop_depth"][i])}',
        f'"tool_calls":{1 if c["finish_reason"][i] == "tool_calls" else 0}',
        f'"finish_reason":"{c["finish_reason"][i]}"',
        f'"output_chars":{"null" if error else int(c["output_chars"][i])}',
        f'"validation_failed":{"true" if c["validation_failed"][i] else "false"}',
        f'"error_type":"{error}"',
        f'"status":"{"error" if error else "ok"}"',
    ]
    return "{" + ",".join(fields) + "}"
