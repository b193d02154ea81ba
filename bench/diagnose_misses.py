"""Why a family's changes are missed: per stream, what the detector saw.

Regenerates the labeled streams of ``bench/bench_detectors.py`` (same seed, same
order) for one family and prints, for each stream it misses (or each stream with
``--all``): the noise structure, the stream's marginal sd and its long-run variance
inflation (autocorrelations up to lag 50 on the pre-change values) against the
reference's, the shift in the reference's long-run standard deviations, the reference
size and offset at the change and at the end (a reference that grew after the change
learned part of it), the smallest armed CUSUM target, and each level test's highest
score (statistic / threshold) after the change.

Run: ``.venv/bin/python bench/diagnose_misses.py --family "level x1.2" --seed 2026``
(continuous families; rate, count and mix families print the realised rate before and
after the change, the reference's events, exposure and upper bound at the change, the
log rate ratio of the horizon against that reference in standard errors (what a
fixed-sample test could see at best), the reference size and the highest score).

``--controls rates`` (or ``continuous``, ``categorical``) instead runs ``--streams``
stationary controls of the group, drawn as the bench draws its controls but from
their own seeds, and prints every stream that alarms (its warm-up mean against its
overall mean, each alarm's index, test, rate ratio, reference rate and reference size)
and the alarms per million events: the bench's own controls are about 1M events per
group, too few to see a false-alarm rate near the budget.
"""

from __future__ import annotations

import argparse
import math
import sys

import numpy as np
from bench_detectors import (
    BATCH,
    CHANGE_AT,
    CONTROL_LEN,
    HORIZON,
    NOISES,
    WARMUP,
    WINDOW,
    Traced,
    controls,
    families,
    metric_arl0,
)
from families import Change

from driftline.detectors import MetricDetector
from driftline.detectors.reference import long_run_inflation


def diagnose(values: object, kind: str, noise: str) -> tuple[bool, str]:
    det = MetricDetector(kind, WARMUP, WINDOW, metric_arl0(kind))  # type: ignore[arg-type]
    traced = isinstance(values, Traced)
    x = values.values if isinstance(values, Traced) else values
    traces = values.traces if isinstance(values, Traced) else None
    first: tuple[int, str] | None = None
    at_change: tuple[int, float, float, float, str] | None = None
    counted: tuple[float, float] | None = None  # a rate's reference (events, exposure)
    best = 0.0
    for start in range(0, len(x), BATCH):  # type: ignore[arg-type]
        if start == CHANGE_AT and det._categorical is not None and det._shares is not None:
            # The category that changes (bench/families.py): its share as a rate.
            assert det._growth is not None
            column = 1 + det._categorical[0].categories.index("length")
            counted = (float(det._growth.totals[column]), float(det._growth.totals[0]))
            bound = det._shares[column - 1].reference_rate
            at_change = (det.reference_size, bound, 1.0, 1.0, "-")
        if start == CHANGE_AT and det._ref is not None:
            ref = det._ref
            smallest = f"{min(det._cusum.shifts):.2f}" if det._cusum is not None else "-"
            at_change = (det.reference_size, ref.mean, ref.scale, ref.inflation, smallest)
            if det._growth is not None and det.kind in ("bernoulli", "poisson"):
                counted = (float(det._growth.totals[1]), float(det._growth.totals[0]))
        groups = None if traces is None or det.frozen else traces[start : start + BATCH]
        found = det.update_many(x[start : start + BATCH], groups)  # type: ignore[index]
        level = det._cusum or det._rate
        shares = det._shares or ()
        if start >= CHANGE_AT:
            scores = [t.score() for t in (level, *shares) if t is not None]
            best = max([best, *scores])
        after = [start + d.index for d in found if start + d.index >= CHANGE_AT]
        if after and first is None:
            first = (after[0] - CHANGE_AT, found[-1].test)
    assert at_change is not None
    n0, mean0, scale, inflation, smallest = at_change
    if not traced:
        rate = ""
        if counted is not None:
            xs = np.asarray(
                [v == "length" for v in x] if kind == "categorical" else x,  # type: ignore[attr-defined]
                dtype=np.float64,
            )
            pre, post = xs[:CHANGE_AT].mean(), xs[CHANGE_AT : CHANGE_AT + HORIZON].sum()
            events, exposure = counted
            # The best a fixed-sample test could do at the horizon: the log rate ratio
            # of the horizon against the reference at the change, in standard errors.
            z = math.log((post + 0.5) / HORIZON / ((events + 0.5) / exposure))
            z /= math.sqrt(1.0 / (events + 0.5) + 1.0 / (post + 0.5))
            rate = (
                f"rate {pre:.4f} -> {post / HORIZON:.4f} (x{post / HORIZON / pre:.2f}); "
                f"reference {events:.0f} in {exposure:.0f} (bound {mean0:.4f}); "
                f"horizon vs reference z {z:.1f}; "
            )
        return first is not None, (
            f"found={first} {rate}reference n {n0} -> {det.reference_size} (end); "
            f"highest level score after the change {best:.2f}"
        )
    xs = np.asarray(x)
    pre, post = xs[WARMUP:CHANGE_AT], xs[CHANGE_AT : CHANGE_AT + HORIZON]
    assert det._ref is not None
    return first is not None, (
        f"{noise:9s} found={first} sd {pre.std():.2f} inflation {long_run_inflation(pre, 50):.1f} "
        f"(reference {inflation:.1f}) shift {(post.mean() - pre.mean()) / scale:.3f} lr-sd; "
        f"reference n {n0} -> {det.reference_size}, offset {(mean0 - pre.mean()) / scale:+.3f}"
        f" -> {(det._ref.mean - pre.mean()) / scale:+.3f}; smallest member {smallest}; "
        f"highest level score {best:.2f}"
    )


