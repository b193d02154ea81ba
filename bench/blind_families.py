"""Held-out labeled workflows for ``bench/bench_replay.py --families blind``.

A third generator, written without the detectors' code or their benches in view, from a
description of what an outside evaluator would draw. It has the interface of
``bench/replay_families.py`` (``FAMILIES``, ``Family``, ``Shift``, ``Workflow``,
``day_of``, ``event_lines``) and nothing else in common with it. Every workflow, control
or shifted, carries the same nuisance structure, its parameters drawn per workflow:

- traffic: trace arrivals from a daily profile (first harmonic 30-70%, second 0-20%)
  plus 0-10 bursts (shot noise: +100-300% decaying over 3-20 minutes), counts drawn per
  10-second cell; 1.0-1.2x ``calls`` calls over the day, which starts and ends in steady
  state (traffic runs from an hour before to an hour after it; the events that end in
  the day are kept);
- traces: single calls (20-60% of traces) or agent loops of 2-15 calls; the calls of a
  trace run one after another and share a latent factor in output tokens, input tokens
  and latency; inputs grow along the loop (tool results are appended);
- output tokens: lognormal body (log-sd 0.4-1.0, a trace share of 5-35% of its
  variance, AR(1) phi 0-0.5 over the workflow's calls in time order), in 60% of the
  workflows a fixed mixture of short and long answers (long: 15-30%, 4-10x longer),
  rare outliers (0.1-0.5% of calls, x5-x50), integers;
- input tokens: prompt lognormal (log-sd 0.4-0.9, trace share 10-40%, AR(1) phi 0-0.5)
  plus the tool results of the earlier steps, outliers 0.1-0.3% x5-x20;
- latency: TTFT (prefill, growing with input tokens, exponent 0.2-0.5) plus decode
  (output tokens x a per-token time), lognormal jitter with AR(1) phi 0-0.5 and a trace
  factor, a heavy tail (a Pareto tail on 2-6% of calls, or a slow mode of 2-5% of calls
  x2-x5), outliers 0.1-0.3% x5-x50; 20% of workflows do not stream (no TTFT);
- a slow cycle of the levels (period 20 minutes to a day, each metric its own amplitude
  of 0-4% and phase; latency also up to 1% slower under load): never beyond +-5%;
- rates: validation failures 0.5-2% (trace-clustered), calls retried 0.5-3% (1-3 failed
  attempts each, each its own error event: a timeout, a rate limit or a 5xx),
  ``length`` finishes 1-3%, ``content_filter`` 0.02-0.1%; non-final steps of a loop
  finish with ``tool_calls``;
- a fallback model on 10-20% of the traces in 40% of the workflows (its own bundle:
  shorter answers, faster).

A shifted workflow has exactly one change, at a call drawn uniformly in the middle half
of the workflow's calls (by request time: a call is changed when its first attempt is
made at or after ``change_ts``). The watched bundle (``primary_bundle``: river's stream
in the bench) is the primary model's, or the fallback's when the change is on it only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

import numpy as np
from scipy.signal import lfilter

from driftline.schemas.event import bundle_id, micros_to_iso

T0_US: Final = 1_796_601_600_000_000  # 2026-12-07T00:00:00Z
DAY_S: Final = 86_400.0
CELL_S: Final = 10.0
# Traffic runs from an hour before the day to an hour after it, and only the events that
# end within the day are kept: the day starts and ends in steady state (traces already
# running at midnight, late steps of loops), not with the first step of every trace.
PAD_S: Final = 3_600.0
MAX_OUTPUT: Final = 32_768
MAX_INPUT: Final = 200_000


@dataclass(frozen=True)
class Shift:
    """The one change of a family: ``kind`` none | level | rate | mix | weights | creep |
    transient. ``factor`` and ``span`` are ranges drawn per workflow (a weights shift's
    factor is the points added to the long answers' share). ``scope`` is the bundle it
    moves: ``all`` or ``fallback``."""

    kind: str
    metric: str = ""
    related: tuple[str, ...] = ()
    factor: tuple[float, float] = (1.0, 1.0)
    span: tuple[int, int] = (0, 0)  # calls: a creep's ramp, a transient's length
    scope: str = "all"


@dataclass(frozen=True)
class Family:
    name: str
    shift: Shift
    target_base: tuple[float, float] | None = None  # the changed rate's base, drawn
    fallback: bool = False  # always has a fallback model
    bimodal: bool = False  # always has short and long answers


# More output tokens take longer to decode and print more characters; a longer prompt
# takes longer to prefill; a slower model is slower to its first token too.
_OUT: Final = ("output_length", "latency")
_IN: Final = ("ttft", "latency")
_LAT: Final = ("ttft",)
FAMILIES: Final = (
    Family("stationary", Shift("none")),
    Family("out tokens x1.2", Shift("level", "output_tokens", _OUT, (1.2, 1.2))),
    Family("in tokens x1.3", Shift("level", "input_tokens", _IN, (1.3, 1.3))),
    Family("latency x1.5", Shift("level", "latency", _LAT, (1.5, 1.5))),
    Family(
        "invalid 1%->3%",
        Shift("rate", "validation_failure", (), (3.0, 3.0)),
        target_base=(0.01, 0.01),
    ),
    Family("retry only x3", Shift("rate", "retries", (), (3.0, 3.0)), target_base=(0.007, 0.015)),
    Family(
        "length share x3",
        Shift("mix", "finish_reason", (), (3.0, 3.0)),
        target_base=(0.01, 0.02),
    ),
    Family(
        "latency creep x1.4",
        Shift("creep", "latency", _LAT, (1.4, 1.4), span=(2_000, 5_000)),
    ),
    Family(
        "latency blip x1.5-2",
        Shift("transient", "latency", _LAT, (1.5, 2.0), span=(1_000, 3_000)),
    ),
    Family(
        "fallback out x1.4",
        Shift("level", "output_tokens", _OUT, (1.4, 1.4), scope="fallback"),
        fallback=True,
    ),
    Family(
        "long share +15pt",
        Shift("weights", "output_tokens", _OUT, (0.15, 0.15)),
        bimodal=True,
    ),
)

_SERVICES: Final = (
    "billing-bot",
    "kb-answer",
    "lead-enrich",
    "pr-summary",
    "intake-form",
    "translate",
    "meeting-notes",
    "fraud-explain",
    "catalog-tags",
    "onboarding",
    "policy-check",
    "search-rewrite",
)
_MODEL_PAIRS: Final = (
    ("anthropic", "claude-sonnet-4-20250514", "claude-3-5-haiku-20241022"),
    ("openai", "gpt-4o-2024-11-20", "gpt-4o-mini-2024-07-18"),
    ("google", "gemini-2.5-pro", "gemini-2.5-flash"),
    ("openai", "o4-mini-2025-04-16", "gpt-4.1-nano-2025-04-14"),
)


@dataclass
class Workflow:
    """A generated workflow: event columns in end-time order, and its label."""

    name: str
    family: Family
    columns: dict[str, np.ndarray]
    change_ts: int | None = None
    end_ts: int | None = None
    primary_bundle: str = ""
    params: dict[str, float] = field(default_factory=dict)
    replicas: int = 1
    provider: str = ""
    prompt_version: str = ""
    index_version: str = ""

    @property
    def n_events(self) -> int:
        return len(self.columns["end_ts"])


# --- building blocks ------------------------------------------------------------------


def _ar1(rng: np.random.Generator, n: int, phi: float) -> np.ndarray:
    """Stationary AR(1) of unit variance (the first value drawn from its stationary law)."""
    e = rng.standard_normal(n) * math.sqrt(1.0 - phi * phi)
    e[0] = rng.standard_normal()
    out: np.ndarray = lfilter([1.0], [1.0, -phi], e)
    return out


def _traffic(rng: np.random.Generator, n_traces: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Trace start times (s since T0, sorted, from -PAD_S to DAY_S + PAD_S) and the load
    profile (per cell from -PAD_S, mean 1)."""
    cells = int((DAY_S + 2 * PAD_S) / CELL_S)
    t = (np.arange(cells) + 0.5) * CELL_S - PAD_S
    peak = rng.uniform(0, DAY_S)
    a1, a2 = rng.uniform(0.3, 0.7), rng.uniform(0.0, 0.2)
    w = 2 * math.pi * (t - peak) / DAY_S
    profile = np.maximum(1.0 + a1 * np.cos(w) + a2 * np.cos(2 * w + rng.uniform(0, 6.3)), 0.05)
    base = profile.copy()
    for _ in range(int(rng.integers(0, 11))):
        t0 = rng.uniform(-PAD_S, DAY_S + PAD_S)
        tau = rng.uniform(180, 1200)
        lag = t - t0
        profile += (
            np.where(lag >= 0, rng.uniform(1.0, 3.0) * np.exp(-np.maximum(lag, 0) / tau), 0.0)
            * base
        )
    counts = rng.multinomial(n_traces, profile / profile.sum())
    cell_of = np.repeat(np.arange(cells), counts)
    starts = np.sort((cell_of + rng.random(n_traces)) * CELL_S - PAD_S)
    return starts, profile / profile.mean(), np.array([a1, a2])


class _Knobs:
    """Every per-workflow draw, in one place."""

    def __init__(
        self, r: np.random.Generator, family: Family, has_fallback: bool, bimodal: bool
    ) -> None:
        self.family = family
        self.bimodal = bimodal
        self.trace_corr = r.uniform(0.3, 0.8)  # how much of a trace's factor is shared
        self.fb_share = r.uniform(0.1, 0.2) if has_fallback else 0.0
        self.p_single = r.uniform(0.2, 0.6)
        self.loop_mean = r.uniform(3.0, 7.0)
        # output tokens
        self.out_sd = r.uniform(0.4, 1.0)
        self.out_trace = r.uniform(0.05, 0.35)
        self.out_phi = r.uniform(0.0, 0.5)
        self.long_share = r.uniform(0.15, 0.3) if self.bimodal else 0.0
        if self.family.shift.kind == "weights":
            self.long_share = r.uniform(0.15, 0.25)
        self.long_ratio = r.uniform(4.0, 10.0)
        self.out_median = r.uniform(40, 150) if self.bimodal else r.uniform(100, 900)
        self.out_outlier = r.uniform(0.001, 0.005)
        # input tokens
        self.in_median = r.uniform(400, 5000)
        self.in_sd = r.uniform(0.4, 0.9)
        self.in_trace = r.uniform(0.1, 0.4)
        self.in_phi = r.uniform(0.0, 0.5)
        self.tool_median = r.uniform(100, 1500)
        self.in_outlier = r.uniform(0.001, 0.003)
        # time
        self.streaming = r.random() < 0.8
        self.ttft_ms = r.uniform(200, 900)
        self.ttft_exp = r.uniform(0.2, 0.5)
        self.tpot_ms = r.uniform(8, 40)
        self.lat_sd = r.uniform(0.15, 0.4)
        self.lat_trace = r.uniform(0.0, 0.4)  # share of the jitter's variance
        self.lat_phi = r.uniform(0.0, 0.5)
        self.pareto_tail = r.random() < 0.5
        self.tail_p = r.uniform(0.02, 0.06) if self.pareto_tail else r.uniform(0.02, 0.05)
        self.tail_alpha = r.uniform(1.5, 3.0)
        self.slow_x = r.uniform(2.0, 5.0)
        self.lat_outlier = r.uniform(0.001, 0.003)
        self.load_slow = r.uniform(0.0, 0.01)
        self.timeout_s = float(r.choice([20.0, 30.0, 60.0]))
        # slow cycle of the levels
        self.period_s = math.exp(r.uniform(math.log(1200), math.log(DAY_S)))
        self.amp = {m: r.uniform(0.0, 0.04) for m in ("out", "in", "lat", "rate")}
        self.phase = {m: r.uniform(0, 2 * math.pi) for m in ("out", "in", "lat", "rate")}
        # rates
        shift = self.family.shift
        base = self.family.target_base

        def rate(metric: str, lo: float, hi: float) -> float:
            if base is not None and shift.metric == metric:
                return r.uniform(*base)
            return r.uniform(lo, hi)

        self.p_invalid = rate("validation_failure", 0.005, 0.02)
        self.invalid_trace = r.uniform(0.0, 0.6)
        self.p_retry = rate("retries", 0.005, 0.03)
        self.p_length = rate("finish_reason", 0.01, 0.03)
        self.p_filter = r.uniform(0.0002, 0.001)
        # fallback model's levels
        self.fb_out = r.uniform(0.7, 1.0)
        self.fb_speed = r.uniform(0.4, 0.7)
        self.fb_invalid = r.uniform(1.0, 1.5)
        # the shift's own draws
        self.factor = r.uniform(*shift.factor)
        self.span = int(r.integers(shift.span[0], shift.span[1] + 1))

    def cycle(self, metric: str, t_s: np.ndarray) -> np.ndarray:
        return 1.0 + self.amp[metric] * np.sin(
            2 * math.pi * t_s / self.period_s + self.phase[metric]
        )


def _trace_sizes(rng: np.random.Generator, k: _Knobs, n_calls: int) -> np.ndarray:
    """Calls per trace until about ``n_calls`` calls."""
    guess = int(n_calls / (k.p_single + (1 - k.p_single) * k.loop_mean)) + 64
    single = rng.random(guess) < k.p_single
    # a loop: 2 + negative binomial (shape 2) of mean loop_mean - 2, at most 15 calls
    extra = rng.negative_binomial(2, 2.0 / (2.0 + k.loop_mean - 2.0), guess)
    sizes = np.where(single, 1, np.minimum(2 + extra, 15))
    while sizes.sum() < n_calls:
        sizes = np.concatenate([sizes, sizes[: max(len(sizes) // 4, 1)]])
    return sizes[: int(np.searchsorted(np.cumsum(sizes), n_calls)) + 1]


def _draw(
    rng: np.random.Generator, name: str, family: Family, n_calls: int, replicas: int
) -> Workflow:
    shift = family.shift
    k = _Knobs(
        rng,
        family,
        has_fallback=family.fallback or rng.random() < 0.4,
        bimodal=family.bimodal or rng.random() < 0.6,
    )
    sizes = _trace_sizes(rng, k, int(n_calls * (1 + 2 * PAD_S / DAY_S)))
    n_tr = len(sizes)
    n = int(sizes.sum())
    starts, load_cells, arrival = _traffic(rng, n_tr)
    first = np.cumsum(sizes) - sizes
    trace = np.repeat(np.arange(n_tr), sizes)
    step = np.arange(n) - first[trace]
    final = step == sizes[trace] - 1
    fb = (rng.random(n_tr) < k.fb_share)[trace]

    # Latent per-call draws, unshifted. AR(1) terms run over the calls in about the order
    # they are made (a trace's calls a few seconds apart).
    order = np.argsort(starts[trace] + 8.0 * step, kind="stable")

    def ar(phi: float) -> np.ndarray:
        z = np.empty(n)
        z[order] = _ar1(rng, n, phi)
        return z

    common = rng.standard_normal(n_tr)  # the trace's latent factor, shared by its metrics

    def mix(share: float, phi: float) -> np.ndarray:
        """Unit-variance noise: a trace factor of ``share`` of the variance, AR(1) rest."""
        rho = k.trace_corr
        per_trace = rho * common + math.sqrt(1 - rho * rho) * rng.standard_normal(n_tr)
        return math.sqrt(share) * per_trace[trace] + math.sqrt(1 - share) * ar(phi)

    z_out = mix(k.out_trace, k.out_phi)
    u_long = rng.random(n)
    out_spike = np.where(
        rng.random(n) < k.out_outlier, np.exp(rng.uniform(math.log(5), math.log(50), n)), 1.0
    )
    z_in = mix(k.in_trace, k.in_phi)
    in_spike = np.where(
        rng.random(n) < k.in_outlier, np.exp(rng.uniform(math.log(5), math.log(20), n)), 1.0
    )
    tools = np.exp(math.log(k.tool_median) + 0.8 * rng.standard_normal(n))
    tool_before = np.cumsum(tools) - tools
    tool_before -= tool_before[first][trace]  # tool results of the trace's earlier steps
    z_ttft = k.lat_sd * mix(k.lat_trace, k.lat_phi)
    z_tpot = k.lat_sd * mix(k.lat_trace, k.lat_phi)
    in_tail = rng.random(n) < k.tail_p
    if k.pareto_tail:
        tail = np.where(in_tail, 1.0 + rng.pareto(k.tail_alpha, n) * 2.0, 1.0)
    else:
        tail = np.where(in_tail, k.slow_x, 1.0)
    lat_spike = np.where(
        rng.random(n) < k.lat_outlier, np.exp(rng.uniform(math.log(5), math.log(50), n)), 1.0
    )
    chars_per_token = rng.uniform(3.4, 4.6) * np.exp(0.1 * rng.standard_normal(n))
    trace_invalid = np.exp(k.invalid_trace * rng.standard_normal(n_tr))[trace] / math.exp(
        k.invalid_trace**2 / 2
    )
    u_invalid, u_retry, u_len, u_filter = rng.random((4, n))
    fails_if_retried = np.minimum(1 + rng.geometric(0.65, n) - 1, 3)
    gap_s = np.exp(math.log(rng.uniform(0.3, 2.0)) + 0.9 * rng.standard_normal(n))
    fail_kind = rng.choice(3, size=(n, 3), p=[0.25, 0.55, 0.20])  # timeout, 429, 5xx
    fail_s = np.where(
        fail_kind == 0,
        k.timeout_s,
        np.where(fail_kind == 1, rng.uniform(0.05, 0.3, (n, 3)), rng.lognormal(0, 0.5, (n, 3))),
    )
    backoff_s = (2.0 ** np.arange(3)) * rng.uniform(0.5, 1.5, (n, 3))

    # The change: at a call drawn in the middle half, by request time. The request times
    # are not known before the loop below; the unshifted schedule's order is close
    # enough to pick the call, and its time is then taken from the shifted schedule.
    nominal = np.sort(starts[trace] + 8.0 * step)
    lo, hi = np.searchsorted(nominal, [0.0, DAY_S])  # the day's calls, padding aside
    where = rng.uniform(0.25, 0.75)
    at = int(lo + where * (hi - lo)) if shift.kind != "none" else -1

    # Calls step by step: the k-th calls of every trace, each after the previous ends.
    request = np.zeros(n)
    start = np.zeros(n)
    end = np.zeros(n)
    out_tok = np.zeros(n, dtype=np.int64)
    in_tok = np.zeros(n, dtype=np.int64)
    ttft = np.zeros(n)
    latency = np.zeros(n)
    invalid = np.zeros(n, dtype=bool)
    n_fail = np.zeros(n, dtype=np.int64)
    finish = np.empty(n, dtype=object)
    is_changed = np.zeros(n, dtype=bool)
    long_answer = np.zeros(n, dtype=bool)
    cyc = np.ones((4, n))  # the slow cycles' multipliers of the levels, and the load
    change_s = end_s = ramp_end_s = math.inf
    if at >= 0:
        # The unshifted request order's at-th call: nominal start + steps.
        change_s = float(nominal[at])
        if shift.kind in ("transient", "creep"):
            later = float(nominal[min(at + k.span, n - 1)])
            if shift.kind == "transient":
                end_s = later
            else:
                ramp_end_s = later
    cell_count = len(load_cells)

    for s in range(int(sizes.max())):
        idx = first[sizes > s] + s
        req = starts[trace[idx]] if s == 0 else end[idx - 1] + gap_s[idx]
        request[idx] = req
        cell = ((req + PAD_S) / CELL_S).astype(np.int64)
        load = load_cells[np.clip(cell, 0, cell_count - 1)]
        changed = (req >= change_s) & (req < end_s)
        if shift.scope == "fallback":
            changed &= fb[idx]
        is_changed[idx] = changed
        if shift.kind == "creep":
            ramp = np.clip((req - change_s) / max(ramp_end_s - change_s, 1.0), 0.0, 1.0)
            lat_x = np.where(req >= change_s, k.factor**ramp, 1.0)
        elif shift.kind in ("level", "transient") and shift.metric == "latency":
            lat_x = np.where(changed, k.factor, 1.0)
        else:
            lat_x = np.ones(len(idx))

        def x(metric: str, changed: np.ndarray = changed) -> np.ndarray:
            hit = shift.kind == "level" and shift.metric == metric
            return np.where(changed & hit, k.factor, 1.0)

        f = fb[idx]
        long_share = k.long_share + np.where(changed & (shift.kind == "weights"), k.factor, 0)
        long = u_long[idx] < long_share
        long_answer[idx] = long
        out = (
            k.out_median
            * np.where(long, k.long_ratio, 1.0)
            * np.exp(k.out_sd * z_out[idx])
            * out_spike[idx]
            * np.where(f, k.fb_out, 1.0)
            * k.cycle("out", req)
            * x("output_tokens")
        )
        out_tok[idx] = np.clip(np.round(out), 1, MAX_OUTPUT)
        prompt = k.in_median * np.exp(k.in_sd * z_in[idx]) * in_spike[idx]
        inp = (prompt + tool_before[idx]) * k.cycle("in", req) * x("input_tokens")
        in_tok[idx] = np.clip(np.round(inp), 1, MAX_INPUT)
        speed = np.where(f, k.fb_speed, 1.0)
        slow = (
            k.cycle("lat", req)
            * (1.0 + k.load_slow * np.tanh(load - 1.0))
            * tail[idx]
            * lat_spike[idx]
            * lat_x
        )
        first_token = (
            k.ttft_ms
            * (in_tok[idx] / 1000.0) ** k.ttft_exp
            * np.exp(z_ttft[idx])
            * np.where(f, 0.7, 1.0)
            * slow
        )
        decode = out_tok[idx] * k.tpot_ms * np.exp(z_tpot[idx]) * speed * slow
        ttft[idx] = first_token
        cyc[0, idx] = k.cycle("out", req)
        cyc[1, idx] = k.cycle("in", req)
        cyc[2, idx] = k.cycle("lat", req) * (1.0 + k.load_slow * np.tanh(load - 1.0))
        cyc[3, idx] = load
        latency[idx] = first_token + decode

        rate_cycle = k.cycle("rate", req)
        rate_x = np.where(changed & (shift.kind in ("rate", "mix")), k.factor, 1.0)

        def p(
            base: float,
            metric: str,
            rate_x: np.ndarray = rate_x,
            rate_cycle: np.ndarray = rate_cycle,
        ) -> np.ndarray:
            return base * rate_cycle * np.where(shift.metric == metric, rate_x, 1.0)

        p_inv = p(k.p_invalid, "validation_failure") * trace_invalid[idx]
        p_inv *= np.where(f, k.fb_invalid, 1.0)
        p_ret = p(k.p_retry, "retries") * (1.0 + 0.1 * np.tanh(load - 1.0))
        n_fail[idx] = np.where(u_retry[idx] < p_ret, fails_if_retried[idx], 0)
        fin = np.where(final[idx], "stop", "tool_calls").astype(object)
        fin[u_len[idx] < p(k.p_length, "finish_reason")] = "length"
        fin[u_filter[idx] < k.p_filter] = "content_filter"
        finish[idx] = fin
        invalid[idx] = (u_invalid[idx] < p_inv) & (fin != "content_filter")
        waited = np.zeros(len(idx))
        for a in range(3):
            took = n_fail[idx] > a
            waited += np.where(took, fail_s[idx, a] + backoff_s[idx, a], 0.0)
        start[idx] = req + waited
        end[idx] = start[idx] + latency[idx] / 1000.0

    # The label, in event time: the change at the request of the first changed call.
    change_ts = end_ts = None
    if at >= 0:
        after = request[request >= change_s]
        change_ts = int(T0_US + round(float(after.min()) * 1e6)) if after.size else None
        if shift.kind == "transient":
            end_ts = int(T0_US + round(end_s * 1e6))

    # Failed attempts: their own events, before the call, in attempt order.
    rows = np.repeat(np.arange(n), n_fail)
    attempt = np.concatenate([np.arange(m) for m in n_fail[n_fail > 0]] or [np.zeros(0, int)])
    f_end = request[rows].copy()
    for a in range(3):  # attempt a ends after the earlier attempts and their backoffs
        f_end += np.where(attempt >= a, fail_s[rows, a], 0.0)
        f_end += np.where(attempt > a, backoff_s[rows, a], 0.0)
    f_start = f_end - fail_s[rows, attempt]
    f_kind = fail_kind[rows, attempt]
    errors = np.array(["APITimeoutError", "RateLimitError", "InternalServerError"], dtype=object)

    provider, primary, backup = _MODEL_PAIRS[int(rng.integers(len(_MODEL_PAIRS)))]
    prompt_version = f"v{int(rng.integers(3, 40))}"
    index_version = f"kb-{int(rng.integers(1, 12)):02d}"
    bundles = {m: bundle_id(m, "", prompt_version, index_version, "") for m in (primary, backup)}
    m_fail = len(rows)

    def cat(calls: np.ndarray, failed: np.ndarray) -> np.ndarray:
        return np.concatenate([calls, failed])

    model = np.where(fb, backup, primary).astype(object)
    cols: dict[str, np.ndarray] = {
        "trace": cat(trace, trace[rows]),
        "step": cat(step, step[rows]),
        "start_ts": (T0_US + np.round(cat(start, f_start) * 1e6)).astype(np.int64),
        "end_ts": (T0_US + np.round(cat(end, f_end) * 1e6)).astype(np.int64),
        "model": cat(model, model[rows]),
        "fallback": cat(fb, fb[rows]),
        "input_tokens": cat(in_tok, np.where(f_kind == 1, 0, in_tok[rows])).astype(np.int64),
        "output_tokens": cat(out_tok, np.zeros(m_fail, dtype=np.int64)),
        "output_chars": cat(
            np.round(out_tok * chars_per_token).astype(np.int64), np.zeros(m_fail, np.int64)
        ),
        "latency_ms": cat(latency, fail_s[rows, attempt] * 1000.0),
        "ttft_ms": cat(ttft if k.streaming else np.full(n, np.nan), np.full(m_fail, np.nan)),
        "retry_attempt": cat(n_fail, attempt).astype(np.int64),
        "finish_reason": cat(finish, np.full(m_fail, "", dtype=object)),
        "validation_failed": cat(invalid, np.zeros(m_fail, dtype=bool)),
        "error_type": cat(np.full(n, "", dtype=object), errors[f_kind]),
        "tool_calls": cat((finish == "tool_calls").astype(np.int64), np.zeros(m_fail, np.int64)),
        # for checks of the generator: the call an event belongs to, and its draws
        "call": cat(np.arange(n), rows),
        "changed_call": cat(is_changed, is_changed[rows]),
        "long_answer": cat(long_answer, long_answer[rows]),
        "cycle_out": cat(cyc[0], cyc[0, rows]),
        "cycle_in": cat(cyc[1], cyc[1, rows]),
        "cycle_latency": cat(cyc[2], cyc[2, rows]),
        "load": cat(cyc[3], cyc[3, rows]),
        "spike": cat(
            (out_spike > 1) | (in_spike > 1) | (lat_spike > 1),
            np.zeros(m_fail, dtype=bool),
        ),
        "tail": cat(in_tail, np.zeros(m_fail, dtype=bool)),
    }
    cols["bundle_id"] = np.array([bundles[m] for m in cols["model"]], dtype=object)
    by_end = np.argsort(cols["end_ts"], kind="stable")
    in_day = (cols["end_ts"][by_end] >= T0_US) & (cols["end_ts"][by_end] < T0_US + DAY_S * 1e6)
    by_end = by_end[in_day]
    cols = {key: v[by_end] for key, v in cols.items()}
    cols["span_id"] = _hex(rng, len(by_end), 8)
    trace_ids, root_ids = _hex(rng, n_tr, 16), _hex(rng, n_tr, 8)
    cols["trace_id"] = trace_ids[cols["trace"]]
    cols["parent_span_id"] = root_ids[cols["trace"]]
    cols["replica"] = rng.integers(0, replicas, n_tr)[cols["trace"]]

    params = {
        "calls": float(np.count_nonzero(cols["error_type"] == "")),
        "out_sd": k.out_sd,
        "out_phi": k.out_phi,
        "long": k.long_share,
        "fallback": k.fb_share,
        "tail_p": k.tail_p,
        "pareto": float(k.pareto_tail),
        "period_min": k.period_s / 60,
        "lat_amp": k.amp["lat"],
        "arrival_a1": float(arrival[0]),
    }
    if shift.kind != "none":
        params["factor"] = k.factor
        params["at"] = where
    if shift.kind in ("creep", "transient"):
        params["span"] = float(k.span)
    if family.target_base is not None:
        params["base"] = {
            "validation_failure": k.p_invalid,
            "retries": k.p_retry,
            "finish_reason": k.p_length,
        }[shift.metric]
    watched = bundles[backup] if shift.scope == "fallback" else bundles[primary]
    return Workflow(
        provider=provider,
        prompt_version=prompt_version,
        index_version=index_version,
        name=name,
        family=family,
        columns=cols,
        change_ts=change_ts,
        end_ts=end_ts,
        primary_bundle=watched,
        params=params,
        replicas=replicas,
    )


def _hex(rng: np.random.Generator, n: int, nbytes: int) -> np.ndarray:
    raw = rng.bytes(n * nbytes).hex()
    step = 2 * nbytes
    return np.array([raw[i : i + step] for i in range(0, len(raw), step)], dtype=object)


# --- the bench's interface ------------------------------------------------------------


def day_of(seed: int, calls: int, controls: int, per_family: int) -> Iterator[Workflow]:
    """One seed's workflows: ``controls`` stationary ones and ``per_family`` of each
    shifted family, in a shuffled order; each workflow drawn from its own stream of the
    seed (its draws do not depend on the others)."""
    plan = [
        fam for fam in FAMILIES for _ in range(controls if fam.shift.kind == "none" else per_family)
    ]
    order = np.random.default_rng([seed, 7]).permutation(len(plan))
    for slot, pick in enumerate(order):
        rng = np.random.default_rng([seed, 1000 + slot])
        n_calls = int(calls * rng.uniform(1.0, 1.2))
        service = _SERVICES[(slot * 5 + seed) % len(_SERVICES)]
        name = f"{service}-s{seed}-w{slot:02d}"
        yield _draw(rng, name, plan[pick], n_calls, replicas=int(rng.integers(1, 5)))


def event_lines(workflows: list[Workflow]) -> list[str]:
    """The workflows' events as normalized NDJSON, in the order exporters would ship
    them: each replica of a service batches its spans and flushes every 1-5 s, in end
    order within a batch; batches from all replicas of all workflows interleave by the
    time they arrive (flush time plus a little network delay)."""
    keyed: list[tuple[float, int, int]] = []
    for wi, w in enumerate(workflows):
        rng = np.random.default_rng([wi, w.n_events])
        end_s = (w.columns["end_ts"] - T0_US) / 1e6
        for rep in range(w.replicas):
            rows = np.flatnonzero(w.columns["replica"] == rep)
            every = rng.uniform(1.0, 5.0)
            phase = rng.uniform(0, every)
            flush = np.ceil((end_s[rows] - phase) / every) * every + phase
            arrive = flush + rng.exponential(0.05)  # one delay per batch: shared
            arrive += np.zeros(len(rows))
            keyed.extend(zip(arrive.tolist(), [wi] * len(rows), rows.tolist(), strict=True))
    keyed.sort()
    per_wf = [_rows_as_json(w) for w in workflows]
    return [per_wf[wi][i] for _, wi, i in keyed]


def _rows_as_json(w: Workflow) -> list[str]:
    c = w.columns
    service = w.name.split("-s")[0]
    lines = []
    cols = {
        key: c[key].tolist()
        for key in (
            "trace_id",
            "span_id",
            "parent_span_id",
            "start_ts",
            "end_ts",
            "model",
            "bundle_id",
            "input_tokens",
            "output_tokens",
            "output_chars",
            "latency_ms",
            "ttft_ms",
            "retry_attempt",
            "step",
            "tool_calls",
            "finish_reason",
            "validation_failed",
            "error_type",
            "trace",
        )
    }
    tenants = [f"acct-{i:03d}" for i in range(11)]
    for i in range(w.n_events):
        error = cols["error_type"][i]
        ttft = cols["ttft_ms"][i]
        step = cols["step"][i]
        record = {
            "trace_id": cols["trace_id"][i],
            "span_id": cols["span_id"][i],
            "parent_span_id": cols["parent_span_id"][i],
            "start_ts": micros_to_iso(cols["start_ts"][i]),
            "end_ts": micros_to_iso(cols["end_ts"][i]),
            "service": service,
            "environment": "production",
            "workflow": w.name,
            "agent": "router" if step == 0 else "worker",
            "tenant": tenants[cols["trace"][i] % len(tenants)],
            "operation": "chat",
            "provider": w.provider,
            "request_model": cols["model"][i],
            "response_model": cols["model"][i],
            "prompt_version": w.prompt_version,
            "retrieval_index_version": w.index_version,
            "bundle_id": cols["bundle_id"][i],
            "input_tokens": cols["input_tokens"][i],
            "output_tokens": cols["output_tokens"][i],
            "latency_ms": round(cols["latency_ms"][i], 3),
            "ttft_ms": None if error or math.isnan(ttft) else round(ttft, 3),
            "retry_attempt": cols["retry_attempt"][i],
            "loop_depth": step,
            "tool_calls": cols["tool_calls"][i],
            "finish_reason": cols["finish_reason"][i],
            "output_chars": None if error else cols["output_chars"][i],
            "validation_failed": cols["validation_failed"][i],
            "error_type": error,
            "status": "error" if error else "ok",
        }
        lines.append(json.dumps(record, separators=(",", ":")))
    return lines
