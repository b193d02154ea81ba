"""Drift: per workflow and metric, the frozen baseline against the current window; detector
scores against their thresholds; bundle changes as annotations; canary against stable.

Baselines and detector scores come from ``workflow_baselines`` (the worker's snapshots, see
``streams.baselines``: the latest frozen one per workflow, bundle and metric, in the signal's
own units); current values are computed from raw rows over the dashboard range, because the
rollups keep no per-bundle distributions. Alert records link
here as ``/d/driftline-drift?var-workflow=<workflow>``.
"""

from __future__ import annotations

from typing import Final

from driftline.dashboards.panels import AnnotationSpec, BuildContext, DashboardSpec, PanelSpec
from driftline.dashboards.variables import (
    ENVIRONMENT,
    METRIC,
    MODEL,
    WORKFLOW,
    condition,
    filter_variables,
    metric_variable,
    where,
)
from driftline.detectors import metrics as m

UID: Final = "driftline-drift"
TITLE: Final = "driftline / Drift"

# Each numeric detector metric as an expression on driftline.llm_requests, in raw units.
METRIC_EXPRESSIONS: Final[dict[str, str]] = {
    m.INPUT_TOKENS: "toFloat64(input_tokens)",
    m.OUTPUT_TOKENS: "toFloat64(output_tokens)",
    m.RETRIES: "toFloat64(retry_attempt)",
    m.KV_PRESSURE: "kv_cache_usage",
    m.LATENCY: "latency_ms",
    m.TTFT: "ttft_ms",
    m.OUTPUT_LENGTH: "toFloat64(output_chars)",
    m.VALIDATION_FAILURE: "toFloat64(validation_failed)",
}
DEFAULT_METRIC: Final = m.OUTPUT_TOKENS

_RAW_WHERE: Final = where("start_ts", ENVIRONMENT, WORKFLOW, MODEL)
_SELECTED_METRIC: Final = "${metric:singlequote}"
# The selected metric's value per row (NULL where it was not measured).
_METRIC_VALUE: Final = (
    "multiIf("
    + ", ".join(
        f"{_SELECTED_METRIC} = '{name}', {expr}" for name, expr in METRIC_EXPRESSIONS.items()
    )
    + ", NULL)"
)
_LATEST_BASELINE: Final = f"""SELECT workflow, bundle_id, metric,
               argMax(mean, snapshot_ts) AS baseline_mean,
               argMax(std, snapshot_ts) AS baseline_std,
               argMax(p50, snapshot_ts) AS baseline_p50,
               argMax(p95, snapshot_ts) AS baseline_p95,
               argMax(p99, snapshot_ts) AS baseline_p99
        FROM driftline.workflow_baselines
        WHERE frozen AND snapshot_ts <= $__toTime AND {condition(WORKFLOW)}
        GROUP BY workflow, bundle_id, metric"""

# Every metric's current level per bundle in one pass over the rows (a tuple per metric,
# unpivoted after the GROUP BY): an ARRAY JOIN before it would read every row eight times.
_CURRENT_STATS: Final = (
    "["
    + ", ".join(
        f"('{name}', avg({expr}), quantile(0.95)({expr}), count({expr}))"
        for name, expr in METRIC_EXPRESSIONS.items()
    )
    + "]"
)

_LEVELS_TABLE: Final = f"""WITH
    baseline AS
    (
        {_LATEST_BASELINE}
    ),
    current AS
    (
        SELECT workflow, bundle_id, stat.1 AS metric, stat.2 AS current_mean,
               stat.3 AS current_p95, stat.4 AS current_n
        FROM
        (
            SELECT workflow, bundle_id, {_CURRENT_STATS} AS stats
            FROM driftline.llm_requests
            WHERE {_RAW_WHERE}
            GROUP BY workflow, bundle_id
        )
        ARRAY JOIN stats AS stat
        WHERE current_n > 0
    )
SELECT b.workflow AS workflow, b.bundle_id AS bundle_id, b.metric AS metric,
       b.baseline_mean AS baseline_mean, c.current_mean AS current_mean,
       (c.current_mean - b.baseline_mean) / nullIf(b.baseline_std, 0) AS shift_sigma,
       b.baseline_p95 AS baseline_p95, c.current_p95 AS current_p95, c.current_n AS current_n
FROM baseline AS b
INNER JOIN current AS c
    ON b.workflow = c.workflow AND b.bundle_id = c.bundle_id AND b.metric = c.metric
ORDER BY abs(shift_sigma) DESC NULLS LAST, workflow, metric"""

# Baseline of the selected metric per workflow: bundles' frozen references averaged.
_WORKFLOW_BASELINE: Final = f"""SELECT workflow, avg(baseline_mean) AS baseline_mean,
               avg(baseline_p50) AS baseline_p50, avg(baseline_p95) AS baseline_p95,
               avg(baseline_p99) AS baseline_p99
        FROM
        (
            {_LATEST_BASELINE}
        )
        WHERE metric = {_SELECTED_METRIC}
        GROUP BY workflow"""

