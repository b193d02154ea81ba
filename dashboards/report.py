"""A static HTML report of the dashboards, for the embedded mode (no Grafana).

The report runs the same panel and annotation queries as the dashboards, with the plugin's
macros expanded for one time range (:mod:`dashboards.macros`), and draws them with
matplotlib: time series and bar charts as PNG files, stats as numbers, tables as HTML tables.
Annotations are drawn as vertical lines on every time series of their dashboard, thresholds
as dashed horizontal lines.

Every panel is counted, the empty ones too: the page opens with how many panels (and charts)
have data, and an empty panel says why when the store can tell (no budget configured, a table
the query reads holds no rows, every value NULL).
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import pyarrow as pa
from matplotlib import colormaps
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter, date2num
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from driftline.dashboards.build import dashboard_specs
from driftline.dashboards.drift import DEFAULT_METRIC
from driftline.dashboards.macros import TimeRange, Variables, expand
from driftline.dashboards.panels import AnnotationSpec, BuildContext, PanelSpec
from driftline.dashboards.variables import ALL_SELECTED, METRIC
from driftline.store import Store, StoreError

MAX_TABLE_ROWS: Final = 50
MAX_LEGEND_ENTRIES: Final = 12
CHART_KINDS: Final = ("timeseries", "barchart")
_ANNOTATION_COLORS: Final = {"red": "#d62728", "green": "#2ca02c", "blue": "#1f77b4"}


@dataclass(frozen=True, slots=True)
class PanelResult:
    """What one panel of the report shows: rows read, and for charts what was drawn."""

    dashboard: str
    title: str
    kind: str
    rows: int
    series: int = 0
    points: int = 0  # non-null values drawn (charts) or cells shown (stats and tables)
    image: str | None = None  # PNG path relative to the report directory
    empty_reason: str = ""  # why nothing is shown, when ``points`` is 0

    @property
    def is_chart(self) -> bool:
        return self.kind in CHART_KINDS

    @property
    def has_data(self) -> bool:
        return self.points > 0


@dataclass(slots=True)
class Report:
    index: Path
    time_range: TimeRange
    panels: list[PanelResult] = field(default_factory=list)

    @property
    def charts(self) -> list[PanelResult]:
        """Every time series and bar chart, drawn or empty."""
        return [p for p in self.panels if p.is_chart]

    @property
    def empty(self) -> list[PanelResult]:
        """Every panel that shows nothing, with its reason."""
        return [p for p in self.panels if not p.has_data]

    def summary(self) -> str:
        """How many panels and charts have data.

        >>> day = datetime(2026, 1, 1, tzinfo=UTC)
        >>> r = Report(Path("index.html"), TimeRange.between(day, day.replace(hour=1)))
        >>> r.panels += [PanelResult("d", "a", "stat", 1, points=1),
        ...              PanelResult("d", "b", "timeseries", 0, empty_reason="no rows")]
        >>> r.summary()
        '1 of 2 panels with data (0 of 1 charts with data)'
        """
        charted = sum(p.has_data for p in self.charts)
        return (
            f"{len(self.panels) - len(self.empty)} of {len(self.panels)} panels with data "
            f"({charted} of {len(self.charts)} charts with data)"
        )


def default_variables(metric: str = DEFAULT_METRIC) -> dict[str, Any]:
    """Every filter on All, and the drift dashboard's metric."""
    return {**ALL_SELECTED, METRIC: metric}


