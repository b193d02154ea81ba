"""The SRE dashboard's pipeline row: every PromQL expression names metrics that docs/metrics.md
documents and the worker's exporter serves, with labels they have.

No Prometheus runs here, so the expressions are read, not run: a small PromQL reader finds
each metric, its label matchers, the labels of ``by``/``without``/``on``/``ignoring`` clauses,
the functions called and the ``{{label}}`` of each legend. The known labels of a metric are the
documentation's and must equal the exporter's (``streams/telemetry.py``); Prometheus adds
``job`` and ``instance`` to every scraped series. A histogram is queried through its
``_bucket`` (with ``le``), ``_sum`` and ``_count`` series, never by its own name.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest
from grafana_foundation_sdk.models.dashboard import Dashboard, Panel
from grafana_foundation_sdk.models.prometheus import Dataquery

from driftline.dashboards import pipeline, sre_overview
from driftline.dashboards.panels import PromPanelSpec, PromQuery, RowSpec
from driftline.dashboards.query import PROMETHEUS_DATASOURCE_TYPE, PROMETHEUS_DATASOURCE_UID
from driftline.streams.notifier.metrics import DeliveryMetrics
from driftline.streams.telemetry import COUNTERS, Probe, TelemetryServer, render, worker_families

ROOT = Path(__file__).resolve().parents[2]
TARGET_LABELS = frozenset({"job", "instance"})  # added by Prometheus to every scraped series
HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")
AGGREGATIONS = frozenset(
    {"sum", "min", "max", "avg", "count", "stddev", "stdvar", "group", "topk", "bottomk"}
    | {"quantile", "count_values"}
)
FUNCTIONS = AGGREGATIONS | {
    *("rate", "irate", "increase", "delta", "idelta", "deriv", "resets", "changes", "abs"),
    *("ceil", "floor", "round", "clamp", "clamp_min", "clamp_max", "histogram_quantile"),
    *("label_replace", "label_join", "vector", "scalar", "time", "absent", "timestamp"),
    *("avg_over_time", "min_over_time", "max_over_time", "sum_over_time", "count_over_time"),
    *("last_over_time", "absent_over_time", "predict_linear", "sort", "sort_desc"),
}
GROUPING = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset"})

_TOKEN = re.compile(
    r"""(?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
      |(?P<range>\[[^\]]*\])
      |(?P<number>[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)
      |(?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
      |(?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=,(){}])
      |(?P<space>\s+)""",
    re.VERBOSE,
)


@dataclass
class Expression:
    """What one PromQL expression refers to."""

    metrics: dict[str, set[str]] = field(default_factory=dict)  # name -> matcher labels
    grouping: set[str] = field(default_factory=set)
    functions: set[str] = field(default_factory=set)

    @property
    def aggregated(self) -> bool:
        return bool(self.functions & AGGREGATIONS)


def tokens(expr: str) -> list[tuple[str, str]]:
    out, position = [], 0
    while position < len(expr):
        match = _TOKEN.match(expr, position)
        assert match, f"cannot read PromQL at {expr[position:]!r}"
        position = match.end()
        kind = match.lastgroup
        assert kind is not None
        if kind != "space":
            out.append((kind, match[kind]))
    return out


def read(expr: str) -> Expression:
    found = Expression()
    items = tokens(expr)
    i = 0

    def label_list(start: int) -> tuple[list[str], int]:
        assert items[start] == ("op", "("), f"{expr}: a label list must follow"
        names, j = [], start + 1
        while items[j] != ("op", ")"):
            if items[j][0] == "ident":
                names.append(items[j][1])
            j += 1
        return names, j + 1

    while i < len(items):
        kind, text = items[i]
        following = items[i + 1] if i + 1 < len(items) else ("", "")
        if kind != "ident" or text in KEYWORDS:
            i += 1
        elif text in GROUPING:
            if following == ("op", "("):
                names, i = label_list(i + 1)
                found.grouping.update(names)
            else:  # group_left without labels
                i += 1
        elif following == ("op", "(") or (
            text in AGGREGATIONS and following in (("ident", "by"), ("ident", "without"))
        ):
            found.functions.add(text)
            i += 1
        else:
            labels = found.metrics.setdefault(text, set())
            i += 1
            if following == ("op", "{"):
                i += 1
                while items[i] != ("op", "}"):
                    if items[i][0] == "ident":
                        labels.add(items[i][1])
                    i += 1
                i += 1
    return found


def problems(query: PromQuery, known: dict[str, frozenset[str]], where: str = "panel") -> list[str]:
    """What is wrong with ``query`` given metrics and their labels (empty: nothing)."""
    found = read(query.expr)
    out = [f"{where}: unknown function {f}()" for f in sorted(found.functions - FUNCTIONS)]
    if not found.metrics:
        out.append(f"{where}: {query.expr!r} reads no metric")
    for metric, matchers in sorted(found.metrics.items()):
        if metric not in known:
            out.append(f"{where}: unknown metric {metric}")
            continue
        for label in sorted(matchers - known[metric] - TARGET_LABELS):
            out.append(f"{where}: {metric} has no label {label}")
    labels_everywhere = TARGET_LABELS
    if found.metrics:
        shared = frozenset.intersection(*(known.get(m, frozenset()) for m in found.metrics))
        labels_everywhere = shared | TARGET_LABELS
    for label in sorted(found.grouping - labels_everywhere):
        out.append(f"{where}: grouping by {label}, not a label of {sorted(found.metrics)}")
    kept = found.grouping if found.aggregated else labels_everywhere
    for label in re.findall(r"\{\{\s*(\w+)\s*\}\}", query.legend):
        if label not in kept:
            out.append(f"{where}: legend {{{{{label}}}}} is not a label of the result")
    return out


# --- what is documented and what is exported -----------------------------------------------


def histogram_series(name: str, labels: frozenset[str]) -> dict[str, frozenset[str]]:
    """The series a histogram is queried by: ``_bucket`` (with ``le``), ``_sum``, ``_count``."""
    out = {f"{name}{suffix}": labels for suffix in HISTOGRAM_SERIES}
    out[f"{name}_bucket"] = labels | {"le"}
    return out


def documented() -> dict[str, frozenset[str]]:
    """Metric (a histogram's series) -> labels, from the tables of docs/metrics.md."""
    doc = (ROOT / "docs" / "metrics.md").read_text()
    table = r"^\| `(driftline_[a-z_]+)` \|([^|]*)\|"
    rows = re.findall(table, doc, flags=re.MULTILINE)
    assert len(rows) > 30, "docs/metrics.md: the metric tables were not found"
    section = doc.split("### Histograms", 1)[1].split("\n### ", 1)[0]
    histograms = {name for name, _ in re.findall(table, section, flags=re.MULTILINE)}
    assert histograms, "docs/metrics.md: the histogram table was not found"
    out: dict[str, frozenset[str]] = {}
    for name, text in rows:
        labels = frozenset(re.findall(r"`(\w+)`", text))
        out.update(histogram_series(name, labels) if name in histograms else {name: labels})
    return out


@dataclass(frozen=True)
class TP:
    topic: str
    partition: int


def exported() -> dict[str, frozenset[str]]:
    """Metric -> labels, from what a scrape of a worker renders, and the counters' specs (a
    labelled counter with no count yet has no sample to read its label from)."""
    tp = TP("otlp_spans", 0)
    consumer = SimpleNamespace(
        assignment=lambda: {tp},
        highwater=lambda _tp: 10,
        _committed_offset={tp: 4},
        _read_offset={},
    )
    sink = SimpleNamespace(store="store", failures=0, pending_rows=3, last_success_s=1.0)
    paged = DeliveryMetrics()  # a page sent, so that its histograms have series to read
    paged.count([{"target": "pagerduty[0]@events.pagerduty.com", "outcome": "delivered"}])
    paged.observe_send("pagerduty[0]", "delivered", 0.2)
    paged.observe_accepted("pagerduty[0]", 1_000_000, 30.0)
    notifier = SimpleNamespace(
        router=SimpleNamespace(routes=[SimpleNamespace(name="pagerduty[0]")]), metrics=paged
    )
    worker = SimpleNamespace(
        app=SimpleNamespace(
            consumer=consumer,
            rebalancing=False,
            rebalancing_count=0,
            assignor=SimpleNamespace(assigned_actives=lambda: {tp}),
        ),
        counters=Counter({"worker.ready": 1}),
        assemblers={0: SimpleNamespace(open_count=0, closed_counts=Counter())},
        closed_elsewhere=Counter(),
        governance=SimpleNamespace(
            monitor=SimpleNamespace(tracked_workflows=1), sinks={"e": sink}, notifier=notifier
        ),
        started_s=0.0,
    )
    server = TelemetryServer(
        "127.0.0.1", 0, lambda: worker_families(worker), lambda: Probe(True, "ready")
    )
    labels: dict[str, set[str]] = {}
    for line in render(server.families()).splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            if kind != "histogram":  # its samples name its series
                labels.setdefault(name, set())
        elif not line.startswith("#"):
            name, _, rest = line.partition("{")
            labels.setdefault(name.split(" ")[0], set()).update(re.findall(r'(\w+)="', rest))
    for spec in COUNTERS:
        labels[spec.name].update(spec.labels)
    return {name: frozenset(found) for name, found in labels.items()}


@pytest.fixture(scope="module")
def known() -> dict[str, frozenset[str]]:
    docs, served = documented(), exported()
    assert served.keys() <= docs.keys(), "docs/metrics.md lacks metrics the worker serves"
    used = {m for panel in pipeline.PANELS for q in panel.queries for m in read(q.expr).metrics}
    for metric in sorted(used & docs.keys() & served.keys()):
        assert docs[metric] == served[metric], f"{metric}: documented labels are not served"
    return {name: docs[name] for name in docs.keys() & served.keys()}


# --- the row -----------------------------------------------------------------------------


def test_every_expression_names_documented_metrics_and_labels(
    known: dict[str, frozenset[str]],
) -> None:
    found = [
        problem
        for panel in pipeline.PANELS
        for query in panel.queries
        for problem in problems(query, known, panel.title)
    ]
    assert found == []
    used = {m for panel in pipeline.PANELS for q in panel.queries for m in read(q.expr).metrics}
    # What the issue asks of the row: lag, spans in and rejected, dead letters, the store,
    # pages by outcome, open pipeline alerts, the event loop.
    assert {
        "driftline_kafka_consumer_lag_records",
        "driftline_spans_received_total",
        "driftline_spans_rejected_total",
        "driftline_store_rejected_records_total",
        "driftline_store_pending_rows",
        "driftline_store_consecutive_failures",
        "driftline_page_deliveries_total",
        "driftline_page_delivery_seconds_bucket",
        "driftline_event_to_page_seconds_bucket",
        "driftline_alert_transitions_total",
        "driftline_pipeline_alert_open",
        "driftline_worker_event_loop_lag_seconds",
    } <= used


def test_counters_are_read_through_rate_or_increase_and_gauges_never_are(
    known: dict[str, frozenset[str]],
) -> None:
    for panel in pipeline.PANELS:
        for query in panel.queries:
            found = read(query.expr)
            counters = {m for m in found.metrics if m.endswith(("_total", *HISTOGRAM_SERIES))}
            if counters:
                assert found.functions & {"rate", "increase", "irate"}, query.expr
            else:
                assert not found.functions & {"rate", "increase", "irate"}, query.expr


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        (PromQuery("sum(driftline_spans_recieved_total)", "x"), "unknown metric"),
        (PromQuery("sum by (reason) (driftline_store_pending_rows)", "x"), "grouping by reason"),
        (
            PromQuery('driftline_page_deliveries_total{kind="pd"}', "x"),
            "has no label kind",
        ),
        (
            PromQuery("sum(rate(driftline_page_delivery_seconds[5m]))", "x"),
            "unknown metric",
        ),
        (
            PromQuery("sum by (le) (rate(driftline_page_delivery_seconds_sum[5m]))", "x"),
            "grouping by le",
        ),
        (PromQuery("sum(driftline_kafka_consumer_lag_records)", "{{topic}}"), "legend"),
        (PromQuery("summ(driftline_worker_ready)", "x"), "unknown function summ()"),
        (PromQuery("vector(1)", "x"), "reads no metric"),
    ],
)
def test_the_check_fails_on_an_unknown_metric_label_or_function(
    known: dict[str, frozenset[str]], query: PromQuery, problem: str
) -> None:
    (found,) = problems(query, known)
    assert problem in found


