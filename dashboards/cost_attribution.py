"""Cost attribution: spend by workflow, model, route and tenant; cost per good answer; budget
burn; prompt-cache savings; the most amplified traces; prompt and bundle versions compared.

Spend over time reads the per-minute rollups. Budget burn rates use the monthly budgets from
the configuration (``workflows.<name>.budgets.monthly_cost_usd``), written into the SQL when
the dashboard is built. Traces and bundle comparisons read raw rows (no rollup has them).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from driftline.dashboards.panels import BuildContext, DashboardSpec, PanelSpec
from driftline.dashboards.variables import (
    ENVIRONMENT,
    MODEL,
    WORKFLOW,
    condition,
    filter_variables,
    where,
)
from driftline.schemas.event import UNSAFE_NAME_CHAR

UID: Final = "driftline-cost"
TITLE: Final = "driftline / Cost attribution"

# Burn-rate paging thresholds of the multi-window pairs (SRE workbook): 2% of a 30-day budget
# in one hour, 5% in six hours.
FAST_BURN: Final = 14.4
SLOW_BURN: Final = 6.0
_MONTH_S: Final = 30 * 86400

_MODEL_WHERE: Final = where("minute", ENVIRONMENT, WORKFLOW, MODEL)
_WORKFLOW_WHERE: Final = where("minute", ENVIRONMENT, WORKFLOW)


def budgets_literal(budgets: Mapping[str, float]) -> str:
    """A ClickHouse ``Map(String, Float64)`` literal of the monthly budgets.

    A configured name that no event can carry (schemas.event.UNSAFE_NAME_CHAR: the normalizer
    makes such names safe) matches nothing and is left out; Grafana would also read a ``$`` in
    it as a variable, inside the literal.

    >>> budgets_literal({"support-chat": 20.0, "it's": 1, "a$workflow": 2})
    "CAST(map('support-chat', 20.0), 'Map(String, Float64)')"
    """
    items = ", ".join(
        f"'{name}', {float(usd)!r}"
        for name, usd in sorted(budgets.items())
        if not UNSAFE_NAME_CHAR.search(name)
    )
    return f"CAST(map({items}), 'Map(String, Float64)')"


def _spend_by(dimension: str, table: str, condition: str) -> str:
    # A bucket in which no request had a price is unknown spend (NULL, a gap), never $0.
    return f"""SELECT $__timeInterval(minute) AS time, {dimension},
       if(sum(unpriced) = sum(requests), NULL, sum(cost_usd)) AS cost_usd
FROM driftline.{table}
WHERE {condition}
GROUP BY time, {dimension}
ORDER BY time, {dimension}"""


def _burn_rate_sql(budgets: Mapping[str, float]) -> str:
    # Trailing 1h and 6h spend at every minute (window functions over the per-minute rollup,
    # read from 6h before the range so the first points see a full window), divided by the
    # budget share of that window; each bucket shows the value at its last minute.
    return f"""WITH
    {budgets_literal(budgets)} AS budgets,
    per_minute AS
    (
        SELECT minute, workflow, sum(cost_usd) AS cost_usd
        FROM driftline.rollup_model_1m
        WHERE minute >= $__fromTime - INTERVAL 6 HOUR AND minute <= $__toTime
          AND {condition(ENVIRONMENT)} AND {condition(WORKFLOW)} AND {condition(MODEL)}
        GROUP BY minute, workflow
    ),
    trailing AS
    (
        SELECT minute, workflow,
               sum(cost_usd) OVER (PARTITION BY workflow ORDER BY minute
                                   RANGE BETWEEN 3599 PRECEDING AND CURRENT ROW) AS spend_1h,
               sum(cost_usd) OVER (PARTITION BY workflow ORDER BY minute
                                   RANGE BETWEEN 21599 PRECEDING AND CURRENT ROW) AS spend_6h
        FROM per_minute
    )
SELECT $__timeInterval(minute) AS time, workflow,
       argMax(spend_1h, minute) / (budgets[workflow] * 3600 / {_MONTH_S}) AS burn_rate_1h,
       argMax(spend_6h, minute) / (budgets[workflow] * 21600 / {_MONTH_S}) AS burn_rate_6h
