"""Drift, shape, creep and budget detectors: pure numpy/scipy, no I/O.

Every detector follows river's contract (``update(x)``, a ``drift_detected`` flag
true for exactly one observation, a reset after a detection) and adds
``update_many(values) -> indices`` for batches (:class:`DriftDetector`). What the
monitor keeps per metric or budget (:class:`MetricDetector`, :class:`WindowSum`,
:class:`BurnRate`) also offers ``shift_holds()`` (the stay-open bar of an alert),
``rebaseline()`` and plain ``to_state()`` / ``from_state()``.
"""

from driftline.detectors.base import DriftDetector
from driftline.detectors.burn_rate import BurnRate, BurnVerdict, WindowSum
from driftline.detectors.calibration import cusum_thresholds, ewma_limits
from driftline.detectors.categorical import CategoricalShift
from driftline.detectors.composite import Detection, MetricDetector
from driftline.detectors.cusum import CUSUM, cusum_bank_rows, cusum_rows
from driftline.detectors.ewma import EWMA
from driftline.detectors.growth import ReferenceGrowth
from driftline.detectors.ks import KSWindow
from driftline.detectors.metrics import METRIC_NAMES, METRICS, METRICS_BY_NAME, Metric
from driftline.detectors.rate import RateCUSUM
from driftline.detectors.reference import FrozenReference

__all__ = [
    "CUSUM",
    "EWMA",
    "METRICS",
    "METRICS_BY_NAME",
    "METRIC_NAMES",
    "BurnRate",
    "BurnVerdict",
    "CategoricalShift",
    "Detection",
    "DriftDetector",
    "FrozenReference",
    "KSWindow",
    "Metric",
    "MetricDetector",
    "RateCUSUM",
    "ReferenceGrowth",
    "WindowSum",
    "cusum_bank_rows",
    "cusum_rows",
    "cusum_thresholds",
    "ewma_limits",
]
