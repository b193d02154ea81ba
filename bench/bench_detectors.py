"""Detection quality on stream families (``bench/families.py``), against tuned river detectors.

Per family of streams (each stream draws its own parameters and seed): false alarms per
million stationary events, misses, mean / median / p90 delay, flaps and transient
resolution, for ``detectors.MetricDetector`` exactly as the monitor builds it
(defaults: warm-up 500, window 500, ARL0 budget ``detectors.arl0_events`` = 1e6 per
workflow split over every test of the nine metrics), and for river's ADWIN and
PageHinkley tuned *in the same run*, on the same stationary controls, by bisection to
the most sensitive setting with no more false alarms than driftline.

Stream layout: 500 warm-up events, 2,500 stationary events, the change at 3,000, then
4,000 events (a change not detected by then is missed). Transients end 1,000 events
after they start. The lifecycle is the monitor's: an alert opens at a detection,
``shift_holds()`` is checked every 100 events, and the alert resolves after it has
been False for 300 events; a flap is a resolve while the change still acts.

Controls (no change): 30k-event streams, at least 1M events per group (continuous,
rates and counts, categorical). river's detectors see the same values standardized by
the warm-up mean and sd (a categorical stream as the 0/1 indicator of ``length``, the
category that changes: that favours river).

``--workflows`` also runs whole workflows through ``streams.monitor.Monitor`` (see
``bench/bench_workflows.py``). Run: ``.venv/bin/python bench/bench_detectors.py``
(about 3 minutes on one core); ``--seed`` draws fresh streams.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from families import (
    NOISES,
    REPEATED_NOISES,
    TRACE_NOISES,
    Change,
    bernoulli,
    continuous,
    finish_mix,
    poisson,
)
from river import drift
from river.base import DriftDetector

from driftline.config import DetectorSettings
from driftline.detectors import METRICS, MetricDetector
from driftline.detectors.composite import CONTINUOUS_TESTS
from driftline.detectors.metrics import Kind

WARMUP = 500
WINDOW = 500
CHANGE_AT = 3000
HORIZON = 4000
TRANSIENT = 1000
CONTROL_LEN = 30_000
BATCH = 100
HOLD_EVENTS = 300
TESTS = sum(CONTINUOUS_TESTS if m.kind == "continuous" else 1 for m in METRICS)
WORKFLOW_ARL0 = DetectorSettings().arl0_events


def metric_arl0(kind: Kind) -> float:
    """The ARL0 the monitor gives one metric's detector (its share of the workflow's)."""
    return WORKFLOW_ARL0 * TESTS / (CONTINUOUS_TESTS if kind == "continuous" else 1)


@dataclass(frozen=True)
class Family:
    name: str
    group: str  # continuous | rates | categorical
    kind: Kind
    make: Callable[[np.random.Generator, int, int, Change], Any]
    change: Change
    required: bool  # must be found (x1.2 or more, or a rate that triples)
    # Drawn after every stream of the families before it and of the skewed-trace
    # controls, so that those stay as they were.
    late: bool = False


@dataclass(frozen=True)
class Traced:
    """A continuous stream and the trace id of each value (as the monitor has them)."""

    values: np.ndarray
    traces: np.ndarray

    def __len__(self) -> int:
        return int(self.values.shape[0])


def _cont(noise_of: Callable[[np.random.Generator], str]) -> Callable[..., Any]:
    def make(rng: np.random.Generator, n: int, at: int, change: Change) -> Any:
        traces: list[np.ndarray] = []
        values = continuous(rng, n, noise_of(rng), at, change, traces)
        return Traced(values, traces[0])

    return make


def _any_noise(rng: np.random.Generator) -> str:
    return str(rng.choice(NOISES))


def _rate(fn: Callable[..., Any], base: float | None) -> Callable[..., Any]:
    return lambda rng, n, at, change: fn(rng, n, at, change, base)


def _mix(rng: np.random.Generator, n: int, at: int, change: Change) -> Any:
    return finish_mix(rng, n, at, change)


def families() -> list[Family]:
    cont = _cont(_any_noise)
    out = [
        Family("level x1.1", "continuous", "continuous", cont, Change("level", 1.1), False),
        Family("level x1.2", "continuous", "continuous", cont, Change("level", 1.2), True),
        Family("level x1.5", "continuous", "continuous", cont, Change("level", 1.5), True),
        Family("level x2", "continuous", "continuous", cont, Change("level", 2.0), True),
        Family("level x0.8", "continuous", "continuous", cont, Change("level", 0.8), True),
        Family("spread x1.5", "continuous", "continuous", cont, Change("spread", 1.5), False),
        Family("creep x1.3/3k", "continuous", "continuous", cont, Change("creep", 1.3), True),
        Family(
            "transient x1.5",
            "continuous",
            "continuous",
            cont,
            Change("level", 1.5, length=TRANSIENT),
            True,
        ),
        Family(
            "rate 1%->3%", "rates", "bernoulli", _rate(bernoulli, 0.01), Change("rate", 3.0), True
        ),
        Family(
            "rate 1%->5%", "rates", "bernoulli", _rate(bernoulli, 0.01), Change("rate", 5.0), True
        ),
        Family(
            "rate 2%->10%", "rates", "bernoulli", _rate(bernoulli, 0.02), Change("rate", 5.0), True
        ),
        Family(
            "rate transient",
            "rates",
            "bernoulli",
            _rate(bernoulli, 0.02),
            Change("rate", 5.0, length=TRANSIENT),
            True,
        ),
        Family("retries x3", "rates", "poisson", _rate(poisson, 0.03), Change("rate", 3.0), True),
        Family(
            "retries 2%->10%", "rates", "poisson", _rate(poisson, 0.02), Change("rate", 5.0), True
        ),
        Family("finish length x3", "categorical", "categorical", _mix, Change("mix", 3.0), True),
        # Last: its streams are drawn after every other family's, which stay as they were.
        Family(
            "level x1.5 skewed traces",
            "continuous",
            "continuous",
            _cont(lambda _r: TRACE_NOISES[0]),
            Change("level", 1.5),
            True,
        ),
        Family(
            "level x1.2 repeated values",
            "continuous",
            "continuous",
            _cont(lambda _r: REPEATED_NOISES[0]),
            Change("level", 1.2),
            True,
            late=True,
        ),
    ]
    return out


def controls(group: str) -> list[tuple[str, Kind, Callable[..., Any]]]:
    """(label, kind, maker) of the stationary streams of a group, cycling structures."""
    if group == "continuous":
        return [(n, "continuous", _cont(lambda _r, n=n: n)) for n in NOISES]
    if group == "rates":
        return [
            ("bernoulli", "bernoulli", _rate(bernoulli, None)),
            ("poisson", "poisson", _rate(poisson, None)),
        ]
    return [("finish mix", "categorical", _mix)]


# --- runners -------------------------------------------------------------------------


@dataclass
class Run:
    alarms: list[int]
    opens: list[int] = field(default_factory=list)
    resolves: list[int] = field(default_factory=list)


def run_driftline(kind: Kind, values: Any) -> Run:
    """Batches of ``BATCH``; the monitor's lifecycle on ``shift_holds``."""
    det = MetricDetector(kind, WARMUP, WINDOW, metric_arl0(kind))
    run = Run([])
    open_, quiet = False, 0
    traces = values.traces if isinstance(values, Traced) else None
    if isinstance(values, Traced):
        values = values.values
    for start in range(0, len(values), BATCH):
        # As the monitor does: trace ids (cluster codes) with every batch.
        groups = None if traces is None else traces[start : start + BATCH]
        found = det.update_many(values[start : start + BATCH], groups)
        idx = sorted({start + d.index for d in found})
        run.alarms.extend(idx)
        end = min(start + BATCH, len(values))
        if idx and not open_:
            open_, quiet = True, 0
            run.opens.append(idx[0])
        elif open_:
            quiet = 0 if (idx or det.shift_holds()) else quiet + (end - start)
            if quiet >= HOLD_EVENTS:
                open_ = False
                run.resolves.append(end)
    return run


