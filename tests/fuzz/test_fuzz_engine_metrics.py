"""Hostile OTLP metrics messages through ``decode_metrics_message``.

Metrics of every engine driftline reads (and unknown ones), as gauges, sums and histograms,
with hostile values, times anywhere in uint64, and labels that name models, instances,
engines, token types and TensorRT-LLM block kinds in any text. Rows hold only finite,
non-negative values, fractions in 0..1, times in the window and names a dashboard can carry.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from google.protobuf.json_format import MessageToDict
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from driftline.schemas import engine_metrics as em
from driftline.schemas.event import UNSAFE_NAME_CHAR
from driftline.streams.engine_metrics import (
    DEFAULT_MAX_FUTURE_S,
    DEFAULT_MAX_PAST_S,
    MAX_NAME_CHARS,
    decode_metrics_message,
)
from tests.fuzz.profiles import fuzz_settings
from tests.fuzz.strategies import (
    ARRIVAL_NS,
    INT64_MAX,
    INT64_MIN,
    hostile_float,
    hostile_text,
    mostly,
    timestamp,
)
from tests.utils.otlp_factory import any_value

pytestmark = pytest.mark.fuzz

_LABEL_KEYS = (
    *em.MODEL_LABELS,
    *em.INSTANCE_RESOURCE_ATTRIBUTES,
    em.SERVER_ADDRESS,
    em.SERVER_PORT,
    em.VLLM_ENGINE_LABEL,
    em.TOKEN_TYPE_LABEL,
    em.TRTLLM_BLOCK_LABEL,
    em.TRTLLM_REQUEST_LABEL,
)
_LABEL_VALUES = st.one_of(
    hostile_text,
    st.sampled_from(["fraction", "used", "max", "free", "waiting", "input", "output", "0", "1"]),
    st.sampled_from(["gpt-4o", "meta-llama/Llama-3.1-8B", "10.0.0.7:8000", "vllm-0"]),
    st.integers(INT64_MIN, INT64_MAX),
    hostile_float,
    st.booleans(),
)
labels = st.dictionaries(
    st.one_of(st.sampled_from(_LABEL_KEYS), hostile_text), _LABEL_VALUES, max_size=5
)


def _key_values(attrs: dict[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=k, value=any_value(v)) for k, v in attrs.items()]


@st.composite
def number_point(draw: st.DrawFn) -> NumberDataPoint:
    point = NumberDataPoint(time_unix_nano=draw(timestamp), attributes=_key_values(draw(labels)))
    if draw(st.booleans()):
        point.as_double = draw(mostly(st.floats(0, 1), hostile_float, one_in=3))
    else:
        point.as_int = draw(st.integers(INT64_MIN, INT64_MAX))
    return point


@st.composite
def histogram_point(draw: st.DrawFn) -> HistogramDataPoint:
    return HistogramDataPoint(
        time_unix_nano=draw(timestamp),
        attributes=_key_values(draw(labels)),
        count=draw(st.integers(0, 2**64 - 1)),
        sum=draw(hostile_float),
    )


@st.composite
def metric(draw: st.DrawFn) -> Metric:
    name = draw(mostly(st.sampled_from(sorted(em.SOURCE_METRICS)), hostile_text, one_in=5))
    shape = draw(st.sampled_from(["gauge", "sum", "histogram", "none"]))
    if shape == "gauge":
        return Metric(
            name=name, gauge=Gauge(data_points=draw(st.lists(number_point(), max_size=6)))
        )
    if shape == "sum":
        return Metric(name=name, sum=Sum(data_points=draw(st.lists(number_point(), max_size=6))))
    if shape == "histogram":
        points = draw(st.lists(histogram_point(), max_size=4))
        return Metric(name=name, histogram=Histogram(data_points=points))
    return Metric(name=name)


@st.composite
def metrics_message(draw: st.DrawFn) -> ExportMetricsServiceRequest:
    resources = [
        ResourceMetrics(
            resource=Resource(attributes=_key_values(draw(labels))),
            scope_metrics=[ScopeMetrics(metrics=draw(st.lists(metric(), min_size=1, max_size=6)))],
        )
        for _ in range(draw(st.integers(1, 3)))
    ]
    return ExportMetricsServiceRequest(resource_metrics=resources)


def _encoded(message: ExportMetricsServiceRequest, as_json: bool) -> bytes:
    if not as_json:
        return message.SerializeToString()
    return json.dumps(MessageToDict(message)).encode()


@fuzz_settings(share=2.0)
@given(message=metrics_message(), as_json=st.booleans())
def test_rows_are_finite_in_range_in_window_and_safely_named(
    message: ExportMetricsServiceRequest, as_json: bool
) -> None:
    rows = decode_metrics_message(_encoded(message, as_json), arrival_ns=ARRIVAL_NS)

    earliest = ARRIVAL_NS - int(DEFAULT_MAX_PAST_S * 1e9)
    latest = ARRIVAL_NS + int(DEFAULT_MAX_FUTURE_S * 1e9)
    columns = (rows.engine, rows.model, rows.instance, rows.metric, rows.value, rows.source_metric)
    assert all(len(column) == len(rows) for column in columns)
    assert len(rows) + sum(1 for r in rows.rejects if r.metric) >= rows.points_read
    for reject in rows.rejects:
        assert reject.reason and reject.detail
    for i in range(len(rows)):
        value, name = rows.value[i], rows.metric[i]
        assert math.isfinite(value) and value >= 0, (name, value)
        if name in em.FRACTIONS:
            assert value <= 1.0, (name, value)
        assert earliest <= rows.time_ns[i] < latest
        for text in (rows.engine[i], rows.model[i], rows.instance[i], name):
            assert len(text) <= MAX_NAME_CHARS and UNSAFE_NAME_CHAR.search(text) is None, text
        assert rows.source_metric[i] in em.SOURCE_METRICS
    assert rows.to_arrow().num_rows == len(rows)


def test_a_token_type_label_cannot_put_an_unsafe_name_in_the_metric_column() -> None:
    point = HistogramDataPoint(
        time_unix_nano=ARRIVAL_NS,
        count=3,
        sum=10.0,
        attributes=_key_values({em.TOKEN_TYPE_LABEL: "x') OR 1=1 --\\"}),
    )
    message = ExportMetricsServiceRequest(
        resource_metrics=[
            ResourceMetrics(
                resource=Resource(attributes=_key_values({"service.instance.id": "h:1"})),
                scope_metrics=[
                    ScopeMetrics(
                        metrics=[
                            Metric(
                                name=em.CLIENT_TOKEN_USAGE,
                                histogram=Histogram(data_points=[point]),
                            )
                        ]
                    )
                ],
            )
        ]
    )

    rows = decode_metrics_message(message.SerializeToString(), arrival_ns=ARRIVAL_NS)

    assert all(UNSAFE_NAME_CHAR.search(name) is None for name in rows.metric), rows.metric