FROM trailing
WHERE $__timeFilter(minute) AND mapContains(budgets, workflow)
GROUP BY time, workflow
ORDER BY time, workflow"""


def _budget_table_sql(budgets: Mapping[str, float]) -> str:
    return f"""WITH {budgets_literal(budgets)} AS budgets
SELECT workflow,
       sum(cost_usd) AS spend_usd,
       budgets[workflow] AS monthly_budget_usd,
       monthly_budget_usd * (toUnixTimestamp($__toTime) - toUnixTimestamp($__fromTime))
           / {_MONTH_S} AS window_budget_usd,
       spend_usd / window_budget_usd AS burn_rate,
       spend_usd / monthly_budget_usd AS month_fraction_spent
FROM driftline.rollup_model_1m
WHERE {_MODEL_WHERE} AND mapContains(budgets, workflow)
GROUP BY workflow
ORDER BY burn_rate DESC"""


_CACHE_SAVINGS: Final = f"""WITH
    usage AS
    (
        SELECT $__timeInterval(minute) AS time, model,
               sum(cache_read_tokens) AS read_tokens, sum(cache_write_tokens) AS write_tokens
        FROM driftline.rollup_model_1m
        WHERE {_MODEL_WHERE}
        GROUP BY time, model
    ),
    prices AS
    (
        SELECT model,
               argMax(input_per_mtok, updated_at) AS input_rate,
               argMax(cache_read_per_mtok, updated_at) AS read_rate,
               argMax(cache_write_per_mtok, updated_at) AS write_rate
        FROM driftline.model_prices
        GROUP BY model
    )
SELECT u.time AS time, u.model AS model,
       (u.read_tokens * (p.input_rate - p.read_rate)
        - u.write_tokens * (p.write_rate - p.input_rate)) / 1e6 AS savings_usd
FROM usage AS u
INNER JOIN prices AS p ON u.model = p.model
ORDER BY time, model"""

_COST_PER_SUCCESS: Final = f"""SELECT $__timeInterval(minute) AS time, workflow,
       sum(cost_usd) / nullIf(toInt64(sum(requests)) - toInt64(sum(errors))
                              - toInt64(sum(validation_failures)), 0) AS cost_per_success_usd
FROM driftline.rollup_model_1m
WHERE {_MODEL_WHERE}
GROUP BY time, workflow
HAVING cost_per_success_usd IS NOT NULL
ORDER BY time, workflow"""

_TOP_TRACES: Final = f"""SELECT trace_id, workflow, tenant, route, start_ts, llm_call_count,
       max_loop_depth, total_tokens, cost_usd, amplification
FROM driftline.llm_traces
WHERE {where("start_ts", ENVIRONMENT, WORKFLOW)} AND amplification IS NOT NULL
ORDER BY amplification DESC, trace_id
LIMIT 20"""

_VERSIONS: Final = f"""SELECT workflow, prompt_version, bundle_id, any(model) AS served_model,
       count() AS requests,
       avg(input_tokens) AS avg_input_tokens,
       avg(output_tokens) AS avg_output_tokens,
       sum(cost_usd) / count() AS cost_per_request_usd,
       countIf(status = 'error') / count() AS error_rate,
       countIf(validation_failed) / count() AS validation_failure_rate,
       quantile(0.95)(latency_ms) AS p95_latency_ms
