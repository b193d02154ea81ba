"""The per-workflow KV baseline on scraped engine metrics: false alarms and detection delay.

The simulator's batch-summarizer traffic (one vLLM server; each request meets the KV usage
its server reports at its start) is stripped of its KV values and joined again by
:class:`EngineAttribution` to the server's reports as a scrape would have read them: the
gauge's value at each tick of ``--intervals`` seconds (a random phase per seed), or every
request's own report (``call``). The joined events then go, in event-time batches of 500,
through two monitors with default settings: the working tree's (the KV detector takes one
observation per engine report) and ``--baseline-rev``'s (every call an observation; its
monitor read from git as ``bench/bench_monitor.py`` does).

A ``kv-pressure`` incident (``--magnitude``, from 0.4) starts at ``--incident-s``; the
traffic before it is stationary. Reported per seed, rate and interval, for each monitor:
kv_pressure drift alerts opened before the incident (false), the hours the KV detector was
armed before it (from its reference's freeze), and the delay in event-time seconds from
the incident to the first kv_pressure open after it (``open``: none opened, a false alarm
was still open when the shift began). The default incident time leaves the
working tree's detector, which needs ``warmup_events`` reports (500 x 30 s = 4.2 h at 30 s
scrapes), at least 1.8 h armed before it.

    .venv/bin/python bench/bench_kv_scrapes.py [--seeds 1 2 3] [--rates 2 0.5]
        [--intervals call 5 15 30] [--incident-s 21600] [--magnitude 0.6] [--quick]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import bisect
import copy
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from statistics import median
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from bench_monitor import baseline_modules  # noqa: E402

from driftline.config import Settings  # noqa: E402
from driftline.schemas import engine_metrics as em  # noqa: E402
from driftline.simulator import GroundTruth, Simulator, SimulatorConfig, parse_incident  # noqa: E402
from driftline.simulator.engine import SERVERS  # noqa: E402
from driftline.simulator.workflows import batch_summarizer  # noqa: E402
from driftline.streams import monitor as new_monitor  # noqa: E402
from driftline.streams.engine_attribution import EngineAttribution  # noqa: E402
from driftline.streams.engine_metrics import EngineMetricRows  # noqa: E402
from driftline.streams.monitor.hits import event_time  # noqa: E402

# The last revision before the KV detector counted engine reports.
BASELINE_REV = "5122ba6"
START = datetime(2026, 3, 1, tzinfo=UTC)
START_US = int(START.timestamp() * 1_000_000)
KV = "kv_pressure"
BATCH = 500


def simulate(seed: int, rate: float, duration_s: float, incident: str) -> list[dict[str, Any]]:
    config = SimulatorConfig(
        rate=rate,
        duration_s=duration_s,
        seed=seed,
        clock="simulated",
        start=START,
        workflows=(batch_summarizer.NAME,),
        incidents=(parse_incident(incident),),
    )
    truth = GroundTruth(price=False)
    Simulator(config).run([], truth)
    return truth.events


def scraped(events: list[dict[str, Any]], interval: str, seed: int) -> EngineMetricRows:
    """The server's KV points as ``interval`` scrapes would read them (``call``: the report
    each request's start made)."""
    reports = sorted(
        (e["start_ts"] * 1_000, e["kv_cache_usage"])
        for e in events
        if e["kv_cache_usage"] is not None
    )
    if interval == "call":
        points = reports
    else:
        step = int(float(interval) * 1e9)
        tick = reports[0][0] + (seed * 7_919_000_000) % step
        times = [t for t, _ in reports]
        points = []
        while tick <= reports[-1][0]:
            at = bisect.bisect_right(times, tick) - 1
            points.append((tick, reports[at][1]))
            tick += step
    rows = EngineMetricRows()
    model = batch_summarizer.MODEL
    for time_ns, value in points:
        rows.time_ns.append(time_ns)
        rows.engine.append("vllm")
        rows.model.append(model)
        rows.instance.append(SERVERS[model])
        rows.metric.append(em.KV_CACHE_USAGE)
        rows.value.append(value)
        rows.source_metric.append(em.VLLM_KV_CACHE_USAGE)
    return rows


def joined(events: list[dict[str, Any]], rows: EngineMetricRows) -> list[dict[str, Any]]:
    out = []
    for event in events:
        e = dict(event)
        e["attributes"] = dict(e["attributes"])
        e["kv_cache_usage"] = None
        out.append(e)
    book = EngineAttribution(staleness_s=60, horizon_s=10 * 86_400)
    book.add(rows)
    book.attribute(out)
    return sorted(out, key=lambda e: (event_time(e), e["trace_id"], e["span_id"]))


