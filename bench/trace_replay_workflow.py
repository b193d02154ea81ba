"""What one workflow of ``bench/bench_replay.py`` looked like to the monitor, batch by batch.

Regenerates the bench's workflows for one seed (same order, same draws), takes the one
named, and runs its events alone through :class:`streams.monitor.Monitor` in the
replay command's event-time batches (``BATCH_EVENTS``). For one metric it prints, per
batch: the workflow events so far (relative to the change), each bundle's detector
state (reference size, recent level in reference sd, the running recovery test's
statistic against its bar, whether the shift holds) and every transition of that
metric. Alone, a workflow batches differently from the bench's interleaved files; the
detectors decide the same for any batching (at each growth block's end), but the
monitor's lifecycle reads them after each batch, so a transition can move by up to a
batch: ``--batch-events`` sets the batch (smaller shows the state more finely).

Run: ``.venv/bin/python bench/trace_replay_workflow.py --seed 1 --workflow
sql-assistant-001-26 --metric output_tokens [--from -500] [--to 6000]``
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

import numpy as np
from replay_families import Workflow

from driftline.commands.replay import BATCH_EVENTS
from driftline.config import load_settings
from driftline.schemas.event import EVENT_FIELDS, from_wire
from driftline.streams.monitor import Monitor, event_time


def regenerate(
    seed: int, name: str, calls: int, controls: int, per_family: int, families: str = "replay"
) -> Workflow:
    generator = importlib.import_module(f"{families}_families")
    for w in generator.day_of(seed, calls, controls, per_family):
        if w.name == name:
            return w
    raise SystemExit(f"no workflow {name} on seed {seed}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--workflow", required=True)
    ap.add_argument("--families", choices=("replay", "blind"), default="replay")
    ap.add_argument("--metric", required=True)
    ap.add_argument("--calls", type=int, default=24_000)
    ap.add_argument("--controls", type=int, default=6)
    ap.add_argument("--per-family", type=int, default=3)
    ap.add_argument("--from", dest="first", type=int, default=-1_000_000_000)
    ap.add_argument("--to", dest="last", type=int, default=1_000_000_000)
    ap.add_argument(
        "--batch-events",
        type=int,
        default=BATCH_EVENTS,
        help="events per monitor batch (the replay command's by default)",
    )
    args = ap.parse_args(argv)
    w = regenerate(
        args.seed, args.workflow, args.calls, args.controls, args.per_family, args.families
    )
    generator = importlib.import_module(f"{args.families}_families")
    events = [from_wire(json.loads(line), EVENT_FIELDS) for line in generator.event_lines([w])]
    events.sort(key=lambda e: (event_time(e), e["trace_id"], e["span_id"]))
    change = 0
    if w.change_ts is not None:
        change = int(np.searchsorted([e["start_ts"] for e in events], w.change_ts))
    print(f"# {w.name} {w.family.name} params {w.params} change at event {change}")
    monitor = Monitor(load_settings(None))
    step = max(1, args.batch_events)
    for start in range(0, len(events), step):
        batch = events[start : start + step]
        out = monitor.process(batch, [])
        at = start + len(batch) - change
        state = monitor._states.get(w.name)
        if args.first <= at <= args.last and state is not None:
            for bundle_key, bundle in state.bundles.items():
                det = bundle.detectors.get(args.metric)
                if det is None or det._ref is None:
                    continue
                rec = det._recovery
                print(
                    f"{at:+7d} {bundle_key[-10:]} n={bundle.n_events:6d} "
                    f"ref={det.reference_size:6d} level={det._level:+.3f} "
                    f"recovery={rec[3]:.1f}/{rec[2]:.1f} d={rec[0]:.3f} "
                    f"holds={det.shift_holds()}"
                )
        for r in out if args.first <= at <= args.last else []:
            if r.get("metric") == args.metric and r["transition"] != "update":
                print(f"        {r['transition']} {r['dedup_key']} {r.get('evidence', '')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
