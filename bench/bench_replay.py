"""Labeled workflows replayed through the public CLI: what an on-call engineer would see.

Generates days of agent traffic with ``bench/replay_families.py`` (not
``bench/families.py``: other structures, other code), several workflows interleaved in
each NDJSON file of normalized events, runs ``driftline replay FILE`` in a subprocess
with the default configuration (no config file), parses the printed transitions and
scores them per family against the labels:

- false alarms: drift alerts opened on a control, or on any metric of a shifted workflow
  before its change; per 1M stationary events (every event of a workflow counts once);
- missed: no alert opened on the changed metric within ``--horizon`` events of the change;
- delay: events of the workflow from the change to that alert;
- flaps: an alert on the changed metric resolved while its shift lasts, then reopened;
- cross-metric: an alert opened after the change on a metric the change does not touch
  (related metrics are listed per family: more output tokens take longer);
- transients: how many events after the transient's end its last alert (changed or
  related metric) resolved, in the workflow's events / in that alert's bundle's own
  events (a fallback model on 10-20% of the calls sees a tenth of them). Once those alerts
  have all resolved, the workflow is stationary again: an alert opened later, and at least
  ``AFTER_END_GRACE`` events after the end, is a false alarm, and the events from there on
  count as stationary (it was scored as a late resolve);
- river's ADWIN and PageHinkley, run in the same process on the changed metric's values
  of the primary bundle (natural scale, standardized by its first 500 values, fed from
  the 501st), ADWIN's delta and PageHinkley's threshold each tuned by bisection to no
  false alarm on the same controls and pre-change stretches, per group (continuous,
  rates, finish mix), as ``bench/bench_detectors.py`` tunes them.

Run: ``.venv/bin/python bench/bench_replay.py`` (seed 2026, about 3-4 minutes);
``--seed S --seeds N`` for seeds S..S+N-1; ``--keep DIR`` keeps the NDJSON files and the
replay's output; ``--families blind`` draws the workflows from ``bench/blind_families.py``
instead (a held-out generator with other families, written without the detectors' code
in view).
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from replay_families import Workflow
from river import drift
from river.base import DriftDetector

from driftline.detectors.metrics import METRICS_BY_NAME
from driftline.schemas.event import iso_to_micros

ROOT = Path(__file__).resolve().parent.parent
DRIFTLINE = ROOT / ".venv" / "bin" / "driftline"
WARMUP = 500
CONTINUOUS = ("input_tokens", "output_tokens", "latency", "ttft", "output_length")
RATES = ("validation_failure", "retries")


def group_of(metric: str) -> str:
    if metric in CONTINUOUS:
        return "continuous"
    return "rates" if metric in RATES else "categorical"


@dataclass
class Transition:
    kind: str
    transition: str
    metric: str
    key: str
    index: int  # events of the workflow up to and including its time
    fired: str = ""  # the test that fired (and the level member's shift), from the evidence


@dataclass
class Outcome:
    workflow: Workflow
    transitions: list[Transition]
    change_index: int | None
    end_index: int | None

    @property
    def stationary_events(self) -> int:
        """Before the change (a transient's settled stretch after its end: in :func:`score`)."""
        return self.workflow.n_events if self.change_index is None else self.change_index

    def settled_index(self, touched: set[str]) -> int | None:
        """Where the transient's alerts (changed or related metric) have all resolved, at
        or after its end; None while one stays open to the end of the workflow."""
        assert self.change_index is not None and self.end_index is not None
        end = self.end_index
        open_keys: set[str] = set()
        for t in self.transitions:
            if t.metric not in touched or t.index < self.change_index:
                continue
            if t.index >= end and not open_keys:
                return end
            if t.transition == "open":
                open_keys.add(t.key)
            else:
                open_keys.discard(t.key)
            if t.index >= end and not open_keys:
                return t.index
        return None if open_keys else end


def replay(path: Path) -> list[dict]:
    """The transitions ``driftline replay`` prints for ``path`` (one JSON record a line)."""
    proc = subprocess.run(
        [str(DRIFTLINE), "replay", str(path)],
        capture_output=True,
        text=True,
        check=False,
        cwd=tempfile.gettempdir(),  # no driftline.toml: the defaults
    )
    if proc.returncode != 0:
        raise RuntimeError(f"driftline replay {path} exited {proc.returncode}: {proc.stderr}")
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def outcomes(workflows: list[Workflow], records: list[dict]) -> list[Outcome]:
    by_name = {w.name: w for w in workflows}
    per: dict[str, list[Transition]] = {w.name: [] for w in workflows}
    for r in records:
        w = by_name.get(str(r["workflow"]))
        if w is None or r["transition"] == "update":
            continue
        ts = iso_to_micros(str(r["event_ts"]))
        index = int(np.searchsorted(w.columns["end_ts"], ts, side="right"))
        metric = str(r["metric"]).split(":")[0]
        ev = r.get("evidence") or {}
        fired = str(ev.get("test", ""))
        if "rate_ratio" in ev:
            fired += f" x{float(ev['rate_ratio']):g}"
        elif "shift_sd" in ev:
            fired += f" {float(ev['shift_sd']):.2f} sd {ev.get('direction', '')}"
        per[w.name].append(
            Transition(r["kind"], r["transition"], metric, r["dedup_key"], index, fired)
        )
    out = []
    for w in workflows:
        ends = w.columns["end_ts"]
        change = None if w.change_ts is None else int(np.searchsorted(ends, w.change_ts))
        end = None if w.end_ts is None else int(np.searchsorted(ends, w.end_ts))
        out.append(Outcome(w, sorted(per[w.name], key=lambda t: t.index), change, end))
    return out


# --- river ----------------------------------------------------------------------------


# How ADWIN sees a finish mix: "each" category's 0/1 indicator, one ADWIN each, an alarm
# at the first of them (what a user without knowledge of the change would run), or the
# "oracle": only the indicator of the category the shift raises (``length``).
MIX_FEEDS = ("each", "oracle")


def natural(w: Workflow, metric: str, mix: str = "oracle") -> list[tuple[np.ndarray, np.ndarray]]:
    """The metric's values on the primary bundle, natural scale, and their event indices:
    one stream, or one per category of a finish mix fed ``each``. (The primary bundle is
    the workflow's ``primary_bundle``: the primary model's, the rows not on the fallback,
    in replay_families; the bundle the change is on in blind_families.)"""
    c = w.columns
    rows = c["bundle_id"] == w.primary_bundle
    if metric != "retries":
        rows &= c["error_type"] == ""
    index = np.flatnonzero(rows)
    watched = METRICS_BY_NAME[metric]
    raw = c[watched.field]
    if metric == "finish_reason":
        labels = raw[index]
        seen = ["length"] if mix == "oracle" else sorted(set(labels[:WARMUP].tolist()))
        streams = [(labels == name).astype(np.float64) for name in seen]
        if mix == "each":  # whatever the warm-up did not show, pooled
            streams.append((~np.isin(labels, seen)).astype(np.float64))
        return [(x, index) for x in streams]
    # the monitor's own scale (log1p of sizes, a try that is a retry counted once)
    x = watched.natural(np.nan_to_num(raw.astype(np.float64), nan=0.0))
    return [(x[index], index)]


# name: (detector of a parameter, most sensitive end, quietest end) for the bisection; the
# same detectors and ends as bench/bench_detectors.py.
RIVER: dict[str, tuple[Callable[[float], DriftDetector], float, float]] = {
    "ADWIN": (lambda p: drift.ADWIN(delta=p), 1e-2, 1e-14),
    "PageHinkley": (
        lambda p: drift.PageHinkley(min_instances=30, delta=0.1, threshold=p, alpha=1.0),
        5.0,
        2000.0,
    ),
}


def river_alarms(name: str, p: float, x: np.ndarray, stop_after: int = 1 << 30) -> list[int]:
    """Positions (in ``x``) where river's ``name`` at parameter ``p`` signals, fed from the
    end of the warm-up."""
    if x.shape[0] <= WARMUP:
        return []
    ref = x[:WARMUP]
    # A 0/1 stream the warm-up saw no 1 of (a category, a rare failure) gets the spread
    # of one in WARMUP, not a zero that would make its first 1 a billion deviations.
    z = (x - ref.mean()) / max(float(ref.std()), math.sqrt((1 - 1 / WARMUP) / WARMUP))
    det = RIVER[name][0](p)
    found = []
    for i, v in enumerate(z[WARMUP:].tolist()):
        det.update(v)
        if det.drift_detected:
            found.append(WARMUP + i)
            if len(found) > stop_after:
                break
    return found


def tune(name: str, streams: list[np.ndarray], steps: int) -> float:
    """The most sensitive parameter of ``name`` with no alarm on ``streams``, by log
    bisection."""
    _, lo, hi = RIVER[name]

    def quiet(p: float) -> bool:
        return all(not river_alarms(name, p, x, stop_after=0) for x in streams)

    best = hi
    for _ in range(steps):
        mid = math.sqrt(lo * hi)
        if quiet(mid):
            hi = best = mid
        else:
            lo = mid
    return best


# --- scoring --------------------------------------------------------------------------


# Events after a transient's end before the workflow counts as stationary again: the
# issue's bar for resolving a transient.
AFTER_END_GRACE = 2_000


@dataclass
class Row:
    workflows: int = 0
    stationary_events: int = 0
    false_alarms: int = 0
    delays: list[int] = field(default_factory=list)
    river_delays: dict[str, list[int]] = field(default_factory=lambda: {n: [] for n in RIVER})
    missed: int = 0
    river_missed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RIVER, 0))
    flaps: int = 0
    cross: int = 0
    resolve_after_end: list[int] = field(default_factory=list)
    resolve_own: list[int] = field(default_factory=list)  # in the alert's bundle's events
    unresolved: int = 0
    notes: list[str] = field(default_factory=list)


