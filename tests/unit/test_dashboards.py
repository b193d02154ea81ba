"""Every dashboard builds, serializes to the JSON Grafana and the ClickHouse plugin expect."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from grafana_foundation_sdk.models.dashboard import Dashboard
from grafana_foundation_sdk.models.dashboard import Panel as DashboardPanel

from driftline.cli import main
from driftline.dashboards import cost_attribution, drift, sre_overview
from driftline.dashboards.build import build_all, dashboard_specs, write_all
from driftline.dashboards.panels import (
    AnnotationSpec,
    BuildContext,
    DashboardSpec,
    PanelSpec,
    panels_by_title,
)
from driftline.dashboards.query import (
    DATASOURCE_TYPE,
    DATASOURCE_UID,
    PROMETHEUS_DATASOURCE_TYPE,
    PROMETHEUS_DATASOURCE_UID,
    ClickHouseQuery,
)

PROVISIONING = Path(__file__).resolve().parents[2] / "dashboards" / "provisioning"
CONTEXT = BuildContext({"support-chat": 800.0})
# Changing these breaks links in alerts (dashboard_url) and bookmarks: on purpose only.
STABLE = {
    "driftline-sre": "driftline / SRE overview",
    "driftline-cost": "driftline / Cost attribution",
    "driftline-drift": "driftline / Drift",
}


@pytest.fixture(scope="module")
def boards() -> dict[str, dict[str, Any]]:
    return build_all(CONTEXT)


def test_uids_and_titles_are_stable(boards: dict[str, dict[str, Any]]) -> None:
    assert {uid: board["title"] for uid, board in boards.items()} == STABLE
    assert tuple(STABLE) == (sre_overview.UID, cost_attribution.UID, drift.UID)


def sql_panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    """The panels above the first row: the ClickHouse ones (rows below read Prometheus)."""
    panels: list[dict[str, Any]] = board["panels"]
    rows = [i for i, panel in enumerate(panels) if panel["type"] == "row"]
    return panels[: rows[0]] if rows else panels


def test_every_panel_has_one_plugin_target(boards: dict[str, dict[str, Any]]) -> None:
    for uid, board in boards.items():
        assert board["panels"], uid
        for panel in sql_panels(board):
            (target,) = panel["targets"]
            assert set(target) == {
                "refId",
                "datasource",
                "editorType",
                "queryType",
                "format",
                "rawSql",
            }, (uid, panel["title"])
            assert target["datasource"] == {"type": DATASOURCE_TYPE, "uid": DATASOURCE_UID}
            assert target["editorType"] == "sql"
            assert (target["queryType"], target["format"]) in {("timeseries", 0), ("table", 1)}
            assert panel["datasource"]["uid"] == DATASOURCE_UID
            expected = "timeseries" if panel["type"] == "timeseries" else "table"
            assert target["queryType"] == expected, (uid, panel["title"])


def test_json_sql_is_the_spec_sql(boards: dict[str, dict[str, Any]]) -> None:
    # What the query tests execute is what Grafana gets.
    for spec in dashboard_specs(CONTEXT):
        by_title = panels_by_title(spec)
        board = boards[spec.uid]
        assert [p["title"] for p in sql_panels(board)] == list(by_title)
        for panel in sql_panels(board):
            assert panel["targets"][0]["rawSql"] == by_title[panel["title"]].sql
        annotations = [a for a in board["annotations"].get("list", []) if "target" in a]
        assert [a["target"]["rawSql"] for a in annotations] == [a.sql for a in spec.annotations]


def test_round_trip_through_the_sdk_reads_clickhouse_targets(
    boards: dict[str, dict[str, Any]],
) -> None:
    for board in boards.values():
        parsed = Dashboard.from_json(json.loads(json.dumps(board)))
        assert parsed.panels and len(parsed.panels) == len(board["panels"])
        panel = parsed.panels[0]
        assert isinstance(panel, DashboardPanel) and panel.targets
        target = panel.targets[0]
        assert isinstance(target, ClickHouseQuery)
        assert target.to_json() == board["panels"][0]["targets"][0]


def test_panels_do_not_overlap_and_fit_the_grid(boards: dict[str, dict[str, Any]]) -> None:
    for uid, board in boards.items():
        cells: set[tuple[int, int]] = set()
        for panel in board["panels"]:
            g = panel["gridPos"]
            assert g["x"] + g["w"] <= 24, (uid, panel["title"])
            area = {
                (x, y)
                for x in range(g["x"], g["x"] + g["w"])
                for y in range(g["y"], g["y"] + g["h"])
            }
            assert not area & cells, (uid, panel["title"])
            cells |= area


def test_filter_variables_default_to_all(boards: dict[str, dict[str, Any]]) -> None:
    for uid, board in boards.items():
        variables = {v["name"]: v for v in board["templating"]["list"]}
        for name in ("environment", "workflow", "model"):
            v = variables[name]
            assert v["type"] == "query" and v["includeAll"] and v["multi"], (uid, name)
            assert v["current"]["value"] == ["$__all"]
            assert v["datasource"]["uid"] == DATASOURCE_UID
    assert boards["driftline-drift"]["templating"]["list"][-1]["name"] == "metric"


def test_filters_always_go_through_conditional_all() -> None:
    for spec in dashboard_specs(CONTEXT):
        items: list[PanelSpec | AnnotationSpec] = [*spec.panels, *spec.annotations]
        for item in items:
            for name in ("environment", "workflow", "model"):
                uses = item.sql.count(f"${{{name}:singlequote}}")
                assert uses == item.sql.count(f", ${name})"), (spec.uid, name)


def test_budgets_from_settings_reach_the_burn_panel() -> None:
    panel = panels_by_title(cost_attribution.spec(CONTEXT))["Budget burn rate (1h fast, 6h slow)"]
    assert "map('support-chat', 800.0)" in panel.sql
    empty = panels_by_title(cost_attribution.spec())["Budget burn rate (1h fast, 6h slow)"]
    assert "map()" in empty.sql


def test_alert_dashboard_url_points_at_the_drift_dashboard() -> None:
    board = drift.spec().to_json()
    names = [v["name"] for v in board["templating"]["list"]]
    # alerts link to /d/driftline-drift?var-workflow=<workflow>
    assert board["uid"] == "driftline-drift" and "workflow" in names


def test_panel_spec_validation() -> None:
    with pytest.raises(ValueError, match="time"):
        PanelSpec("x", "timeseries", "SELECT 1", ("t", "v"))
    with pytest.raises(ValueError, match="labels"):
        PanelSpec("x", "timeseries", "SELECT 1", ("time", "v"), labels=("w",))
    spec = DashboardSpec("u", "t", "d", (PanelSpec("a", "stat", "SELECT 1", ("x",)),) * 2)
    with pytest.raises(ValueError, match="duplicate"):
        panels_by_title(spec)


def test_provisioning_matches_the_dashboards() -> None:
    source = yaml.safe_load((PROVISIONING / "datasources" / "clickhouse.yaml").read_text())
    (datasource,) = source["datasources"]
    assert datasource["uid"] == DATASOURCE_UID and datasource["type"] == DATASOURCE_TYPE
    assert datasource["secureJsonData"]["password"].startswith("${")  # from the environment
    assert datasource["jsonData"]["defaultDatabase"] == "driftline"
    source = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yaml").read_text())
    (datasource,) = source["datasources"]
    assert datasource["uid"] == PROMETHEUS_DATASOURCE_UID
    assert datasource["type"] == PROMETHEUS_DATASOURCE_TYPE
    assert datasource["access"] == "proxy" and not datasource.get("isDefault")
    provider = yaml.safe_load((PROVISIONING / "dashboards" / "driftline.yaml").read_text())
    assert provider["providers"][0]["type"] == "file"


def test_write_all_and_the_command(tmp_path: Path) -> None:
    paths = write_all(tmp_path / "a", CONTEXT)
    assert sorted(p.name for p in paths) == sorted(f"{uid}.json" for uid in STABLE)
    config = tmp_path / "driftline.toml"
    config.write_text("[workflows.support-chat.budgets]\nmonthly_cost_usd = 800.0\n")
    assert main(["--config", str(config), "dashboards", "build", "--out", str(tmp_path / "b")]) == 0
    for path in paths:
        assert (tmp_path / "b" / path.name).read_text() == path.read_text()