def river_input(kind: Kind, values: Any) -> np.ndarray:
    if isinstance(values, Traced):
        values = values.values
    x = (
        np.array([v == "length" for v in values], dtype=np.float64)
        if kind == "categorical"
        else np.asarray(values)
    )
    ref = x[:WARMUP]
    return (x - ref.mean()) / max(float(ref.std()), 1e-9)


def run_river(
    make: Callable[[], DriftDetector], z: np.ndarray, stop_after: int = 1 << 30
) -> list[int]:
    det = make()
    found: list[int] = []
    for i, v in enumerate(z[WARMUP:].tolist()):
        det.update(v)
        if det.drift_detected:
            found.append(WARMUP + i)
            if len(found) > stop_after:
                break
    return found


RIVER: dict[str, tuple[Callable[[float], Callable[[], DriftDetector]], float, float]] = {
    # name: (factory of a parameter, most sensitive end, quietest end) for the bisection
    "ADWIN": (lambda p: lambda: drift.ADWIN(delta=p), 1e-2, 1e-14),
    "PageHinkley": (
        lambda p: lambda: drift.PageHinkley(min_instances=30, delta=0.1, threshold=p, alpha=1.0),
        5.0,
        2000.0,
    ),
}


def tune(name: str, zs: list[np.ndarray], allowed: int, steps: int) -> tuple[float, int]:
    """Bisect (log scale) to the most sensitive parameter with <= ``allowed`` false alarms."""
    make, lo, hi = RIVER[name]

    def false_alarms(p: float) -> int:
        total = 0
        for z in zs:
            total += len(run_river(make(p), z, allowed - total))
            if total > allowed:
                break
        return total

    best, best_fa = hi, false_alarms(hi)
    for _ in range(steps):
        mid = math.sqrt(lo * hi)
        n = false_alarms(mid)
        if n <= allowed:
            hi, best, best_fa = mid, mid, n
        else:
            lo = mid
    return best, best_fa