_LEVEL_OVER_TIME: Final = f"""WITH
    baseline AS
    (
        {_WORKFLOW_BASELINE}
    ),
    current AS
    (
        SELECT $__timeInterval(start_ts) AS time, workflow,
               avg({_METRIC_VALUE}) AS current_mean
        FROM driftline.llm_requests
        WHERE {_RAW_WHERE}
        GROUP BY time, workflow
    )
SELECT c.time AS time, c.workflow AS workflow, c.current_mean AS current_mean,
       b.baseline_mean AS baseline_mean
FROM current AS c
INNER JOIN baseline AS b ON c.workflow = b.workflow
WHERE c.current_mean IS NOT NULL
ORDER BY time, workflow"""

_DISTRIBUTION: Final = f"""WITH
    baseline AS
    (
        {_WORKFLOW_BASELINE}
    ),
    current AS
    (
        SELECT workflow, quantiles(0.5, 0.95, 0.99)({_METRIC_VALUE}) AS q
        FROM driftline.llm_requests
        WHERE {_RAW_WHERE}
        GROUP BY workflow
    )
SELECT c.workflow AS workflow,
       b.baseline_p50 AS baseline_p50, c.q[1] AS current_p50,
       b.baseline_p95 AS baseline_p95, c.q[2] AS current_p95,
       b.baseline_p99 AS baseline_p99, c.q[3] AS current_p99
FROM current AS c
INNER JOIN baseline AS b ON c.workflow = b.workflow
WHERE NOT isNaN(current_p50)
ORDER BY workflow"""

# The level test's statistic over its threshold, as the worker snapshots it (streams.baselines).
_SCORES: Final = f"""SELECT $__timeInterval(snapshot_ts) AS time,
       concat(workflow, ' ', metric, ' ', substring(bundle_id, 1, 8)) AS detector,
       max(JSONExtractFloat(extra, 'score')) AS score,
       any(JSONExtractFloat(extra, 'threshold')) AS threshold
FROM driftline.workflow_baselines
WHERE frozen AND $__timeFilter(snapshot_ts) AND {condition(WORKFLOW)}
  AND metric = {_SELECTED_METRIC} AND JSONHas(extra, 'score')
GROUP BY time, detector
ORDER BY time, detector"""

_DRIFT_ALERTS: Final = f"""SELECT opened_at, state, severity, workflow, metric, bundle_id,
       baseline_value, current_value, score, threshold, resolved_at
FROM driftline.llm_alerts_current
WHERE kind = 'drift' AND opened_at <= $__toTime
  AND (state = 'open' OR resolved_at >= $__fromTime) AND {condition(WORKFLOW)}
ORDER BY opened_at DESC
LIMIT 100"""

# Workflows served by more than one bundle in the range; the bundle seen last is the canary.
_BUNDLES: Final = f"""SELECT workflow, bundle_id, min(start_ts) AS first_seen
        FROM driftline.llm_requests
        WHERE {_RAW_WHERE}
        GROUP BY workflow, bundle_id"""

_CANARY_ROLES: Final = f"""SELECT workflow, bundle_id,
               if(first_seen = max(first_seen) OVER (PARTITION BY workflow),
                  'canary', 'stable') AS role
        FROM
        (
            {_BUNDLES}
        )
        QUALIFY count() OVER (PARTITION BY workflow) > 1"""


def _canary_over_time(values: str) -> str:
    return f"""WITH roles AS
    (
        {_CANARY_ROLES}
    )
SELECT $__timeInterval(r.start_ts) AS time,
       concat(r.workflow, ' ', roles.role, ' ', r.bundle_id) AS bundle,
       {values}
FROM driftline.llm_requests AS r
INNER JOIN roles ON r.workflow = roles.workflow AND r.bundle_id = roles.bundle_id
WHERE {_RAW_WHERE.replace("start_ts", "r.start_ts")}
GROUP BY time, bundle
ORDER BY time, bundle"""


_CANARY_SUMMARY: Final = f"""WITH roles AS
    (
        {_CANARY_ROLES}
    )
SELECT r.workflow AS workflow, roles.role AS role, r.bundle_id AS bundle_id,
       any(r.prompt_version) AS prompt_version, any(r.model) AS served_model,
       min(r.start_ts) AS first_seen, count() AS requests,
       quantile(0.95)(r.latency_ms) AS p95_latency_ms,
       countIf(r.status = 'error') / count() AS error_rate,
       countIf(r.validation_failed) / count() AS validation_failure_rate,
       avg(r.output_tokens) AS avg_output_tokens,
       sum(r.cost_usd) / count() AS cost_per_request_usd
FROM driftline.llm_requests AS r
INNER JOIN roles ON r.workflow = roles.workflow AND r.bundle_id = roles.bundle_id
WHERE {_RAW_WHERE.replace("start_ts", "r.start_ts")}
GROUP BY workflow, role, bundle_id
ORDER BY workflow, role, bundle_id"""

