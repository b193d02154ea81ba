"""Labeled stream families for the detector benchmark: several structures, parameters and seeds.

Every stream draws its own parameters from its family's ranges (one ``rng`` per
stream), so a benchmark run is many different streams, not one generator with one
setting. What a family varies:

- continuous signals (log tokens, latency): lognormal level (median 100..2,000), log
  sd 0.4..1.0, rounded to whole units, seen as ``log1p``; noise iid, AR(1) with phi
  0.2..0.5, clustered (runs of 1..8 calls of one trace sharing an offset, intra-trace
  correlation 0.2..0.5), Student t with 3 degrees of freedom, or all of these at once;
  a slow cycle (+-2..5% of the level, period 2k..200k events, i.e. minutes to a day at
  a few events per second); rare large outliers (0.1..0.5% of values x10..x100);
  and, apart (``TRACE_NOISES``, drawn after every other stream so those stay as they
  were), skewed traces: runs of 1..12 calls sharing an offset drawn from an exponential
  law (a few traces carry far longer documents), 30..50% of the variance;
- rates (validation failures, ``length`` finishes): Bernoulli at 0.5..5% with a slow
  +-20% cycle; counts (retry attempts): Poisson at 0.02..0.08 per call, same cycle;
- apart (``REPEATED_NOISES``, drawn last), values that repeat: a template's input tokens
  (log sd 0.3..3%, a few dozen counts) or a latency rounded to the power of ten below its
  median (10, 100 or 1,000 ms: a handful to a few dozen values);
- categorical finish mixes: stop / length 1..3% / tool_calls 5..15% / content_filter.

Changes (``Change``) act on the latent level: a factor on the median (x1.1 .. x2), a
log-sd factor (variance), a linear creep to a factor over ``ramp`` events, a rate
factor (1% -> 3%: x3), a transient (a factor for ``length`` events, then back).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter

NOISES = ("iid", "ar1", "clustered", "heavy", "outliers", "cycle", "mixed")
TRACE_NOISES = ("skewed traces",)
# Drawn after every other stream too: values that repeat, as a fixed prompt template's
# input tokens (a log sd of 0.3..3%: a few dozen token counts) or a latency an
# instrumentation rounds (to 10, 100 or 1,000 ms: a handful to a few dozen values).
REPEATED_NOISES = ("repeated values",)
FINISH = ("stop", "length", "tool_calls", "content_filter")


@dataclass(frozen=True)
class Change:
    """What happens at the change point ``at`` (an index into the stream)."""

    kind: str  # "level" | "spread" | "creep" | "rate" | "mix" | "none"
    factor: float = 1.0
    ramp: int = 3000  # creep: events to reach the factor
    length: int | None = None  # transient: events until the change ends (None: lasts)


NONE = Change("none")


def _cycle(rng: np.random.Generator, n: int, amplitude: float) -> np.ndarray:
    period = math.exp(rng.uniform(math.log(2_000), math.log(200_000)))
    phase = rng.uniform(0, 2 * math.pi)
    return amplitude * np.sin(2 * math.pi * np.arange(n) / period + phase)


def _profile(n: int, at: int, change: Change) -> np.ndarray:
    """0 before the change, 1 while it acts (a ramp for a creep), 0 after a transient."""
    w = np.zeros(n)
    if change.kind == "none" or at >= n:
        return w
    if change.kind == "creep":
        w[at:] = np.minimum(1.0, (np.arange(n - at) + 1) / change.ramp)
    else:
        w[at:] = 1.0
    if change.length is not None:
        w[at + change.length :] = 0.0
    return w


def _noise(
    rng: np.random.Generator, n: int, noise: str, traces: list[np.ndarray] | None = None
) -> np.ndarray:
    """Unit-variance noise of the family's structure; the trace of each call into ``traces``.

    A non-empty ``traces`` gives the trace of each call (the clusters to use).
    """
    given = traces[0] if traces else None
    if traces is not None and not traces:
        traces.append(np.arange(n))
    if noise == "heavy":
        return rng.standard_t(3, n) / math.sqrt(3.0)
    if noise == "skewed traces":
        share = rng.uniform(0.3, 0.5)
        runs = np.repeat(np.arange(n), rng.integers(1, 13, n))[:n]
        if given is not None:
            runs = given
        elif traces is not None:
            traces[-1] = runs
        offsets = (rng.exponential(1.0, n) - 1.0)[runs]  # mean 0, variance 1, skewed
        return math.sqrt(1 - share) * rng.normal(0.0, 1.0, n) + math.sqrt(share) * offsets
    parts = {"ar1", "clustered"} if noise == "mixed" else {noise}
    e = rng.normal(0.0, 1.0, n)
    if "ar1" in parts:
        phi = rng.uniform(0.2, 0.5)
        e = lfilter([1.0], [1.0, -phi], e * math.sqrt(1 - phi * phi))
    if "clustered" in parts:
        icc = rng.uniform(0.2, 0.5)
        runs = np.repeat(np.arange(n), rng.integers(1, 9, n))[:n]  # trace of each call
        if given is not None:
            runs = given
        elif traces is not None:
            traces[-1] = runs
        offsets = rng.normal(0.0, 1.0, n)[runs]
        e = math.sqrt(1 - icc) * e + math.sqrt(icc) * offsets
    return e


def continuous(
    rng: np.random.Generator,
    n: int,
    noise: str,
    at: int = 0,
    change: Change = NONE,
    traces: list[np.ndarray] | None = None,
) -> np.ndarray:
    """``log1p`` of a lognormal signal in whole units, with the family's structure.

    ``traces`` (a list) receives the trace id of each call: the monitor hands those
    to the detector during warm-up, for the reference's design effect. A list that
    already holds them makes the clusters follow those traces.
    """
    mu = math.log(rng.uniform(100, 2000))
    sd = rng.uniform(0.4, 1.0)
    quantum = 1.0
    if noise == "repeated values":
        if rng.random() < 0.5:  # a template's tokens: the sd of a few tokens
            sd = rng.uniform(0.003, 0.03)
        else:  # rounded latency: about a tenth of the median or coarser
            quantum = 10.0 ** math.floor(math.log10(math.exp(mu)))
    y = mu + np.zeros(n)
    if noise in ("cycle", "mixed"):
        y += _cycle(rng, n, rng.uniform(0.02, 0.05))
    w = _profile(n, at, change)
    scale = np.full(n, sd)
    if change.kind == "spread":
        scale *= 1.0 + (change.factor - 1.0) * w
    elif change.kind in ("level", "creep"):
        y += math.log(change.factor) * w
    y += scale * _noise(rng, n, noise, traces)
    out = np.exp(y)
    if noise in ("outliers", "mixed"):
        hit = rng.random(n) < rng.uniform(0.001, 0.005)
        out[hit] *= np.exp(rng.uniform(math.log(10), math.log(100), int(hit.sum())))
    return np.log1p(np.round(out / quantum) * quantum)


def _rate_path(
    rng: np.random.Generator, n: int, base: float, at: int, change: Change
) -> np.ndarray:
    p = base * (1.0 + _cycle(rng, n, 0.2))
    return p * (1.0 + (change.factor - 1.0) * _profile(n, at, change))


def bernoulli(
    rng: np.random.Generator, n: int, at: int = 0, change: Change = NONE, base: float | None = None
) -> np.ndarray:
    p = _rate_path(rng, n, base if base is not None else rng.uniform(0.005, 0.05), at, change)
    return (rng.random(n) < p).astype(np.float64)


def poisson(
    rng: np.random.Generator, n: int, at: int = 0, change: Change = NONE, base: float | None = None
) -> np.ndarray:
    lam = _rate_path(rng, n, base if base is not None else rng.uniform(0.02, 0.08), at, change)
    return rng.poisson(lam).astype(np.float64)


def finish_mix(rng: np.random.Generator, n: int, at: int = 0, change: Change = NONE) -> list[str]:
    """Finish reasons; a ``mix`` change multiplies the ``length`` share by its factor."""
    length = rng.uniform(0.01, 0.03)
    tools = rng.uniform(0.05, 0.15)
    flt = rng.uniform(0.001, 0.005)
    w = _profile(n, at, change)
    p_length = length * (1.0 + (change.factor - 1.0) * w)
    u = rng.random(n)
    codes = np.zeros(n, dtype=np.int64)
    codes[u < p_length + tools + flt] = 2
    codes[u < p_length + flt] = 3
    codes[u < p_length] = 1
    return [FINISH[c] for c in codes]