def score(o: Outcome, row: Row, horizon: int) -> None:
    w, fam = o.workflow, o.workflow.family
    shift = fam.shift
    row.workflows += 1
    row.stationary_events += o.stationary_events
    opens = [t for t in o.transitions if t.transition == "open"]
    for t in opens:
        if o.change_index is None or t.index < o.change_index:
            row.false_alarms += 1
            row.notes.append(
                f"{w.name}: false {t.kind} {t.metric} at {t.index} [{t.fired}] {_params(w)}"
            )
    if o.change_index is None:
        return
    change = o.change_index
    touched = {shift.metric, *shift.related}
    settled = None if o.end_index is None else o.settled_index(touched)
    end = w.n_events if o.end_index is None else o.end_index
    quiet_from = w.n_events  # a transient's alerts all resolved: stationary again from here
    if settled is not None:
        quiet_from = min(w.n_events, max(settled + 1, end + AFTER_END_GRACE))
        row.stationary_events += w.n_events - quiet_from
    for t in opens:
        if t.index >= quiet_from:
            row.false_alarms += 1
            row.notes.append(
                f"{w.name}: false {t.kind} {t.metric} at +{t.index - end} after the "
                f"transient's end [{t.fired}] {_params(w)}"
            )
        elif t.index >= change and t.metric not in touched:
            row.cross += 1
            row.notes.append(
                f"{w.name}: cross {t.kind} {t.metric} at +{t.index - change} [{t.fired}]"
            )
    found = [t for t in opens if t.metric == shift.metric and change <= t.index < change + horizon]
    if found:
        row.delays.append(found[0].index - change)
    else:
        row.missed += 1
        row.notes.append(f"{w.name}: missed {shift.metric} {_params(w)}")
    lasts = o.end_index if o.end_index is not None else w.n_events
    target = [t for t in o.transitions if t.metric == shift.metric and t.index >= change]
    for i, t in enumerate(target):
        reopened = any(u.transition == "open" and u.index < lasts for u in target[i + 1 :])
        if t.transition == "resolve" and t.index < lasts and reopened:
            row.flaps += 1
            row.notes.append(f"{w.name}: flap {t.metric} resolved at +{t.index - change}")
    if o.end_index is not None and found:
        last = w.n_events if settled is None else settled
        mine = [t for t in o.transitions if t.metric in touched and change <= t.index <= last]
        still_open: dict[str, bool] = {}
        last_resolve = last_own = 0
        bundles = w.columns["bundle_id"]
        for t in mine:
            still_open[t.key] = t.transition == "open"
            if t.transition == "resolve":
                last_resolve = max(last_resolve, t.index)
                # The alert's own bundle's events since the end: what its detector saw.
                own = bundles[o.end_index : t.index] == t.key.rsplit("/", 1)[-1]
                last_own = max(last_own, int(np.count_nonzero(own)))
        if any(still_open.values()):
            row.unresolved += 1
            row.notes.append(f"{w.name}: transient still open at the end")
        else:
            row.resolve_after_end.append(last_resolve - o.end_index)
            row.resolve_own.append(last_own)
            row.notes.append(
                f"{w.name}: transient resolved +{last_resolve - o.end_index} after its end "
                f"({last_own} of the alert's bundle's events) {_params(w)}"
            )


