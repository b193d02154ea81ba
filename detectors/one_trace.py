"""Whether a detection rests on one trace: one user request is one draw, however many calls.

An agent's calls within one trace share its input (a long document, a resent history),
so a trace of a dozen calls can hold a dozen extreme values in a row. Calibration on a
500-value warm-up cannot promise that such runs are rare enough: when traces differ by a
skewed amount (a few traces carry very long documents) the warm-up sees a handful of
ordinary ones, and a single extreme trace later fills a CUSUM on its own (what
``tests/unit/test_detectors_one_trace.py`` checks: clusters of 12 calls sharing an
exponential effect, 29 false alarms in 300,000 values without either rule and 2 with them;
Gaussian effects of the same variance, at most 1).

A detection is kept when it holds without its heaviest trace: the test's statistic
recomputed over the recent values with that trace's values left out (plus what the
statistic carried in from before those values) must keep ``1 - ONE_TRACE_SHARE`` of
itself. A real shift moves every trace, so no single one carries most of the evidence,
whatever the traces' length.

Nor may it rest on two: without its two heaviest traces it must keep
``1 - TWO_TRACES_SHARE`` of itself. Deep agent loops resend a growing history, so two of
them running at once in a sparse bundle are two runs of a dozen high prompts, side by
side (a stationary control of ``bench/blind_families.py``, seed 512: two traces of more
than a dozen calls each carried 90% and 96% of the 1.5 sd member's statistic on input
tokens and TTFT, and each about half of it). Three traces of equal weight keep a third
without two of them, so a shift spread evenly over three traces or more is kept (for a
CUSUM, as long as the values between them do not pull it down). Traces of exactly equal
weight, which real-valued data almost never has, are taken in the order of their codes.
"""

from __future__ import annotations

from typing import Final

import numpy as np
from numpy.typing import NDArray

from driftline.detectors._kernels import FloatArray, cusum_path

__all__ = [
    "ONE_TRACE_SHARE",
    "RECENT_VALUES",
    "TWO_TRACES_SHARE",
    "cusum_rests_on_one_trace",
    "ewma_rests_on_one_trace",
]

# A detection whose heaviest trace carries more than this share of its statistic is
# dropped (the test has reset as after any detection: the trace's evidence is spent).
ONE_TRACE_SHARE: Final = 2.0 / 3.0
# ... and one whose two heaviest traces carry more than this share of it.
TWO_TRACES_SHARE: Final = 5.0 / 6.0
# Values kept (with their traces) to look back over at a detection: longer than any
# trace's run of calls in a workflow's stream.
RECENT_VALUES: Final = 128


def _heaviest(
    weights: FloatArray, groups: NDArray[np.int64]
) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """The values of the group whose weights sum highest, and of the two highest."""
    codes, inverse = np.unique(groups, return_inverse=True)
    sums = np.bincount(inverse, weights=weights, minlength=codes.shape[0])
    order = np.argsort(-sums, kind="stable")
    first = np.asarray(inverse == int(order[0]))
    if order.shape[0] < 2:
        return first, first
    return first, first | np.asarray(inverse == int(order[1]))


def cusum_rests_on_one_trace(
    increments: FloatArray, groups: NDArray[np.int64], statistic: float
) -> bool:
    """Whether a one-sided CUSUM that reached ``statistic`` with these last ``increments``
    (one per value, the detection's value last) would keep under ``1 - ONE_TRACE_SHARE``
    of it without the values of the trace that added most, or under
    ``1 - TWO_TRACES_SHARE`` without those of the two that added most.

    >>> one = np.r_[np.full(50, -0.5), np.full(12, 2.0)]      # one trace of 12 high calls
    >>> groups = np.r_[np.arange(50), np.full(12, 99)]
    >>> cusum_rests_on_one_trace(one - 0.0, groups, statistic=24.0)
    True
    >>> many = np.tile([2.0, 2.0, -0.5], 6)                   # 6 traces, each 2 high calls
    >>> cusum_rests_on_one_trace(many, np.repeat(np.arange(6), 3), statistic=22.5)
    False
    >>> two = np.r_[np.full(40, -0.1), np.full(24, 1.0)]       # two loops of 12, interleaved
    >>> groups = np.r_[np.arange(40), np.tile([98, 99], 12)]
    >>> cusum_rests_on_one_trace(two, groups, statistic=24.0)
    True
    """
    x = np.asarray(increments, dtype=np.float64)
    g = np.asarray(groups, dtype=np.int64)
    if x.shape[0] == 0:
        return False
    within = float(cusum_path(x[None, :])[0, -1])
    carried = max(statistic - within, 0.0)  # evidence from before the recent values

    def kept(left_out: NDArray[np.bool_]) -> float:
        rest = x[~left_out]
        return (float(cusum_path(rest[None, :])[0, -1]) if rest.shape[0] else 0.0) + carried

    one, two = _heaviest(x, g)
    if kept(one) < (1.0 - ONE_TRACE_SHARE) * statistic:
        return True
    return kept(two) < (1.0 - TWO_TRACES_SHARE) * statistic


def ewma_rests_on_one_trace(
    z: FloatArray, groups: NDArray[np.int64], lam: float, statistic: float
) -> bool:
    """Whether an EWMA (weight ``lam``) that reached ``statistic`` at the last of these
    standardized values ``z`` would keep under ``1 - ONE_TRACE_SHARE`` of it without the
    trace whose values pushed it furthest its way (or under ``1 - TWO_TRACES_SHARE``
    without the two that did).

    >>> z = np.r_[np.zeros(100), np.full(12, 3.0)]
    >>> groups = np.r_[np.arange(100), np.full(12, 7)]
    >>> e = float(np.sum(0.05 * 0.95 ** np.arange(11, -1, -1) * 3.0))
    >>> ewma_rests_on_one_trace(z, groups, 0.05, e)
    True
    """
    x = np.asarray(z, dtype=np.float64)
    if x.shape[0] == 0 or statistic == 0.0:
        return False
    weights = lam * (1.0 - lam) ** np.arange(x.shape[0] - 1, -1, -1, dtype=np.float64)
    sign = 1.0 if statistic > 0 else -1.0
    pushed = sign * weights * x

    def kept(left_out: NDArray[np.bool_]) -> float:
        return sign * statistic - float(pushed[left_out].sum())

    one, two = _heaviest(pushed, np.asarray(groups, dtype=np.int64))
    if kept(one) < (1.0 - ONE_TRACE_SHARE) * abs(statistic):
        return True
    return kept(two) < (1.0 - TWO_TRACES_SHARE) * abs(statistic)