PANELS: Final = (
    PanelSpec(
        "Drift alerts",
        "table",
        _DRIFT_ALERTS,
        (
            "opened_at",
            "state",
            "severity",
            "workflow",
            "metric",
            "bundle_id",
            "baseline_value",
            "current_value",
            "score",
            "threshold",
            "resolved_at",
        ),
        width=24,
        height=6,
    ),
    PanelSpec(
        "Baseline vs current level, every metric",
        "table",
        _LEVELS_TABLE,
        (
            "workflow",
            "bundle_id",
            "metric",
            "baseline_mean",
            "current_mean",
            "shift_sigma",
            "baseline_p95",
            "current_p95",
            "current_n",
        ),
        width=24,
        raw=True,
        description="Latest frozen baseline per workflow, bundle and metric against the "
        "range; shift in baseline standard deviations.",
    ),
    PanelSpec(
        "Level: $metric, current vs baseline",
        "timeseries",
        _LEVEL_OVER_TIME,
        ("time", "workflow", "current_mean", "baseline_mean"),
        labels=("workflow",),
        raw=True,
    ),
    PanelSpec(
        "Distribution: $metric quantiles, baseline vs current",
        "barchart",
        _DISTRIBUTION,
        (
            "workflow",
            "baseline_p50",
            "current_p50",
            "baseline_p95",
            "current_p95",
            "baseline_p99",
            "current_p99",
        ),
        raw=True,
    ),
    PanelSpec(
        "Detector score vs threshold: $metric",
        "timeseries",
        _SCORES,
        ("time", "detector", "score", "threshold"),
        labels=("detector",),
        width=24,
        description="Level test (CUSUM) statistic over its threshold per bundle, from the "
        "worker's baseline snapshots; 1.0 alarms.",
    ),
    PanelSpec(
        "Canary vs stable: p95 latency",
        "timeseries",
        _canary_over_time("quantile(0.95)(r.latency_ms) AS p95_latency_ms"),
        ("time", "bundle", "p95_latency_ms"),
        labels=("bundle",),
        unit="ms",
        raw=True,
    ),
    PanelSpec(
        "Canary vs stable: output tokens",
        "timeseries",
        _canary_over_time("avg(r.output_tokens) AS avg_output_tokens"),
        ("time", "bundle", "avg_output_tokens"),
        labels=("bundle",),
        raw=True,
    ),
    PanelSpec(
        "Canary vs stable: error and validation-failure rate",
        "timeseries",
        _canary_over_time(
            "countIf(r.status = 'error') / count() AS error_rate,\n"
            "       countIf(r.validation_failed) / count() AS validation_failure_rate"
        ),
        ("time", "bundle", "error_rate", "validation_failure_rate"),
        labels=("bundle",),
        unit="percentunit",
        raw=True,
    ),
    PanelSpec(
        "Canary vs stable: cost per request",
        "timeseries",
        _canary_over_time("sum(r.cost_usd) / count() AS cost_per_request_usd"),
        ("time", "bundle", "cost_per_request_usd"),
        labels=("bundle",),
        unit="currencyUSD",
        raw=True,
    ),
    PanelSpec(
        "Canary vs stable side by side",
        "table",
        _CANARY_SUMMARY,
        (
            "workflow",
            "role",
            "bundle_id",
            "prompt_version",
            "served_model",
            "first_seen",
            "requests",
            "p95_latency_ms",
            "error_rate",
            "validation_failure_rate",
            "avg_output_tokens",
            "cost_per_request_usd",
        ),
        width=24,
        raw=True,
        description="Workflows served by two or more bundles in the range; the bundle first "
        "seen last is the canary.",
    ),
)

ANNOTATIONS: Final = (
    AnnotationSpec(
        "Bundle changes",
        # First appearance ever (min over the raw table: duplicates cannot move a minimum),
        # shown when it falls in the range. Rows after the range cannot hold a first
        # appearance inside it, so only partitions up to $__toTime are read.
        f"""SELECT min(start_ts) AS time,
       concat('bundle ', bundle_id, ' (prompt ', any(prompt_version), ', ',
              any(if(response_model != '', response_model, request_model)),
              ') first served ', workflow) AS text,
       arrayStringConcat(['bundle', workflow], ',') AS tags
FROM driftline.llm_requests_raw
WHERE start_ts <= $__toTime AND {condition(ENVIRONMENT)} AND {condition(WORKFLOW)}
GROUP BY workflow, bundle_id
HAVING time >= $__fromTime AND time <= $__toTime
ORDER BY time""",
        color="blue",
    ),
)


def spec(context: BuildContext | None = None) -> DashboardSpec:
    return DashboardSpec(
        uid=UID,
        title=TITLE,
        description="Baseline vs current per workflow and metric, detector scores, canaries.",
        panels=PANELS,
        annotations=ANNOTATIONS,
        variables=(
            *filter_variables(),
            metric_variable(tuple(METRIC_EXPRESSIONS), DEFAULT_METRIC),
        ),
        links=(("SRE overview", "/d/driftline-sre"), ("Cost attribution", "/d/driftline-cost")),
    )


__all__ = ["ANNOTATIONS", "DEFAULT_METRIC", "METRIC", "METRIC_EXPRESSIONS", "PANELS", "UID", "spec"]