def _params(w: Workflow) -> str:
    return "(" + ", ".join(f"{k} {v:.3g}" for k, v in w.params.items()) + ")"


def river_score(name: str, o: Outcome, p: float, row: Row, horizon: int, mix: str) -> None:
    shift = o.workflow.family.shift
    assert o.change_index is not None
    alarms = sorted(
        int(index[a])
        for x, index in natural(o.workflow, shift.metric, mix)
        for a in river_alarms(name, p, x)
    )
    after = [a - o.change_index for a in alarms if 0 <= a - o.change_index < horizon]
    if after:
        row.river_delays[name].append(after[0])
    else:
        row.river_missed[name] += 1


def fmt(values: list[int]) -> str:
    return f"{np.median(values):.0f}" if values else "-"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--seeds", type=int, default=1, help="run seeds seed .. seed+N-1")
    ap.add_argument("--per-family", type=int, default=3, help="shifted workflows per family")
    ap.add_argument("--controls", type=int, default=6, help="stationary workflows per seed")
    ap.add_argument("--calls", type=int, default=24_000, help="successful calls per workflow")
    ap.add_argument("--per-file", type=int, default=11, help="workflows interleaved per file")
    ap.add_argument("--horizon", type=int, default=4_000)
    ap.add_argument("--steps", type=int, default=8, help="bisection steps of river's parameters")
    ap.add_argument("--keep", type=Path, help="keep the NDJSON files and replay output here")
    ap.add_argument(
        "--adwin-mix",
        choices=MIX_FEEDS,
        default="each",
        help="ADWIN on each finish category, or on the one the shift raises",
    )
    ap.add_argument("--verbose", action="store_true", help="print every alarm, miss and flap")
    ap.add_argument(
        "--families",
        choices=("replay", "blind"),
        default="replay",
        help="the workflow generator: bench/replay_families.py or bench/blind_families.py",
    )
    args = ap.parse_args(argv)
    generator = importlib.import_module(f"{args.families}_families")
    families = generator.FAMILIES
    family_kind = {f.name: f.shift.kind for f in families}
    day_of, event_lines = generator.day_of, generator.event_lines
    started = time.monotonic()
    all_outcomes: list[Outcome] = []
    replay_s = 0.0
    for seed in range(args.seed, args.seed + args.seeds):
        workflows = list(day_of(seed, args.calls, args.controls, args.per_family))
        with tempfile.TemporaryDirectory() as tmp:
            where = args.keep or Path(tmp)
            where.mkdir(parents=True, exist_ok=True)
            for part in range(0, len(workflows), args.per_file):
                shard = workflows[part : part + args.per_file]
                path = where / f"events-{seed}-{part // args.per_file}.ndjson"
                path.write_text("\n".join(event_lines(shard)) + "\n")
                t = time.monotonic()
                records = replay(path)
                replay_s += time.monotonic() - t
                if args.keep:
                    path.with_suffix(".alerts.ndjson").write_text(
                        "".join(json.dumps(r) + "\n" for r in records)
                    )
                all_outcomes.extend(outcomes(shard, records))
    params: dict[str, dict[str, float]] = {name: {} for name in RIVER}
    for group in ("continuous", "rates", "categorical"):
        quiet: list[np.ndarray] = []
        for o in all_outcomes:
            shift = o.workflow.family.shift
            if shift.kind == "none":
                metrics = {
                    "continuous": CONTINUOUS,
                    "rates": RATES,
                    "categorical": ("finish_reason",),
                }[group]
                quiet.extend(x for m in metrics for x, _ in natural(o.workflow, m, args.adwin_mix))
            elif group_of(shift.metric) == group and o.change_index is not None:
                for x, index in natural(o.workflow, shift.metric, args.adwin_mix):
                    quiet.append(x[index < o.change_index])
        for name in RIVER:
            params[name][group] = tune(name, quiet, args.steps)
    rows: dict[str, Row] = {f.name: Row() for f in families}
    for o in all_outcomes:
        row = rows[o.workflow.family.name]
        score(o, row, args.horizon)
        if o.change_index is not None:
            group = group_of(o.workflow.family.shift.metric)
            for name in RIVER:
                river_score(name, o, params[name][group], row, args.horizon, args.adwin_mix)
    print(
        f"# {'blind families, ' if args.families == 'blind' else ''}seeds {args.seed}.."
        f"{args.seed + args.seeds - 1}; {args.controls} controls and "
        f"{args.per_family} workflows per family per seed, ~{args.calls:,} calls each over a "
        f"day, {args.per_file} per file; `driftline replay FILE` with the defaults; "
        f"missed = no alert within {args.horizon:,} events"
    )
    print(
        "# ADWIN delta tuned to 0 false alarms on the same controls and pre-change stretches: "
        + ", ".join(f"{g} {d:.2g}" for g, d in params["ADWIN"].items())
        + "; PageHinkley's threshold the same way: "
        + ", ".join(f"{g} {d:.3g}" for g, d in params["PageHinkley"].items())
        + f"; a finish mix fed {args.adwin_mix} ("
        + ("one ADWIN per category" if args.adwin_mix == "each" else "the category that rises")
        + ")"
    )
    head = (
        f"{'family':20s} {'wf':>3s} {'stat. events':>12s} {'false':>5s} {'missed':>6s} "
        f"{'ADWIN missed':>12s} {'median':>6s} {'ADWIN':>6s} {'ratio':>5s} {'flaps':>5s} "
        f"{'cross':>5s} {'resolve':>11s} {'PH missed':>9s} {'PH':>6s} {'ratio':>5s}"
    )
    print(head)
    ratios: dict[str, list[float]] = {name: [] for name in RIVER}
    for fam in families:
        r = rows[fam.name]
        shifted = fam.shift.kind != "none"
        ratio = {
            name: float(np.median(r.delays) / np.median(d)) if r.delays and d else math.nan
            for name, d in r.river_delays.items()
        }
        for name, value in ratio.items():
            if shifted and not math.isnan(value):
                ratios[name].append(value)
        adwin, ph = r.river_delays["ADWIN"], r.river_delays["PageHinkley"]
        resolve = (
            f"{max(r.resolve_after_end)}/{max(r.resolve_own)}" if r.resolve_after_end else "-"
        ) + ("+open" * bool(r.unresolved))
        print(
            f"{fam.name:20s} {r.workflows:3d} {r.stationary_events:12,d} {r.false_alarms:5d} "
            + (
                f"{r.missed:6d} {r.river_missed['ADWIN']:12d} {fmt(r.delays):>6s} "
                f"{fmt(adwin):>6s} {ratio['ADWIN']:5.2f} {r.flaps:5d} {r.cross:5d} "
                f"{resolve:>11s} {r.river_missed['PageHinkley']:9d} {fmt(ph):>6s} "
                f"{ratio['PageHinkley']:5.2f}"
                if shifted
                else ""
            )
        )
    total = Row()
    for r in rows.values():
        total.stationary_events += r.stationary_events
        total.false_alarms += r.false_alarms
        total.missed += r.missed
        for name in RIVER:
            total.river_missed[name] += r.river_missed[name]
        total.flaps += r.flaps
        total.cross += r.cross
        total.unresolved += r.unresolved
        total.resolve_after_end += r.resolve_after_end
    shifted_n = sum(r.workflows for f, r in rows.items() if family_kind[f] != "none")
    print(
        f"# total: {total.false_alarms} false alarms in {total.stationary_events:,} stationary "
        f"events ({1e6 * total.false_alarms / max(total.stationary_events, 1):.2f} per 1M); "
        f"missed {total.missed} of {shifted_n} (ADWIN {total.river_missed['ADWIN']}, "
        f"PageHinkley {total.river_missed['PageHinkley']}); flaps {total.flaps}; "
        f"cross-metric {total.cross}; transients resolved within {AFTER_END_GRACE:,} events "
        f"of their end {_within(total.resolve_after_end)} of "
        f"{len(total.resolve_after_end) + total.unresolved} (median "
        f"{_median([float(v) for v in total.resolve_after_end]):.0f}), still open "
        f"{total.unresolved}; median of "
        f"per-family median delay / ADWIN's {_median(ratios['ADWIN']):.2f}, / PageHinkley's "
        f"{_median(ratios['PageHinkley']):.2f}"
    )
    if args.verbose:
        for name, r in rows.items():
            for note in r.notes:
                print(f"#   {name}: {note}")
    print(f"# replay {replay_s:.0f}s; total {time.monotonic() - started:.0f}s")
    return 0


def _within(resolves: list[int]) -> int:
    return sum(v <= AFTER_END_GRACE for v in resolves)


def _median(values: list[float]) -> float:
    return float(np.median(values)) if values else math.nan


if __name__ == "__main__":
    sys.exit(main())
