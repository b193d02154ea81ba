"""Panel and dashboard specifications, and their translation to grafana-foundation-sdk.

A dashboard module describes its panels as :class:`PanelSpec` values: title, visualization,
SQL (with the plugin's macros) and the columns the SQL returns. The same specs produce the
Grafana JSON (:meth:`DashboardSpec.builder`), drive the static report and are executed by the
tests, so a panel cannot drift away from what is tested.

A dashboard can add rows of :class:`PromPanelSpec` panels below its ClickHouse panels: PromQL
over the workers' own metrics (docs/metrics.md), read through the Prometheus data source. The
tests check every metric and label they name against the documentation and the exporter.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal

from grafana_foundation_sdk.builders import barchart, prometheus, stat, table, timeseries
from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common, dashboard

from driftline.dashboards.query import (
    ClickHouseAnnotationBuilder,
    ClickHouseQueryBuilder,
    datasource_ref,
    prometheus_datasource_ref,
)

if TYPE_CHECKING:
    from driftline.config import Settings

PanelKind = Literal["timeseries", "table", "stat", "barchart"]
GRID_COLUMNS: Final = 24
QUERY_REFS: Final = "ABCDEFGH"  # refIds of a Prometheus panel's queries, in order


@dataclass(frozen=True, slots=True)
class BuildContext:
    """What dashboards take from the configuration: monthly cost budgets per workflow."""

    budgets: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings) -> BuildContext:
        return cls(
            {
                name: workflow.budgets.monthly_cost_usd
                for name, workflow in sorted(settings.workflows.items())
                if workflow.budgets.monthly_cost_usd is not None
            }
        )


@dataclass(frozen=True, slots=True)
class PanelSpec:
    """One panel.

    ``columns`` is exactly what the SQL returns, in order. For a time series the first column
    is ``time``, ``labels`` are the string columns that split series (the plugin turns the long
    result into one series per label combination), and the rest are values. For a bar chart
    the first column is the category axis. ``thresholds`` are reference lines (value, label).
    ``raw`` marks panels that read raw rows because no rollup has what they need.
    """

    title: str
    kind: PanelKind
    sql: str
    columns: tuple[str, ...]
    labels: tuple[str, ...] = ()
    unit: str = "short"
    description: str = ""
    width: int = 12
    height: int = 8
    thresholds: tuple[tuple[float, str], ...] = ()
    raw: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.width <= GRID_COLUMNS:
            raise ValueError(f"panel {self.title!r}: width must be 1..{GRID_COLUMNS}")
        if self.kind == "timeseries" and self.columns[:1] != ("time",):
            raise ValueError(f"panel {self.title!r}: a time series returns `time` first")
        missing = set(self.labels) - set(self.columns)
        if missing:
            raise ValueError(f"panel {self.title!r}: labels {sorted(missing)} are not columns")

    @property
    def query_type(self) -> Literal["timeseries", "table"]:
        return "timeseries" if self.kind == "timeseries" else "table"

    @property
    def value_columns(self) -> tuple[str, ...]:
        skip = {"time", *self.labels}
        return tuple(c for c in self.columns if c not in skip)


@dataclass(frozen=True, slots=True)
class PromQuery:
    """One PromQL target; ``legend`` names series with ``{{label}}`` of the result."""

    expr: str
    legend: str


@dataclass(frozen=True, slots=True)
class PromPanelSpec:
    """A panel over the workers' own metrics: PromQL targets A, B, ... on one panel.

    A ``stat`` panel shows each series' last value (an instant query); a time series plots
    them over the dashboard's range. ``thresholds`` are reference lines, as for SQL panels.
    """

    title: str
    kind: Literal["timeseries", "stat"]
    queries: tuple[PromQuery, ...]
    unit: str = "short"
    description: str = ""
    width: int = 12
    height: int = 8
    thresholds: tuple[tuple[float, str], ...] = ()

    def __post_init__(self) -> None:
        if not 1 <= self.width <= GRID_COLUMNS:
            raise ValueError(f"panel {self.title!r}: width must be 1..{GRID_COLUMNS}")
        if not 1 <= len(self.queries) <= len(QUERY_REFS):
            raise ValueError(f"panel {self.title!r}: 1..{len(QUERY_REFS)} queries")


@dataclass(frozen=True, slots=True)
class RowSpec:
    """A titled row of Prometheus panels, below the dashboard's SQL panels."""

    title: str
    panels: tuple[PromPanelSpec, ...]


@dataclass(frozen=True, slots=True)
class AnnotationSpec:
    """Dashboard annotations from SQL returning ``time``, ``text`` and ``tags``."""

    name: str
    sql: str
    color: str = "red"
    columns: tuple[str, ...] = ("time", "text", "tags")


