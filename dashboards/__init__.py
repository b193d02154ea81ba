"""Grafana dashboards as code (grafana-foundation-sdk, ClickHouse plugin) and the static report."""
