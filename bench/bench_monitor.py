"""Monitor and trace-close CPU against an earlier revision of the same code, in one process.

The baseline is the code of ``--baseline-rev`` (``streams/monitor/`` and
``streams/traces.py`` read from git into a temporary package), imported beside the
working tree's; both run the same records, batch by batch in alternation (old then new,
new then old), so a machine shared with other work slows both alike. Reported per
workload: events/s of each (best of ``--repeats``) and the ratio new/old. The two must
also agree exactly: every alert transition and every trace close is compared, and the
bench fails when one differs.

Workloads:

- ``pipeline``: what ``bench/bench_pipeline.py`` sends (``realistic_message``: agent
  traces of three workflows, mixed conventions), normalized, assembled, priced and
  grouped by workflow per message as the worker's monitor agent gets them; default
  settings;
- ``simulated``: the simulator's traffic with every incident kind (ground truth, 4
  workflows), in event-time batches of 500 with their traces, under the demo's detector
  settings, allowed models and budgets;
- ``steady``: ``bench/bench_detector_speed.py``'s monitor end to end (one workflow, one
  bundle, batches of 500 after its warm-up);
- ``trace close``: :class:`TraceAssembler` closing the ``pipeline`` messages' traces.

    .venv/bin/python bench/bench_monitor.py [--baseline-rev REV] [--repeats 3] [--quick]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import copy
import gc
import importlib
import io
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from bench_detector_speed import events_for  # noqa: E402

from driftline.config import AlertSettings, DetectorSettings, Settings  # noqa: E402
from driftline.demo.config import allowed_models  # noqa: E402
from driftline.simulator import (  # noqa: E402
    GroundTruth,
    Simulator,
    SimulatorConfig,
    parse_incident,
)
from driftline.streams import monitor as new_monitor  # noqa: E402
from driftline.streams import traces as new_traces  # noqa: E402
from driftline.streams.monitor.hits import event_time  # noqa: E402
from driftline.streams.normalize import normalize_message  # noqa: E402
from driftline.streams.pricing import PriceBook  # noqa: E402
from tests.utils.otlp_factory import realistic_message  # noqa: E402

# The last revision before the columnar monitor and the cached trace walks.
BASELINE_REV = "8c0b83d"
# Whether the two monitors' snapshots must be the same too (--transitions-only: not).
COMPARE_STATE = True
INCIDENTS = (
    "retry-storm@40=0.4",
    "canary@20",
    "kv-pressure@30",
    "output-length@50:rag-search",
    "unapproved-model@60:agent-planner",
    "cost-runaway@70:agent-planner",
    "token-drift@10:support-chat",
)
Batch = tuple[list[dict[str, Any]], list[dict[str, Any]]]


def baseline_modules(rev: str, into: Path) -> tuple[ModuleType, ModuleType]:
    """``rev``'s monitor package and trace module, importable beside the working tree's."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "streams/monitor", "streams/traces.py"],
        check=True,
        capture_output=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    (into / "streams" / "monitor").rename(into / "_baseline_monitor")
    (into / "streams" / "traces.py").rename(into / "_baseline_traces.py")
    for file in [*(into / "_baseline_monitor").glob("*.py"), into / "_baseline_traces.py"]:
        text = file.read_text().replace("driftline.streams.monitor", "_baseline_monitor")
        file.write_text(text)
    sys.path.insert(0, str(into))
    return importlib.import_module("_baseline_monitor"), importlib.import_module("_baseline_traces")


def pipeline_batches(messages: int) -> tuple[list[Batch], list[Batch]]:
    """(normalized (events, spans) per message, monitor input per message and workflow)."""
    normalized: list[Batch] = []
    grouped: list[Batch] = []
    book = PriceBook(overrides=None)
    for i in range(messages):
        batch = normalize_message(realistic_message(1000, seed=1000 + i).SerializeToString())
        normalized.append((copy.deepcopy(batch.events), batch.spans))
        assembler = new_traces.TraceAssembler(grace_s=5, timeout_s=60, max_open_traces=100_000)
        assembler.add(batch.events, batch.spans, now_s=0.0)
        closed = assembler.flush()
        book.apply(closed.events)
        groups: dict[str, Batch] = {}
        for event in closed.events:
            groups.setdefault(event["workflow"], ([], []))[0].append(event)
        for trace in closed.traces:
            groups.setdefault(trace["workflow"], ([], []))[1].append(trace)
        grouped.extend(groups[w] for w in sorted(groups))
    return normalized, grouped


def simulated_batches(duration_s: float, size: int = 500) -> list[Batch]:
    config = SimulatorConfig(
        rate=20,
        duration_s=duration_s,
        seed=11,
        clock="simulated",
        start=datetime(2026, 3, 1, tzinfo=UTC),
        incidents=tuple(parse_incident(spec) for spec in INCIDENTS),
    )
    truth = GroundTruth()
    Simulator(config).run([], truth)
    assembler = new_traces.TraceAssembler(grace_s=5, timeout_s=60, max_open_traces=1_000_000)
    assembler.add(copy.deepcopy(truth.events), [], now_s=0.0)
    traces = assembler.flush().traces
    ordered = sorted(truth.events, key=lambda e: (event_time(e), e["trace_id"], e["span_id"]))
    pending = sorted(traces, key=lambda t: (event_time(t), t["trace_id"]))
    out: list[Batch] = []
    t = 0
    for start in range(0, len(ordered), size):
        part = ordered[start : start + size]
        stop = t
        while stop < len(pending) and event_time(pending[stop]) <= event_time(part[-1]):
            stop += 1
        out.append((part, pending[t:stop]))
        t = stop
    return out


