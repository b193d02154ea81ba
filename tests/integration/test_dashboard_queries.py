"""Every panel and annotation query, expanded as the plugin expands it, runs against chdb
filled with simulated traffic, alerts, baselines and prices, and returns the expected columns
with rows. A panel that names a missing table or column fails here, not in Grafana.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from driftline.config import StoreSettings
from driftline.dashboards.build import dashboard_specs
from driftline.dashboards.cost_attribution import spec as cost_spec
from driftline.dashboards.macros import ALL, TimeRange, Variables, expand
from driftline.dashboards.panels import AnnotationSpec, BuildContext, PanelSpec, panels_by_title
from driftline.dashboards.report import default_variables
from driftline.dashboards.variables import VARIABLE_QUERIES
from driftline.store import ChdbStore, StoreQueryError, open_store
from tests.utils import dashboard_data

pytestmark = pytest.mark.integration

CONTEXT = BuildContext(dashboard_data.BUDGETS)
RANGE = TimeRange.between(dashboard_data.START, dashboard_data.END)
SPECS = dashboard_specs(CONTEXT)
ITEMS = [(s.uid, item) for s in SPECS for item in (*s.panels, *s.annotations)]
IDS = [f"{uid}:{getattr(item, 'title', None) or getattr(item, 'name', '')}" for uid, item in ITEMS]
SELECTION: Variables = {
    "environment": ["prod"],
    "workflow": ["support-chat", "rag-search"],
    "model": ["gpt-4o"],
    "metric": "latency",
}
_NUMERIC = ("UInt", "Int", "Float", "Nullable(UInt", "Nullable(Int", "Nullable(Float")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChdbStore]:
    path: Path = tmp_path_factory.mktemp("dashboards-chdb")
    store = open_store(f"chdb://{path}", StoreSettings(ttl_days=3650))
    assert isinstance(store, ChdbStore)
    counts = dashboard_data.fill(store)
    assert counts["events"] > 1000 and counts["alerts"] and counts["baselines"]
    yield store
    store.close()


def column_types(store: ChdbStore, sql: str) -> dict[str, str]:
    described = store.query(f"DESCRIBE ({sql})")
    names = described.column("name").to_pylist()
    return dict(zip(names, described.column("type").to_pylist(), strict=True))


def check(store: ChdbStore, item: PanelSpec | AnnotationSpec, variables: Variables) -> int:
    """Run ``item`` as Grafana would; assert its columns and their types; return its rows."""
    sql = expand(item.sql, RANGE, variables)
    table = store.query(sql)
    assert tuple(table.column_names) == item.columns
    types = column_types(store, sql)
    if isinstance(item, AnnotationSpec) or item.kind == "timeseries":
        assert types["time"].startswith(("DateTime", "Nullable(DateTime")), types["time"]
    if isinstance(item, PanelSpec) and item.kind in ("timeseries", "barchart", "stat"):
        for column in item.value_columns if item.kind == "timeseries" else item.columns[1:]:
            assert types[column].startswith(_NUMERIC), (column, types[column])
        for label in item.labels:
            assert "String" in types[label], (label, types[label])
    return table.num_rows


@pytest.mark.parametrize(("uid", "item"), ITEMS, ids=IDS)
def test_query_returns_its_columns_with_rows(
    store: ChdbStore, uid: str, item: PanelSpec | AnnotationSpec
) -> None:
    assert check(store, item, default_variables()) > 0


@pytest.mark.parametrize(("uid", "item"), ITEMS, ids=IDS)
def test_query_runs_with_a_concrete_selection(
    store: ChdbStore, uid: str, item: PanelSpec | AnnotationSpec
) -> None:
    # Exercises the other branch of every $__conditionalAll (an IN list instead of 1=1).
    check(store, item, SELECTION)


def test_selection_narrows_the_result(store: ChdbStore) -> None:
    panel = panels_by_title(SPECS[1])["Spend by workflow"]
    everything = store.query(expand(panel.sql, RANGE, default_variables()))
    narrowed = store.query(
        expand(panel.sql, RANGE, {**default_variables(), "workflow": ["support-chat"]})
    )
    assert set(narrowed.column("workflow").to_pylist()) == {"support-chat"}
    assert 0 < narrowed.num_rows < everything.num_rows


def test_variable_queries(store: ChdbStore) -> None:
    values = {
        name: store.query(expand(sql, RANGE, {"environment": [ALL], "workflow": [ALL]}))
        .column(0)
        .to_pylist()
        for name, sql in VARIABLE_QUERIES.items()
    }
    assert values["environment"] == ["prod", dashboard_data.STAGING]
    assert "support-chat" in values["workflow"] and "llama-3.1-8b" in values["model"]


def test_burn_panel_without_budgets_runs_empty(store: ChdbStore) -> None:
    panel = panels_by_title(cost_spec(BuildContext()))["Budget burn rate (1h fast, 6h slow)"]
    assert store.query(expand(panel.sql, RANGE, default_variables())).num_rows == 0


def test_canary_is_the_bundle_seen_last(store: ChdbStore) -> None:
    panel = panels_by_title(SPECS[2])["Canary vs stable side by side"]
    rows = store.query(
        expand(panel.sql, RANGE, {**default_variables(), "workflow": ["support-chat"]})
    ).to_pylist()
    canaries = [r for r in rows if r["role"] == "canary"]
    assert [r["prompt_version"] for r in canaries] == [dashboard_data.CANARY_PROMPT]


@pytest.mark.parametrize(
    "bad_sql",
    [
        "SELECT $__timeInterval(minute) AS time, workflow, sum(no_such) AS v"
        " FROM driftline.rollup_model_1m WHERE $__timeFilter(minute) GROUP BY time, workflow",
        "SELECT $__timeInterval(minute) AS time, workflow, sum(requests) AS v"
        " FROM driftline.rollup_nothing_1m WHERE $__timeFilter(minute) GROUP BY time, workflow",
    ],
)
def test_a_panel_with_a_missing_column_or_table_fails(store: ChdbStore, bad_sql: str) -> None:
    panel = PanelSpec("bad", "timeseries", bad_sql, ("time", "workflow", "v"), labels=("workflow",))
    with pytest.raises(StoreQueryError):
        check(store, panel, default_variables())


@pytest.mark.parametrize(
    ("uid", "title"),
    [
        ("driftline-cost", "Spend"),
        ("driftline-cost", "Spend by tenant"),
        ("driftline-cost", "Spend by route"),
        ("driftline-sre", "Requests"),
    ],
)
def test_environment_filter_reaches_the_rollups(store: ChdbStore, uid: str, title: str) -> None:
    panel = panels_by_title(next(s for s in SPECS if s.uid == uid))[title]
    value = panel.value_columns[-1] if panel.kind == "timeseries" else panel.columns[0]
    raw = {
        r["environment"]: r
        for r in store.query(
            "SELECT environment, count() AS requests, sum(ifNull(cost_usd, 0)) AS spend_usd"
            " FROM driftline.llm_requests"
            " WHERE toStartOfMinute(start_ts) BETWEEN {a:DateTime64(6)} AND {b:DateTime64(6)}"
            " GROUP BY environment",
            {"a": RANGE.start, "b": RANGE.end},
        ).to_pylist()
    }
    assert set(raw) == {"prod", dashboard_data.STAGING}
    for environment, expected in raw.items():
        rows = store.query(
            expand(panel.sql, RANGE, {**default_variables(), "environment": [environment]})
        )
        total = sum(rows.column(value).to_pylist())
        want = expected["requests"] if value == "requests" else expected["spend_usd"]
        assert total == pytest.approx(want, rel=1e-9), environment


# Panels that may read every partition: alert tables are small and an alert opened before the
# range can still be open in it; alert scores are filtered by event time, not the partition key.
_UNPRUNED = {
    "Open alerts",
    "Open alerts by severity",
    "Alerts resolved",
    "Drift alerts",
    "Detector scores vs thresholds",
}


@pytest.mark.parametrize(("uid", "item"), ITEMS, ids=IDS)
def test_time_range_prunes_partitions(
    store: ChdbStore, uid: str, item: PanelSpec | AnnotationSpec
) -> None:
    # force_index_by_date fails a query that would read every day partition: the time filter
    # must reach the tables through the FINAL views (llm_requests, llm_traces) and subqueries.
    if (getattr(item, "title", None) or getattr(item, "name", "")) in _UNPRUNED:
        pytest.skip("reads every partition by design")
    sql = expand(item.sql, RANGE, default_variables())
    store.query(f"SELECT * FROM ({sql}) SETTINGS force_index_by_date = 1")


def test_engine_preemption_rate_is_the_counters_growth(store: ChdbStore) -> None:
    panel = panels_by_title(SPECS[0])["Engine preemptions per second"]
    rows = store.query(expand(panel.sql, RANGE, default_variables())).to_pylist()
    points = dashboard_data.engine_metrics().to_pylist()
    for instance in ("vllm-0:8000", "vllm-1:8000"):
        counts = [
            p["value"] for p in points if p["instance"] == instance and p["metric"] == "preemptions"
        ]
        # Per minute: the growth of the last count of a minute over the one before, a reset
        # (vllm-1 restarts at scrape 200) counting 0, never negative.
        last_of_minute = counts[3::4]
        expected = [max(b - a, 0.0) / 60 for a, b in itertools.pairwise(last_of_minute)]
        got = [r["preemptions_per_s"] for r in rows if r["instance"] == instance]
        assert got == pytest.approx(expected)