def control_alarms(group: str, streams: int, seed: int) -> None:
    """Every control of ``group`` that alarms, and the alarms per million events."""
    makers = controls(group)
    total = 0
    for i, child in enumerate(np.random.SeedSequence(seed).spawn(streams)):
        label, kind, make = makers[i % len(makers)]
        values = make(np.random.default_rng(child), CONTROL_LEN, CONTROL_LEN, Change("none"))
        det = MetricDetector(kind, WARMUP, WINDOW, metric_arl0(kind))
        x = values.values if isinstance(values, Traced) else values
        traces = values.traces if isinstance(values, Traced) else None
        alarms = []
        for start in range(0, CONTROL_LEN, BATCH):
            groups = None if traces is None or det.frozen else traces[start : start + BATCH]
            for d in det.update_many(x[start : start + BATCH], groups):
                ev = d.evidence
                rate = ev.get("reference_rate")
                alarms.append(
                    f"{start + d.index} {d.test} x{ev.get('rate_ratio', '-')} "
                    f"p0 {rate if rate is None else round(rate, 4)} n {det.reference_size}"
                )
        total += len(alarms)
        if alarms:
            line = f"{label} #{i} alarms {len(alarms)}"
            if kind in ("bernoulli", "poisson"):
                xs = np.asarray(x, dtype=np.float64)
                line += f" warm-up mean {xs[:WARMUP].mean():.4f} overall {xs.mean():.4f}"
            print(f"{line}: {'; '.join(alarms[:6])}")
    events = streams * (CONTROL_LEN - WARMUP)
    print(f"# {group}: {total} alarms in {events:,} events ({total / events * 1e6:.2f} per 1M)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", default="level x1.2")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--streams", type=int, default=21)
    ap.add_argument("--control-events", type=int, default=1_020_000)
    ap.add_argument("--all", action="store_true", help="every stream, not only the missed")
    ap.add_argument("--controls", choices=("continuous", "rates", "categorical"))
    args = ap.parse_args(argv)
    if args.controls:
        control_alarms(args.controls, args.streams, args.seed)
        return 0
    seeds = iter(np.random.SeedSequence(args.seed).spawn(10_000))
    for _ in range(3 * -(-args.control_events // CONTROL_LEN)):  # the controls' seeds
        next(seeds)
    for fam in families():
        for i in range(args.streams):
            seed = next(seeds)
            if fam.name != args.family:
                continue
            noise = str(np.random.default_rng(seed).choice(NOISES))  # the first draw
            values = fam.make(
                np.random.default_rng(seed), CHANGE_AT + HORIZON, CHANGE_AT, fam.change
            )
            found, line = diagnose(values, fam.kind, noise)
            if args.all or not found:
                print(f"{fam.name} #{i:2d} {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
