"""The embedded OTLP collector: rotel-agent with gRPC and HTTP receivers and a Kafka exporter.

Spans leave as OTLP protobuf ``TracesData`` on topic ``otlp_spans``. By default each
export request becomes one Kafka message (``collector.batching = false``): rotel's
batcher was measured to drop the resource attributes of spans split across two
batches, and to drop whole requests larger than its batch size. With batching on, the
batch size and the maximum message size are set together (rotel's default batch of
8192 spans made messages larger than the broker accepts).
"""

from __future__ import annotations

import os
from pathlib import Path

from driftline.collectors.process import ManagedProcess, ensure_port_free, free_port, port_accepts
from driftline.config import CollectorSettings, KafkaSettings

ROTEL_PASSWORD_ENV = "ROTEL_KAFKA_EXPORTER_SASL_PASSWORD"
_FORMATS = {"otlp_proto": "protobuf", "otlp_json": "json"}
_SECURITY = {
    "PLAINTEXT": "plaintext",
    "SSL": "ssl",
    "SASL_PLAINTEXT": "sasl-plaintext",
    "SASL_SSL": "sasl-ssl",
}
_MECHANISMS = {"PLAIN": "plain", "SCRAM-SHA-256": "scram-sha256", "SCRAM-SHA-512": "scram-sha512"}


class CollectorNotFoundError(RuntimeError):
    """The rotel-agent binary could not be located."""


def rotel_binary() -> str:
    """Path of ``rotel-agent`` inside the installed ``rotel`` package."""
    try:
        import rotel
    except ImportError as exc:
        raise CollectorNotFoundError(
            "the embedded collector needs the rotel package: pip install rotel"
        ) from exc
    path = Path(rotel.__file__).parent / "rotel-agent"
    if not path.is_file() or not os.access(path, os.X_OK):
        raise CollectorNotFoundError(
            f"{path} is missing or not executable: reinstall the rotel package for this platform"
        )
    return str(path)


def rotel_argv(
    collector: CollectorSettings,
    kafka: KafkaSettings,
    bootstrap_servers: str,
    spans_topic: str,
    grpc_port: int,
    http_port: int,
    pid_file: Path,
    metrics_topic: str | None = None,
) -> list[str]:
    """Command line for rotel-agent exporting traces (and metrics, given a topic) to
    ``bootstrap_servers``."""
    host = collector.host
    argv = [
        rotel_binary(),
        "start",
        "--otlp-grpc-endpoint",
        f"{host}:{grpc_port}",
        "--otlp-http-endpoint",
        f"{host}:{http_port}",
        "--exporter",
        "kafka",
        "--kafka-exporter-brokers",
        bootstrap_servers,
        "--kafka-exporter-traces-topic",
        spans_topic,
        "--kafka-exporter-format",
        _FORMATS[kafka.input_format],
        "--kafka-exporter-max-message-bytes",
        str(kafka.max_message_bytes),
        "--kafka-exporter-compression",
        collector.compression,
        "--pid-file",
        str(pid_file),
    ]
    if metrics_topic is not None:
        # OTLP metrics (serving-engine KV usage, GenAI metrics) go out as they came in.
        argv += ["--kafka-exporter-metrics-topic", metrics_topic]
    if collector.batching:
        argv += [
            "--traces-batch-max-size",
            str(collector.traces_batch_max_size),
            "--traces-batch-timeout",
            f"{collector.batch_timeout_ms}ms",
        ]
    else:
        argv.append("--disable-batching")
    argv += ["--kafka-exporter-security-protocol", _SECURITY[kafka.security_protocol]]
    if kafka.sasl_mechanism is not None and kafka.security_protocol.startswith("SASL_"):
        argv += ["--kafka-exporter-sasl-mechanism", _MECHANISMS[kafka.sasl_mechanism]]
    if kafka.sasl_username is not None and kafka.security_protocol.startswith("SASL_"):
        argv += ["--kafka-exporter-sasl-username", kafka.sasl_username]
    if kafka.ssl_cafile is not None and kafka.security_protocol.endswith("SSL"):
        argv += ["--kafka-exporter-custom-config", f"ssl.ca.location={kafka.ssl_cafile}"]
    return argv


def _listen_port(host: str, port: int, setting: str) -> int:
    # 0 picks a free port; a configured one must be free now, or the error names the setting.
    if port == 0:
        return free_port(host)
    ensure_port_free(host, port, setting)
    return port


class RotelCollector:
    """rotel-agent listening for OTLP on ``collector.host`` and exporting to Kafka."""

    def __init__(
        self,
        collector: CollectorSettings,
        kafka: KafkaSettings,
        bootstrap_servers: str,
        spans_topic: str,
        data_dir: Path,
        metrics_topic: str | None = None,
    ) -> None:
        self.host = collector.host
        self.grpc_port = _listen_port(collector.host, collector.grpc_port, "collector.grpc_port")
        self.http_port = _listen_port(collector.host, collector.http_port, "collector.http_port")
        env = dict(os.environ)
        # The password travels in the environment, never on a command line others can read.
        if kafka.security_protocol.startswith("SASL_") and kafka.sasl_password is not None:
            env[ROTEL_PASSWORD_ENV] = kafka.sasl_password
        argv = rotel_argv(
            collector,
            kafka,
            bootstrap_servers,
            spans_topic,
            self.grpc_port,
            self.http_port,
            data_dir / "rotel-agent.pid",
            metrics_topic,
        )
        self.process = ManagedProcess("collector (rotel)", argv, data_dir / "rotel.log", env=env)

    @property
    def grpc_endpoint(self) -> str:
        return f"http://{self.host}:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    def start(self, timeout_s: float) -> float:
        """Start and wait until both receivers accept connections; returns seconds taken."""
        self.process.start()
        return self.process.wait_until(
            lambda: all(port_accepts(self.host, p) for p in (self.grpc_port, self.http_port)),
            f"OTLP receivers on ports {self.grpc_port} and {self.http_port}",
            timeout_s,
        )

    def stop(self) -> None:
        self.process.stop()
