"""SRE overview: traffic, latency, TTFT, KV-cache pressure, engines, retries, errors, alerts.

Everything but KV-cache pressure, the engine panels and the alert panels reads
``rollup_model_1m`` (per minute, workflow, model and environment), so every filter applies;
the alert panels filter by workflow only (alerts carry no environment or model), the engine
panels (``rollup_engine_1m``, what the serving engines report) by model only. Below them,
the pipeline row (:mod:`driftline.dashboards.pipeline`) shows driftline's own health from
Prometheus; the filters do not apply to it.
"""

from __future__ import annotations

from typing import Final

from driftline.dashboards import pipeline
from driftline.dashboards.panels import AnnotationSpec, BuildContext, DashboardSpec, PanelSpec
from driftline.dashboards.variables import (
    ENVIRONMENT,
    MODEL,
    WORKFLOW,
    condition,
    filter_variables,
    where,
)
from driftline.schemas import engine_metrics as em
from driftline.schemas.alert import SEVERITIES

UID: Final = "driftline-sre"
TITLE: Final = "driftline / SRE overview"

_ROLLUP: Final = "driftline.rollup_model_1m"
_ROLLUP_WHERE: Final = where("minute", ENVIRONMENT, WORKFLOW, MODEL)
_RAW_WHERE: Final = where("start_ts", ENVIRONMENT, WORKFLOW, MODEL)
# Engines serve models, not workflows or environments: only the model filter applies.
_ENGINE_ROLLUP: Final = "driftline.rollup_engine_1m"
_ENGINE_WHERE: Final = where("minute", MODEL)
_SEVERITY_RANK: Final = "indexOf([" + ", ".join(f"'{s}'" for s in SEVERITIES) + "], severity)"


def _per_workflow(values: str) -> str:
    return f"""SELECT $__timeInterval(minute) AS time, workflow, {values}
FROM {_ROLLUP}
WHERE {_ROLLUP_WHERE}
GROUP BY time, workflow
ORDER BY time, workflow"""


def _percentiles(state: str) -> str:
    return f"""SELECT time, workflow, q[1] AS p50, q[2] AS p95, q[3] AS p99
FROM
(
    SELECT $__timeInterval(minute) AS time, workflow,
           quantilesTDigestMerge(0.5, 0.95, 0.99)({state}) AS q
    FROM {_ROLLUP}
    WHERE {_ROLLUP_WHERE}
    GROUP BY time, workflow
)
WHERE NOT isNaN(p50)
ORDER BY time, workflow"""


def _engine_peak(metric: str, alias: str) -> str:
    return f"""SELECT $__timeInterval(minute) AS time, instance,
       toFloat64(max(value_max)) AS {alias}
FROM {_ENGINE_ROLLUP}
WHERE {_ENGINE_WHERE} AND metric = '{metric}'
GROUP BY time, instance
ORDER BY time, instance"""


def _stat(value: str) -> str:
    return f"SELECT {value}\nFROM {_ROLLUP}\nWHERE {_ROLLUP_WHERE}"


