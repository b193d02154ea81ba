"""Every query in schemas/queries/ on a small hand-priced data set, before and after re-delivery.

Rates (USD per million tokens; tests/utils/events.py RATES): gpt-4o in 2.5 / out 10 /
cache read 1.25; gpt-4o-mini 0.15 / 0.6; claude-sonnet-4 3 / 15 / cache read 0.3 / write 3.75.

    trace workflow  tenant route     prompt model        in   out cached   USD
    T1    support   acme   /chat     p1     gpt-4o     1000   100          0.0035
    T1                                      gpt-4o     3000   200 2000 rd  0.007
    T2    support   globex /ch/escal p2     4o-mini    2000   500          0.0006
    T2                                      4o-mini    2000     0 (error)  0.0003
    T3    doc-summ  acme   /summ     p1     claude     4000   500 3000 rd  0.0114
    T3                                      claude     1000   100 1000 wr  0.00525 (invalid)
    T4    doc-summ  globex /summ     p1     house-llm   500    50          unpriced
    T5    support   acme   /chat     p1     gpt-4o     2000     0          0.005 (week before)

(support = support-chat, doc-summ = doc-summarize, /ch/escal = /chat/escalate, claude =
claude-sonnet-4 served by anthropic, house-llm by vllm with no price.)
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pytest

from driftline.config import PriceOverride, StoreSettings
from driftline.store import ChdbStore, open_store
from driftline.store.prices import write_model_prices
from driftline.store.queries import (
    load_query,
    query_defaults,
    query_names,
    query_params,
    run_query,
)
from driftline.streams.pricing import PriceBook
from driftline.streams.sink import EventSink
from tests.utils.events import RATES, make_event, reset_store, summarize_trace

DAY_US = 86_400_000_000
JAN8 = 1_767_830_400_000_000  # 2026-01-08T00:00:00Z
HOUR_US = 3_600_000_000
WINDOW = {"from": datetime(2026, 1, 8, tzinfo=UTC), "to": datetime(2026, 1, 9, tzinfo=UTC)}


def _dataset() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    t1 = [
        make_event(trace_id="t1", span_id="e1", start_ts=JAN8 + 10 * HOUR_US),
        make_event(
            trace_id="t1",
            span_id="e2",
            parent_span_id="e1",
            loop_depth=2,
            start_ts=JAN8 + 10 * HOUR_US + 1_000_000,
            input_tokens=3000,
            output_tokens=200,
            cache_read_tokens=2000,
        ),
    ]
    mini = {
        "request_model": "gpt-4o-mini",
        "response_model": "gpt-4o-mini",
        "tenant": "globex",
        "route": "/chat/escalate",
        "prompt_version": "p2",
    }
    t2 = [
        make_event(
            trace_id="t2",
            span_id="e3",
            start_ts=JAN8 + 11 * HOUR_US,
            input_tokens=2000,
            output_tokens=500,
            **mini,
        ),
        make_event(
            trace_id="t2",
            span_id="e4",
            start_ts=JAN8 + 11 * HOUR_US + 60_000_000,
            input_tokens=2000,
            output_tokens=0,
            status="error",
            error_type="RateLimitError",
            **mini,
        ),
    ]
    claude = {
        "workflow": "doc-summarize",
        "provider": "anthropic",
        "route": "/summarize",
        "request_model": "claude-sonnet-4",
        "response_model": "claude-sonnet-4",
    }
    t3 = [
        make_event(
            trace_id="t3",
            span_id="e5",
            start_ts=JAN8 + 12 * HOUR_US,
            input_tokens=4000,
            output_tokens=500,
            cache_read_tokens=3000,
            **claude,
        ),
        make_event(
            trace_id="t3",
            span_id="e6",
            start_ts=JAN8 + 12 * HOUR_US + 2_000_000,
            input_tokens=1000,
            output_tokens=100,
            cache_write_tokens=1000,
            validation_failed=True,
            **claude,
        ),
    ]
    t4 = [
        make_event(
            trace_id="t4",
            span_id="e7",
            start_ts=JAN8 + 13 * HOUR_US,
            workflow="doc-summarize",
            tenant="globex",
            route="/summarize",
            provider="vllm",
            request_model="house-llm",
            response_model="house-llm",
            input_tokens=500,
            output_tokens=50,
        )
    ]
    t5 = [
        make_event(
            trace_id="t5",
            span_id="e8",
            start_ts=JAN8 - 9 * DAY_US + 9 * HOUR_US,
            input_tokens=2000,
            output_tokens=0,
        )
    ]
    traces = [t1, t2, t3, t4, t5]
    return [e for t in traces for e in t], [summarize_trace(t) for t in traces]


def _load(store: ChdbStore, offset: int) -> None:
    events, traces = _dataset()
    sink = EventSink(store)
    for i, event in enumerate(events):
        sink.add("events", event, ("llm_events", 0, offset + i))
    for i, trace in enumerate(traces):
        sink.add("traces", trace, ("llm_events", 0, offset + 100 + i))
    sink.flush()


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChdbStore]:
    store = open_store(f"chdb://{tmp_path_factory.mktemp('chdb')}", StoreSettings(ttl_days=3650))
    assert isinstance(store, ChdbStore)
    reset_store(store)
    _load(store, 0)
    overrides = {
        name: PriceOverride(
            input_per_mtok=r.input,
            output_per_mtok=r.output,
            cache_read_per_mtok=r.cache_read,
            cache_write_per_mtok=r.cache_write,
        )
        for name, r in RATES.items()
    }
    write_model_prices(store, PriceBook(overrides))
    yield store
    store.close()


def _rows(store: ChdbStore, name: str, **extra: Any) -> pa.Table:
    params = {**WINDOW, **extra}
    return run_query(
        store, name, **{k: params[k] for k in query_params(load_query(name)) if k in params}
    )


def _by(rows: Any, key: str, value: str = "spend_usd") -> dict[Any, Any]:
    return {r[key]: None if r[value] is None else round(r[value], 9) for r in rows.to_pylist()}


def test_cost_by_dimension(loaded: ChdbStore) -> None:
    workflow = _rows(loaded, "cost_by_workflow").to_pylist()
    assert [
        (
            r["workflow"],
            r["requests"],
            round(r["spend_usd"], 9),
            r["unpriced_requests"],
            r["spend_share"],
        )
        for r in workflow
    ] == [
        ("doc-summarize", 3, 0.01665, 1, 0.593583),
        ("support-chat", 4, 0.0114, 0, 0.406417),
    ]
    assert _by(_rows(loaded, "cost_by_model"), "model") == {
        "claude-sonnet-4": 0.01665,
        "gpt-4o": 0.0105,
        "gpt-4o-mini": 0.0009,
        "house-llm": None,
    }
    assert _by(_rows(loaded, "cost_by_route"), "route") == {
        "/summarize": 0.01665,
        "/chat": 0.0105,
        "/chat/escalate": 0.0009,
    }
    assert _by(_rows(loaded, "cost_by_tenant"), "tenant") == {"acme": 0.02715, "globex": 0.0009}
    assert _by(_rows(loaded, "cost_by_prompt_version"), "prompt_version") == {
        "p1": 0.02715,
        "p2": 0.0009,
    }
    bundles = {
        (r["workflow"], r["model"]): (r["requests"], r["spend_usd"])
        for r in _rows(loaded, "cost_by_bundle").to_pylist()
    }
    assert bundles == {
        ("doc-summarize", "claude-sonnet-4"): (2, pytest.approx(0.01665)),
        ("support-chat", "gpt-4o"): (2, pytest.approx(0.0105)),
        ("support-chat", "gpt-4o-mini"): (2, pytest.approx(0.0009)),
        ("doc-summarize", "house-llm"): (1, None),
    }


def test_cost_per_successful_request(loaded: ChdbStore) -> None:
    rows = {r["workflow"]: r for r in _rows(loaded, "cost_per_success").to_pylist()}
    assert (rows["support-chat"]["requests"], rows["support-chat"]["successes"]) == (4, 3)
    assert rows["support-chat"]["failed_cost_usd"] == pytest.approx(0.0003)
    assert rows["support-chat"]["cost_per_success_usd"] == pytest.approx(0.0114 / 3)
    assert (rows["doc-summarize"]["requests"], rows["doc-summarize"]["successes"]) == (3, 2)
    assert rows["doc-summarize"]["failed_cost_usd"] == pytest.approx(0.00525)
    assert rows["doc-summarize"]["cost_per_success_usd"] == pytest.approx(0.01665 / 2)


def test_top_traces(loaded: ChdbStore) -> None:
    by_cost = _rows(loaded, "top_traces_by_cost", limit=2).to_pylist()
    assert [(r["trace_id"], round(r["cost_usd"], 9)) for r in by_cost] == [
        ("t3", 0.01665),
        ("t1", 0.0105),
    ]
    by_amp = _rows(loaded, "top_traces_by_amplification", limit=10).to_pylist()
    assert [(r["trace_id"], round(r["amplification"], 4)) for r in by_amp] == [
        ("t1", round(4300 / 1100, 4)),
        ("t2", 1.8),
        ("t3", round(5600 / 4500, 4)),
        ("t4", 1.0),
    ]


def test_cache_savings(loaded: ChdbStore) -> None:
    savings = _by(_rows(loaded, "cache_savings"), "model", "savings_usd")
    # gpt-4o: 2000 read x (2.5 - 1.25); claude: 3000 x (3 - 0.3) - 1000 written x (3.75 - 3)
    assert savings == {
        "gpt-4o": 0.0025,
        "claude-sonnet-4": 0.00735,
        "gpt-4o-mini": 0.0,
        "house-llm": None,
    }


def test_budget_burn(loaded: ChdbStore) -> None:
    rows = {
        r["workflow"]: r
        for r in _rows(loaded, "budget_burn", budgets={"support-chat": 30.0}).to_pylist()
    }
    # one day of a 30-day budget of 30 USD is 1 USD
    assert rows["support-chat"]["window_budget_usd"] == pytest.approx(1.0)
    assert rows["support-chat"]["burn_rate"] == pytest.approx(0.0114)
    assert rows["support-chat"]["month_fraction_spent"] == pytest.approx(0.0114 / 30)
    assert rows["doc-summarize"]["monthly_budget_usd"] is None
    assert rows["doc-summarize"]["burn_rate"] is None


def test_week_over_week(loaded: ChdbStore) -> None:
    rows = {
        r["workflow"]: r
        for r in _rows(loaded, "week_over_week", at=datetime(2026, 1, 9, tzinfo=UTC)).to_pylist()
    }
    chat = rows["support-chat"]
    assert (chat["this_week_requests"], chat["last_week_requests"]) == (4, 1)
    assert (chat["this_week_usd"], chat["last_week_usd"]) == (pytest.approx(0.0114), 0.005)
    assert chat["change_pct"] == 128.0
    assert rows["doc-summarize"]["last_week_usd"] == 0
    assert rows["doc-summarize"]["change_pct"] is None


def test_rollups(loaded: ChdbStore) -> None:
    minutely = _rows(loaded, "rollup_workflow_minutely").to_pylist()
    totals: dict[str, list[float]] = {}
    for r in minutely:
        t = totals.setdefault(r["workflow"], [0, 0.0, 0])
        t[0] += r["requests"]
        t[1] += r["cost_usd"]
        t[2] += r["errors"]
    assert {k: (v[0], round(v[1], 9), v[2]) for k, v in totals.items()} == {
        "support-chat": (4, 0.0114, 1),
        "doc-summarize": (3, 0.01665, 0),
    }
    hourly = _rows(loaded, "rollup_cost_by_model_hourly").to_pylist()
    assert {(r["hour"], r["model"]) for r in hourly} == {
        (datetime(2026, 1, 8, h, tzinfo=UTC), m)
        for h, m in (
            (10, "gpt-4o"),
            (11, "gpt-4o-mini"),
            (12, "claude-sonnet-4"),
            (13, "house-llm"),
        )
    }
    assert sum(r["cache_read_tokens"] for r in hourly) == 5000
    daily = {
        r["tenant"]: round(r["cost_usd"], 9)
        for r in _rows(loaded, "rollup_tenant_daily").to_pylist()
    }
    assert daily == {"acme": 0.02715, "globex": 0.0009}  # unpriced counts as 0 in rollups
    routes = {r["route"]: r for r in _rows(loaded, "rollup_route_latency").to_pylist()}
    assert routes["/chat/escalate"]["error_rate"] == 0.5
    assert routes["/chat"]["latency_ms_p50_p95_p99"][0] == pytest.approx(800.0)


def test_every_query_is_covered_and_unchanged_by_redelivery(loaded: ChdbStore) -> None:
    tested = {
        "cost_by_workflow",
        "cost_by_model",
        "cost_by_route",
        "cost_by_tenant",
        "cost_by_prompt_version",
        "cost_by_bundle",
        "cost_per_success",
        "top_traces_by_cost",
        "top_traces_by_amplification",
        "cache_savings",
        "budget_burn",
        "week_over_week",
        "rollup_workflow_minutely",
        "rollup_cost_by_model_hourly",
        "rollup_tenant_daily",
        "rollup_route_latency",
    }
    assert set(query_names()) == tested
    extra = {"limit": 10, "budgets": {"support-chat": 30.0}, "at": WINDOW["to"]}
    before = {name: _rows(loaded, name, **extra).to_pylist() for name in tested}
    _load(loaded, offset=1000)  # the whole stream again, from other offsets
    after = {name: _rows(loaded, name, **extra).to_pylist() for name in tested}
    assert after == before


def test_rollup_queries_filter_environments(loaded: ChdbStore) -> None:
    # Every event of the data set is in "prod"; [] (the default) means every environment.
    for name in (
        "rollup_workflow_minutely",
        "rollup_cost_by_model_hourly",
        "rollup_tenant_daily",
        "rollup_route_latency",
    ):
        everything = _rows(loaded, name).to_pylist()
        assert everything
        assert _rows(loaded, name, environments=[]).to_pylist() == everything
        assert _rows(loaded, name, environments=["prod", "dev"]).to_pylist() == everything
        assert _rows(loaded, name, environments=["staging"]).num_rows == 0


def test_time_range_prunes_partitions(loaded: ChdbStore) -> None:
    # force_index_by_date fails a query that would read every day partition of a table it
    # filters: the range must reach llm_requests_raw and llm_traces_raw through the FINAL views.
    extra = {"limit": 10, "budgets": {"support-chat": 30.0}, "at": WINDOW["to"]}
    for name in query_names():
        sql = load_query(name)
        params = {**WINDOW, **extra, **query_defaults(sql)}
        loaded.query(
            f"SELECT * FROM ({sql}) SETTINGS force_index_by_date = 1",
            {k: params[k] for k in query_params(sql)},
        )