def render_report(
    store: Store,
    out_dir: Path,
    time_range: TimeRange,
    context: BuildContext | None = None,
    variables: Variables | None = None,
) -> Report:
    """Query ``store`` for every panel and write ``out_dir/index.html`` with its charts."""
    variables = dict(variables) if variables is not None else default_variables()
    context = context or BuildContext()
    out_dir.mkdir(parents=True, exist_ok=True)
    report = Report(out_dir / "index.html", time_range)
    sections = []
    for spec in dashboard_specs(context):
        (out_dir / spec.uid).mkdir(exist_ok=True)
        marks = [_annotations(store, a, time_range, variables) for a in spec.annotations]
        blocks = []
        for panel in spec.panels:
            title = _title(panel.title, variables)
            table = store.query(expand(panel.sql, time_range, variables))
            result, block = _render_panel(spec.uid, title, panel, table, marks, out_dir)
            if not result.has_data:
                reason = _why_empty(store, panel, table, context)
                result = replace(result, image=None, empty_reason=reason)
                block = _empty_block(title, panel, reason)
            report.panels.append(result)
            blocks.append(block)
        sections.append(
            f"<section><h2>{html.escape(spec.title)}</h2>"
            f"<p class='muted'>{html.escape(spec.description)} Grafana uid "
            f"<code>{spec.uid}</code>.</p>{''.join(blocks)}</section>"
        )
    report.index.write_text(_page(time_range, variables, report, sections))
    return report


def _why_empty(store: Store, panel: PanelSpec, table: pa.Table, context: BuildContext) -> str:
    """Why a panel shows nothing, as far as the store and the configuration can tell."""
    if table.num_rows:
        return "every value is NULL"
    if "mapContains(budgets" in panel.sql and not context.budgets:
        return "no workflow has a monthly budget (workflows.<name>.budgets.monthly_cost_usd)"
    tables = sorted(set(re.findall(r"\bdriftline\.(\w+)", panel.sql)))
    unfilled = [t for t in tables if _row_count(store, t) == 0]  # None: not a table here
    if unfilled:
        return " and ".join(f"driftline.{t}" for t in unfilled) + " holds no rows"
    return "no rows in this time range with these filters"


def _row_count(store: Store, table: str) -> int | None:
    try:
        count = store.query(f"SELECT count() AS n FROM driftline.{table}").column("n")[0]
    except StoreError:
        return None
    return int(count.as_py())


def _heading(title: str, panel: PanelSpec) -> str:
    heading = f"<h3>{html.escape(title)}</h3>"
    if panel.description:
        heading += f"<p class='muted'>{html.escape(panel.description)}</p>"
    return heading


def _empty_block(title: str, panel: PanelSpec, reason: str) -> str:
    note = f"<p class='muted'>No data: {html.escape(reason)}.</p>"
    return f"<div class='panel empty'>{_heading(title, panel)}{note}</div>"


@dataclass(frozen=True, slots=True)
class _Marks:
    name: str
    color: str
    times: list[datetime]


def _annotations(
    store: Store, annotation: AnnotationSpec, time_range: TimeRange, variables: Variables
) -> _Marks:
    table = store.query(expand(annotation.sql, time_range, variables))
    times = [t for t in table.column("time").to_pylist() if t is not None]
    return _Marks(annotation.name, _ANNOTATION_COLORS.get(annotation.color, "#7f7f7f"), times)


def _title(title: str, variables: Variables) -> str:
    def value(match: re.Match[str]) -> str:
        v = variables.get(match[1])
        return v if isinstance(v, str) else match[0]

    return re.sub(r"\$(\w+)", value, title)


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def _render_panel(
    uid: str, title: str, panel: PanelSpec, table: pa.Table, marks: list[_Marks], out_dir: Path
) -> tuple[PanelResult, str]:
    if table.num_rows == 0:
        return PanelResult(uid, title, panel.kind, 0), ""
    if panel.kind in CHART_KINDS:
        image = f"{uid}/{_slug(title)}.png"
        if panel.kind == "timeseries":
            series, points = _time_series_chart(panel, table, marks, out_dir / image)
        else:
            series, points = _bar_chart(panel, table, out_dir / image)
        result = PanelResult(uid, title, panel.kind, table.num_rows, series, points, image)
        body = f"<img src='{html.escape(image)}' alt='{html.escape(title)}'>"
    elif panel.kind == "stat":
        value = table.column(0)[0].as_py()
        result = PanelResult(uid, title, "stat", table.num_rows, points=int(value is not None))
        body = f"<p class='stat'>{html.escape(_format(value, panel.unit))}</p>"
    else:
        result = PanelResult(
            uid, title, "table", table.num_rows, points=table.num_rows * table.num_columns
        )
        body = _html_table(table, panel.unit)
    return result, f"<div class='panel'>{_heading(title, panel)}{body}</div>"


