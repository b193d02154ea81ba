"""The report counts every panel, the empty ones too, and says why a panel is empty.

A store with traffic but without model prices, and a configuration without monthly budgets,
is what the demo had before it wrote prices and set budgets: the cache-savings and budget
panels had nothing to show and the report left them out of its count.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from driftline.config import StoreSettings
from driftline.dashboards.build import dashboard_specs
from driftline.dashboards.macros import TimeRange
from driftline.dashboards.panels import BuildContext
from driftline.dashboards.report import Report, render_report
from driftline.store import ChdbStore, open_store
from driftline.store.prices import write_model_prices
from driftline.streams.sink import EventSink
from tests.utils import dashboard_data

CACHE_SAVINGS = "Prompt-cache savings by model"
BUDGET_PANELS = ("Budget burn rate (1h fast, 6h slow)", "Budget burn over the range")
NO_BUDGET = "no workflow has a monthly budget"
TIME_RANGE = TimeRange.between(dashboard_data.START, dashboard_data.END)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChdbStore]:
    """Requests and traces only: no prices, baselines or alerts."""
    path = tmp_path_factory.mktemp("report-empty-chdb")
    store = open_store(f"chdb://{path}", StoreSettings(ttl_days=3650))
    assert isinstance(store, ChdbStore)
    events, traces = dashboard_data.traffic(300)
    sink = EventSink(store, batch_rows=100_000)
    for e in events:
        sink.add("events", e)
    for t in traces:
        sink.add("traces", t)
    sink.flush()
    yield store
    store.close()


def _render(store: ChdbStore, out: Path, context: BuildContext) -> Report:
    return render_report(store, out, TIME_RANGE, context)


def _by_title(report: Report) -> dict[str, tuple[bool, str]]:
    return {p.title: (p.has_data, p.empty_reason) for p in report.panels}


def test_empty_panels_are_counted_with_their_reason(store: ChdbStore, tmp_path: Path) -> None:
    report = _render(store, tmp_path, BuildContext())
    specs = [p for s in dashboard_specs(BuildContext()) for p in s.panels]
    assert len(report.panels) == len(specs)
    assert len(report.charts) == sum(p.kind in ("timeseries", "barchart") for p in specs)
    panels = _by_title(report)
    assert panels[CACHE_SAVINGS] == (False, "driftline.model_prices holds no rows")
    for title in BUDGET_PANELS:
        has_data, reason = panels[title]
        assert not has_data and reason.startswith(NO_BUDGET), (title, reason)
    # Panels over the requests themselves do have data: empty is not the default.
    assert panels["Spend by workflow"] == (True, "")
    assert panels["Requests per second"] == (True, "")

    page = report.index.read_text()
    summary = re.search(r"<p id='summary'>(\d+) of (\d+) panels with data", page)
    assert summary is not None
    empty_titles = {t for t, (has_data, _) in panels.items() if not has_data}
    assert {CACHE_SAVINGS, *BUDGET_PANELS} <= empty_titles
    assert (int(summary[1]), int(summary[2])) == (len(specs) - len(empty_titles), len(specs))
    for title in empty_titles:
        assert f"<li>{html.escape(title)} (" in page, title
    assert page.count("No data: ") == len(empty_titles)
    # An empty chart links no image.
    assert all(p.image is None for p in report.charts if not p.has_data)


def test_prices_and_budgets_fill_those_panels(store: ChdbStore, tmp_path: Path) -> None:
    assert write_model_prices(store, dashboard_data.price_book()) > 0
    panels = _by_title(_render(store, tmp_path, BuildContext(dashboard_data.BUDGETS)))
    for title in (CACHE_SAVINGS, *BUDGET_PANELS):
        assert panels[title] == (True, ""), title