def test_the_reader_finds_metrics_matchers_and_grouping() -> None:
    found = read(
        'sum by (topic, instance) (rate(a_total{reason=~"x|y", kind!="z"}[$__rate_interval]))'
        " / on (topic) group_left b"
    )
    assert found.metrics == {"a_total": {"reason", "kind"}, "b": set()}
    assert found.grouping == {"topic", "instance"}
    assert found.functions == {"sum", "rate"}


def test_the_row_is_drawn_below_the_sql_panels_from_prometheus() -> None:
    spec = sre_overview.spec()
    assert spec.rows == (pipeline.ROW,)
    board = spec.to_json()
    panels = board["panels"]
    (row_at,) = [i for i, p in enumerate(panels) if p["type"] == "row"]
    row = panels[row_at]
    assert row["title"] == pipeline.TITLE and not row["collapsed"]
    above = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels[:row_at])
    assert row["gridPos"] == {"h": 1, "w": 24, "x": 0, "y": above}
    drawn = panels[row_at + 1 :]
    assert [p["title"] for p in drawn] == [p.title for p in pipeline.PANELS]
    reference = {"type": PROMETHEUS_DATASOURCE_TYPE, "uid": PROMETHEUS_DATASOURCE_UID}
    for panel, spec_panel in zip(drawn, pipeline.PANELS, strict=True):
        assert panel["gridPos"]["y"] > above
        assert panel["datasource"] == reference
        assert [t["expr"] for t in panel["targets"]] == [q.expr for q in spec_panel.queries]
        assert [t["legendFormat"] for t in panel["targets"]] == [
            q.legend for q in spec_panel.queries
        ]
        assert [t["refId"] for t in panel["targets"]] == list("ABCD"[: len(spec_panel.queries)])
        assert all(t["datasource"] == reference for t in panel["targets"])
        assert all(t["instant"] == (spec_panel.kind == "stat") for t in panel["targets"])
    ids = [p["id"] for p in panels]
    assert len(set(ids)) == len(ids)
    parsed = Dashboard.from_json(board)
    last = parsed.panels[-1] if parsed.panels else None
    assert isinstance(last, Panel) and last.targets
    assert isinstance(last.targets[0], Dataquery)


