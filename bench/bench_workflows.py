"""Whole workflows through ``streams.monitor.Monitor``: detections per metric, cross-metric alarms.

Each workflow is 30,000 calls (5 per second of event time, in traces of 1..8 calls
that share their context) with every metric the monitor watches, drawn from the
structures of ``bench/families.py`` (AR(1), trace clusters, slow cycles, outliers, low
base rates of retries, validation failures and ``length`` finishes). One signal
changes at call 10,000 (or none does); the monitor runs with its default settings on
batches of 200 calls. Counted from its transitions: drift alerts *opened* per metric
(not updates or resolves: the lifecycle is not what this measures), the delay of the
first open on the changed metric, and opens on metrics the change does not touch
(cross-metric false alarms). Output tokens also drive output length and latency
(a longer answer takes longer): those two are reported as related, not as false.

Run: ``.venv/bin/python bench/bench_workflows.py`` (about a minute); ``--seed``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
from families import Change, bernoulli, continuous, finish_mix, poisson

from driftline.config import Settings
from driftline.schemas.event import EVENT_FIELDS, from_wire
from driftline.streams.monitor import Monitor

N = 30_000
CHANGE_AT = 10_000
STEP_US = 200_000  # 5 calls per second
T0 = 1_750_000_000_000_000
BATCH = 200
RELATED = {"output_tokens": {"output_length", "latency"}}


@dataclass(frozen=True)
class Workflow:
    name: str
    metric: str | None  # the metric that changes
    change: Change


FAMILIES = (
    Workflow("stationary", None, Change("none")),
    Workflow("retries 2%->10%", "retries", Change("rate", 5.0)),
    Workflow("validation 1%->5%", "validation_failure", Change("rate", 5.0)),
    Workflow("output tokens x1.2", "output_tokens", Change("level", 1.2)),
    Workflow("finish length x3", "finish_reason", Change("mix", 3.0)),
)


def _raw(
    rng: np.random.Generator, noise: str, change: Change | None, traces: np.ndarray
) -> np.ndarray:
    """A continuous signal whose clusters are the workflow's traces."""
    at, ch = (CHANGE_AT, change) if change is not None else (0, Change("none"))
    return np.expm1(continuous(rng, N, noise, at, ch, [traces]))


def workflow_events(family: Workflow, seed: int, name: str) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)

    def changed(metric: str) -> Change | None:
        return family.change if family.metric == metric else None

    noise = ("mixed", "ar1", "clustered", "cycle", "outliers")
    trace_of = np.repeat(np.arange(N), rng.integers(1, 9, N))[:N]
    input_tokens = _raw(rng, str(rng.choice(noise)), None, trace_of)
    output_tokens = _raw(rng, str(rng.choice(noise)), changed("output_tokens"), trace_of)
    chars = output_tokens * 4.0 * np.exp(rng.normal(0.0, 0.1, N))
    ttft = _raw(rng, str(rng.choice(noise)), None, trace_of) / 4.0
    latency = ttft + output_tokens * 20.0 * np.exp(rng.normal(0.0, 0.2, N))
    kv = 1.0 / (1.0 + np.exp(-rng.normal(0.0, 0.5, N)))
    retry_change = changed("retries") or Change("none")
    retries = poisson(rng, N, CHANGE_AT, retry_change, base=0.02)
    valid_change = changed("validation_failure") or Change("none")
    invalid = bernoulli(rng, N, CHANGE_AT, valid_change, base=0.01)
    finish = finish_mix(rng, N, CHANGE_AT, changed("finish_reason") or Change("none"))
    events = []
    for i in range(N):
        e = from_wire({}, EVENT_FIELDS)
        ts = T0 + i * STEP_US
        e.update(
            trace_id=f"{name}-t{trace_of[i]}",
            span_id=f"s{i}",
            start_ts=ts - int(latency[i] * 1000),
            end_ts=ts,
            workflow=name,
            bundle_id="b1",
            operation="chat",
            request_model="gpt-4o",
            response_model="gpt-4o",
            input_tokens=int(input_tokens[i]),
            output_tokens=int(output_tokens[i]),
            output_chars=int(chars[i]),
            ttft_ms=float(ttft[i]),
            latency_ms=float(latency[i]),
            kv_cache_usage=float(kv[i]),
            retry_attempt=int(retries[i]),
            validation_failed=bool(invalid[i]),
            finish_reason=finish[i],
        )
        events.append(e)
    return events


def opens(transitions: list[dict[str, Any]]) -> list[tuple[str, int]]:
    """(metric, call index) of every drift alert opened."""
    out = []
    for t in transitions:
        if t.get("transition") != "open" or not str(t["dedup_key"]).startswith("drift/"):
            continue
        metric = str(t["dedup_key"]).split("/")[2]
        out.append((metric, (int(t["event_ts"]) - T0) // STEP_US))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--workflows", type=int, default=3, help="workflows per family")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    seeds = np.random.SeedSequence(args.seed).generate_state(len(FAMILIES) * args.workflows)
    print(
        f"# seed {args.seed}; {args.workflows} workflows of {N:,} calls per family, change at "
        f"call {CHANGE_AT:,}; monitor defaults; counted: drift alerts opened"
    )
    print(f"{'family':20s} {'found':>5s} {'delays':>18s} {'false opens (metric: n)':s}")
    total_false, stationary_calls = 0, 0
    for f_i, family in enumerate(FAMILIES):
        found, delays, false = 0, [], Counter[str]()
        related = Counter[str]()
        for w in range(args.workflows):
            name = f"wf{f_i}-{w}"
            events = workflow_events(family, int(seeds[f_i * args.workflows + w]), name)
            monitor = Monitor(Settings())
            transitions = []
            for start in range(0, N, BATCH):
                transitions.extend(monitor.process(events[start : start + BATCH], []))
            hits = opens(transitions)
            target = [i for m, i in hits if m == family.metric and i >= CHANGE_AT]
            if target:
                found += 1
                delays.append(min(target) - CHANGE_AT)
            for m, i in hits:
                if m == family.metric and i >= CHANGE_AT:
                    continue
                if family.metric in RELATED and m in RELATED[family.metric] and i >= CHANGE_AT:
                    related[m] += 1
                else:
                    false[m] += 1
            stationary_calls += N if family.metric is None else CHANGE_AT
        total_false += sum(false.values())
        shown = ", ".join(f"{m}: {n}" for m, n in sorted(false.items())) or "none"
        if related:
            shown += "; related: " + ", ".join(f"{m}: {n}" for m, n in sorted(related.items()))
        wanted = "-" if family.metric is None else f"{found}/{args.workflows}"
        print(f"{family.name:20s} {wanted:>5s} {delays!s:>18s} {shown}")
    per_million = total_false / stationary_calls * 1e6 if stationary_calls else math.nan
    print(
        f"# false opens: {total_false} in {stationary_calls:,} calls before a change or "
        f"unrelated to it ({per_million:.1f} per 1M workflow calls, all nine metrics)"
    )
    print(f"# total {time.perf_counter() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
