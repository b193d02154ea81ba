"""False alarms on stationary streams with a strong daily cycle (load, tenant mix by time zone).

Production metrics cycle with the time of day: latency rises with load at peak hours, and a
workflow serving tenants in several time zones sees its token counts follow the mix. Such
a stream is stationary from one day to the next, and an alarm on it is a false one. The
families of ``bench/bench_detectors.py`` hold slow cycles of +-2..5% of the level only;
this bench measures stronger ones apart, so those tables stay as they are, and beside the
standard alternatives (``bench/bench_cycles.py`` looks at driftline's own mechanisms on
+-3..9% cycles).

Each stream: a lognormal level (median 100..2,000, log sd 0.4..1.0) whose log moves by
``A`` x sin(2 pi i / period), ``A`` = 0.02 .. 0.20 (+-2% .. +-20% of the level), the period
20,000 or 80,000 events (a day at about 0.25 or 1 call per second), iid or AR(1) noise;
three periods or 200,000 events, whichever is longer. driftline runs as
``bench/bench_detectors.py`` runs it (the monitor's settings and alert lifecycle); river's
ADWIN and PageHinkley run at the parameters ``bench_detectors.py`` tuned on its own
continuous controls (``--adwin-delta``, ``--ph-threshold``; the defaults are what
``bench_detectors.py --groups continuous --seed 2026`` printed on this code). Those three
see values only. The last two columns put ``--monitor-streams`` of each row's streams per
noise through the monitor as latency, a period being a day of event time: drift alerts a
day on days 1-2 and from day 3 on (once two days show the same pattern, the monitor
corrects by hour of day: ``detectors/seasonal.py``).

    .venv/bin/python bench/bench_daily_cycles.py [--seed S] [--streams N]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
from river import drift

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_detectors import run_driftline, run_river

from driftline.config import DetectorSettings, Settings
from driftline.detectors.seasonal import DAY_US
from driftline.schemas.event import EVENT_FIELDS, from_wire
from driftline.streams.monitor import Monitor

AMPLITUDES = (0.02, 0.05, 0.10, 0.20)
PERIODS = (20_000, 80_000)
NOISES = ("iid", "ar1")


def daily_stream(rng: np.random.Generator, amplitude: float, period: int, noise: str) -> np.ndarray:
    """``log1p`` of a lognormal signal in whole units, its level on a daily cycle."""
    n = max(3 * period, 200_000)
    mu = math.log(rng.uniform(100, 2000))
    sd = rng.uniform(0.4, 1.0)
    e = rng.normal(size=n)
    if noise == "ar1":
        phi = rng.uniform(0.2, 0.5)
        for i in range(1, n):  # a few hundred thousand steps: fast enough here
            e[i] = phi * e[i - 1] + math.sqrt(1 - phi * phi) * e[i]
    phase = rng.uniform(0, 2 * math.pi)
    y = mu + amplitude * np.sin(2 * math.pi * np.arange(n) / period + phase) + sd * e
    return np.log1p(np.round(np.exp(y)))


def monitor_alerts(values: np.ndarray, period: int) -> tuple[float, float]:
    """Drift alerts a day on ``values`` through the monitor (latency only, default
    settings), a period being a day of event time: days 1-2, and from day 3 on (the
    monitor corrects by hour of day once two days show the same pattern)."""
    every_us = DAY_US // period
    monitor = Monitor(Settings(detectors=DetectorSettings(enabled_metrics=["latency"])))
    latency = np.expm1(values)
    start = 1_790_000_000 * 1_000_000
    opens: list[int] = []
    per_minute = max(1, 60_000_000 // every_us)
    for lo in range(0, values.shape[0], per_minute):
        calls = []
        for i in range(lo, min(lo + per_minute, values.shape[0])):
            e = from_wire({}, EVENT_FIELDS)
            e.update(
                trace_id=f"t{i}",
                span_id=f"s{i}",
                workflow="daily",
                bundle_id="b",
                start_ts=start + i * every_us - 1000,
                end_ts=start + i * every_us,
                latency_ms=float(latency[i]),
            )
            calls.append(e)
        opens += [
            (int(t["event_ts"]) - start) // DAY_US
            for t in monitor.process(calls, [])
            if t["transition"] == "open" and t["kind"] == "drift"
        ]
    days = values.shape[0] / period
    early = sum(1 for d in opens if d < 2) / min(days, 2.0)
    late = sum(1 for d in opens if d >= 2) / max(days - 2.0, 1e-9)
    return early, late


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--streams", type=int, default=3, help="streams per amplitude, period, noise")
    ap.add_argument("--adwin-delta", type=float, default=3.16e-13)
    ap.add_argument("--ph-threshold", type=float, default=160.0)
    ap.add_argument(
        "--monitor-streams",
        type=int,
        default=1,
        help="of each row's streams per noise, how many also go through the monitor",
    )
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    seeds = iter(np.random.SeedSequence(args.seed).spawn(10_000))
    detectors = {
        "ADWIN": lambda: drift.ADWIN(delta=args.adwin_delta),
        "PageHinkley": lambda: drift.PageHinkley(
            min_instances=30, delta=0.1, threshold=args.ph_threshold, alpha=1.0
        ),
    }
    print(
        f"# seed {args.seed}; {args.streams} streams per row and noise ({', '.join(NOISES)}); "
        f"false alarms per 1M stationary events; ADWIN delta {args.adwin_delta:.3g}, "
        f"PageHinkley threshold {args.ph_threshold:g}"
    )
    print(
        f"{'cycle':>6s} {'period':>7s} {'events':>10s} {'driftline':>9s} {'alerts':>6s} "
        f"{'streams':>7s} {'ADWIN':>7s} {'PageHinkley':>11s} "
        f"{'monitor/day d1-2':>16s} {'from d3':>7s}"
    )
    for period in PERIODS:
        for amplitude in AMPLITUDES:
            events = 0
            ours = opens = alarmed = 0
            river_alarms = dict.fromkeys(detectors, 0)
            by_day: list[tuple[float, float]] = []
            for noise in NOISES:
                for k in range(args.streams):
                    values = daily_stream(
                        np.random.default_rng(next(seeds)), amplitude, period, noise
                    )
                    events += values.shape[0]
                    run = run_driftline("continuous", values)
                    ours += len(run.alarms)
                    opens += len(run.opens)
                    alarmed += bool(run.alarms)
                    ref = values[:500]
                    z = (values - ref.mean()) / max(float(ref.std()), 1e-9)
                    for name, make in detectors.items():
                        river_alarms[name] += len(run_river(make, z))
                    if k < args.monitor_streams:
                        by_day.append(monitor_alerts(values, period))
            per = 1e6 / events
            early = np.mean([d[0] for d in by_day]) if by_day else math.nan
            late = np.mean([d[1] for d in by_day]) if by_day else math.nan
            print(
                f"{f'+-{amplitude:.0%}':>6s} {period:7,d} {events:10,d} {ours * per:9.1f} "
                f"{opens:6d} {f'{alarmed}/{2 * args.streams}':>7s} "
                f"{river_alarms['ADWIN'] * per:7.1f} {river_alarms['PageHinkley'] * per:11.1f} "
                f"{early:16.2f} {late:7.2f}",
                flush=True,
            )
    print(f"# total {time.perf_counter() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