FROM driftline.llm_requests
WHERE {where("start_ts", ENVIRONMENT, WORKFLOW, MODEL)}
GROUP BY workflow, prompt_version, bundle_id
ORDER BY workflow, requests DESC"""


def panels(budgets: Mapping[str, float]) -> tuple[PanelSpec, ...]:
    def stat(value: str) -> str:
        return f"SELECT {value}\nFROM driftline.rollup_model_1m\nWHERE {_MODEL_WHERE}"

    return (
        PanelSpec(
            "Spend",
            "stat",
            stat("sum(cost_usd) AS spend_usd"),
            ("spend_usd",),
            unit="currencyUSD",
            width=8,
            height=4,
        ),
        PanelSpec(
            "Cost per successful request",
            "stat",
            stat(
                "sum(cost_usd) / nullIf(toInt64(sum(requests)) - toInt64(sum(errors))"
                " - toInt64(sum(validation_failures)), 0) AS cost_per_success_usd"
            ),
            ("cost_per_success_usd",),
            unit="currencyUSD",
            width=8,
            height=4,
        ),
        PanelSpec(
            "Unpriced requests",
            "stat",
            stat("sum(unpriced) AS unpriced"),
            ("unpriced",),
            width=8,
            height=4,
            description="Requests whose model has no price: they are not in the spend.",
        ),
        PanelSpec(
            "Spend by workflow",
            "timeseries",
            _spend_by("workflow", "rollup_model_1m", _MODEL_WHERE),
            ("time", "workflow", "cost_usd"),
            labels=("workflow",),
            unit="currencyUSD",
        ),
        PanelSpec(
            "Spend by model",
            "timeseries",
            _spend_by("model", "rollup_model_1m", _MODEL_WHERE),
            ("time", "model", "cost_usd"),
            labels=("model",),
            unit="currencyUSD",
        ),
        PanelSpec(
            "Spend by route",
            "timeseries",
            _spend_by("route", "rollup_route_1m", _WORKFLOW_WHERE),
            ("time", "route", "cost_usd"),
            labels=("route",),
            unit="currencyUSD",
            description="Route rollup: the model filter does not apply.",
        ),
        PanelSpec(
            "Spend by tenant",
            "timeseries",
            _spend_by("tenant", "rollup_tenant_1m", _WORKFLOW_WHERE),
            ("time", "tenant", "cost_usd"),
            labels=("tenant",),
            unit="currencyUSD",
            description="Tenant rollup: the model filter does not apply.",
        ),
        PanelSpec(
            "Cost per successful request by workflow",
            "timeseries",
            _COST_PER_SUCCESS,
            ("time", "workflow", "cost_per_success_usd"),
            labels=("workflow",),
            unit="currencyUSD",
            description="All spend (failed calls cost too) over requests that neither errored "
            "nor failed validation.",
        ),
        PanelSpec(
            "Budget burn rate (1h fast, 6h slow)",
            "timeseries",
            _burn_rate_sql(budgets),
            ("time", "workflow", "burn_rate_1h", "burn_rate_6h"),
            labels=("workflow",),
            thresholds=((FAST_BURN, "fast burn page"), (SLOW_BURN, "slow burn page")),
            description="Trailing spend over the budget share of the window; 1 spends the "
            "monthly budget in exactly 30 days. Workflows without a budget are not shown.",
        ),
        PanelSpec(
            "Budget burn over the range",
            "table",
            _budget_table_sql(budgets),
            (
                "workflow",
                "spend_usd",
                "monthly_budget_usd",
                "window_budget_usd",
                "burn_rate",
                "month_fraction_spent",
            ),
        ),
        PanelSpec(
            "Prompt-cache savings by model",
            "timeseries",
            _CACHE_SAVINGS,
            ("time", "model", "savings_usd"),
            labels=("model",),
            unit="currencyUSD",
            description="Cached tokens at the input rate minus what they cost (cache writes "
            "usually cost more: negative).",
        ),
        PanelSpec(
            "Top traces by amplification",
            "table",
            _TOP_TRACES,
            (
                "trace_id",
                "workflow",
                "tenant",
                "route",
                "start_ts",
                "llm_call_count",
                "max_loop_depth",
                "total_tokens",
                "cost_usd",
                "amplification",
            ),
            width=24,
            raw=True,
            description="Trace tokens over the first call's tokens: agent loops, retries.",
        ),
        PanelSpec(
            "Prompt and bundle versions compared",
            "table",
            _VERSIONS,
            (
                "workflow",
                "prompt_version",
                "bundle_id",
                "served_model",
                "requests",
                "avg_input_tokens",
                "avg_output_tokens",
                "cost_per_request_usd",
                "error_rate",
                "validation_failure_rate",
                "p95_latency_ms",
            ),
            width=24,
            raw=True,
        ),
    )


def spec(context: BuildContext | None = None) -> DashboardSpec:
    context = context or BuildContext()
    return DashboardSpec(
        uid=UID,
        title=TITLE,
        description="Where the money goes, what a good answer costs, and budget burn.",
        panels=panels(context.budgets),
        variables=tuple(filter_variables()),
        default_range=("now-24h", "now"),
        links=(("SRE overview", "/d/driftline-sre"), ("Drift", "/d/driftline-drift")),
    )