# --- scoring --------------------------------------------------------------------------


@dataclass
class Score:
    change_at: int = CHANGE_AT
    delays: list[int] = field(default_factory=list)
    missed: int = 0
    early: int = 0  # alarms in the stationary stretch before the change
    flaps: int = 0
    resolve_after_end: list[int] = field(default_factory=list)
    unresolved: int = 0

    def add(self, run: Run, change: Change) -> None:
        at = self.change_at
        self.early += sum(1 for a in run.alarms if a < at)
        after = [a - at for a in run.alarms if at <= a < at + HORIZON]
        if after:
            self.delays.append(after[0])
        else:
            self.missed += 1
        if not run.opens:
            return
        end = at + (change.length if change.length is not None else HORIZON)
        self.flaps += sum(1 for r in run.resolves if at <= r < end)
        if change.length is not None and after:
            later = [r - end for r in run.resolves if r >= end]
            if later:
                self.resolve_after_end.append(later[0])
            else:
                self.unresolved += 1


def fmt(values: list[int], q: float | None = None) -> str:
    if not values:
        return "-"
    return f"{np.mean(values) if q is None else np.percentile(values, q):.0f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--streams", type=int, default=21, help="labeled streams per family")
    ap.add_argument("--control-events", type=int, default=1_020_000, help="per group")
    ap.add_argument("--steps", type=int, default=7, help="bisection steps per river detector")
    ap.add_argument(
        "--change-at",
        type=int,
        default=CHANGE_AT,
        help="event of each labeled stream's change (earlier: a younger reference)",
    )
    ap.add_argument(
        "--groups",
        default="continuous,rates,categorical",
        help="comma-separated groups to run (the streams drawn are the same either way)",
    )
    args = ap.parse_args(argv)
    change_at = args.change_at
    if change_at <= WARMUP:
        ap.error(f"--change-at must come after the {WARMUP}-event warm-up")
    t0 = time.perf_counter()
    root = np.random.SeedSequence(args.seed)
    fams = families()
    groups = ("continuous", "rates", "categorical")
    chosen = set(args.groups.split(","))
    if not chosen <= set(groups):
        ap.error(f"--groups: choose from {groups}")
    n_streams = {g: -(-args.control_events // CONTROL_LEN) for g in groups}

    # Stationary controls, one seed each.
    control_streams: dict[str, list[tuple[str, Kind, Any]]] = {}
    seeds = iter(root.spawn(10_000))
    for g in groups:
        makers = controls(g)
        control_streams[g] = []
        for i in range(n_streams[g]):
            label, kind, make = makers[i % len(makers)]
            rng = np.random.default_rng(next(seeds))
            control_streams[g].append(
                (label, kind, make(rng, CONTROL_LEN, CONTROL_LEN, Change("none")))
            )

    def draw(f: Family) -> list[Any]:
        return [
            f.make(np.random.default_rng(next(seeds)), change_at + HORIZON, change_at, f.change)
            for _ in range(args.streams)
        ]

    labeled = {f.name: draw(f) for f in fams if not f.late}
    # Controls on skewed traces, then on repeated values, as many as of each other
    # structure, drawn after the rest (and the late families after those).
    for later in (TRACE_NOISES, REPEATED_NOISES):
        for i in range(n_streams["continuous"] // len(NOISES)):
            label = later[i % len(later)]
            rng = np.random.default_rng(next(seeds))
            values = _cont(lambda _r, n=label: n)(rng, CONTROL_LEN, CONTROL_LEN, Change("none"))
            control_streams["continuous"].append((label, "continuous", values))
    labeled.update({f.name: draw(f) for f in fams if f.late})
    # Every stream is drawn above whatever the groups chosen; only the chosen ones run.
    groups = tuple(g for g in groups if g in chosen)
    fams = [f for f in fams if f.group in chosen]

    # driftline on the controls.
    ours_fa: dict[str, dict[str, list[int]]] = {g: {} for g in groups}
    for g in groups:
        for label, kind, values in control_streams[g]:
            n = len(run_driftline(kind, values).alarms)
            ours_fa[g].setdefault(label, []).append(n)
    t_controls = time.perf_counter() - t0

    # river tuned per group on the same controls, to at most driftline's false alarms.
    tuned: dict[str, dict[str, tuple[float, int]]] = {}
    zs = {g: [river_input(k, v) for _l, k, v in control_streams[g]] for g in groups}
    for g in groups:
        allowed = sum(sum(v) for v in ours_fa[g].values())
        tuned[g] = {name: tune(name, zs[g], allowed, args.steps) for name in RIVER}

    # Labeled families.
    scores: dict[str, dict[str, Score]] = {}
    for f in fams:
        by = scores[f.name] = {
            name: Score(change_at) for name in ("driftline", "ADWIN", "PageHinkley")
        }
        for values in labeled[f.name]:
            by["driftline"].add(run_driftline(f.kind, values), f.change)
            z = river_input(f.kind, values)
            for name in RIVER:
                param = tuned[f.group][name][0]
                by[name].add(Run(run_river(RIVER[name][0](param), z)), f.change)

    # --- report -----------------------------------------------------------------
    print(
        f"# seed {args.seed}; {args.streams} streams per family, change at {change_at} "
        f"(after a {WARMUP}-event warm-up), missed = not found within {HORIZON}; "
        f"driftline ARL0 {WORKFLOW_ARL0:.0e} per workflow (monitor defaults)"
    )
    print("false alarms per 1M stationary events (controls + pre-change stretches):")
    for g in groups:
        stat_events = len(control_streams[g]) * (CONTROL_LEN - WARMUP)
        pre = sum(args.streams * (change_at - WARMUP) for f in fams if f.group == g)
        early = {
            d: sum(s[d].early for f, s in scores.items() if _group(fams, f) == g)
            for d in ("driftline", "ADWIN", "PageHinkley")
        }
        ours = sum(sum(v) for v in ours_fa[g].values())
        per = ", ".join(f"{k} {sum(v)}" for k, v in ours_fa[g].items())
        total = stat_events + pre
        rate = (ours + early["driftline"]) / total * 1e6
        print(f"  {g:12s} events {total:,}: driftline {rate:.2f} ({per}; pre-change ", end="")
        print(f"{early['driftline']})")
        for name in RIVER:
            p, fa = tuned[g][name]
            rate = (fa + early[name]) / total * 1e6
            print(f"  {'':12s} {name} (param {p:.3g}): {rate:.2f} ", end="")
            print(f"(controls {fa}; pre-change {early[name]})")
    print(
        f"{'family':18s} {'detector':12s} {'mean':>6s} {'median':>6s} {'p90':>6s} {'missed':>6s} "
        f"{'flaps':>5s} {'resolve':>7s} {'median/ADWIN':>12s}"
    )
    ratios = []
    failures = []
    for f in fams:
        by = scores[f.name]
        adwin_med = float(np.median(by["ADWIN"].delays)) if by["ADWIN"].delays else math.nan
        for det, s in by.items():
            med = float(np.median(s.delays)) if s.delays else math.nan
            ratio = med / adwin_med if adwin_med else math.nan
            if det == "driftline" and not math.isnan(ratio):
                ratios.append(ratio)
            resolve = (
                fmt(s.resolve_after_end, 100) if f.change.length and det == "driftline" else ""
            )
            if s.unresolved:
                resolve += f" ({s.unresolved} open)"
            print(
                f"{f.name:18s} {det:12s} {fmt(s.delays):>6s} {fmt(s.delays, 50):>6s} "
                f"{fmt(s.delays, 90):>6s} {s.missed:6d} {s.flaps if det == 'driftline' else '':>5} "
                f"{resolve:>7s} {ratio:12.2f}"
            )
        ours = by["driftline"]
        if f.required and ours.missed:
            failures.append(f"{f.name}: {ours.missed} missed")
        if ours.flaps:
            failures.append(f"{f.name}: {ours.flaps} flaps")
        if ours.unresolved or any(r > 2000 for r in ours.resolve_after_end):
            failures.append(f"{f.name}: transient not resolved within 2,000 events")
    print(f"# median over families of driftline's median delay / ADWIN's: {np.median(ratios):.2f}")
    print(f"# done-criteria failures: {failures or 'none'}")
    print(
        f"# driftline over the controls: {t_controls:.1f}s; total {time.perf_counter() - t0:.0f}s"
    )
    return 0


def _group(fams: list[Family], name: str) -> str:
    return next(f.group for f in fams if f.name == name)


if __name__ == "__main__":
    sys.exit(main())