def demo_settings() -> Settings:
    allowed = allowed_models()
    workflows: dict[str, Any] = {name: {"allowed_models": m} for name, m in allowed.items()}
    workflows["agent-planner"]["budgets"] = {
        "cost_usd_per_window": 20.0,
        "window_s": 120,
        "monthly_cost_usd": 20_000.0,
        "max_loop_depth": 6,
        "max_amplification": 12.0,
    }
    workflows["rag-search"]["budgets"] = {"max_retries_per_request": 2}
    return Settings(
        detectors=DetectorSettings(
            warmup_events=250,
            window_events=150,
            max_bundles_per_workflow=8,
            canary_active_s=60,
            settle_s=40,
        ),
        alerts=AlertSettings(hold_down_s=20.0),
        workflows=workflows,
    )


def race_monitors(
    old: ModuleType, settings: Settings, batches: list[Batch], warm: int = 0
) -> tuple[float, float, int]:
    """CPU seconds of the old and the new monitor over ``batches`` (after ``warm`` of them,
    fed to both untimed), alternating which goes first; their transitions must agree."""
    monitors = [old.Monitor(settings), new_monitor.Monitor(settings)]
    spent = [0.0, 0.0]
    transitions = 0
    clock = time.process_time
    for i, (events, traces) in enumerate(batches):
        outs: list[Any] = [None, None]
        for k in (0, 1) if i % 2 == 0 else (1, 0):
            start = clock()
            outs[k] = monitors[k].process(events, traces)
            spent[k] += clock() - start if i >= warm else 0.0
        if repr(outs[0]) != repr(outs[1]):
            raise SystemExit(f"the monitors disagree at batch {i}: not the same transitions")
        transitions += len(outs[1])
    for workflow in monitors[0].workflows():
        if COMPARE_STATE and monitors[0].snapshot(workflow) != monitors[1].snapshot(workflow):
            raise SystemExit(f"the monitors disagree on the state of {workflow!r}")
    return spent[0], spent[1], transitions


def race_traces(old: ModuleType, normalized: list[Batch]) -> tuple[float, float, int]:
    """CPU seconds of trace close (``close_due``) in the old and the new assembler."""
    assemblers = [
        old.TraceAssembler(grace_s=5, timeout_s=60, max_open_traces=100_000),
        new_traces.TraceAssembler(grace_s=5, timeout_s=60, max_open_traces=100_000),
    ]
    spent = [0.0, 0.0]
    closed = 0
    for i, (events, spans) in enumerate(normalized):
        outs: list[Any] = [None, None]
        for k in (0, 1) if i % 2 == 0 else (1, 0):
            assemblers[k].add(copy.deepcopy(events), spans, now_s=float(i))
            start = time.process_time()
            outs[k] = assemblers[k].close_due(now_s=float(i) + 6.0)
            spent[k] += time.process_time() - start
        if repr((outs[0].events, outs[0].traces)) != repr((outs[1].events, outs[1].traces)):
            raise SystemExit(f"the assemblers disagree at message {i}")
        closed += len(outs[1].traces)
    return spent[0], spent[1], closed


def best(repeats: int, run: Callable[[], tuple[float, float, int]]) -> tuple[float, float, int]:
    results = []
    for _ in range(repeats):
        gc.collect()
        results.append(run())
    return min(r[0] for r in results), min(r[1] for r in results), results[0][2]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline-rev", default=BASELINE_REV)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="smaller workloads")
    ap.add_argument(
        "--transitions-only",
        action="store_true",
        help="compare transitions, not snapshots (the baseline keeps less state)",
    )
    args = ap.parse_args(argv)
    global COMPARE_STATE
    COMPARE_STATE = not args.transitions_only
    messages, duration = (20, 120.0) if args.quick else (60, 300.0)
    with tempfile.TemporaryDirectory() as tmp:
        old_monitor, old_traces = baseline_modules(args.baseline_rev, Path(tmp))
        normalized, grouped = pipeline_batches(messages)
        simulated = simulated_batches(duration)
        steady = events_for("warm", 3_000, __import__("numpy").random.default_rng(0))
        steady_batches: list[Batch] = [(steady[0:250], []), (steady[250:500], [])]
        steady_batches += [(steady[s : s + 500], []) for s in range(500, len(steady), 500)]
        # First calls (lazy imports, caches) are paid once here, by neither side.
        race_monitors(old_monitor, Settings(), steady_batches)
        race_monitors(old_monitor, demo_settings(), simulated[:8])
        race_traces(old_traces, normalized[:2])
        rows = [
            (
                "monitor, pipeline messages (default settings)",
                sum(len(e) for e, _ in grouped),
                best(args.repeats, lambda: race_monitors(old_monitor, Settings(), grouped)),
            ),
            (
                "monitor, simulated incidents (demo settings)",
                sum(len(e) for e, _ in simulated),
                best(args.repeats, lambda: race_monitors(old_monitor, demo_settings(), simulated)),
            ),
            (
                "monitor, steady one bundle (bench_detector_speed)",
                len(steady) - 500,
                best(
                    args.repeats,
                    lambda: race_monitors(old_monitor, Settings(), steady_batches, warm=2),
                ),
            ),
            (
                "trace close, pipeline messages",
                sum(len(s) for _, s in normalized),
                best(args.repeats, lambda: race_traces(old_traces, normalized)),
            ),
        ]
    print(f"# baseline: {args.baseline_rev} (same process, alternating); best of {args.repeats}")
    print(f"{'what':52s} {'records':>8s} {'old rec/s':>11s} {'new rec/s':>11s} {'new/old':>8s}")
    for what, n, (old_s, new_s, out) in rows:
        print(
            f"{what:52s} {n:8,d} {n / old_s:11,.0f} {n / new_s:11,.0f} "
            f"{old_s / new_s:7.2f}x   ({out:,} transitions/traces, identical)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
