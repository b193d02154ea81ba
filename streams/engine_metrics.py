"""OTLP metrics messages (``otlp_metrics``) to engine-metric rows, in columns.

One message (``MetricsData`` or ``ExportMetricsServiceRequest``, protobuf or OTLP/JSON)
becomes an :class:`EngineMetricRows`: one row per data point of a metric that
``driftline.schemas.engine_metrics`` knows, with the engine, model and instance it came
from. A metric it does not know is skipped by name before its points are read (a scrape of a
vLLM server carries a hundred series driftline has no use for). A point that cannot be
stored (a value out of range, a time no store can keep, a name no dashboard can carry) is
rejected with a reason and the others kept; a message that is not OTLP metrics is one
reject. Never raises.

Histograms are stored as two rows, ``<metric>:count`` and ``<metric>:sum`` (cumulative or
delta as the source sends them; rates and means come from differences in SQL); the GenAI
token-usage histogram's token type joins the name (``gen_ai.client.token.usage.input:sum``).
A vLLM server running several data-parallel engines labels each one's points ``engine``;
engines other than the first are kept as instance ``host:port/<engine>``.
TensorRT-LLM's KV gauge reports blocks used and max in one metric under a label: the
fraction is used / max of the same instance and time (or the ``fraction`` block type where
the backend reports it).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import pyarrow as pa
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric, NumberDataPoint

from driftline.schemas import engine_metrics as em
from driftline.schemas.event import EARLIEST_TIME_NS, LATEST_TIME_NS, UNSAFE_NAME_CHAR
from driftline.schemas.tables import ENGINE_METRICS

REASON_NOT_OTLP_METRICS: Final = "not_otlp_metrics"
REASON_BAD_VALUE: Final = "bad_value"
REASON_BAD_TIME: Final = "bad_time"
REASON_UNSAFE_NAME: Final = "unsafe_name"
MAX_NAME_CHARS: Final = 256
_TOKEN_TYPE: Final = re.compile(r"[a-z][a-z_]{0,31}")  # input, output, cached_input, ...
# The span window's defaults ([ingest] max_past_s / max_future_s).
DEFAULT_MAX_PAST_S: Final = 7 * 86_400.0
DEFAULT_MAX_FUTURE_S: Final = 3_600.0


@dataclass(slots=True)
class MetricReject:
    reason: str
    detail: str
    metric: str  # the source metric's name ("" for a whole message)


@dataclass(slots=True)
class EngineMetricRows:
    """Rows of ``driftline.engine_metrics``, column by column (schemas/tables.py)."""

    time_ns: list[int] = field(default_factory=list)
    engine: list[str] = field(default_factory=list)
    model: list[str] = field(default_factory=list)
    instance: list[str] = field(default_factory=list)
    metric: list[str] = field(default_factory=list)
    value: list[float] = field(default_factory=list)
    source_metric: list[str] = field(default_factory=list)
    rejects: list[MetricReject] = field(default_factory=list)
    earliest_ns: int = EARLIEST_TIME_NS  # points dated outside [earliest, latest) are rejected
    latest_ns: int = LATEST_TIME_NS
    points_read: int = 0  # data points of known metrics, stored or rejected
    metrics_ignored: int = 0  # metrics skipped by name

    def __len__(self) -> int:
        return len(self.time_ns)

    def append(self, time_ns: int, where: _Source, metric: str, value: float, source: str) -> None:
        self.time_ns.append(time_ns)
        self.engine.append(where.engine)
        self.model.append(where.model)
        self.instance.append(where.instance)
        self.metric.append(metric)
        self.value.append(value)
        self.source_metric.append(source)

    def to_arrow(self) -> pa.Table:
        """The rows as ``driftline.engine_metrics`` takes them (columns in DDL order)."""
        micros = pa.array([t // 1_000 for t in self.time_ns], pa.int64())
        columns = {
            "time": micros.cast(pa.timestamp("us", "UTC")),
            "engine": pa.array(self.engine, pa.string()),
            "model": pa.array(self.model, pa.string()),
            "instance": pa.array(self.instance, pa.string()),
            "metric": pa.array(self.metric, pa.string()),
            "value": pa.array(self.value, pa.float64()),
            "source_metric": pa.array(self.source_metric, pa.string()),
        }
        assert tuple(columns) == ENGINE_METRICS.columns
        return pa.table(columns)

    def dedup_token(self) -> str:
        """Same rows, same token: a re-sent insert of one message is dropped by the store."""
        digest = hashlib.sha256()
        for column in (self.time_ns, self.instance, self.metric, self.value):
            digest.update(repr(column).encode())
        return f"engine_metrics:{digest.hexdigest()[:32]}"


@dataclass(frozen=True, slots=True)
class _Source:
    engine: str
    model: str
    instance: str


def decode_metrics_message(
    payload: bytes,
    *,
    arrival_ns: int | None = None,
    max_past_s: float = DEFAULT_MAX_PAST_S,
    max_future_s: float = DEFAULT_MAX_FUTURE_S,
) -> EngineMetricRows:
    """Rows from one OTLP metrics message (protobuf or OTLP/JSON, sniffed). Never raises.

    ``arrival_ns``: when the message arrived (its Kafka timestamp); points dated outside
    ``[arrival - max_past_s, arrival + max_future_s]`` are rejected, so one insert never
    spans more days than the window (ClickHouse refuses inserts over 100 partitions).
    ``None`` checks the fixed 2000..2090 bounds only.

    >>> rows = decode_metrics_message(b"not otlp")
    >>> [r.reason for r in rows.rejects], len(rows)
    (['not_otlp_metrics'], 0)
    """
    rows = EngineMetricRows()
    if arrival_ns is not None:
        rows.earliest_ns = max(EARLIEST_TIME_NS, arrival_ns - int(max_past_s * 1e9))
        rows.latest_ns = min(LATEST_TIME_NS, arrival_ns + int(max_future_s * 1e9))
    request = _parse(payload)
    if request is None:
        rows.rejects.append(
            MetricReject(REASON_NOT_OTLP_METRICS, "neither OTLP metrics protobuf nor JSON", "")
        )
        return rows
    for resource_metrics in request.resource_metrics:
        resource = _attributes(resource_metrics.resource.attributes)
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                known = em.SOURCE_METRICS.get(metric.name)
                if known is None:
                    rows.metrics_ignored += 1
                    continue
                _read_metric(metric, known, resource, rows)
    return rows


def _parse(payload: bytes) -> ExportMetricsServiceRequest | None:
    stripped = payload.lstrip()
    if stripped.startswith(b"{"):
        try:
            document = json.loads(stripped)
            if not isinstance(document, dict) or "resourceMetrics" not in document:
                return None
            _drop_exemplars(document)
            return json_format.ParseDict(
                document, ExportMetricsServiceRequest(), ignore_unknown_fields=True
            )
        except (ValueError, TypeError, json_format.ParseError, RecursionError):
            return None
    request = ExportMetricsServiceRequest()
    try:
        request.ParseFromString(payload)
    except (DecodeError, RecursionError):
        return None
    # Any bytes parse as *some* protobuf; OTLP metrics have a named metric in a resource.
    if not request.resource_metrics or request.resource_metrics[0].ByteSize() == 0:
        return None
    return request


def _drop_exemplars(node: Any) -> None:
    # OTLP/JSON writes exemplar trace ids in hex, which the protobuf JSON parser reads as
    # base64; driftline does not use exemplars, so they are dropped before parsing.
    if isinstance(node, dict):
        node.pop("exemplars", None)
        for value in node.values():
            _drop_exemplars(value)
    elif isinstance(node, list):
        for value in node:
            _drop_exemplars(value)


def _attributes(pairs: Iterable[KeyValue]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        kind = pair.value.WhichOneof("value")
        if kind in ("string_value", "int_value", "double_value", "bool_value"):
            out[pair.key] = getattr(pair.value, kind)
    return out


def _source(
    known: em.EngineMetric, resource: dict[str, Any], labels: dict[str, Any]
) -> _Source | MetricReject:
    model = next(
        (
            str(where[key])
            for key in em.MODEL_LABELS
            for where in (labels, resource)
            if key in where
        ),
        "",
    )
    instance = next(
        (str(resource[key]) for key in em.INSTANCE_RESOURCE_ATTRIBUTES if key in resource), ""
    )
    for where in (resource, labels):
        if not instance and em.SERVER_ADDRESS in where:
            instance = em.instance_of(str(where[em.SERVER_ADDRESS]), where.get(em.SERVER_PORT))
    engine_index = labels.get(em.VLLM_ENGINE_LABEL)
    if engine_index not in (None, "", "0", 0):
        # "/", not "#": the instance is a name every dashboard and query carries, and the
        # name check below refuses "#" (engines other than 0 were all rejected with it).
        instance = f"{instance}/{engine_index}"
    for name, value in (("model", model), ("instance", instance)):
        if len(value) > MAX_NAME_CHARS or UNSAFE_NAME_CHAR.search(value):
            return MetricReject(
                REASON_UNSAFE_NAME, f"{name} holds characters no dashboard can carry", ""
            )
    return _Source(known.engine, model, instance)


def _read_metric(
    metric: Metric, known: em.EngineMetric, resource: dict[str, Any], rows: EngineMetricRows
) -> None:
    kind = metric.WhichOneof("data")
    if kind in ("gauge", "sum"):
        points: Iterable[Any] = getattr(metric, kind).data_points
        if known.engine == "trtllm":
            _read_trtllm(metric.name, known, points, resource, rows)
            return
        for point in points:
            _add(rows, metric.name, known, resource, point, known.metric, _number(point))
    elif kind == "histogram":
        for point in metric.histogram.data_points:
            name = _histogram_name(known.metric, point)
            _add(
                rows,
                metric.name,
                known,
                resource,
                point,
                f"{name}:count",
                float(point.count),
            )
            _add(rows, metric.name, known, resource, point, f"{name}:sum", point.sum)
    else:
        rows.rejects.append(
            MetricReject(
                REASON_BAD_VALUE, f"{kind or 'no'} data where a number was expected", metric.name
            )
        )


def _histogram_name(metric: str, point: Any) -> str:
    # gen_ai.client.token.usage records input and output tokens as two points of one metric.
    # Only a short plain word joins the name (it lands in a column dashboards filter on).
    for pair in point.attributes:
        if pair.key == em.TOKEN_TYPE_LABEL and _TOKEN_TYPE.fullmatch(pair.value.string_value):
            return f"{metric}.{pair.value.string_value}"
    return metric


def _number(point: NumberDataPoint) -> float:
    return point.as_double if point.WhichOneof("value") == "as_double" else float(point.as_int)


def _add(
    rows: EngineMetricRows,
    source: str,
    known: em.EngineMetric,
    resource: dict[str, Any],
    point: Any,
    metric: str,
    value: float,
) -> None:
    rows.points_read += 1
    where = _source(known, resource, _attributes(point.attributes))
    if isinstance(where, MetricReject):
        where.metric = source
        rows.rejects.append(where)
        return
    problem = _problem(point.time_unix_nano, known.metric, value, rows)
    if problem is not None:
        rows.rejects.append(MetricReject(problem[0], problem[1], source))
        return
    rows.append(point.time_unix_nano, where, metric, value, source)


def _problem(
    time_ns: int, metric: str, value: float, rows: EngineMetricRows
) -> tuple[str, str] | None:
    if not rows.earliest_ns <= time_ns < rows.latest_ns:
        return REASON_BAD_TIME, f"time {time_ns} ns is outside the accepted window"
    if not math.isfinite(value) or value < 0:
        return REASON_BAD_VALUE, f"{value!r} is not a finite, non-negative number"
    if metric in em.FRACTIONS and value > 1:
        return REASON_BAD_VALUE, f"{value!r} is not a fraction in 0..1"
    return None


def _read_trtllm(
    source: str,
    known: em.EngineMetric,
    points: Iterable[NumberDataPoint],
    resource: dict[str, Any],
    rows: EngineMetricRows,
) -> None:
    """Triton's TensorRT-LLM gauges: the meaning is in a label (schemas/engine_metrics.py)."""
    blocks: dict[tuple[int, tuple[tuple[str, str], ...]], dict[str, NumberDataPoint]] = {}
    for point in points:
        labels = _attributes(point.attributes)
        if known.metric == em.REQUESTS_WAITING:
            if labels.get(em.TRTLLM_REQUEST_LABEL) == em.TRTLLM_REQUEST_WAITING:
                _add(rows, source, known, resource, point, known.metric, _number(point))
            continue
        block_type = str(labels.pop(em.TRTLLM_BLOCK_LABEL, ""))
        key = (point.time_unix_nano, tuple(sorted((k, str(v)) for k, v in labels.items())))
        if block_type in ("fraction", "used", "max"):
            blocks.setdefault(key, {})[block_type] = point
    for pair in blocks.values():
        if "fraction" in pair:  # the backend's own fraction, where it reports one
            _add(
                rows,
                source,
                known,
                resource,
                pair["fraction"],
                known.metric,
                _number(pair["fraction"]),
            )
            continue
        used, most = pair.get("used"), pair.get("max")
        if used is not None and most is not None and _number(most) > 0:
            _add(rows, source, known, resource, used, known.metric, _number(used) / _number(most))