def test_prom_panel_spec_validation() -> None:
    with pytest.raises(ValueError, match="queries"):
        PromPanelSpec("x", "stat", ())
    with pytest.raises(ValueError, match="width"):
        PromPanelSpec("x", "stat", (PromQuery("up", "x"),), width=25)
    assert RowSpec("r", ()).panels == ()


def test_any_prometheus_panel_elsewhere_is_checked_too(known: dict[str, frozenset[str]]) -> None:
    # Every dashboard's rows, not only the SRE one: a row added later is held to the same rule.
    from driftline.dashboards.build import dashboard_specs

    for spec in dashboard_specs():
        for row in spec.rows:
            for panel in row.panels:
                for query in panel.queries:
                    assert problems(query, known, f"{spec.uid}/{panel.title}") == []


def test_exported_labels_are_read_from_a_real_render() -> None:
    served = exported()
    assert served["driftline_kafka_consumer_lag_records"] == {"topic", "partition"}
    assert served["driftline_spans_rejected_total"] == {"reason"}
    assert served["driftline_worker_event_loop_lag_seconds"] == frozenset()
    assert served["driftline_pipeline_alert_open"] == {"condition"}
    assert served["driftline_page_deliveries_total"] == {"outcome", "route"}
    assert served["driftline_alert_transitions_total"] == {"transition", "kind"}
    assert served["driftline_page_delivery_seconds_bucket"] == {"route", "outcome", "le"}
    assert served["driftline_page_delivery_seconds_count"] == {"route", "outcome"}
    assert served["driftline_event_to_page_seconds_sum"] == {"route"}
    assert "driftline_page_delivery_seconds" not in served


def test_histograms_are_documented_by_their_series() -> None:
    docs = documented()
    assert docs["driftline_page_delivery_seconds_bucket"] == {"route", "outcome", "le"}
    assert docs["driftline_event_to_page_seconds_count"] == {"route"}
    assert docs["driftline_store_write_seconds_bucket"] == {"outcome", "le"}
    assert "driftline_page_delivery_seconds" not in docs
