"""Names from spans cannot inject SQL into a panel or the static report.

The store holds the dashboards' test traffic plus, for each hostile workflow name from the
issue tracker, a copy of the ``support-chat`` rows renamed to what the normalizer makes of that
name. Every panel that filters on workflow must return for the renamed copy exactly what it
returns for ``support-chat``: the name went into SQL and came back intact, and changed nothing
else. Raw hostile names are refused by the expander instead of reaching SQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftline.cli import main
from driftline.config import StoreSettings
from driftline.dashboards.build import dashboard_specs
from driftline.dashboards.macros import MacroError, TimeRange, Variables, expand
from driftline.dashboards.panels import AnnotationSpec, BuildContext, PanelSpec
from driftline.dashboards.report import default_variables, render_report
from driftline.store import ChdbStore, open_store
from driftline.streams.normalize import safe_name
from tests.utils import dashboard_data

pytestmark = pytest.mark.integration

RANGE = TimeRange.between(dashboard_data.START, dashboard_data.END)
SOURCE = "support-chat"
HOSTILE = (
    "zz\\' ) OR 1=1 --",
    "a\\",
    "x') OR 1=throwIf(1) --",
    '支持 $__timeFilter(start_ts) "quoted"',
)
SAFE = {raw: safe_name(raw, "workflow", {}) for raw in HOSTILE}
# The renamed copies have the source's budget, as their configuration would give them.
CONTEXT = BuildContext(
    {**dashboard_data.BUDGETS, **dict.fromkeys(SAFE.values(), dashboard_data.BUDGETS[SOURCE])}
)
ITEMS = [
    item
    for spec in dashboard_specs(CONTEXT)
    for item in (*spec.panels, *spec.annotations)
    if "${workflow" in item.sql
]
IDS = [getattr(item, "title", None) or getattr(item, "name", "") for item in ITEMS]
# Each copy's alert ids get a suffix of their own, so that they are alerts of their own.
SUFFIX = {name: f"~copy{i}" for i, name in enumerate(SAFE.values())}


def literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def copy_workflow(store: ChdbStore, name: str, suffix: str) -> None:
    """The ``support-chat`` rows of every base table again, renamed to ``name``."""
    new, source = literal(name), literal(SOURCE)
    renamed = f"{new} AS workflow"
    own_alert = (
        f"concat(alert_id, '{suffix}') AS alert_id, "
        f"replaceAll(dedup_key, {source}, {new}) AS dedup_key"
    )
    for table, replace, where in (
        ("llm_requests_raw", renamed, f"workflow = {source}"),
        ("llm_traces_raw", renamed, f"workflow = {source}"),
        ("workflow_baselines", renamed, f"workflow = {source}"),
        (
            "llm_alerts_log",
            f"{renamed}, {own_alert}, replaceAll(dashboard_url, {source}, {new}) AS dashboard_url",
            f"workflow = {source}",
        ),
        (
            "alert_deliveries",
            own_alert,
            "alert_id IN (SELECT alert_id FROM driftline.llm_alerts_log "
            f"WHERE workflow = {source})",
        ),
    ):
        # Filtered in a subquery: in the outer WHERE, "workflow" would be the new name.
        store.command(
            f"INSERT INTO driftline.{table} SELECT * REPLACE ({replace}) "
            f"FROM (SELECT * FROM driftline.{table} WHERE {where})"
        )


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChdbStore]:
    path: Path = tmp_path_factory.mktemp("names-chdb")
    store = open_store(f"chdb://{path}", StoreSettings(ttl_days=3650))
    assert isinstance(store, ChdbStore)
    dashboard_data.fill(store)
    for name in SAFE.values():
        copy_workflow(store, name, SUFFIX[name])
    yield store
    store.close()


def rows(store: ChdbStore, item: PanelSpec | AnnotationSpec, variables: Variables) -> list[Any]:
    return store.query(expand(item.sql, RANGE, variables)).to_pylist()


def comparable(table: list[dict[str, Any]]) -> list[str]:
    """Rows in a fixed order, floats to 12 digits: sums over the copy's parts may differ in
    the last bit, and rows that tie in a panel's ORDER BY may come in either order."""
    return sorted(
        repr({k: float(f"{v:.12g}") if isinstance(v, float) else v for k, v in row.items()})
        for row in table
    )