@dataclass(frozen=True, slots=True)
class DashboardSpec:
    uid: str
    title: str
    description: str
    panels: tuple[PanelSpec, ...]
    annotations: tuple[AnnotationSpec, ...] = ()
    variables: tuple[cogbuilder.Builder[dashboard.VariableModel], ...] = ()
    tags: tuple[str, ...] = ("driftline",)
    default_range: tuple[str, str] = ("now-6h", "now")
    links: tuple[tuple[str, str], ...] = field(default=())  # (title, url)
    rows: tuple[RowSpec, ...] = ()

    def builder(self) -> dash.Dashboard:
        board = (
            dash.Dashboard(self.title)
            .uid(self.uid)
            .description(self.description)
            .tags(list(self.tags))
            .timezone("utc")
            .time(*self.default_range)
            .refresh("1m")
            .readonly()
        )
        for variable in self.variables:
            board = board.with_variable(variable)
        for annotation in self.annotations:
            board = board.annotation(
                ClickHouseAnnotationBuilder(annotation.name, annotation.sql).icon_color(
                    annotation.color
                )
            )
        for title, url in self.links:
            board = board.link(
                dash.DashboardLink(title)
                .type(dashboard.DashboardLinkType.LINK)
                .url(url)
                .keep_time(True)
                .include_vars(True)
            )
        grids = layout(self.panels)
        for panel_id, (panel, grid) in enumerate(zip(self.panels, grids, strict=True), 1):
            board = board.with_panel(panel_builder(panel).id(panel_id).grid_pos(grid))
        panel_id = len(self.panels)
        top = max((g.y + g.h for g in grids), default=0)
        for row in self.rows:
            panel_id += 1
            row_grid = dashboard.GridPos(h=1, w=GRID_COLUMNS, x=0, y=top)
            board = board.with_row(dash.Row(row.title).id(panel_id).grid_pos(row_grid))
            row_grids = layout(row.panels, top=top + 1)
            for prom_panel, grid in zip(row.panels, row_grids, strict=True):
                panel_id += 1
                built = prom_panel_builder(prom_panel).id(panel_id).grid_pos(grid)
                board = board.with_panel(built)
            top = max((g.y + g.h for g in row_grids), default=top + 1)
        return board

    def to_json(self) -> dict[str, Any]:
        """The dashboard JSON as Grafana stores it (plain dicts and lists)."""
        encoded = json.dumps(self.builder().build(), cls=JSONEncoder, sort_keys=True)
        result: dict[str, Any] = json.loads(encoded)
        return result


def layout(panels: Sequence[PanelSpec | PromPanelSpec], top: int = 0) -> list[dashboard.GridPos]:
    """Left-to-right, top-to-bottom placement on Grafana's 24-column grid, from row ``top``."""
    grids = []
    x = row_height = 0
    y = top
    for panel in panels:
        if x + panel.width > GRID_COLUMNS:
            x, y, row_height = 0, y + row_height, 0
        grids.append(dashboard.GridPos(h=panel.height, w=panel.width, x=x, y=y))
        x += panel.width
        row_height = max(row_height, panel.height)
    return grids


_Builder = timeseries.Panel | table.Panel | stat.Panel | barchart.Panel


def panel_builder(panel: PanelSpec) -> _Builder:
    target = ClickHouseQueryBuilder(panel.sql).ref_id("A")
    target = target.timeseries() if panel.query_type == "timeseries" else target.table()
    builder: _Builder
    if panel.kind == "timeseries":
        builder = timeseries.Panel().interval("1m").line_width(1).fill_opacity(10)
        if panel.thresholds:
            builder = builder.thresholds(_thresholds(panel.thresholds)).thresholds_style(
                common_builders.GraphThresholdsStyleConfig().mode(
                    common.GraphTresholdsStyleMode.DASHED
                )
            )
    elif panel.kind == "table":
        builder = table.Panel()
    elif panel.kind == "stat":
        builder = stat.Panel()
    else:
        builder = barchart.Panel().x_field(panel.columns[0])
    return (
        builder.title(panel.title)
        .description(panel.description)
        .datasource(datasource_ref())
        .unit(panel.unit)
        .with_target(target)
    )


def prom_panel_builder(panel: PromPanelSpec) -> timeseries.Panel | stat.Panel:
    builder: timeseries.Panel | stat.Panel
    if panel.kind == "timeseries":
        builder = timeseries.Panel().line_width(1).fill_opacity(10)
        if panel.thresholds:
            builder = builder.thresholds(_thresholds(panel.thresholds)).thresholds_style(
                common_builders.GraphThresholdsStyleConfig().mode(
                    common.GraphTresholdsStyleMode.DASHED
                )
            )
    else:
        builder = stat.Panel()
        if panel.thresholds:
            builder = builder.thresholds(_thresholds(panel.thresholds))
    builder = (
        builder.title(panel.title)
        .description(panel.description)
        .datasource(prometheus_datasource_ref())
        .unit(panel.unit)
    )
    for ref, query in zip(QUERY_REFS, panel.queries, strict=False):
        target = (
            prometheus.Dataquery()
            .ref_id(ref)
            .datasource(prometheus_datasource_ref())
            .expr(query.expr)
            .legend_format(query.legend)
        )
        target = target.instant() if panel.kind == "stat" else target.range()
        builder = builder.with_target(target)
    return builder


def _thresholds(lines: tuple[tuple[float, str], ...]) -> dash.ThresholdsConfig:
    colors = ("red", "orange", "yellow")
    steps = [dashboard.Threshold(value=None, color="green")]
    steps += [
        dashboard.Threshold(value=value, color=colors[i % len(colors)])
        for i, (value, _) in enumerate(sorted(lines, reverse=True))
    ]
    steps.sort(key=lambda s: float("-inf") if s.value is None else s.value)
    return dash.ThresholdsConfig().mode(dashboard.ThresholdsMode.ABSOLUTE).steps(steps)


def panels_by_title(spec: DashboardSpec) -> Mapping[str, PanelSpec]:
    titles = [p.title for p in spec.panels]
    duplicates = {t for t in titles if titles.count(t) > 1}
    if duplicates:
        raise ValueError(f"dashboard {spec.uid}: duplicate panel titles {sorted(duplicates)}")
    return {p.title: p for p in spec.panels}
