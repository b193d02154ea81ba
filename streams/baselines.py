"""Baseline snapshots: what each detector compares against, written to ``workflow_baselines``.

Every ``store.baseline_snapshot_s`` the worker writes one row per (workflow, bundle,
metric) that changed since the last snapshot: the frozen reference in the signal's own
units (tokens, ms, share of KV cache, retries per call), the recent level, and the level
test's score against its threshold. The Drift dashboard plots baseline against current and
the score over time from these rows; analysts can see when a reference was frozen and on
how many calls.

``snapshot_ts`` is event time (the monitor's clock), so a replayed or backfilled stream
lands where its data is.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from driftline.schemas.tables import BASELINES

if TYPE_CHECKING:
    from driftline.streams.monitor import Monitor

__all__ = ["BASELINE_COLUMNS", "BASELINE_TABLE", "baseline_rows"]

# The table's name and columns are schemas/tables.py BASELINES; these names are kept for callers.
BASELINE_TABLE: Final = BASELINES.name
BASELINE_COLUMNS: Final = BASELINES.fields
SCORE_THRESHOLD: Final = 1.0  # summaries report statistic / threshold


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def baseline_rows(monitor: Monitor, workflows: Iterable[str], snapshot_us: int) -> list[dict]:
    """One ``workflow_baselines`` row per detector of ``workflows``, raw units.

    >>> from driftline.config import DetectorSettings, Settings
    >>> from streams.monitor import Monitor
    >>> m = Monitor(Settings(detectors=DetectorSettings(
    ...     warmup_events=50, window_events=20, enabled_metrics=["output_tokens"])))
    >>> events = [{"workflow": "w", "bundle_id": "b", "trace_id": str(i), "span_id": str(i),
    ...            "end_ts": 10**15 + i * 10**6 + 60 * 10**6, "output_tokens": 100 + i % 7}
    ...           for i in range(200)]
    >>> _ = m.process(events, [])
    >>> (row,) = baseline_rows(m, ["w"], m.watermark)
    >>> row["metric"], row["frozen"], row["n"], round(row["p50"])
    ('output_tokens', True, 50, 103)
    """
    rows = []
    for workflow in workflows:
        for bundle_id, metric, summary, context in monitor.detector_summaries(workflow):
            raw = metric.inverse
            mean, std = summary["mean"], summary["std"]
            p50 = p95 = p99 = None
            reference = summary["sorted"]
            if reference is not None and reference.shape[0]:
                values = raw(reference) if raw is not None else reference
                mean, std = float(values.mean()), float(values.std(ddof=1))
                p50, p95, p99 = (float(q) for q in np.quantile(values, (0.5, 0.95, 0.99)))
            extra: dict[str, Any] = {
                "model": context.get("model", ""),
                "operation": context.get("operation", ""),
                "prompt_version": context.get("prompt_version", ""),
            }
            if summary["mix"] is not None:
                extra["mix"] = summary["mix"]
            if summary["recent_mean"] is not None:
                extra["recent_mean"] = _finite(metric.raw_scale(summary["recent_mean"]))
            if summary["score"] is not None:
                extra["score"] = _finite(summary["score"])
                extra["threshold"] = SCORE_THRESHOLD
            rows.append(
                {
                    "snapshot_ts": snapshot_us,
                    "workflow": workflow,
                    "bundle_id": bundle_id,
                    "metric": metric.name,
                    "frozen": bool(summary["frozen"]),
                    "n": int(summary["n"]),
                    "mean": float(mean),
                    "std": float(std),
                    "p50": _finite(p50),
                    "p95": _finite(p95),
                    "p99": _finite(p99),
                    "extra": json.dumps(extra, separators=(",", ":")),
                }
            )
    return rows