def judge(monitor: Any, events: list[dict[str, Any]], incident_us: int) -> dict[str, Any]:
    opens = []
    open_keys: set[str] = set()
    open_at_incident: bool | None = None  # known at the first transition after it
    for start in range(0, len(events), BATCH):
        for t in monitor.process(events[start : start + BATCH], []):
            if t["metric"] != KV:
                continue
            if int(t["event_ts"]) >= incident_us and open_at_incident is None:
                open_at_incident = bool(open_keys)
            if t["transition"] == "open":
                opens.append(int(t["opened_at"]))
                open_keys.add(t["dedup_key"])
            elif t["transition"] == "resolve":
                open_keys.discard(t["dedup_key"])
    state = monitor._states[batch_summarizer.NAME]  # a bench may read the monitor's state
    frozen = [b.frozen_at[KV] for b in state.bundles.values() if KV in b.frozen_at]
    armed_h = max(0.0, (incident_us - min(frozen)) / 3.6e9) if frozen else 0.0
    after = [t for t in opens if t >= incident_us]
    return {
        "false": sum(t < incident_us for t in opens),
        "armed_h": armed_h,
        "delay_s": (after[0] - incident_us) / 1e6 if after else None,
        "open_at_incident": bool(open_keys) if open_at_incident is None else open_at_incident,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--rates", type=float, nargs="+", default=[2.0, 0.5])
    ap.add_argument("--intervals", nargs="+", default=["call", "5", "15", "30"])
    ap.add_argument("--incident-s", type=float, default=21_600.0)
    ap.add_argument("--after-s", type=float, default=1_800.0)
    ap.add_argument("--magnitude", type=float, default=0.6)
    ap.add_argument("--baseline-rev", default=BASELINE_REV)
    ap.add_argument("--quick", action="store_true", help="seed 1, rate 2, 15 s scrapes only")
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.rates, args.intervals = [1], [2.0], ["15"]
    with tempfile.TemporaryDirectory() as tmp:
        old_monitor, _ = baseline_modules(args.baseline_rev, Path(tmp))
        settings = Settings()
        incident = f"kv-pressure@{args.incident_s:g}={args.magnitude:g}"
        incident_us = START_US + int(args.incident_s * 1e6)
        print(
            f"{incident}, {args.incident_s + args.after_s:g} s of traffic, default detectors;"
            f" before = {args.baseline_rev}, after = working tree"
        )
        print(
            f"{'seed':>4} {'rate':>4} {'scrape':>6} {'calls':>7} {'reports':>7}"
            f" | {'false':>5} {'armed h':>7} {'delay s':>7} | {'false':>5} {'armed h':>7}"
            f" {'delay s':>7} | {'s':>5}"
        )
        totals: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for rate in args.rates:
            for seed in args.seeds:
                events = simulate(seed, rate, args.incident_s + args.after_s, incident)
                calls = sum(e["kv_cache_usage"] is not None for e in events)
                for interval in args.intervals:
                    began = time.perf_counter()
                    rows = scraped(events, interval, seed)
                    data = joined(events, rows)
                    before = judge(old_monitor.Monitor(settings), copy.deepcopy(data), incident_us)
                    after = judge(new_monitor.Monitor(settings), data, incident_us)
                    totals.setdefault((f"{rate:g}", interval), []).append(
                        {"before": before, "after": after}
                    )
                    print(
                        f"{seed:>4} {rate:>4g} {interval:>6} {calls:>7} {len(rows):>7}"
                        f" | {_row(before)} | {_row(after)} | {time.perf_counter() - began:>5.0f}"
                    )
        print("\nper rate and scrape interval, over the seeds: false alarms (total), median delay")
        for (rate, interval), runs in totals.items():
            cells = []
            for side in ("before", "after"):
                delays = [r[side]["delay_s"] for r in runs if r[side]["delay_s"] is not None]
                false = sum(r[side]["false"] for r in runs)
                late = f"{median(delays):.0f} s" if delays else "-"
                held = sum(r[side]["open_at_incident"] for r in runs)
                missed = len(runs) - len(delays) - held
                cells.append(
                    f"{side}: {false} false, delay {late}, already open {held}, missed {missed}"
                )
            print(f"rate {rate}/s, scrape {interval}: " + "; ".join(cells))
    return 0


def _row(result: dict[str, Any]) -> str:
    delay = "-" if result["delay_s"] is None else f"{result['delay_s']:.0f}"
    if result["delay_s"] is None and result["open_at_incident"]:
        delay = "open"  # a false alarm was still open when the shift began
    return f"{result['false']:>5} {result['armed_h']:>7.2f} {delay:>7}"


if __name__ == "__main__":
    raise SystemExit(main())
