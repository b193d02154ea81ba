"""The SRE dashboard's pipeline row: driftline's own health, from the workers' ``/metrics``.

Prometheus scrapes every worker (``deploy/prometheus/prometheus.yml``, job
``driftline-worker``) and Grafana reads it through the provisioned Prometheus data source.
Every metric and label named here is in docs/metrics.md and in the exporter
(``streams/telemetry.py``); tests/unit/test_dashboard_pipeline.py fails on any other. Rates use
``$__rate_interval``, so a panel stays right at any scrape interval. Series are summed over
workers unless the worker matters (``instance``: event-loop lag, the store backlog).
"""

from __future__ import annotations

from typing import Final

from driftline.dashboards.panels import PromPanelSpec, PromQuery, RowSpec

TITLE: Final = "Pipeline: driftline's own metrics (Prometheus)"
RATE: Final = "[$__rate_interval]"


def _rate(metric: str, by: str = "") -> str:
    grouping = f" by ({by})" if by else ""
    return f"sum{grouping} (rate({metric}{RATE}))"


def _quantile(q: float, histogram: str, by: str) -> str:
    """The ``q`` quantile of a histogram over all workers, per ``by``."""
    return f"histogram_quantile({q:g}, sum by (le, {by}) (rate({histogram}_bucket{RATE})))"


PANELS: Final = (
    PromPanelSpec(
        "Workers ready",
        "stat",
        (
            PromQuery("sum(driftline_worker_ready)", "ready"),
            PromQuery("count(driftline_worker_ready)", "scraped"),
        ),
        description="Workers whose /readyz answers 200, of the workers Prometheus scrapes.",
        width=6,
        height=4,
    ),
    PromPanelSpec(
        "Open pipeline alerts",
        "stat",
        (PromQuery("sum(driftline_pipeline_alert_open)", "open"),),
        description="Alerts driftline raised about itself (consumer_lag, store_failing, "
        "dead_letters, deliveries_failing), all workers: docs/operations.md.",
        width=6,
        height=4,
        thresholds=((1, "open"),),
    ),
    PromPanelSpec(
        "Store reachable",
        "stat",
        (PromQuery("min(driftline_store_reachable)", "all workers"),),
        description="1 when every worker's store is open and took its last write.",
        width=6,
        height=4,
    ),
    PromPanelSpec(
        "Event-loop lag (worst worker)",
        "stat",
        (PromQuery("max(driftline_worker_event_loop_lag_seconds)", "worst"),),
        unit="s",
        description="How late a worker's event loop woke from a 0.5 s sleep; over 1 s the "
        "worker cannot keep up.",
        width=6,
        height=4,
        thresholds=((1.0, "cannot keep up"),),
    ),
    PromPanelSpec(
        "Consumer lag per topic",
        "timeseries",
        (
            PromQuery(
                "sum by (topic) (driftline_kafka_consumer_lag_records)",
                "{{topic}}",
            ),
        ),
        description="Records after the workers' committed offsets, per source topic "
        "(offsets are committed every few seconds: a worker keeping up shows a small number).",
    ),
    PromPanelSpec(
        "Spans in and rejected per second",
        "timeseries",
        (
            PromQuery(_rate("driftline_spans_received_total"), "received"),
            PromQuery(_rate("driftline_spans_rejected_total", "reason"), "rejected: {{reason}}"),
        ),
        unit="cps",
        description="Spans read from otlp_spans, and those dead-lettered at decode by reason.",
    ),
    PromPanelSpec(
        "Dead letters by reason",
        "timeseries",
        (
            PromQuery(_rate("driftline_spans_rejected_total", "reason"), "decode: {{reason}}"),
            PromQuery(_rate("driftline_store_rejected_records_total", "kind"), "store: {{kind}}"),
            PromQuery(
                _rate("driftline_engine_metrics_rejected_total", "reason"),
                "engine metrics: {{reason}}",
            ),
            PromQuery(_rate("driftline_llm_events_bad_messages_total"), "bad_llm_events"),
        ),
        unit="cps",
        description="Writes to otlp_spans_dlq per second, by where and why.",
    ),
    PromPanelSpec(
        "Store: rows pending and failed writes",
        "timeseries",
        (
            PromQuery("sum by (instance) (driftline_store_pending_rows)", "pending {{instance}}"),
            PromQuery(
                "max by (instance) (driftline_store_consecutive_failures)",
                "failed in a row {{instance}}",
            ),
        ),
        description="Rows buffered for the store and not written yet (the backlog), and "
        "failed writes in a row (0 after a success), per worker.",
    ),
    PromPanelSpec(
        "Pages by outcome",
        "timeseries",
        (
            PromQuery(
                f"sum by (outcome) (increase(driftline_page_deliveries_total{RATE}))",
                "{{outcome}}",
            ),
        ),
        description="Deliveries to paging routes per interval: failed_permanent and gave_up "
        "are pages that reached no one.",
    ),
    PromPanelSpec(
        "Alerts opened by kind",
        "timeseries",
        (
            PromQuery(
                "sum by (kind) (increase(driftline_alert_transitions_total"
                f'{{transition="open"}}{RATE}))',
                "{{kind}}",
            ),
        ),
        description="Alerts opened per interval, by kind (drift, budget, routing, engine): a "
        "burst of one kind after a deploy points at what changed.",
    ),
    PromPanelSpec(
        "Page delivery time by route",
        "timeseries",
        (
            PromQuery(_quantile(0.99, "driftline_page_delivery_seconds", "route"), "p99 {{route}}"),
            PromQuery(_quantile(0.5, "driftline_page_delivery_seconds", "route"), "p50 {{route}}"),
        ),
        unit="s",
        description="Time of each HTTP attempt to deliver a page, every outcome: a route that "
        "times out shows at its 10 s timeout.",
    ),
    PromPanelSpec(
        "Event to page by route",
        "timeseries",
        (
            PromQuery(_quantile(0.99, "driftline_event_to_page_seconds", "route"), "p99 {{route}}"),
            PromQuery(_quantile(0.5, "driftline_event_to_page_seconds", "route"), "p50 {{route}}"),
        ),
        unit="s",
        description="From the event that raised an alert (its span's end) to the page accepted: "
        "collector export, trace assembly, detection, rate limit and retries.",
    ),
    PromPanelSpec(
        "Event-loop lag per worker",
        "timeseries",
        (PromQuery("max by (instance) (driftline_worker_event_loop_lag_seconds)", "{{instance}}"),),
        unit="s",
        thresholds=((1.0, "cannot keep up"),),
    ),
)

ROW: Final = RowSpec(TITLE, PANELS)
