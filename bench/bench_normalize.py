"""Throughput of the ingestion hot path: OTLP bytes -> normalized events.

Builds collector-sized messages (1000 spans each, mixed GenAI conventions, ~25 attributes
per LLM span) and measures, interleaved in the same run so a busy machine slows all three
alike:

  (a) raw parse ceiling: opentelemetry-proto ``TracesData.FromString`` + walking every span
  (b) lean parse only:   ``schemas.otlp_lean_pb2.TracesData.FromString`` + the same walk
  (c) full normalize:    ``streams.normalize.normalize_message``

and prints spans/s for each (best of the repeats) and the ratios (c)/(a) and (c)/(b).

    python bench/bench_normalize.py [--messages 5] [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.utils

from opentelemetry.proto.trace.v1.trace_pb2 import TracesData

from driftline.schemas import otlp_lean_pb2
from driftline.streams.normalize import normalize_message
from tests.utils.otlp_factory import realistic_message

lean: Any = otlp_lean_pb2  # generated code, no stubs
SPANS_PER_MESSAGE = 1000
TARGET_SPANS_PER_SECOND = 50_000


def _walk(data: object) -> int:
    count = 0
    for resource_spans in data.resource_spans:  # type: ignore[attr-defined]
        for scope_spans in resource_spans.scope_spans:
            for _span in scope_spans.spans:
                count += 1
    return count


def parse_official(payloads: list[bytes]) -> int:
    return sum(_walk(TracesData.FromString(p)) for p in payloads)


def parse_lean(payloads: list[bytes]) -> int:
    return sum(_walk(lean.TracesData.FromString(p)) for p in payloads)


def normalize(payloads: list[bytes]) -> int:
    return sum(normalize_message(p).span_count for p in payloads)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=5, help="messages of 1000 spans")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)

    payloads = [
        realistic_message(SPANS_PER_MESSAGE, seed=seed).SerializeToString()
        for seed in range(args.messages)
    ]
    batch = normalize_message(payloads[0])
    attrs_per_llm_span = statistics.mean(
        len(s.attributes)
        for rs in TracesData.FromString(payloads[0]).resource_spans
        for ss in rs.scope_spans
        for s in ss.spans
        if s.name != "invoke_agent triage" and not s.name.startswith("execute_tool")
    )
    print(
        f"{args.messages} messages x {SPANS_PER_MESSAGE} spans, "
        f"{sum(map(len, payloads)) / len(payloads) / 1024:.0f} KiB each; "
        f"{len(batch.events)} of {batch.span_count} spans are LLM calls, "
        f"{attrs_per_llm_span:.1f} attributes per LLM span, {len(batch.rejects)} rejects"
    )

    stages: dict[str, Callable[[list[bytes]], int]] = {
        "(a) parse, opentelemetry-proto": parse_official,
        "(b) parse, lean schema": parse_lean,
        "(c) normalize_message": normalize,
    }
    best = dict.fromkeys(stages, float("inf"))
    for _ in range(args.repeats):
        for label, stage in stages.items():  # interleaved: machine noise hits all alike
            started = time.perf_counter()
            spans = stage(payloads)
            best[label] = min(best[label], time.perf_counter() - started)
    rate = {label: spans / seconds for label, seconds in best.items()}

    print(f"{'stage':<34}{'spans/s':>12}{'us/span':>10}")
    for label, per_second in rate.items():
        print(f"{label:<34}{per_second:>12,.0f}{1e6 / per_second:>10.2f}")
    a, b, c = rate.values()
    print(f"ratio (c)/(a) = {c / a:.3f}   ratio (c)/(b) = {c / b:.3f}   (b)/(a) = {b / a:.2f}")
    verdict = "meets" if c >= TARGET_SPANS_PER_SECOND else "below"
    print(f"normalize {verdict} the {TARGET_SPANS_PER_SECOND:,} spans/s goal on this machine")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
