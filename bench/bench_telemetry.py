"""What the worker's /metrics costs: one scrape, next to decoding spans in the same run.

Nothing is counted for the metrics on the hot path (the agents keep the counters they always
kept); the cost is the scrape itself, on the worker's event loop. This builds the state a busy
worker holds (every source topic at ``--partitions`` partitions, all assigned, with offsets;
open traces; reject reasons; alert counters by kind; ``--routes`` paging routes whose two
notifiers, the paging stage's and the pipeline alerts', have counted and timed deliveries of
every outcome), then times:

- ``render(worker_families(...))``: reading the state and writing the text, as a scrape does;
- a scrape over HTTP (aiohttp server and httpx client in one process: both sides' cost);
- the baseline: ``normalize_message`` of a realistic 1,000-span OTLP message (decode is
  most of the hot path), reported per span.

The ratio says how many spans' decode one scrape costs, and what share of a core a scrape
every ``--interval`` seconds takes.

    .venv/bin/python bench/bench_telemetry.py --partitions 64 --repeat 300
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from driftline.streams.normalize import normalize_message  # noqa: E402
from driftline.streams.notifier.metrics import DeliveryMetrics  # noqa: E402
from driftline.streams.telemetry import (  # noqa: E402
    TelemetryServer,
    render,
    worker_families,
    worker_readiness,
)
from driftline.streams.topics import SOURCE_TOPICS  # noqa: E402
from tests.utils import otlp_factory  # noqa: E402


class _TP(tuple[str, int]):
    __slots__ = ()

    @property
    def topic(self) -> str:
        return self[0]

    @property
    def partition(self) -> int:
        return self[1]


OUTCOMES = ("delivered", "retrying", "failed_permanent", "gave_up", "unrouted", "coalesced")
SENT = ("delivered", "retrying", "failed_permanent", "gave_up")  # outcomes of an HTTP attempt


def busy_notifier(routes: int) -> Any:
    """A notifier that has paged on every route, with every outcome of an attempt timed."""
    names = [f"pagerduty[{i}]" if i % 2 == 0 else f"webhook[{i}]" for i in range(routes)]
    metrics = DeliveryMetrics()
    for name in names:
        for outcome in OUTCOMES:
            metrics.count([{"target": f"{name}@events.example", "outcome": outcome}] * 3)
        for outcome in SENT:
            for seconds in (0.004, 0.08, 0.3, 2.0, 11.0):
                metrics.observe_send(name, outcome, seconds)
        for seconds in (0.4, 3.0, 45.0, 700.0):
            metrics.observe_accepted(name, 1_000_000, 1.0 + seconds)
    return SimpleNamespace(
        router=SimpleNamespace(routes=[SimpleNamespace(name=n) for n in names]), metrics=metrics
    )


def busy_worker(partitions: int, routes: int = 3) -> Any:
    """The state a worker reads at a scrape, shaped like one owning every partition."""
    tps = {_TP((topic, p)) for topic in SOURCE_TOPICS for p in range(partitions)}
    tps |= {_TP((f"g-{name}-changelog", p)) for name in ("a", "b", "c") for p in range(partitions)}
    highwater = {tp: 1_000_000 + tp.partition for tp in tps}
    consumer = SimpleNamespace(
        assignment=lambda: tps,
        highwater=highwater.get,
        _committed_offset={tp: 999_000 for tp in tps},
        _read_offset={tp: 999_500 for tp in tps},
    )
    app = SimpleNamespace(
        consumer=consumer,
        rebalancing=False,
        rebalancing_count=3,
        assignor=SimpleNamespace(assigned_actives=lambda: tps),
    )
    counters: Counter[str] = Counter(
        {
            "worker.ready": 1,
            "spans.in": 12_345_678,
            "events.decoded": 9_876_543,
            "events.out": 9_876_000,
            "traces.out": 2_000_000,
            "store.failures": 3,
            **{f"rejects.reason_{i}:gen_ai.key_{i}": i for i in range(30)},
            **{
                f"alerts.{t}.{k}": 10
                for t in ("open", "update", "resolve")
                for k in ("drift", "budget", "routing", "engine")
            },
            **{f"pages.{o}": 5 for o in ("delivered", "coalesced", "failed_permanent")},
        }
    )
    assemblers = {
        p: SimpleNamespace(open_count=500, closed_counts=Counter(root_end=10_000, timeout=50))
        for p in range(partitions)
    }
    sink = SimpleNamespace(store=object(), failures=0, pending_rows=1000, last_success_s=1.0)
    governance = SimpleNamespace(
        monitor=SimpleNamespace(tracked_workflows=200),
        sinks={"events": sink, "alerts": sink},
        notifier=busy_notifier(routes),
    )
    watch = SimpleNamespace(
        alerts=SimpleNamespace(open_conditions=lambda: []), notifier=busy_notifier(routes)
    )
    return SimpleNamespace(
        app=app,
        counters=counters,
        assemblers=assemblers,
        closed_elsewhere=Counter(),
        governance=governance,
        self_watch=watch,
        started_s=time.time(),
    )


def time_each(fn: Any, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        out.append(time.perf_counter() - started)
    return out


async def time_http(worker: Any, repeat: int) -> tuple[list[float], int]:
    server = TelemetryServer(
        "127.0.0.1",
        0,
        collect=lambda: worker_families(worker),
        ready=lambda: worker_readiness(worker),
    )
    assert await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url) as client:
            size = len((await client.get("/metrics")).content)
            out = []
            for _ in range(repeat):
                started = time.perf_counter()
                response = await client.get("/metrics")
                out.append(time.perf_counter() - started)
                assert response.status_code == 200
    finally:
        await server.stop()
    return out, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--partitions", type=int, default=64)
    parser.add_argument("--routes", type=int, default=3, help="configured paging routes")
    parser.add_argument("--repeat", type=int, default=300)
    parser.add_argument("--interval", type=float, default=15.0, help="scrape interval, s")
    args = parser.parse_args()

    # Its spans are dated in the past: no arrival time, or every span would be dead-lettered.
    message = otlp_factory.realistic_message(1000, seed=1).SerializeToString()

    def decode() -> None:
        normalize_message(message, content_type="otlp_proto")

    decode()  # warm up
    decode_s = statistics.median(time_each(decode, max(args.repeat // 10, 10))) / 1000

    worker = busy_worker(args.partitions, args.routes)
    render(worker_families(worker))  # warm up
    text = render(worker_families(worker))
    series = sum(1 for line in text.splitlines() if not line.startswith("#"))
    scrape_s = statistics.median(time_each(lambda: render(worker_families(worker)), args.repeat))
    http_times, size = asyncio.run(time_http(worker, args.repeat))
    http_s = statistics.median(http_times)

    print(
        f"state: {len(SOURCE_TOPICS)} source topics x {args.partitions} partitions, "
        f"{args.routes} routes, {series} series, {size / 1024:.1f} KiB per scrape"
    )
    print(f"baseline  decode                 {decode_s * 1e6:8.2f} us per span")
    print(f"scrape    read state + render    {scrape_s * 1e3:8.3f} ms  (median of {args.repeat})")
    print(f"scrape    over HTTP (both sides) {http_s * 1e3:8.3f} ms")
    print(f"ratio     one scrape = decoding {scrape_s / decode_s:,.0f} spans")
    print(
        f"share     a scrape every {args.interval:g} s takes "
        f"{http_s / args.interval * 100:.4f}% of one core"
    )


if __name__ == "__main__":
    main()