_Series = dict[tuple[str, str], tuple[list[datetime], list[float]]]
_LINE_STYLES: Final = ("-", "--", ":", "-.")
_THRESHOLD_COLORS: Final = ("#d62728", "#ff7f0e", "#bcbd22")


def _series(panel: PanelSpec, table: pa.Table) -> _Series:
    """Long rows (time, labels..., values...) -> (label set, value column) -> points."""
    out: _Series = {}
    for row in table.to_pylist():
        label = " ".join(str(row[c]) for c in panel.labels)
        for column in panel.value_columns:
            y = row[column]
            if y is None or (isinstance(y, float) and math.isnan(y)):
                continue
            xs, ys = out.setdefault((label, column), ([], []))
            xs.append(_as_datetime(row["time"]))
            ys.append(float(y))
    return out


def _as_datetime(value: Any) -> datetime:
    # chdb hands a ClickHouse DateTime to Arrow as uint32 seconds; a server as a timestamp.
    if isinstance(value, int):
        return datetime.fromtimestamp(value, UTC)
    if not isinstance(value, datetime):
        raise TypeError(f"a time column holds {type(value).__name__}, expected a DateTime")
    return value


def _time_series_chart(
    panel: PanelSpec, table: pa.Table, marks: list[_Marks], path: Path
) -> tuple[int, int]:
    # One color per label set, one line style per value column (p50 solid, p95 dashed...),
    # so a legend of labels plus value columns stays short.
    series = _series(panel, table)
    labels = sorted({label for label, _ in series})
    columns = [c for c in panel.value_columns if any(c == col for _, col in series)]
    palette = _palette(len(labels))
    figure = Figure(figsize=(10, 3.6), dpi=96, layout="constrained")
    axes = figure.subplots()
    for (label, column), (xs, ys) in sorted(series.items()):
        axes.plot(
            date2num(xs),
            ys,
            linewidth=1.1,
            color=palette[labels.index(label)],
            linestyle=_LINE_STYLES[columns.index(column) % len(_LINE_STYLES)],
        )
    handles: list[Any] = []
    names: list[str] = []
    shown = labels[:MAX_LEGEND_ENTRIES]
    for label in shown:
        handles.append(Line2D([], [], color=palette[labels.index(label)]))
        names.append(label or columns[0])
    if len(labels) > len(shown):
        handles.append(Line2D([], [], color="none"))
        names.append(f"+{len(labels) - len(shown)} more")
    if len(columns) > 1:
        for i, column in enumerate(columns):
            handles.append(Line2D([], [], color="#555", linestyle=_LINE_STYLES[i % 4]))
            names.append(column)
    for i, (value, label) in enumerate(panel.thresholds):
        color = _THRESHOLD_COLORS[i % len(_THRESHOLD_COLORS)]
        axes.axhline(value, color=color, linestyle="--", linewidth=1)
        handles.append(Line2D([], [], color=color, linestyle="--"))
        names.append(f"{label} ({value:g})")
    for mark in marks:
        for t in mark.times:
            axes.axvline(float(date2num(t)), color=mark.color, alpha=0.5, linewidth=0.9)
        if mark.times:
            handles.append(Line2D([], [], color=mark.color, alpha=0.5))
            names.append(mark.name)
    axes.set_ylabel(_unit_label(panel.unit))
    axes.grid(alpha=0.3)
    axes.margins(x=0)
    axes.legend(handles, names, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    axes.xaxis_date(tz=UTC)
    # Concise labels adapt to the range: no repeated "08:47" ticks on a few minutes' chart.
    locator = AutoDateLocator(tz=UTC)
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(ConciseDateFormatter(locator, tz=UTC))
    figure.autofmt_xdate()
    figure.savefig(path)
    return len(series), sum(len(ys) for _, ys in series.values())


def _palette(n: int) -> list[Any]:
    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(max(n, 1))]


