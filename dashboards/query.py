"""The Grafana ClickHouse plugin's query target, as a grafana-foundation-sdk Dataquery variant.

The SDK ships query types for Prometheus, Loki, TestData and others, but none for the
ClickHouse plugin (``grafana-clickhouse-datasource``). This module adds one the way the SDK
defines its own: a model class deriving from ``cog.variants.Dataquery`` with ``to_json`` /
``from_json``, a builder deriving from ``cog.builder.Builder``, and a runtime registration so
that ``Dashboard.from_json`` reads ClickHouse targets back into this class.

The JSON is what the plugin stores for a raw-SQL target::

    {"refId", "datasource": {"type", "uid"}, "editorType": "sql",
     "queryType": "timeseries" | "table", "format": 0 | 1, "rawSql"}

>>> q = ClickHouseQueryBuilder("SELECT 1").ref_id("B").table().build()
>>> q.to_json()["format"], q.to_json()["queryType"], q.to_json()["datasource"]["uid"]
(1, 'table', 'driftline-clickhouse')
"""

from __future__ import annotations

import enum
from typing import Any, Final, Literal, Self

from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import runtime as cogruntime
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models import dashboard
from grafana_foundation_sdk.models import prometheus as prometheus_models

DATASOURCE_TYPE: Final = "grafana-clickhouse-datasource"
# The provisioned data source (dashboards/provisioning/datasources/clickhouse.yaml) has this uid.
DATASOURCE_UID: Final = "driftline-clickhouse"

# The workers' own metrics (docs/metrics.md), scraped by Prometheus: the SRE dashboard's
# pipeline row reads them through the provisioned data source
# (dashboards/provisioning/datasources/prometheus.yaml) with this uid.
PROMETHEUS_DATASOURCE_TYPE: Final = "prometheus"
PROMETHEUS_DATASOURCE_UID: Final = "driftline-prometheus"

QueryType = Literal["timeseries", "table"]


class Format(enum.IntEnum):
    """The plugin's result format: how the backend shapes the data frame."""

    TIMESERIES = 0
    TABLE = 1


def datasource_ref(uid: str = DATASOURCE_UID) -> dashboard.DataSourceRef:
    return dashboard.DataSourceRef(type_val=DATASOURCE_TYPE, uid=uid)


def prometheus_datasource_ref() -> dashboard.DataSourceRef:
    return dashboard.DataSourceRef(
        type_val=PROMETHEUS_DATASOURCE_TYPE, uid=PROMETHEUS_DATASOURCE_UID
    )


class ClickHouseQuery(cogvariants.Dataquery):
    """One raw-SQL target of the ClickHouse plugin."""

    ref_id: str
    raw_sql: str
    query_type: QueryType
    format: Format
    datasource: dashboard.DataSourceRef
    editor_type: str
    hide: bool | None

    def __init__(
        self,
        ref_id: str = "A",
        raw_sql: str = "",
        query_type: QueryType = "table",
        format: Format | None = None,
        datasource: dashboard.DataSourceRef | None = None,
        editor_type: str = "sql",
        hide: bool | None = None,
    ) -> None:
        self.ref_id = ref_id
        self.raw_sql = raw_sql
        self.query_type = query_type
        self.format = format if format is not None else _FORMAT_OF[query_type]
        self.datasource = datasource if datasource is not None else datasource_ref()
        self.editor_type = editor_type
        self.hide = hide

    def to_json(self) -> dict[str, object]:
        payload: dict[str, object] = {
            "refId": self.ref_id,
            "datasource": self.datasource.to_json(),
            "editorType": self.editor_type,
            "queryType": self.query_type,
            "format": int(self.format),
            "rawSql": self.raw_sql,
        }
        if self.hide is not None:
            payload["hide"] = self.hide
        return payload

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        query_type = data.get("queryType", "table")
        if query_type not in _FORMAT_OF:
            raise ValueError(f"queryType {query_type!r}: expected 'timeseries' or 'table'")
        return cls(
            ref_id=data.get("refId", "A"),
            raw_sql=data.get("rawSql", ""),
            query_type=query_type,
            format=Format(data["format"]) if "format" in data else None,
            datasource=dashboard.DataSourceRef.from_json(data.get("datasource", {})),
            editor_type=data.get("editorType", "sql"),
            hide=data.get("hide"),
        )


_FORMAT_OF: Final[dict[str, Format]] = {"timeseries": Format.TIMESERIES, "table": Format.TABLE}


def variant_config() -> cogruntime.DataqueryConfig:
    return cogruntime.DataqueryConfig(
        identifier=DATASOURCE_TYPE, from_json_hook=ClickHouseQuery.from_json
    )


# Registered at import, like the SDK's own plugins, so Dashboard.from_json knows the type; the
# SDK's Prometheus query too (the pipeline row), which it registers only with all its plugins.
cogruntime.Runtime().register_dataquery_variant(variant_config())
cogruntime.Runtime().register_dataquery_variant(prometheus_models.variant_config())


class ClickHouseQueryBuilder(cogbuilder.Builder[ClickHouseQuery]):
    """Builds a :class:`ClickHouseQuery`; table format unless :meth:`timeseries` is called."""

    _internal: ClickHouseQuery

    def __init__(self, raw_sql: str = "") -> None:
        self._internal = ClickHouseQuery(raw_sql=raw_sql)

    def build(self) -> ClickHouseQuery:
        return self._internal

    def ref_id(self, ref_id: str) -> Self:
        self._internal.ref_id = ref_id
        return self

    def raw_sql(self, raw_sql: str) -> Self:
        self._internal.raw_sql = raw_sql
        return self

    def timeseries(self) -> Self:
        self._internal.query_type = "timeseries"
        self._internal.format = Format.TIMESERIES
        return self

    def table(self) -> Self:
        self._internal.query_type = "table"
        self._internal.format = Format.TABLE
        return self

    def datasource(self, ref: dashboard.DataSourceRef) -> Self:
        self._internal.datasource = ref
        return self

    def hide(self, hide: bool) -> Self:
        self._internal.hide = hide
        return self


class _ClickHouseAnnotationTarget(dashboard.AnnotationTarget):
    """An annotation target holding a plugin query (the SDK types it as Grafana's own)."""

    def __init__(self, query: ClickHouseQuery) -> None:
        super().__init__()
        self.query = query

    def to_json(self) -> dict[str, object]:
        return self.query.to_json()


class ClickHouseAnnotationBuilder(cogbuilder.Builder[dashboard.AnnotationQuery]):
    """A dashboard annotation fed by SQL returning ``time`` [, ``timeEnd``], ``text``, ``tags``."""

    def __init__(self, name: str, raw_sql: str) -> None:
        query = ClickHouseQuery(ref_id="Anno", raw_sql=raw_sql, query_type="table")
        self._internal = dashboard.AnnotationQuery(
            name=name,
            datasource=datasource_ref(),
            enable=True,
            icon_color="red",
            target=_ClickHouseAnnotationTarget(query),
        )

    def build(self) -> dashboard.AnnotationQuery:
        return self._internal

    def icon_color(self, color: str) -> Self:
        self._internal.icon_color = color
        return self


def annotation_sql(annotation: dashboard.AnnotationQuery) -> str:
    """The raw SQL of an annotation built by :class:`ClickHouseAnnotationBuilder`."""
    target = annotation.target
    if not isinstance(target, _ClickHouseAnnotationTarget):
        raise TypeError(f"annotation {annotation.name!r} is not a ClickHouse annotation")
    return target.query.raw_sql