PANELS: Final = (
    PanelSpec(
        "Requests", "stat", _stat("sum(requests) AS requests"), ("requests",), width=6, height=4
    ),
    PanelSpec(
        "Error rate",
        "stat",
        _stat("sum(errors) / sum(requests) AS error_rate"),
        ("error_rate",),
        unit="percentunit",
        width=6,
        height=4,
    ),
    PanelSpec(
        "p95 latency",
        "stat",
        _stat("quantilesTDigestMerge(0.5, 0.95, 0.99)(latency_ms_q)[2] AS p95_latency_ms"),
        ("p95_latency_ms",),
        unit="ms",
        width=6,
        height=4,
    ),
    PanelSpec(
        "Open alerts",
        "stat",
        "SELECT count() AS open_alerts\nFROM driftline.llm_alerts_current\n"
        f"WHERE state = 'open' AND opened_at <= $__toTime AND {condition(WORKFLOW)}",
        ("open_alerts",),
        width=6,
        height=4,
    ),
    PanelSpec(
        "Requests per second",
        "timeseries",
        # A bucket is at least one minute: the rollup's resolution.
        _per_workflow("sum(requests) / greatest($__interval_s, 60) AS requests_per_s"),
        ("time", "workflow", "requests_per_s"),
        labels=("workflow",),
        unit="reqps",
    ),
    PanelSpec(
        "Latency p50 / p95 / p99",
        "timeseries",
        _percentiles("latency_ms_q"),
        ("time", "workflow", "p50", "p95", "p99"),
        labels=("workflow",),
        unit="ms",
    ),
    PanelSpec(
        "Time to first token p50 / p95 / p99",
        "timeseries",
        _percentiles("ttft_ms_q"),
        ("time", "workflow", "p50", "p95", "p99"),
        labels=("workflow",),
        unit="ms",
        description="Streaming calls only: requests without a TTFT are not in the digest.",
    ),
    PanelSpec(
        "KV-cache pressure",
        "timeseries",
        f"""SELECT $__timeInterval(start_ts) AS time, workflow,
       avg(kv_cache_usage) AS mean_usage, max(kv_cache_usage) AS max_usage
FROM driftline.llm_requests
WHERE {_RAW_WHERE} AND kv_cache_usage IS NOT NULL
GROUP BY time, workflow
ORDER BY time, workflow""",
        ("time", "workflow", "mean_usage", "max_usage"),
        labels=("workflow",),
        unit="percentunit",
        raw=True,
        description="vLLM KV-cache usage (0..1) reported with each request; raw rows.",
    ),
    PanelSpec(
        "Engine KV-cache usage",
        "timeseries",
        _engine_peak(em.KV_CACHE_USAGE, "max_usage"),
        ("time", "instance", "max_usage"),
        labels=("instance",),
        unit="percentunit",
        thresholds=((0.95, "saturated"),),
        description="Highest KV-cache usage each serving engine reported (vLLM, SGLang, "
        "TensorRT-LLM scrapes on otlp_metrics), per minute. The model filter applies.",
    ),
    PanelSpec(
        "Engine queue depth",
        "timeseries",
        _engine_peak(em.REQUESTS_WAITING, "max_waiting"),
        ("time", "instance", "max_waiting"),
        labels=("instance",),
        description="Most requests waiting in each engine's queue, per minute.",
    ),
    PanelSpec(
        "Engine preemptions per second",
        "timeseries",
        f"""SELECT time, instance,
       greatest(last - previous, 0) / greatest($__interval_s, 60) AS preemptions_per_s
FROM
(
    SELECT time, instance, last,
           lagInFrame(last) OVER running AS previous, row_number() OVER running AS nth
    FROM
    (
        SELECT time, instance, sum(last_of_model) AS last
        FROM
        (
            SELECT $__timeInterval(minute) AS time, instance, model,
                   argMaxMerge(value_last) AS last_of_model
            FROM {_ENGINE_ROLLUP}
            WHERE {_ENGINE_WHERE} AND metric = '{em.PREEMPTIONS}'
            GROUP BY time, instance, model
        )
        GROUP BY time, instance
    )
    WINDOW running AS (PARTITION BY instance ORDER BY time
                       ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
)
WHERE nth > 1
ORDER BY time, instance""",
        ("time", "instance", "preemptions_per_s"),
        labels=("instance",),
        description="Requests each engine preempted (KV cache full), from the difference of "
        "its running count between intervals; a counter reset counts 0.",
    ),
    PanelSpec(
        "Retries per request",
        "timeseries",
        _per_workflow("sum(retries) / sum(requests) AS retries_per_request"),
        ("time", "workflow", "retries_per_request"),
        labels=("workflow",),
    ),
    PanelSpec(
        "Error and validation-failure rate",
        "timeseries",
        _per_workflow(
            "sum(errors) / sum(requests) AS error_rate,\n"
            "       sum(validation_failures) / sum(requests) AS validation_failure_rate"
        ),
        ("time", "workflow", "error_rate", "validation_failure_rate"),
        labels=("workflow",),
        unit="percentunit",
    ),
    PanelSpec(
        "Open alerts by severity",
        "table",
        f"""SELECT opened_at, severity, kind, workflow, metric, bundle_id,
       baseline_value, current_value, score, threshold, dashboard_url
FROM driftline.llm_alerts_current
WHERE state = 'open' AND opened_at <= $__toTime AND {condition(WORKFLOW)}
ORDER BY {_SEVERITY_RANK}, opened_at DESC
LIMIT 100""",
        (
            "opened_at",
            "severity",
            "kind",
            "workflow",
            "metric",
            "bundle_id",
            "baseline_value",
            "current_value",
            "score",
            "threshold",
            "dashboard_url",
        ),
        width=24,
    ),
)

_ALERT_TEXT: Final = "concat(severity, ' ', kind, ' alert {verb}: ', workflow, ' / ', metric)"
_ALERT_TAGS: Final = "arrayStringConcat([kind, severity, workflow, metric], ',')"

ANNOTATIONS: Final = (
    AnnotationSpec(
        "Alerts opened",
        f"""SELECT opened_at AS time, {_ALERT_TEXT.format(verb="opened")} AS text,
       {_ALERT_TAGS} AS tags
FROM driftline.llm_alerts
WHERE $__timeFilter(opened_at) AND {condition(WORKFLOW)}
ORDER BY alert_id, event_ts
LIMIT 1 BY alert_id""",
        color="red",
    ),
    AnnotationSpec(
        "Alerts resolved",
        f"""SELECT assumeNotNull(resolved_at) AS time,
       {_ALERT_TEXT.format(verb="resolved")} AS text, {_ALERT_TAGS} AS tags
FROM driftline.llm_alerts
WHERE state = 'resolved' AND resolved_at IS NOT NULL AND $__timeFilter(resolved_at)
  AND {condition(WORKFLOW)}
ORDER BY alert_id, event_ts DESC
LIMIT 1 BY alert_id""",
        color="green",
    ),
)


def spec(context: BuildContext | None = None) -> DashboardSpec:
    return DashboardSpec(
        uid=UID,
        title=TITLE,
        description="Traffic, latency, KV-cache pressure, retries, errors and open alerts; "
        "driftline's own pipeline (Prometheus).",
        panels=PANELS,
        annotations=ANNOTATIONS,
        variables=tuple(filter_variables()),
        links=(("Cost attribution", "/d/driftline-cost"), ("Drift", "/d/driftline-drift")),
        rows=(pipeline.ROW,),
    )
