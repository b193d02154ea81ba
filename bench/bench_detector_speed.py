"""Detector speed in batch mode, and memory for 10k tracked workflows.

Measures, on one core (BLAS threads pinned to 1), in the same run:

- CUSUM bank updates/s in the many-workflows batch form (``detectors.cusum_bank_rows``:
  one row per workflow, the whole 6-member bank counted as one update), and
  through ``CUSUM.update_many`` on one stream; river's ADWIN and PageHinkley
  per-observation updates/s as the baseline, with the ratio;
- the full per-metric detector (``MetricDetector``: CUSUM bank, KS, EWMA, spread) on
  batches of 500;
- the monitor end to end (all nine metrics, budgets, lifecycle) in events/s;
- memory of 10k tracked workflows: one workflow is warmed up (all nine metrics
  frozen), then restored 10k times under different names into one monitor; the RSS
  growth is reported (traced bytes per workflow from a 500-workflow sample), and the
  bound with ``max_bundles_per_workflow`` bundles each, scaled by snapshot size.

Default run: about a minute. ``--quick`` shrinks the sizes.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import resource
import sys
import time
import tracemalloc

import numpy as np
from river import drift

from driftline.config import Settings
from driftline.detectors import CUSUM, MetricDetector, cusum_bank_rows
from driftline.schemas.event import EVENT_FIELDS, from_wire
from driftline.streams.monitor import Monitor

T0 = 1_700_000_000_000_000


def best_of(repeats: int, fn) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def events_for(workflow: str, n: int, rng: np.random.Generator, bundle: str = "b1") -> list[dict]:
    tokens = np.exp(rng.normal(np.log(400), 0.5, n))
    out = []
    for i, t in enumerate(tokens):
        e = from_wire({}, EVENT_FIELDS)
        e.update(
            trace_id=f"{workflow}-{bundle}-t{i}",
            span_id=f"s{i}",
            start_ts=T0 + i * 1_000_000,
            end_ts=T0 + i * 1_000_000 + 900_000,
            workflow=workflow,
            bundle_id=bundle,
            input_tokens=int(t),
            output_tokens=int(t) // 4,
            latency_ms=2.0 * t,
            ttft_ms=0.1 * t,
            kv_cache_usage=float(rng.uniform(0.2, 0.6)),
            output_chars=int(t) * 4,
            retry_attempt=int(rng.poisson(0.05)),
            validation_failed=bool(rng.random() < 0.02),
            finish_reason=str(rng.choice(["stop", "length", "tool_calls"], p=[0.9, 0.07, 0.03])),
            response_model="gpt-4o",
            cost_usd=1e-5 * t,
        )
        out.append(e)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--workflows", type=int, default=10_000)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    rows, length = (2_000, 500) if args.quick else (10_000, 1_000)

    # --- CUSUM bank, many workflows at once --------------------------------------
    det = CUSUM(warmup=500, arl0=1e6)
    det.update_many(rng.normal(size=500))
    directions, drifts = det._directions, det._drifts  # 3 shift sizes x 2 directions
    members = drifts.shape[0]
    z = rng.normal(size=(rows, length)).astype(np.float32)
    state = np.zeros((rows, members))
    thresholds = np.tile(det.thresholds, (rows, 1))
    t_rows = best_of(3, lambda: cusum_bank_rows(z, state, directions, drifts, thresholds))
    rows_rate = rows * length / t_rows

    # --- one stream, big batches --------------------------------------------------
    stream = rng.normal(size=1_000_000)
    one = CUSUM(warmup=500, arl0=1e6)
    one.update_many(stream[:500])
    t_one = best_of(3, lambda: one.update_many(stream))
    one_rate = stream.shape[0] / t_one

    # --- full metric detector (four tests), batches of 500 ---------------------------
    md = MetricDetector("continuous", 500, 500, 1e6)
    md.update_many(rng.normal(6, 0.5, 500))
    batches = rng.normal(6, 0.5, (400, 500))
    t_md = best_of(2, lambda: [md.update_many(b) for b in batches])
    md_rate = batches.size / t_md

    # --- river baselines ------------------------------------------------------------
    sample = stream[:200_000].tolist()
    river_rates = {}
    for name, make in (("ADWIN", drift.ADWIN), ("PageHinkley", drift.PageHinkley)):
        r = make()

        def feed(r=r) -> None:  # type: ignore[no-untyped-def]
            for v in sample:
                r.update(v)

        river_rates[name] = len(sample) / best_of(1, feed)

    # --- monitor end to end ------------------------------------------------------------
    monitor = Monitor(Settings())
    warm_events = events_for("warm", 3_000, rng)
    t = time.perf_counter()
    for start in range(0, 500, 250):
        monitor.process(warm_events[start : start + 250], [])
    warmup_s = time.perf_counter() - t  # includes freezing and calibrating nine metrics
    t = time.perf_counter()
    for start in range(500, len(warm_events), 500):
        monitor.process(warm_events[start : start + 500], [])
    monitor_rate = (len(warm_events) - 500) / (time.perf_counter() - t)
    snapshot = monitor.snapshot("warm")

    max_bundles = Settings().detectors.max_bundles_per_workflow
    worst = Monitor(Settings())
    for b in ("b1", "b2", "b3"):
        batch = events_for("warm", 600, rng, bundle=b)
        for start in range(0, len(batch), 300):
            worst.process(batch[start : start + 300], [])
    worst_snapshot = worst.snapshot("warm")

    # --- memory for N tracked workflows ---------------------------------------------------
    # Traced bytes on a sample (tracing inflates RSS), then RSS for the whole fleet untraced.
    sample_n = 500
    tracemalloc.start()
    probe = Monitor(Settings())
    for i in range(sample_n):
        probe.restore(f"workflow-{i:05d}", snapshot)
    traced_sample, _peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del probe
    per_wf = traced_sample / sample_n
    n = 2_000 if args.quick else args.workflows
    rss0 = rss_mb()
    fleet = Monitor(Settings())
    t = time.perf_counter()
    for i in range(n):
        fleet.restore(f"workflow-{i:05d}", snapshot)
    restore_s = time.perf_counter() - t
    rss1 = rss_mb()
    traced = per_wf * n

    print(f"# single core; CUSUM bank = {members} one-sided CUSUMs (3 shift sizes x 2 directions)")
    print(f"{'what':58s} {'rate':>14s} {'vs ADWIN':>9s} {'vs PH':>7s}")

    def line(what: str, rate: float, unit: str = "upd/s") -> None:
        a, p = rate / river_rates["ADWIN"], rate / river_rates["PageHinkley"]
        print(f"{what:58s} {rate:10,.0f} {unit} {a:8.1f}x {p:6.1f}x")

    line(f"CUSUM bank, batch over {rows:,} workflows x {length} events", rows_rate)
    line("CUSUM bank, CUSUM.update_many on one stream (1M)", one_rate)
    line("MetricDetector (4 tests: level, shape, creep, spread), x500", md_rate)
    line("river ADWIN.update, one by one", river_rates["ADWIN"])
    line("river PageHinkley.update, one by one", river_rates["PageHinkley"])
    line("Monitor.process, 9 metrics + budgets + lifecycle (steady)", monitor_rate, "ev/s ")
    print(
        f"goal >= 5,000,000 detector updates/s per core in batch mode: "
        f"{'met' if rows_rate >= 5e6 else 'NOT met'} ({rows_rate / 1e6:.1f}M/s)"
    )
    print(f"first 500 events of a workflow incl. calibration of 9 metrics: {warmup_s:.2f}s")
    print(
        f"one warmed workflow (1 bundle, 9 metrics frozen): snapshot {len(snapshot):,} B; "
        f"{max_bundles} bundles "
        f"(bound case, max_bundles_per_workflow): {len(worst_snapshot):,} B"
    )
    print(
        f"{n:,} tracked workflows: traced ~{traced / 2**20:,.0f} MiB "
        f"({per_wf / 1024:.1f} KiB each), RSS +{rss1 - rss0:,.0f} MiB; restore {restore_s:.1f}s"
    )
    scale = 10_000 / n
    bound_gib = len(worst_snapshot) / len(snapshot) * (rss1 - rss0) * scale / 2**10
    print(
        f"memory for 10k workflows (1 bundle, RSS): {(rss1 - rss0) * scale / 2**10:.2f} GiB; "
        f"bound ({max_bundles} bundles each): ~{bound_gib:.2f} GiB "
        f"(goal < 2 GB)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
