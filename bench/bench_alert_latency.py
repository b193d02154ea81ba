"""Alert latency: transition handed to the notifier -> request arrives at the receiver.

Feeds distinct alert transitions at a fixed rate into ``Notifier.deliver`` against a
local HTTP receiver and reports latency percentiles next to a baseline measured in
the same run: the same bodies POSTed straight with one ``httpx.AsyncClient``. The
ratio is the notifier's own cost (routing, payload, rate-limit bookkeeping, ledger).
The full span-end -> receiver latency needs the whole stream and extends this script.

    .venv/bin/python bench/bench_alert_latency.py --rate 20 --count 200
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from driftline.streams.notifier import Notifier, Route, Router  # noqa: E402
from driftline.streams.notifier.payload import encode_body, trigger_event  # noqa: E402
from driftline.streams.notifier.routing import ENV_ROUTING_KEY  # noqa: E402
from tests.utils.http_receiver import HttpReceiver  # noqa: E402

KEY = "bench0routing0key000000000000000"


def alert(i: int, now_us: int) -> dict[str, Any]:
    return {
        "alert_id": f"bench-{i}",
        "dedup_key": f"drift:wf{i % 50}:output_tokens:{i}",
        "kind": "drift",
        "severity": "error",
        "state": "open",
        "opened_at": now_us,
        "resolved_at": None,
        "workflow": f"wf{i % 50}",
        "metric": "output_tokens",
        "baseline_value": 400.0,
        "current_value": 552.0,
        "score": 9.5,
        "threshold": 5.0,
        "bundle_id": "3f2a9c0e",
        "evidence": {"test": "cusum", "baseline_n": 500, "current_n": 200},
        "runbook_url": "https://runbooks.example.com/driftline/drift",
        "dashboard_url": "http://localhost:3000/d/driftline-workflow",
        "transition": "open",
        "event_ts": now_us,
    }


def percentiles(values_ms: list[float]) -> dict[str, float]:
    ordered = sorted(values_ms)
    q = statistics.quantiles(ordered, n=100, method="inclusive")
    return {"p50": q[49], "p95": q[94], "p99": q[98], "max": ordered[-1]}


async def paced(rate: float, count: int, send: Any) -> dict[int, float]:
    """Call ``send(i)`` at a fixed rate; returns when each was handed over (perf_counter)."""
    handed: dict[int, float] = {}
    tasks = []
    start = time.perf_counter()
    for i in range(count):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        handed[i] = time.perf_counter()
        tasks.append(asyncio.create_task(send(i)))
    await asyncio.gather(*tasks)
    return handed


def latencies(receiver: HttpReceiver, handed: dict[int, float]) -> list[float]:
    arrived = {r.json()["dedup_key"]: r.arrived_perf for r in receiver.requests}
    return [(arrived[f"drift:wf{i % 50}:output_tokens:{i}"] - t) * 1000 for i, t in handed.items()]


async def run(rate: float, count: int, max_per_minute: int) -> dict[str, Any]:
    now_us = int(time.time() * 1e6)
    alerts = [alert(i, now_us) for i in range(count)]
    with HttpReceiver() as receiver:
        async with httpx.AsyncClient() as client:
            bodies = [encode_body(trigger_event(a), KEY) for a in alerts]

            async def post(i: int) -> None:
                await client.post(
                    receiver.url, content=bodies[i], headers={"Content-Type": "application/json"}
                )

            await post(0)  # warm the connection pool like the notifier's first send
            receiver.clear()
            baseline = latencies(receiver, await paced(rate, count, post))
        receiver.clear()

        router = Router(
            (Route("bench", min_severity="info", url=receiver.url),), environ={ENV_ROUTING_KEY: KEY}
        )
        notifier = Notifier(router, max_events_per_minute=max_per_minute, burst=10)
        await notifier.deliver([{**alert(-1, now_us), "dedup_key": "warmup"}])
        receiver.clear()

        async def deliver(i: int) -> None:
            records = await notifier.deliver([alerts[i]])
            assert records[-1]["outcome"] == "delivered", records

        measured = latencies(receiver, await paced(rate, count, deliver))
        await notifier.aclose()
    base, note = percentiles(baseline), percentiles(measured)
    return {
        "rate_per_s": rate,
        "count": count,
        "max_events_per_minute": max_per_minute,
        "baseline_ms": {k: round(v, 2) for k, v in base.items()},
        "notifier_ms": {k: round(v, 2) for k, v in note.items()},
        "ratio_p50": round(note["p50"] / base["p50"], 2),
        "ratio_p95": round(note["p95"] / base["p95"], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=20.0, help="transitions per second")
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument(
        "--max-per-minute",
        type=int,
        default=6000,
        help="notifier rate limit (120 shows PagerDuty pacing instead)",
    )
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.rate, args.count, args.max_per_minute)), indent=2))


if __name__ == "__main__":
    main()