def _bar_chart(panel: PanelSpec, table: pa.Table, path: Path) -> tuple[int, int]:
    categories = [str(c) for c in table.column(panel.columns[0]).to_pylist()]
    values = panel.columns[1:]
    figure = Figure(figsize=(10, 3.6), dpi=96, layout="constrained")
    axes = figure.subplots()
    width = 0.8 / max(len(values), 1)
    points = 0
    for i, column in enumerate(values):
        ys = [float("nan") if v is None else float(v) for v in table.column(column).to_pylist()]
        points += sum(not math.isnan(y) for y in ys)
        xs = [j + (i - (len(values) - 1) / 2) * width for j in range(len(categories))]
        axes.bar(xs, ys, width=width, label=column)
    axes.set_xticks(range(len(categories)), categories)
    axes.set_ylabel(_unit_label(panel.unit))
    axes.grid(axis="y", alpha=0.3)
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    figure.savefig(path)
    return len(values), points


def _unit_label(unit: str) -> str:
    return {"currencyUSD": "USD", "percentunit": "fraction", "ms": "ms", "reqps": "req/s"}.get(
        unit, ""
    )


def _format(value: Any, unit: str = "short") -> str:
    """A cell or stat as text.

    >>> _format(0.0312, "percentunit"), _format(12.5, "currencyUSD"), _format(None)
    ('3.12%', '$12.5000', '-')
    """
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if unit == "percentunit":
            return f"{value:.2%}"
        if unit == "currencyUSD":
            return f"${value:,.4f}"
        if unit == "ms":
            return f"{value:,.0f} ms"
        return f"{value:,.4g}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def _html_table(table: pa.Table, unit: str) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.column_names)
    rows = []
    for row in table.slice(0, MAX_TABLE_ROWS).to_pylist():
        cells = "".join(f"<td>{html.escape(_format(v))}</td>" for v in row.values())
        rows.append(f"<tr>{cells}</tr>")
    more = table.num_rows - MAX_TABLE_ROWS
    note = f"<p class='muted'>{more} more rows not shown.</p>" if more > 0 else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>{note}"


def _page(
    time_range: TimeRange, variables: Variables, report: Report, sections: Sequence[str]
) -> str:
    chosen = ", ".join(f"{k}={_selection(v)}" for k, v in sorted(variables.items()))
    empty = "".join(
        f"<li>{html.escape(p.title)} ({p.dashboard}): {html.escape(p.empty_reason)}</li>"
        for p in report.empty
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>driftline report</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
.panel {{ margin: 1.5em 0; }} .muted {{ color: #666; font-size: 0.9em; }}
.stat {{ font-size: 2em; font-weight: bold; margin: 0.2em 0; }}
table {{ border-collapse: collapse; font-size: 0.8em; }}
th, td {{ border: 1px solid #ccc; padding: 2px 6px; text-align: left; }}
img {{ max-width: 100%; }}
</style></head><body>
<h1>driftline report</h1>
<p>{html.escape(time_range.start.isoformat())} to {html.escape(time_range.end.isoformat())},
interval {time_range.interval_s} s; {html.escape(chosen)}</p>
<p id='summary'>{html.escape(report.summary())}</p>
{f"<ul class='empty'>{empty}</ul>" if empty else ""}
{"".join(sections)}
</body></html>
"""


def _selection(value: Any) -> str:
    if isinstance(value, str):
        return value
    return "All" if list(value) == ["$__all"] else ",".join(value)


__all__ = ["PanelResult", "Report", "default_variables", "render_report"]
