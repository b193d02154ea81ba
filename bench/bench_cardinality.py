"""Monitor memory and alerts under a cardinality flood, capped against uncapped.

A flood of one-off workflow names (one call each, as a misbehaving client or a hostile
one writing ``driftline.workflow`` per request would send) after ``--established``
workflows have frozen their references. Measured in the same run, on the same calls:

- uncapped (``detectors.max_workflows`` above the flood): every name is tracked;
- capped at the default (``detectors.max_workflows`` = 2,000): one-off names replace each
  other, the established workflows stay, and nothing pages but one warning if the
  established ones alone fill the cap.

Reports traced Python memory held by each monitor after the flood (tracemalloc; numpy
buffers included), the workflows tracked, and the alert transitions the flood caused,
with the ratio capped/uncapped. ``--flood 200000`` is the attack as reported (takes
minutes and several GB uncapped); the default is 20,000.
"""

from __future__ import annotations

import argparse
import gc
import time
import tracemalloc

from driftline.config import DetectorSettings, Settings
from driftline.schemas.event import EVENT_FIELDS, from_wire
from driftline.streams.monitor import Monitor

T0 = 1_700_000_000_000_000
S = 1_000_000


def call(i: int, ts: int, workflow: str) -> dict:
    e = from_wire({}, EVENT_FIELDS)
    e.update(
        trace_id=f"t{i}",
        span_id=f"s{i}",
        start_ts=ts - 1000,
        end_ts=ts,
        workflow=workflow,
        bundle_id="b1",
        input_tokens=400 + i % 17,
        output_tokens=100 + i % 13,
        latency_ms=800.0 + i % 29,
        finish_reason="stop",
        response_model="gpt-4o",
    )
    return e


def run(max_workflows: int, established: int, flood: int) -> dict[str, float]:
    settings = Settings(detectors=DetectorSettings(settle_s=0, max_workflows=max_workflows))
    warm = settings.detectors.warmup_events + 10
    gc.collect()
    tracemalloc.start()
    started = time.perf_counter()
    monitor = Monitor(settings)
    transitions = 0
    for w in range(established):
        calls = [call(i, T0 + i * S, f"app-{w}") for i in range(warm)]
        transitions += len(monitor.process(calls, []))
    flood_transitions = 0
    at = T0 + warm * S
    batch = 500
    for start in range(0, flood, batch):
        calls = [
            call(i, at + i * 1000, f"flood-{i}") for i in range(start, min(start + batch, flood))
        ]
        flood_transitions += len(monitor.process(calls, []))
    gc.collect()
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "seconds": time.perf_counter() - started,
        "mb": held / 2**20,
        "tracked": float(len(monitor.workflows())),
        "flood_transitions": float(flood_transitions),
        "established_kept": float(sum(1 for w in monitor.workflows() if w.startswith("app-"))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--established", type=int, default=20)
    parser.add_argument("--flood", type=int, default=20_000)
    args = parser.parse_args()
    cap = DetectorSettings().max_workflows
    uncapped = run(args.flood + args.established + 1, args.established, args.flood)
    capped = run(cap, args.established, args.flood)
    print(
        f"# {args.established} established workflows, then {args.flood:,} one-off names"
        f" (one call each); default cap {cap:,}"
    )
    print(f"{'':10} {'MB held':>9} {'tracked':>9} {'kept':>6} {'alerts':>7} {'seconds':>8}")
    for name, r in (("uncapped", uncapped), ("capped", capped)):
        print(
            f"{name:10} {r['mb']:9.1f} {r['tracked']:9,.0f} {r['established_kept']:6.0f}"
            f" {r['flood_transitions']:7.0f} {r['seconds']:8.1f}"
        )
    print(f"ratio capped/uncapped memory: {capped['mb'] / uncapped['mb']:.3f}")


if __name__ == "__main__":
    main()
