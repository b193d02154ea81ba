"""Where simulated spans go: the collector (OTLP gRPC or HTTP), an OTLP file, or both.

The network exporters are the OpenTelemetry SDK's own. :class:`OtlpFileExporter`
writes what they would send, encoded by the same OTLP encoder. Each export is one
serialized ``ExportTraceServiceRequest``; appended one after another they parse as
a single ``TracesData`` (same field number, repeated fields concatenate), so the
file is ready for ``driftline normalize``.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.metrics.export import MetricExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

Protocol = Literal["grpc", "http"]


def collector_endpoint(protocol: Protocol, host: str, grpc_port: int, http_port: int) -> str:
    """The default endpoint for ``protocol`` from the collector settings."""
    if protocol == "grpc":
        return f"http://{host}:{grpc_port}"
    return f"http://{host}:{http_port}/v1/traces"


def network_exporter(protocol: Protocol, endpoint: str, timeout_s: float = 10.0) -> SpanExporter:
    """The SDK's OTLP exporter; ``endpoint`` is ``host:port`` or a URL."""
    if "://" not in endpoint:
        endpoint = f"http://{endpoint}"
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcExporter,
        )

        return GrpcExporter(
            endpoint=endpoint, insecure=endpoint.startswith("http://"), timeout=timeout_s
        )
    if protocol == "http":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter as HttpExporter,
        )

        if endpoint.rstrip("/").count("/") <= 2:  # no path given: the standard one
            endpoint = endpoint.rstrip("/") + "/v1/traces"
        return HttpExporter(endpoint=endpoint, timeout=timeout_s)
    raise ValueError(f"unknown OTLP protocol {protocol!r}; use grpc or http")


def network_metric_exporter(
    protocol: Protocol, endpoint: str, timeout_s: float = 10.0
) -> MetricExporter:
    """The SDK's OTLP metrics exporter to the collector at ``endpoint`` (``host:port`` or a
    URL; HTTP without a path posts to ``/v1/metrics``)."""
    if "://" not in endpoint:
        endpoint = f"http://{endpoint}"
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
            OTLPMetricExporter as GrpcMetricExporter,
        )

        return GrpcMetricExporter(
            endpoint=endpoint, insecure=endpoint.startswith("http://"), timeout=timeout_s
        )
    if protocol == "http":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
            OTLPMetricExporter as HttpMetricExporter,
        )

        url = endpoint.rstrip("/")
        if url.count("/") <= 2:
            url += "/v1/metrics"
        elif url.endswith("/v1/traces"):
            url = url[: -len("/v1/traces")] + "/v1/metrics"
        return HttpMetricExporter(endpoint=url, timeout=timeout_s)
    raise ValueError(f"unknown OTLP protocol {protocol!r}; use grpc or http")


class OtlpFileExporter(SpanExporter):
    """Appends each batch to a file as OTLP protobuf (see the module docstring)."""

    def __init__(self, path: str | Path) -> None:
        self._file = Path(path).open("wb")  # noqa: SIM115 - closed in shutdown
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        data = encode_spans(spans).SerializeToString()
        with self._lock:
            if self._file.closed:
                return SpanExportResult.FAILURE
            self._file.write(data)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            self._file.close()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        with self._lock:
            if not self._file.closed:
                self._file.flush()
        return True


class FanoutExporter(SpanExporter):
    """Sends each batch to every exporter and counts what each accepted."""

    def __init__(self, exporters: Sequence[SpanExporter]) -> None:
        self.exporters = list(exporters)
        self.exported = [0] * len(self.exporters)
        self.failed = [0] * len(self.exporters)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = SpanExportResult.SUCCESS
        for i, exporter in enumerate(self.exporters):
            if exporter.export(spans) is SpanExportResult.SUCCESS:
                self.exported[i] += len(spans)
            else:
                self.failed[i] += len(spans)
                result = SpanExportResult.FAILURE
        return result

    def shutdown(self) -> None:
        for exporter in self.exporters:
            exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return all(exporter.force_flush(timeout_millis) for exporter in self.exporters)
