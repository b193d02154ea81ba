"""The embedded stack: broker -> topics -> collector (and engine scraper) -> stream worker.

``EmbeddedStack`` is a context manager: on enter every part is started and waited
for until healthy (broker answers metadata, collector ports accept, the worker
wrote its ready file after its first partition assignment); on exit they stop in
reverse data-flow order (collector first, so nothing new arrives, then the worker,
then the broker), each with its whole process group. Children also die with the
parent process (``PR_SET_PDEATHSIG``), so even a killed ``driftline up`` leaves
no orphans.

With ``kafka.bootstrap_servers`` set, no broker is started and that Kafka is used.
With ``engines.scrape_targets`` set, a scraper thread in this process publishes the engines'
Prometheus metrics to ``otlp_metrics`` (collectors/scrape.py), since rotel cannot scrape.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from driftline.collectors.process import ManagedProcess, ProcessStartError
from driftline.collectors.rotel import RotelCollector
from driftline.collectors.scrape import EngineScraper, KafkaPublisher
from driftline.collectors.tansu import TansuBroker
from driftline.config import Settings
from driftline.streams.kafka import create_topics, producer_config
from driftline.streams.topics import ALL_TOPICS, OTLP_METRICS, OTLP_SPANS


@dataclass(frozen=True)
class Endpoints:
    bootstrap_servers: str
    otlp_grpc: str  # e.g. http://127.0.0.1:4317
    otlp_http: str  # e.g. http://127.0.0.1:4318 (traces at /v1/traces)
    # The worker's telemetry, e.g. http://127.0.0.1:9464 (None: no worker, or turned off)
    worker_metrics: str | None = None

    def describe(self) -> str:
        lines = [
            f"  OTLP gRPC : {self.otlp_grpc}",
            f"  OTLP HTTP : {self.otlp_http}  (traces: {self.otlp_http}/v1/traces)",
            f"  Kafka     : {self.bootstrap_servers}",
        ]
        if self.worker_metrics:
            lines.append(
                f"  Metrics   : {self.worker_metrics}/metrics  (worker; /healthz, /readyz)"
            )
        return "\n".join(lines)


def worker_metrics_url(settings: Settings) -> str | None:
    """Where the worker serves ``/metrics``, ``/healthz`` and ``/readyz`` (None when off).

    >>> from driftline.config import Settings
    >>> worker_metrics_url(Settings(worker={"metrics_host": "0.0.0.0", "metrics_port": 9464}))
    'http://127.0.0.1:9464'
    """
    worker = settings.worker
    if not worker.metrics_port:
        return None
    host = "127.0.0.1" if worker.metrics_host in ("0.0.0.0", "::", "") else worker.metrics_host
    return f"http://{host}:{worker.metrics_port}"


@dataclass
class StartTimes:
    """Seconds each part took to become healthy."""

    broker_s: float = 0.0
    topics_s: float = 0.0
    collector_s: float = 0.0
    worker_s: float = 0.0
    total_s: float = 0.0


def worker_argv(config_file: Path | None, bootstrap_servers: str, ready_file: Path) -> list[str]:
    """Command line of the ``driftline worker`` child, run with this interpreter."""
    argv = [sys.executable, "-m", "driftline.cli"]
    if config_file is not None:
        argv += ["--config", str(config_file)]
    return [
        *argv,
        "worker",
        "--bootstrap-servers",
        bootstrap_servers,
        "--ready-file",
        str(ready_file),
    ]


class EmbeddedStack:
    """Broker (unless external Kafka), topics, collector and worker, as one unit.

    ``config_file`` is what the worker child reads, so it must hold the same
    settings as ``settings`` (both normally come from the same ``driftline.toml``).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        config_file: Path | None = None,
        with_worker: bool = True,
        echo: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.config_file = config_file
        self.with_worker = with_worker
        self.data_dir = settings.embedded.data_dir.resolve()
        self.echo = echo or (lambda line: None)
        self.broker: TansuBroker | None = None
        self.collector: RotelCollector | None = None
        self.worker: ManagedProcess | None = None
        self.scraper: EngineScraper | None = None
        self._scrape_publisher: KafkaPublisher | None = None
        self.endpoints: Endpoints | None = None
        self.times = StartTimes()
        self._bootstrap: str | None = None

    @property
    def processes(self) -> list[ManagedProcess]:
        parts = [
            self.broker.process if self.broker else None,
            self.collector.process if self.collector else None,
            self.worker,
        ]
        return [p for p in parts if p is not None]

    def start(self) -> Endpoints:
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> Endpoints:
        timeout_s = self.settings.embedded.start_timeout_s
        kafka = self.settings.kafka
        self.data_dir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()

        bootstrap = kafka.bootstrap_servers
        if bootstrap is None:
            self.broker = TansuBroker(self.data_dir, self.settings.embedded.broker_port)
            self.times.broker_s = self.broker.start(timeout_s)
            bootstrap = self.broker.bootstrap_servers
            self.echo(f"broker     tansu at {bootstrap} ({self.times.broker_s:.2f}s)")
        else:
            self.echo(f"broker     using Kafka at {bootstrap}")

        t0 = time.monotonic()
        created = create_topics(kafka, ALL_TOPICS, bootstrap)
        self.times.topics_s = time.monotonic() - t0
        self.echo(f"topics     {len(created)} created, {kafka.partitions} partitions each")

        self.collector = RotelCollector(
            self.settings.collector, kafka, bootstrap, OTLP_SPANS, self.data_dir, OTLP_METRICS
        )
        self.times.collector_s = self.collector.start(timeout_s)
        self.echo(f"collector  rotel, OTLP receivers up ({self.times.collector_s:.2f}s)")

        self._bootstrap = bootstrap
        self._start_scraper(bootstrap)
        if self.with_worker:
            self.times.worker_s = self.restart_worker()
            self.echo(f"worker     ready ({self.times.worker_s:.2f}s)")

        self.times.total_s = time.monotonic() - started
        self.endpoints = Endpoints(
            bootstrap_servers=bootstrap,
            otlp_grpc=self.collector.grpc_endpoint,
            otlp_http=self.collector.http_endpoint,
            worker_metrics=worker_metrics_url(self.settings) if self.with_worker else None,
        )
        return self.endpoints

    def _start_scraper(self, bootstrap: str) -> None:
        # Engines' /metrics scraped in this process (rotel cannot), published where the
        # collector's metrics go; the worker reads them like a collector's scrape.
        engines = self.settings.engines
        if not engines.scrape_targets:
            return
        self._scrape_publisher = KafkaPublisher(
            producer_config(self.settings.kafka, bootstrap, **{"client.id": "driftline-scrape"}),
            OTLP_METRICS,
        )
        self.scraper = EngineScraper(
            engines.scrape_targets, engines.scrape_interval_s, self._scrape_publisher.publish
        )
        self.scraper.start()
        self.echo(
            f"scraper    {len(engines.scrape_targets)} engine /metrics targets every "
            f"{engines.scrape_interval_s:g}s to {OTLP_METRICS}"
        )

    def _stop_scraper(self) -> None:
        if self.scraper is not None:
            self.scraper.stop()
            self.echo(f"scraper    stopped: {self.scraper.summary()}")
            self.scraper = None
        if self._scrape_publisher is not None:
            undelivered = self._scrape_publisher.close()
            if undelivered or self._scrape_publisher.failed:
                self.echo(
                    f"scraper    {self._scrape_publisher.failed} messages refused by Kafka, "
                    f"{undelivered} undelivered at stop"
                )
            self._scrape_publisher = None

    def restart_worker(self) -> float:
        """(Re)start the worker child and wait for its ready file; returns seconds taken.

        A running worker is stopped first. The new one resumes from the committed
        offsets and rebuilds open traces from the checkpoint table.
        """
        if self._bootstrap is None:
            raise RuntimeError("start the stack before its worker")
        if self.worker is not None:
            self.worker.stop()
        ready_file = self.data_dir / f"worker-{os.getpid()}.ready"
        ready_file.unlink(missing_ok=True)
        self.worker = ManagedProcess(
            "worker",
            worker_argv(self.config_file, self._bootstrap, ready_file),
            self.data_dir / "worker.log",
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        ).start()
        return self.worker.wait_until(
            ready_file.exists, "first partition assignment", self.settings.embedded.start_timeout_s
        )

    def check_alive(self) -> None:
        """Raise :class:`ProcessStartError` if a part has exited while the stack runs."""
        for process in self.processes:
            code = process.poll()
            if code is not None:
                raise ProcessStartError(
                    f"{process.name} exited with code {code}; log {process.log_path}:\n"
                    f"{process.log_tail()}"
                )

    def stop(self) -> None:
        # Scraper and collector first: no new input; then the worker commits; the broker last.
        self._stop_scraper()
        for process in (
            self.collector.process if self.collector else None,
            self.worker,
            self.broker.process if self.broker else None,
        ):
            if process is not None:
                process.stop()

    def __enter__(self) -> EmbeddedStack:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
