"""Whether a detection rests on one trace: one user request is one draw, however many calls.

An agent's calls within one trace share its input (a long document, a resent history),
so a trace of a dozen calls can hold a dozen extreme values in a row. Calibration on a
500-value warm-up cannot promise that such runs are rare enough: when traces differ by a
skewed amount (a few traces carry very long documents) the warm-up sees a handful of
ordinary ones, and a single extreme trace later fills a CUSUM on its own (what
``tests/unit/test_detectors_one_trace.py`` checks: clusters of 12 calls sharing an
exponential effect, 30 false alarms in 300,000 values without this rule and 2 with it;
Gaussian effects of the same variance, at most 1).

A detection is kept when it holds without its heaviest trace: the test's statistic
recomputed over the recent values with that trace's values left out (plus what the
statistic carried in from before those values) must keep ``1 - ONE_TRACE_SHARE`` of
itself. A real shift moves every trace, so no single one carries most of the evidence,
whatever the traces' length (two traces of equal weight each carry half).
"""

from __future__ import annotations

from typing import Final

import numpy as np
from numpy.typing import NDArray

from driftline.detectors._kernels import FloatArray, cusum_path

__all__ = [
    "ONE_TRACE_SHARE",
    "RECENT_VALUES",
    "cusum_rests_on_one_trace",
    "ewma_rests_on_one_trace",
]

# A detection whose heaviest trace carries more than this share of its statistic is
# dropped (the test has reset as after any detection: the trace's evidence is spent).
ONE_TRACE_SHARE: Final = 2.0 / 3.0
# Values kept (with their traces) to look back over at a detection: longer than any
# trace's run of calls in a workflow's stream.
RECENT_VALUES: Final = 128


def _heaviest(weights: FloatArray, groups: NDArray[np.int64]) -> NDArray[np.bool_]:
    """The values of the group whose weights sum highest."""
    codes, inverse = np.unique(groups, return_inverse=True)
    sums = np.bincount(inverse, weights=weights, minlength=codes.shape[0])
    return np.asarray(inverse == int(np.argmax(sums)))


def cusum_rests_on_one_trace(
    increments: FloatArray, groups: NDArray[np.int64], statistic: float
) -> bool:
    """Whether a one-sided CUSUM that reached ``statistic`` with these last ``increments``
    (one per value, the detection's value last) would keep under ``1 - ONE_TRACE_SHARE``
    of it without the values of the trace that added most.

    >>> one = np.r_[np.full(50, -0.5), np.full(12, 2.0)]      # one trace of 12 high calls
    >>> groups = np.r_[np.arange(50), np.full(12, 99)]
    >>> cusum_rests_on_one_trace(one - 0.0, groups, statistic=24.0)
    True
    >>> many = np.tile([2.0, 2.0, -0.5], 6)                   # 6 traces, each 2 high calls
    >>> cusum_rests_on_one_trace(many, np.repeat(np.arange(6), 3), statistic=22.5)
    False
    """
    x = np.asarray(increments, dtype=np.float64)
    g = np.asarray(groups, dtype=np.int64)
    if x.shape[0] == 0:
        return False
    within = float(cusum_path(x[None, :])[0, -1])
    carried = max(statistic - within, 0.0)  # evidence from before the recent values
    heaviest = _heaviest(x, g)
    rest = x[~heaviest]
    without = float(cusum_path(rest[None, :])[0, -1]) if rest.shape[0] else 0.0
    return without + carried < (1.0 - ONE_TRACE_SHARE) * statistic


def ewma_rests_on_one_trace(
    z: FloatArray, groups: NDArray[np.int64], lam: float, statistic: float
) -> bool:
    """Whether an EWMA (weight ``lam``) that reached ``statistic`` at the last of these
    standardized values ``z`` would keep under ``1 - ONE_TRACE_SHARE`` of it without the
    trace whose values pushed it furthest its way.

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
    heaviest = _heaviest(pushed, np.asarray(groups, dtype=np.int64))
    without = sign * statistic - float(pushed[heaviest].sum())
    return without < (1.0 - ONE_TRACE_SHARE) * abs(statistic)
