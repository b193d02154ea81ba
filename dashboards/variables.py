"""Template variables shared by the dashboards, and the filters panels build from them.

``environment``, ``workflow`` and ``model`` are multi-select query variables that default to
All. A panel filters on one only through :func:`condition`, which wraps the condition in
``$__conditionalAll`` so that All costs nothing (``1=1``) instead of a long ``IN`` list.

Not every table carries every dimension: every per-minute rollup has ``environment`` and
``workflow`` (schemas/ddl/0003), only ``rollup_model_1m`` has ``model``, and the alert tables
have neither environment nor model. Each panel applies the filters its table supports and says
so in its description when one does not apply.

>>> condition("workflow")
'$__conditionalAll(workflow IN (${workflow:singlequote}), $workflow)'
>>> print(*where("minute", "workflow", "model").split(" AND "), sep=" AND" + chr(10))
$__timeFilter(minute) AND
$__conditionalAll(workflow IN (${workflow:singlequote}), $workflow) AND
$__conditionalAll(model IN (${model:singlequote}), $model)
"""

from __future__ import annotations

from typing import Final

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.models import dashboard

from driftline.dashboards.macros import ALL
from driftline.dashboards.query import datasource_ref

ENVIRONMENT: Final = "environment"
WORKFLOW: Final = "workflow"
MODEL: Final = "model"
METRIC: Final = "metric"
FILTER_VARIABLES: Final = (ENVIRONMENT, WORKFLOW, MODEL)

# The queries behind the drop-downs; they are panel-like SQL and are tested the same way.
VARIABLE_QUERIES: Final[dict[str, str]] = {
    ENVIRONMENT: (
        "SELECT DISTINCT environment FROM driftline.rollup_workflow_1m"
        " WHERE $__timeFilter(minute) ORDER BY environment"
    ),
    WORKFLOW: (
        "SELECT DISTINCT workflow FROM driftline.rollup_workflow_1m"
        " WHERE $__timeFilter(minute) AND "
        "$__conditionalAll(environment IN (${environment:singlequote}), $environment)"
        " ORDER BY workflow"
    ),
    MODEL: (
        "SELECT DISTINCT model FROM driftline.rollup_model_1m"
        " WHERE $__timeFilter(minute) AND "
        "$__conditionalAll(environment IN (${environment:singlequote}), $environment) AND "
        "$__conditionalAll(workflow IN (${workflow:singlequote}), $workflow) ORDER BY model"
    ),
}

# What a test or the static report selects when it does not choose: everything.
ALL_SELECTED: Final[dict[str, list[str]]] = {name: [ALL] for name in FILTER_VARIABLES}


def condition(variable: str, column: str | None = None) -> str:
    """``column IN (selection)``, or ``1=1`` when the variable is All."""
    column = column or variable
    return f"$__conditionalAll({column} IN (${{{variable}:singlequote}}), ${variable})"


def where(time_column: str, *variables: str) -> str:
    """The time filter on ``time_column`` and-ed with a condition per variable."""
    return " AND ".join([f"$__timeFilter({time_column})", *(condition(v) for v in variables)])


def _query_variable(name: str, label: str) -> dash.QueryVariable:
    return (
        dash.QueryVariable(name)
        .label(label)
        .datasource(datasource_ref())
        .query(VARIABLE_QUERIES[name])
        .refresh(dashboard.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dashboard.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .current(dashboard.VariableOption(selected=True, text=["All"], value=[ALL]))
    )


def filter_variables() -> list[dash.QueryVariable]:
    """environment (which narrows workflow and model), workflow (which narrows model), model."""
    return [
        _query_variable(ENVIRONMENT, "Environment"),
        _query_variable(WORKFLOW, "Workflow"),
        _query_variable(MODEL, "Model"),
    ]


def metric_variable(metrics: tuple[str, ...], default: str) -> dash.CustomVariable:
    """A single-select list of detector metrics (drift dashboard)."""
    return (
        dash.CustomVariable(METRIC)
        .label("Metric")
        .values(",".join(metrics))
        .current(dashboard.VariableOption(selected=True, text=default, value=default))
        .options(
            [dashboard.VariableOption(selected=m == default, text=m, value=m) for m in metrics]
        )
    )