def as_source(value: Any, name: str) -> Any:
    """A cell of the renamed copy as it reads for ``support-chat``."""
    if isinstance(value, str):
        return value.replace(name, SOURCE).replace(SUFFIX[name], "")
    if isinstance(value, list):
        return [as_source(v, name) for v in value]
    return value


@pytest.mark.parametrize("item", ITEMS, ids=IDS)
def test_a_renamed_workflow_returns_the_same_rows(
    store: ChdbStore, item: PanelSpec | AnnotationSpec
) -> None:
    expected = rows(store, item, {**default_variables(), "workflow": [SOURCE]})
    for raw, name in SAFE.items():
        got = rows(store, item, {**default_variables(), "workflow": [name]})
        renamed_back = [{k: as_source(v, name) for k, v in row.items()} for row in got]
        assert comparable(renamed_back) == comparable(expected), raw
        selection = {**default_variables(), "workflow": [SOURCE]}
        assert_refused_or_harmless(store, item, selection, "workflow", raw)


def assert_refused_or_harmless(
    store: ChdbStore,
    item: PanelSpec | AnnotationSpec,
    selection: Variables,
    variable: str,
    raw: str,
) -> None:
    """``raw`` added to ``variable``'s selection is refused or, quoted, matches nothing more."""
    chosen = selection[variable]
    assert not isinstance(chosen, str)
    try:
        sql = expand(item.sql, RANGE, {**selection, variable: [*chosen, raw]})
    except MacroError:
        assert set(raw) & {"\\", "$"}, raw  # refused only for what quoting cannot carry
        return
    assert store.query(sql).to_pylist() == rows(store, item, selection), raw


def test_most_compared_panels_have_rows(store: ChdbStore) -> None:
    with_rows = [
        item for item in ITEMS if rows(store, item, {**default_variables(), "workflow": [SOURCE]})
    ]
    assert len(with_rows) >= len(ITEMS) - 3, len(ITEMS)


@pytest.mark.parametrize("variable", ["environment", "workflow", "model"])
def test_hostile_names_in_any_filter_change_nothing_or_are_refused(
    store: ChdbStore, variable: str
) -> None:
    items = [
        item
        for spec in dashboard_specs(CONTEXT)
        for item in (*spec.panels, *spec.annotations)
        if "${" + variable in item.sql
    ]
    assert items
    selection = {"environment": ["prod"], "workflow": [SOURCE], "model": ["gpt-4o"]}
    for item in items:
        base = {**default_variables(), **selection}
        expected = rows(store, item, base)
        for raw in HOSTILE:
            unheard_of = safe_name(raw + " (not in the store)", variable, {})
            widened = {**base, variable: [*selection[variable], unheard_of]}
            assert rows(store, item, widened) == expected, (item.sql, raw)
            assert_refused_or_harmless(store, item, base, variable, raw)


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=40))
def test_any_name_survives_the_variable_quoting_exactly(store: ChdbStore, text: str) -> None:
    name = safe_name(text, "workflow", {})
    sql = expand("SELECT arrayJoin([${workflow:singlequote}]) AS v", RANGE, {"workflow": [name]})
    assert store.query(sql).column("v").to_pylist() == [name]


def test_the_report_with_a_renamed_workflow_draws_what_it_draws_for_the_source(
    store: ChdbStore, tmp_path: Path
) -> None:
    name = SAFE[HOSTILE[0]]
    source = render_report(
        store, tmp_path / "source", RANGE, CONTEXT, {**default_variables(), "workflow": [SOURCE]}
    )
    renamed = render_report(
        store, tmp_path / "renamed", RANGE, CONTEXT, {**default_variables(), "workflow": [name]}
    )

    def counts(report: Any) -> list[tuple[str, int, int, int]]:
        return [(p.title, p.rows, p.series, p.points) for p in report.panels]

    assert counts(renamed) == counts(source)
    assert sum(p.has_data for p in source.panels) > len(source.panels) // 2
    with pytest.raises(MacroError):
        render_report(
            store,
            tmp_path / "raw",
            RANGE,
            CONTEXT,
            {**default_variables(), "workflow": [HOSTILE[0]]},
        )


def test_the_report_command_refuses_a_name_it_cannot_quote(
    store: ChdbStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"chdb://{store.path}"
    args = ["report", "--store", url, "--out", str(tmp_path / "r"), "--workflow", HOSTILE[1]]
    assert main(args) == 2
    assert "cannot carry" in capsys.readouterr().err
