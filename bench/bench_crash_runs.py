"""Crash safety, measured: the worker SIGKILLed at random points mid-stream, N runs in a row.

Each run starts a fresh embedded stack (tansu, rotel idle, one Faust worker with chdb) and
produces ``--messages`` pre-encoded OTLP messages (``realistic_message``, distinct per run)
onto ``otlp_spans`` over the partitions at a steady pace. After ``--kills`` message indices
drawn from the run's seed, it waits a seeded 0-``--max-delay`` seconds, SIGKILLs the worker
and starts it again (``EmbeddedStack.restart_worker``: it resumes from the committed offsets
and the trace checkpoints). Once every expected event and trace is out on ``llm_events``, the
worker's group has committed all of it and nothing new arrived for a while, the stack stops
and chdb is read against the ground truth of an offline run over the same messages
(``streams.pipeline.OfflinePipeline``: normalize, price as the worker does, assemble):

1. requests: ``driftline.llm_requests`` (the deduplicated view) holds exactly the expected
   span ids, once each, with the expected tokens and cost per workflow;
2. raw duplicates: rows of ``llm_requests_raw`` beyond one per span (allowed: the view
   collapses them; reported as found, before or after background merges);
3. rollups: every per-minute rollup the dashboards read (``rollup_*_1m`` fed from
   ``llm_requests_raw``), summed per workflow, gives the expected requests, tokens and cost;
4. traces: ``driftline.llm_traces`` has one summary per expected trace id with the expected
   span and call counts (duplicates in ``llm_traces_raw`` are reported too).

Prints one row per run and the totals; exits 1 when any run is not exact (its data directory,
worker log and a ``diff.json`` of the missing and doubled ids are kept and named).

    nice -n 10 .venv/bin/python bench/bench_crash_runs.py [--runs 10] [--seed 2026]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench_pipeline import EventsReader  # noqa: E402
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition  # noqa: E402

from driftline.config import Settings, load_settings  # noqa: E402
from driftline.stack import EmbeddedStack  # noqa: E402
from driftline.store import Store, open_store  # noqa: E402
from driftline.streams import topics  # noqa: E402
from driftline.streams.kafka import consumer_config, producer_config  # noqa: E402
from driftline.streams.pipeline import OfflinePipeline  # noqa: E402
from tests.utils.otlp_factory import realistic_message  # noqa: E402

PARTITIONS = 4
DRAIN_TIMEOUT_S = 120.0
QUIET_S = 4.0  # nothing new on llm_events for this long, everything committed: drained
PAGING_ENV = ("PAGERDUTY_ROUTING_KEY", "PAGERDUTY_EVENTS_URL")
TOKEN_COLUMNS = ("input_tokens", "output_tokens")
ROLLUP_SKIP = ("rollup_engine_1m",)  # fed by engine metrics, not by requests


@dataclass
class Truth:
    """What an uninterrupted, offline run of the same messages produces."""

    span_ids: set[str]
    per_workflow: dict[str, dict[str, float]]  # requests, tokens, cost
    traces: dict[str, tuple[int, int]]  # trace id -> (span_count, llm_call_count)


@dataclass
class RunResult:
    run: int
    seed: int
    kill_points: list[int]
    restart_s: list[float] = field(default_factory=list)
    requests_exact: bool = False
    raw_duplicates: int = -1
    rollups_exact: bool = False
    traces_exact: bool = False
    trace_raw_duplicates: int = -1
    seconds: float = 0.0
    error: str = ""
    problems: list[str] = field(default_factory=list)
    kept: str = ""

    @property
    def exact(self) -> bool:
        return not self.error and self.requests_exact and self.rollups_exact and self.traces_exact


def build_messages(run_seed: int, count: int, spans: int) -> list[bytes]:
    """Distinct messages per run (the seed offsets every message's own seed)."""
    return [
        realistic_message(spans, seed=run_seed * 100_000 + i).SerializeToString()
        for i in range(count)
    ]


def ground_truth(settings: Settings, payloads: list[bytes]) -> Truth:
    pipeline = OfflinePipeline.from_settings(settings)
    for payload in payloads:
        pipeline.feed(payload, "otlp_proto")
    result = pipeline.finish()
    per_workflow: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for event in result.events:
        totals = per_workflow[event["workflow"]]
        totals["requests"] += 1
        for column in TOKEN_COLUMNS:
            totals[column] += event[column] or 0
        totals["cost_usd"] += event["cost_usd"] or 0.0
    traces = {t["trace_id"]: (t["span_count"], t["llm_call_count"]) for t in result.traces}
    span_ids = {e["span_id"] for e in result.events}
    if len(span_ids) != len(result.events):
        raise RuntimeError("the generated messages repeat a span id: pick another seed")
    return Truth(span_ids, {w: dict(v) for w, v in per_workflow.items()}, traces)


def write_config(directory: Path) -> Path:
    path = directory / "driftline.toml"
    path.write_text(
        f"""
[kafka]
partitions = {PARTITIONS}
consumer_group = "driftline-crash-{uuid.uuid4().hex[:8]}"

[collector]
grpc_port = 0
http_port = 0

[embedded]
data_dir = "{directory / "var"}"
start_timeout_s = 120

[store]
ttl_days = 3650  # the generated spans are dated 2026-01-01: keep them

[ingest]
max_past_s = 315360000  # ten years: the spans' fixed date must not be dead-lettered as stale

[worker]
metrics_port = 0  # other stacks on the machine may hold the default port
"""
    )
    return path


@dataclass
class TracesReader(EventsReader):
    """An :class:`EventsReader` that also keeps the trace ids and when a message last came."""

    trace_ids: set[str] = field(default_factory=set)
    last_message_s: float = 0.0

    def took(self, where: tuple[int, int], doc: dict[str, Any]) -> None:
        super().took(where, doc)
        self.trace_ids.update(t["trace_id"] for t in doc.get("traces", []))
        self.last_message_s = time.monotonic()


def behind(group: Consumer, topic: str, end_offsets: dict[int, int]) -> dict[int, str]:
    """Partitions of ``topic`` whose committed offset is short of ``end_offsets``."""
    wanted = [TopicPartition(topic, p) for p in end_offsets]
    done = group.committed(wanted, timeout=5)
    return {
        tp.partition: f"{tp.offset}<{end_offsets[tp.partition]}"
        for tp in done
        if tp.offset < end_offsets[tp.partition]
    }


def kill_worker(stack: EmbeddedStack) -> None:
    assert stack.worker is not None and stack.worker.pid is not None
    os.kill(stack.worker.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while stack.worker.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)


def stream_with_kills(
    stack: EmbeddedStack,
    settings: Settings,
    payloads: list[bytes],
    kills: dict[int, float],
    interval_s: float,
    result: RunResult,
) -> dict[int, int]:
    """Produce every payload, killing and restarting the worker after each kill index."""
    assert stack.endpoints is not None
    producer = Producer(producer_config(settings.kafka, stack.endpoints.bootstrap_servers))
    produced: dict[int, int] = {}

    def delivered(err: Any, message: Any) -> None:
        if err is None:
            p = message.partition()
            produced[p] = max(produced.get(p, 0), message.offset() + 1)

    for i, payload in enumerate(payloads):
        producer.produce(
            topics.OTLP_SPANS, value=payload, partition=i % PARTITIONS, on_delivery=delivered
        )
        producer.poll(0)
        time.sleep(interval_s)
        if i in kills:
            producer.flush(30)
            time.sleep(kills[i])
            kill_worker(stack)
            result.restart_s.append(round(stack.restart_worker(), 1))
    if producer.flush(120):
        raise RuntimeError("messages not acknowledged by the broker within 120 s")
    return produced


def drain(stack: EmbeddedStack, settings: Settings, truth: Truth, produced: dict[int, int]) -> None:
    """Wait until every expected event and trace is on llm_events and everything committed."""
    assert stack.endpoints is not None
    bootstrap = stack.endpoints.bootstrap_servers
    no_commit = {"enable.auto.commit": False}
    reader = TracesReader(
        Consumer(
            consumer_config(settings.kafka, f"crash-{uuid.uuid4().hex[:8]}", bootstrap, **no_commit)
        )
    )
    reader.consumer.assign(
        [TopicPartition(topics.LLM_EVENTS, p, OFFSET_BEGINNING) for p in range(PARTITIONS)]
    )
    group = Consumer(
        consumer_config(settings.kafka, settings.kafka.consumer_group, bootstrap, **no_commit)
    )
    try:
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while True:
            reader.poll()
            complete = truth.span_ids <= reader.span_ids and set(truth.traces) <= reader.trace_ids
            quiet = time.monotonic() - reader.last_message_s > QUIET_S
            lagging = {
                topics.OTLP_SPANS: behind(group, topics.OTLP_SPANS, produced),
                topics.LLM_EVENTS: behind(group, topics.LLM_EVENTS, reader.end_offsets),
            }
            if complete and quiet and not any(lagging.values()):
                return
            if time.monotonic() > deadline:
                stack.check_alive()
                raise RuntimeError(
                    f"not drained in {DRAIN_TIMEOUT_S:.0f} s: "
                    f"{len(truth.span_ids - reader.span_ids)} events and "
                    f"{len(set(truth.traces) - reader.trace_ids)} traces never on llm_events "
                    f"(this reader's errors {dict(reader.errors)}, offsets it jumped over "
                    f"{reader.skipped_offsets}); commits behind: {lagging}"
                )
    finally:
        reader.consumer.close()
        group.close()


def rows(store: Store, sql: str) -> list[dict[str, Any]]:
    return list(store.query(sql).to_pylist())


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def same_totals(got: dict[str, dict[str, float]], want: dict[str, dict[str, float]]) -> list[str]:
    """Per workflow and column, what differs (empty when exact)."""
    out = []
    for workflow in sorted(set(got) | set(want)):
        g, w = got.get(workflow, {}), want.get(workflow, {})
        for column in ("requests", *TOKEN_COLUMNS, "cost_usd"):
            if not close(float(g.get(column, 0)), float(w.get(column, 0))):
                out.append(f"{workflow}.{column}: {g.get(column, 0)} != {w.get(column, 0)}")
    return out


def totals_sql(table: str) -> str:
    return (
        f"SELECT workflow, toFloat64(sum(requests)) AS requests, "
        f"toFloat64(sum(input_tokens)) AS input_tokens, "
        f"toFloat64(sum(output_tokens)) AS output_tokens, sum(cost_usd) AS cost_usd "
        f"FROM driftline.{table} GROUP BY workflow"
    )


def by_workflow(found: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    return {r["workflow"]: {k: v for k, v in r.items() if k != "workflow"} for r in found}


def check_store(settings: Settings, truth: Truth, result: RunResult) -> dict[str, Any]:
    """Compare chdb with the ground truth; fills ``result``, returns the ids that differ."""
    store = open_store(settings.store.url, settings.store)
    diff: dict[str, Any] = {}
    try:
        view = rows(
            store,
            "SELECT span_id, workflow, input_tokens, output_tokens, cost_usd "
            "FROM driftline.llm_requests",
        )
        stored = [r["span_id"] for r in view]
        stored_set = set(stored)
        missing = sorted(truth.span_ids - stored_set)
        extra = sorted(stored_set - truth.span_ids)
        doubled = sorted(s for s, n in Counter(stored).items() if n > 1)
        got: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        for r in view:
            t = got[r["workflow"]]
            t["requests"] += 1
            for column in TOKEN_COLUMNS:
                t[column] += r[column]
            t["cost_usd"] += r["cost_usd"] or 0.0
        request_problems = same_totals(got, truth.per_workflow)
        result.requests_exact = not (missing or extra or doubled or request_problems)
        if not result.requests_exact:
            diff["requests"] = {
                "missing": missing,
                "extra": extra,
                "doubled": doubled,
                "totals": request_problems,
            }
            result.problems.append(
                f"requests: {len(missing)} missing, {len(extra)} extra, {len(doubled)} doubled"
            )

        (raw,) = rows(
            store,
            "SELECT count() AS n, uniqExact(workflow, start_ts, span_id) AS keys "
            "FROM driftline.llm_requests_raw",
        )
        result.raw_duplicates = int(raw["n"]) - int(raw["keys"])
        if result.raw_duplicates:
            diff["raw_doubled"] = [
                r["span_id"]
                for r in rows(
                    store,
                    "SELECT span_id, count() AS n FROM driftline.llm_requests_raw "
                    "GROUP BY workflow, start_ts, span_id HAVING n > 1",
                )
            ]

        rollups = [
            r["name"]
            for r in rows(
                store,
                "SELECT name FROM system.tables WHERE database = 'driftline' "
                "AND name LIKE 'rollup\\_%\\_1m' AND engine = 'AggregatingMergeTree'",
            )
            if r["name"] not in ROLLUP_SKIP
        ]
        rollup_problems = {}
        for table in rollups:
            off = same_totals(by_workflow(rows(store, totals_sql(table))), truth.per_workflow)
            if off:
                rollup_problems[table] = off
        result.rollups_exact = bool(rollups) and not rollup_problems
        if rollup_problems:
            diff["rollups"] = rollup_problems
            first = next(iter(rollup_problems.values()))
            result.problems.append(f"rollups: {len(rollup_problems)} tables off, e.g. {first[0]}")
        if not rollups:
            result.problems.append("rollups: no rollup table found")

        summaries = rows(
            store, "SELECT trace_id, span_count, llm_call_count FROM driftline.llm_traces"
        )
        seen: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for s in summaries:
            seen[s["trace_id"]].append((int(s["span_count"]), int(s["llm_call_count"])))
        t_missing = sorted(set(truth.traces) - set(seen))
        t_extra = sorted(set(seen) - set(truth.traces))
        t_doubled = sorted(t for t, v in seen.items() if len(v) > 1)
        t_wrong = sorted(
            t for t, v in seen.items() if t in truth.traces and v[-1] != truth.traces[t]
        )
        result.traces_exact = not (t_missing or t_extra or t_doubled or t_wrong)
        if not result.traces_exact:
            diff["traces"] = {
                "missing": t_missing,
                "extra": t_extra,
                "doubled": t_doubled,
                "wrong": {t: {"stored": seen[t], "expected": truth.traces[t]} for t in t_wrong},
            }
            result.problems.append(
                f"traces: {len(t_missing)} missing, {len(t_extra)} extra, "
                f"{len(t_doubled)} doubled, {len(t_wrong)} wrong counts"
            )
        (traw,) = rows(
            store, "SELECT count() AS n, uniqExact(trace_id) AS keys FROM driftline.llm_traces_raw"
        )
        result.trace_raw_duplicates = int(traw["n"]) - int(traw["keys"])
    finally:
        store.close()
    return diff


def one_run(args: argparse.Namespace, run: int, seed: int) -> RunResult:
    rng = random.Random(seed)
    kill_points = sorted(rng.sample(range(2, args.messages - 2), args.kills))
    delays = {k: round(rng.uniform(0.0, args.max_delay), 2) for k in kill_points}
    result = RunResult(run, seed, kill_points)
    directory = Path(tempfile.mkdtemp(prefix=f"driftline-crash-{seed}-"))
    config = write_config(directory)
    settings = load_settings(config)
    payloads = build_messages(seed, args.messages, args.spans_per_message)
    truth = ground_truth(settings, payloads)
    started = time.monotonic()
    stack = EmbeddedStack(settings, config_file=config)
    try:
        stack.start()
        produced = stream_with_kills(stack, settings, payloads, delays, args.interval, result)
        drain(stack, settings, truth, produced)
    except Exception as exc:  # a run that did not finish is reported, not hidden
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        stack.stop()
    diff = {} if result.error else check_store(settings, truth, result)
    result.seconds = round(time.monotonic() - started, 1)
    if result.exact and not args.keep:
        shutil.rmtree(directory, ignore_errors=True)
    else:
        (directory / "diff.json").write_text(
            json.dumps(
                {
                    "kill_points": kill_points,
                    "delays_s": delays,
                    "problems": result.problems,
                    "error": result.error,
                    **diff,
                },
                indent=1,
            )
        )
        result.kept = str(directory)
    return result


def print_row(r: RunResult) -> None:
    kills = ",".join(str(k) for k in r.kill_points)
    restarts = ",".join(f"{s:.1f}" for s in r.restart_s)
    verdict = "error: " + r.error if r.error else ("exact" if r.exact else "NOT EXACT")
    print(
        f"{r.run:>3} {r.seed:>6} {kills:>12} {restarts:>16} {yes(r.requests_exact):>8} "
        f"{r.raw_duplicates:>7} {yes(r.rollups_exact):>7} {yes(r.traces_exact):>6} "
        f"{r.trace_raw_duplicates:>8} {r.seconds:>6.0f}  {verdict}",
        flush=True,
    )
    for problem in r.problems:
        print(f"      {problem}", flush=True)
    if r.kept:
        print(f"      kept {r.kept} (diff.json, var/worker.log)", flush=True)


def yes(flag: bool) -> str:
    return "yes" if flag else "NO"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=2026, help="run i uses seed + i")
    parser.add_argument("--messages", type=int, default=80)
    parser.add_argument("--spans-per-message", type=int, default=1000)
    parser.add_argument("--kills", type=int, default=3, help="SIGKILLs per run")
    parser.add_argument("--interval", type=float, default=0.25, help="seconds between messages")
    parser.add_argument(
        "--max-delay", type=float, default=4.0, help="a kill comes 0..this s after its message"
    )
    parser.add_argument("--keep", action="store_true", help="keep every run's data directory")
    args = parser.parse_args(argv)
    if args.kills > args.messages - 4:
        parser.error("--kills must leave room among --messages")
    for name in PAGING_ENV:  # nothing pages from a benchmark
        os.environ.pop(name, None)

    print(
        f"{args.runs} runs x {args.messages} messages x {args.spans_per_message} spans, "
        f"{PARTITIONS} partitions, {args.kills} SIGKILLs per run",
        flush=True,
    )
    print(
        f"{'run':>3} {'seed':>6} {'kill@msg':>12} {'restart s':>16} {'requests':>8} "
        f"{'raw dup':>7} {'rollups':>7} {'traces':>6} {'tr dup':>8} {'secs':>6}  verdict",
        flush=True,
    )
    results = []
    for run in range(args.runs):
        results.append(one_run(args, run + 1, args.seed + run))
        print_row(results[-1])
    exact = sum(r.exact for r in results)
    counts = {
        "requests exact": sum(r.requests_exact for r in results),
        "rollups exact": sum(r.rollups_exact for r in results),
        "traces exact": sum(r.traces_exact for r in results),
        "raw request duplicates": sum(max(r.raw_duplicates, 0) for r in results),
        "raw trace duplicates": sum(max(r.trace_raw_duplicates, 0) for r in results),
        "runs that did not finish": sum(bool(r.error) for r in results),
    }
    summary = ", ".join(f"{name} {n}" for name, n in counts.items())
    print(f"runs exact: {exact}/{len(results)}; {summary}", flush=True)
    return 0 if exact == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
