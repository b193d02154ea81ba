"""The worker's own metrics, read for the demo's live view.

The view's pipeline line shows what the worker says about itself on ``/metrics``
(docs/metrics.md): spans received and rejected, LLM calls decoded, consumer lag, open traces
and the store backlog, the same numbers Prometheus, the SRE dashboard's pipeline row and
``driftline status`` read. Rates come from two readings. A worker that does not answer yet
(its server starts at the first partition assignment) or at all is shown as such; reading
never stops the demo.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Final

import httpx

TIMEOUT_S: Final = 0.5  # the view redraws every second; a slow answer shows as no answer
SPANS_RECEIVED: Final = "driftline_spans_received_total"
SPANS_REJECTED: Final = "driftline_spans_rejected_total"
EVENTS_DECODED: Final = "driftline_events_decoded_total"
CONSUMER_LAG: Final = "driftline_kafka_consumer_lag_records"
OPEN_TRACES: Final = "driftline_open_traces"
STORE_PENDING: Final = "driftline_store_pending_rows"
WORKER_READY: Final = "driftline_worker_ready"
PIPELINE_ALERTS: Final = "driftline_pipeline_alert_open"

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{.*\})? (\S+)$")


def totals(text: str) -> dict[str, float]:
    """Each metric of a Prometheus text exposition, summed over its label sets.

    >>> totals('# TYPE a gauge\\na{t="x"} 2\\na{t="y"} 3\\nb 1.5\\nc NaN\\n')
    {'a': 5.0, 'b': 1.5}
    """
    out: dict[str, float] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None or line.startswith("#"):
            continue
        try:
            value = float(match[2])
        except ValueError:
            continue
        if value == value:  # NaN says nothing to add up
            out[match[1]] = out.get(match[1], 0.0) + value
    return out


@dataclass(frozen=True, slots=True)
class WorkerReading:
    """One scrape of the worker, at monotonic time ``at_s``."""

    at_s: float
    spans_received: float
    spans_rejected: float
    calls_decoded: float
    lag_records: float
    open_traces: float
    store_pending_rows: float
    ready: bool
    pipeline_alerts_open: float

    @classmethod
    def from_text(cls, text: str, at_s: float) -> WorkerReading:
        values = totals(text)
        return cls(
            at_s=at_s,
            spans_received=values.get(SPANS_RECEIVED, 0.0),
            spans_rejected=values.get(SPANS_REJECTED, 0.0),
            calls_decoded=values.get(EVENTS_DECODED, 0.0),
            lag_records=values.get(CONSUMER_LAG, 0.0),
            open_traces=values.get(OPEN_TRACES, 0.0),
            store_pending_rows=values.get(STORE_PENDING, 0.0),
            ready=values.get(WORKER_READY, 0.0) >= 1,
            pipeline_alerts_open=values.get(PIPELINE_ALERTS, 0.0),
        )


@dataclass(frozen=True, slots=True)
class PipelineLine:
    """What the view shows of the worker: its last reading and the rates since an earlier one,
    or why there is none."""

    reading: WorkerReading | None
    spans_per_s: float = 0.0
    calls_per_s: float = 0.0
    problem: str = ""

    def text(self) -> str:
        """One line for the view.

        >>> r = WorkerReading(0.0, 900, 2, 300, 40, 12, 0, True, 0)
        >>> print(PipelineLine(r, 120.0, 40.0).text())
        worker (/metrics)  spans in 120/s  calls 40/s  rejected 2  lag 40 records  open traces 12  store backlog 0 rows
        >>> print(PipelineLine(None, problem="not answering yet").text())
        worker (/metrics)  not answering yet
        """  # noqa: E501
        head = "worker (/metrics)"
        r = self.reading
        if r is None:
            return f"{head}  {self.problem}"
        text = (
            f"{head}  spans in {self.spans_per_s:,.0f}/s  calls {self.calls_per_s:,.0f}/s  "
            f"rejected {r.spans_rejected:,.0f}  lag {r.lag_records:,.0f} records  "
            f"open traces {r.open_traces:,.0f}  store backlog {r.store_pending_rows:,.0f} rows"
        )
        if not r.ready:
            text += "  NOT READY"
        if r.pipeline_alerts_open:
            text += f"  ALERTS ABOUT ITSELF {r.pipeline_alerts_open:.0f}"
        return text


class WorkerMetrics:
    """Reads the worker's ``/metrics`` once per call; keeps the readings of the last
    ``window_s`` for rates. ``url`` None: the worker serves no metrics (``metrics_port = 0``).
    """

    def __init__(self, url: str | None, *, window_s: float = 3.0) -> None:
        self.url = url
        self.window_s = window_s
        self._client = httpx.Client(timeout=TIMEOUT_S) if url else None
        self._readings: list[WorkerReading] = []

    def read(self, now_s: float | None = None) -> PipelineLine:
        if self._client is None or self.url is None:
            return PipelineLine(None, problem="metrics off (worker.metrics_port = 0)")
        at = time.monotonic() if now_s is None else now_s
        try:
            answer = self._client.get(f"{self.url}/metrics")
        except httpx.HTTPError as exc:
            return PipelineLine(None, problem=f"not answering ({type(exc).__name__})")
        if answer.status_code != 200:
            return PipelineLine(None, problem=f"/metrics answered HTTP {answer.status_code}")
        reading = WorkerReading.from_text(answer.text, at)
        self._readings = [r for r in self._readings if at - r.at_s <= self.window_s]
        self._readings.append(reading)
        first = self._readings[0]
        elapsed = reading.at_s - first.at_s
        if elapsed <= 0:
            return PipelineLine(reading)
        return PipelineLine(
            reading,
            spans_per_s=max(0.0, reading.spans_received - first.spans_received) / elapsed,
            calls_per_s=max(0.0, reading.calls_decoded - first.calls_decoded) / elapsed,
        )

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
