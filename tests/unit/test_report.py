"""The static report draws every panel from a store filled with simulated data."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image

from driftline.cli import main
from driftline.commands.report import time_range_of
from driftline.config import StoreSettings
from driftline.dashboards.build import dashboard_specs
from driftline.dashboards.macros import TimeRange
from driftline.dashboards.panels import BuildContext
from driftline.dashboards.report import Report, render_report
from driftline.store import ChdbStore, open_store
from tests.utils import dashboard_data

CONTEXT = BuildContext(dashboard_data.BUDGETS)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChdbStore]:
    path = tmp_path_factory.mktemp("report-chdb")
    store = open_store(f"chdb://{path}", StoreSettings(ttl_days=3650))
    assert isinstance(store, ChdbStore)
    dashboard_data.fill(store)
    yield store
    store.close()


@pytest.fixture(scope="module")
def report(store: ChdbStore, tmp_path_factory: pytest.TempPathFactory) -> Report:
    out = tmp_path_factory.mktemp("report")
    time_range = TimeRange.between(dashboard_data.START, dashboard_data.END)
    return render_report(store, out, time_range, CONTEXT)


def test_every_panel_is_in_the_report_with_data(report: Report) -> None:
    expected = [(s.uid, p.kind) for s in dashboard_specs(CONTEXT) for p in s.panels]
    assert [(p.dashboard, p.kind) for p in report.panels] == expected
    for panel in report.panels:
        assert panel.rows > 0 and panel.points > 0, panel


def test_each_chart_is_a_png_with_something_drawn(report: Report) -> None:
    charts = report.charts
    assert len(charts) == sum(p.kind in ("timeseries", "barchart") for p in report.panels) > 10
    for chart in charts:
        assert chart.series > 0, chart
        pixels = image.imread(report.index.parent / str(chart.image))[..., :3]
        assert pixels.shape[0] > 200 and pixels.shape[1] > 600
        # Lines or bars in the plot area: many pixels neither white nor grid grey.
        colored = np.abs(pixels - pixels.mean(axis=2, keepdims=True)).max(axis=2) > 0.15
        assert colored.sum() > 500, chart.title


def test_html_links_every_chart_and_titles_every_panel(report: Report) -> None:
    page = report.index.read_text()
    for panel in report.panels:
        assert panel.title.replace("&", "&amp;") in page
    for chart in report.charts:
        assert f"src='{chart.image}'" in page
    assert "output_tokens" in page  # the drift metric variable is substituted in titles


def test_command_writes_a_report_for_an_empty_range(
    store: ChdbStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "report",
            "--out",
            str(tmp_path),
            "--store",
            store.url,
            "--from",
            "2025-01-01T00:00:00Z",
            "--to",
            "2025-01-01T01:00:00Z",
        ]
    )
    assert code == 0
    assert (tmp_path / "index.html").is_file()
    assert "no data in the range" in capsys.readouterr().err


def test_time_range_flags() -> None:
    now = datetime(2026, 1, 2, tzinfo=UTC)
    args = argparse.Namespace(start=None, end=None, last="90m")
    assert time_range_of(args, now) == (datetime(2026, 1, 1, 22, 30, tzinfo=UTC), now)
    args = argparse.Namespace(start="2026-01-01T00:00:00", end="2026-01-01T06:00:00", last=None)
    assert time_range_of(args, now)[0].tzinfo is not None
    with pytest.raises(ValueError, match="not both"):
        time_range_of(argparse.Namespace(start="2026-01-01", end=None, last="1h"), now)
    with pytest.raises(ValueError, match="duration"):
        time_range_of(argparse.Namespace(start=None, end=None, last="soon"), now)


@pytest.mark.parametrize("last", ["999999999d", "99999999999999999999999w", "36526d"])
def test_a_range_too_long_is_a_one_line_error(
    store: ChdbStore, tmp_path: Path, capsys: pytest.CaptureFixture[str], last: str
) -> None:
    code = main(["report", "--out", str(tmp_path), "--store", store.url, "--last", last])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("driftline report: duration") and err.count("\n") == 1, err
    assert not (tmp_path / "index.html").exists()


def test_a_range_ending_near_year_one_is_a_one_line_error(
    store: ChdbStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["report", "--out", str(tmp_path), "--store", store.url, "--to", "0001-01-01"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == "driftline report: --last 6h reaches before year 1\n"


def test_out_naming_a_file_is_a_one_line_error(
    store: ChdbStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    existing = tmp_path / "report.html"
    existing.write_text("kept")
    argv = ["report", "--out", str(existing), "--store", store.url, "--last", "1h"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == f"driftline report: --out {existing}: exists and is not a directory\n"
    assert existing.read_text() == "kept"


def test_out_under_a_file_is_a_one_line_error(
    store: ChdbStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    existing = tmp_path / "report.html"
    existing.write_text("kept")
    argv = ["report", "--out", str(existing / "sub"), "--store", store.url, "--last", "1h"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"driftline report: cannot write to {existing / 'sub'}: ") and (
        err.count("\n") == 1
    ), err


def test_an_unknown_metric_is_a_one_line_error_not_empty_panels(
    store: ChdbStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["report", "--out", str(tmp_path), "--store", store.url, "--metric", "output_token"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("driftline report: --metric 'output_token': one of ") and (
        "output_tokens" in err and err.count("\n") == 1
    ), err
    assert not (tmp_path / "index.html").exists()
