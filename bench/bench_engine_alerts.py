"""Cost of the engine alerts in the worker, against the feed's own work on the same points.

Engines report KV usage, requests waiting and the preemption counter every ``--scrape-s``
seconds of report time for ``--minutes``; a quarter of the engines spend the middle third
saturated (their alerts open and resolve). Measured, interleaved in the same run:

  (a) baseline: ``EngineAttribution.add`` of the rows, one scrape round at a time (what every
      worker's feed does with every point already);
  (b) the same, then ``streams.engine_alerts.judge`` and the snapshots of the engines it
      changed after each round, as the worker's timer does, with this worker owning every
      engine (the worst case: one worker);

and prints report points per second for each (best of the repeats), the ratio b/a and the
transitions made.

    python bench/bench_engine_alerts.py [--engines 200] [--minutes 30] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from driftline.config import AlertSettings, EngineSettings
from driftline.schemas import engine_metrics as em
from driftline.streams.engine_alerts import judge
from driftline.streams.engine_attribution import EngineAttribution
from driftline.streams.engine_metrics import EngineMetricRows
from driftline.streams.monitor.engine_conditions import EngineConditions

PARTITIONS = 4
S = 1_000_000_000


def rounds(engines: int, minutes: int, scrape_s: int) -> list[EngineMetricRows]:
    """One rows object per scrape round (every engine once)."""
    steps = minutes * 60 // scrape_s
    out = []
    for step in range(steps):
        rows = EngineMetricRows()
        t = 1_800_000_000 * S + step * scrape_s * S
        saturated_now = steps // 3 <= step < 2 * steps // 3
        for i in range(engines):
            kv = 0.97 if saturated_now and i % 4 == 0 else 0.3 + 0.2 * ((i * 7 + step) % 5) / 5
            for metric, value in (
                (em.KV_CACHE_USAGE, kv),
                (em.REQUESTS_WAITING, float((i + step) % 7)),
                (em.PREEMPTIONS, float(step // 10)),
            ):
                rows.time_ns.append(t)
                rows.engine.append("vllm")
                rows.model.append(f"org/model-{i % 10}")
                rows.instance.append(f"vllm-{i}.internal:8000")
                rows.metric.append(metric)
                rows.value.append(value)
        out.append(rows)
    return out


def run(data: list[EngineMetricRows], with_alerts: bool) -> tuple[float, int]:
    book = EngineAttribution(staleness_s=60, horizon_s=900)
    watch = EngineConditions(EngineSettings(), AlertSettings())
    owned = set(range(PARTITIONS))
    transitions = 0
    began = time.perf_counter()
    for rows in data:
        book.add(rows)
        if with_alerts:
            transitions += len(judge(watch, book, owned, PARTITIONS))
            for engine in watch.dirty():  # the checkpoint the worker writes after each check
                watch.snapshot(engine)
    return time.perf_counter() - began, transitions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--engines", type=int, default=200)
    parser.add_argument("--minutes", type=int, default=30)
    parser.add_argument("--scrape-s", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    data = rounds(args.engines, args.minutes, args.scrape_s)
    points = sum(len(r.value) for r in data)
    best = {False: float("inf"), True: float("inf")}
    transitions = 0
    for _ in range(args.repeats):
        for with_alerts in (False, True):
            seconds, made = run(data, with_alerts)
            best[with_alerts] = min(best[with_alerts], seconds)
            transitions = max(transitions, made)
    base, alerts = points / best[False], points / best[True]
    print(
        f"{args.engines} engines, {len(data)} scrape rounds, {points:,} points, "
        f"{transitions} transitions"
    )
    print(f"(a) feed book only        {base:12,.0f} points/s")
    print(f"(b) book + engine alerts  {alerts:12,.0f} points/s  (ratio b/a {alerts / base:.2f})")


if __name__ == "__main__":
    main()
