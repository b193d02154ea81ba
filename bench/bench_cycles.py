"""Alerts on stationary streams with a slow cycle: what held-back blocks do for them.

Each stream is stationary on the log scale (sd 0.6) with a sine cycle of a given
amplitude and period (5,000 values: about 20 minutes at 4 calls a second). A
``MetricDetector`` at the monitor's per-metric budget runs over it in batches of 100
with the lifecycle of ``bench/bench_detectors.py`` (an alert opens at a detection and
resolves after 300 values without a detection or ``shift_holds``). Every alert here is
a false alarm. Printed per (period, amplitude): streams that alerted and alerts in all,
for the detector as it is and, in the same run, with held-back blocks turned off
(``HELD_BLOCKS = 0``: blocks dropped while a shift held never join the reference).

    .venv/bin/python bench/bench_cycles.py [--streams 6] [--values 60000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from driftline.config import DetectorSettings  # noqa: E402
from driftline.detectors import METRICS, composite  # noqa: E402
from driftline.detectors.composite import CONTINUOUS_TESTS, MetricDetector  # noqa: E402

PERIODS = (2_000, 5_000, 10_000, 20_000, 50_000)
AMPLITUDES = (0.03, 0.06, 0.09)  # log units: +-3%, +-6%, +-9% (0.05, 0.1, 0.15 sd)
BATCH = 100
HOLD_EVENTS = 300
# A workflow's budget over its nine metrics' tests, one continuous metric's share of it
# (as bench/bench_detectors.py gives it).
TESTS = sum(CONTINUOUS_TESTS if m.kind == "continuous" else 1 for m in METRICS)
ARL0 = DetectorSettings().arl0_events * TESTS / CONTINUOUS_TESTS


def cycling(seed: int, n: int, amplitude: float, period: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0.0, 2.0 * np.pi)
    cycle = amplitude * np.sin(2.0 * np.pi * np.arange(n) / period + phase)
    return 5.0 + cycle + 0.6 * rng.normal(size=n)


def alerts(values: np.ndarray) -> int:
    det = MetricDetector("continuous", warmup=500, window=500, arl0=ARL0)
    opened, is_open, quiet = 0, False, 0
    for start in range(0, values.shape[0], BATCH):
        found = det.update_many(values[start : start + BATCH])
        if found and not is_open:
            opened, is_open, quiet = opened + 1, True, 0
        elif is_open:
            quiet = 0 if (found or det.shift_holds()) else quiet + BATCH
            is_open = quiet < HOLD_EVENTS
    return opened


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=6, help="streams per cell (seeds 0..N-1)")
    ap.add_argument("--values", type=int, default=60_000, help="values per stream")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    held_blocks = composite.HELD_BLOCKS
    print(
        f"# {args.streams} stationary streams of {args.values:,} values per cell (log sd 0.6), "
        f"ARL0 {ARL0:.2g} per metric; alerts (streams that alerted): held-back blocks join / "
        "dropped (HELD_BLOCKS = 0), same streams"
    )
    print(f"{'period':>7s} " + " ".join(f"{f'+-{a:.0%}':>22s}" for a in AMPLITUDES))
    totals = [0, 0]
    for period in PERIODS:
        cells = []
        for amplitude in AMPLITUDES:
            streams = [cycling(s, args.values, amplitude, period) for s in range(args.streams)]
            counts = []
            for held in (held_blocks, 0):
                composite.HELD_BLOCKS = held
                try:
                    counts.append([alerts(x) for x in streams])
                finally:
                    composite.HELD_BLOCKS = held_blocks
            kept, dropped = (sum(c) for c in counts)
            totals[0] += kept
            totals[1] += dropped
            alerted = [sum(1 for n in c if n) for c in counts]
            cells.append(f"{kept:3d} ({alerted[0]}) / {dropped:3d} ({alerted[1]})")
        print(f"{period:7,d} " + " ".join(f"{c:>22s}" for c in cells), flush=True)
    ratio = totals[0] / totals[1] if totals[1] else float("nan")
    print(
        f"# alerts in all: {totals[0]} with held-back blocks, {totals[1]} without "
        f"(ratio {ratio:.2f}); {time.perf_counter() - t0:.0f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
