"""One giant trace through the trace assembler and its checkpoints.

A trace of ``--spans`` spans (every tenth an LLM call) arrives in batches of ``--batch``;
after each batch the touched trace is checkpointed, as the assemble agent does. Measured in
the same run, on the same spans:

  (a) chunked checkpoints (``TraceAssembler.checkpoint_changes``: a head and full chunks of
      ``CHUNK_RECORDS``, each written once), as the worker writes them;
  (b) the whole trace as one value per checkpoint (``TraceAssembler.export_trace``), as the
      worker wrote it before: one record that outgrows a Kafka message (1 MB by default) at
      a few thousand spans, rewritten whole on every batch.

Prints bytes written to the changelog, the largest record, and seconds for adding and
checkpointing, and for closing the trace, with the ratios (a)/(b).

    .venv/bin/python bench/bench_giant_trace.py [--spans 100000] [--batch 500]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

from driftline.streams.traces import CHUNK_RECORDS, TraceAssembler  # noqa: E402

ROOT_SPAN: dict[str, Any] = {
    "trace_id": "t",
    "span_id": "root",
    "parent_span_id": "",
    "name": "agent",
    "start_ts": 0,
    "end_ts": 10**9,
    "operation": "invoke_agent",
    "is_llm_call": False,
    "agent": "planner",
    "workflow": "wf",
    "service": "svc",
    "environment": "",
    "tenant": "",
    "route": "",
    "session_id": "",
    "status": "ok",
}


def batches(spans: int, batch: int) -> list[tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
    out = []
    for first in range(0, spans, batch):
        span_batch, calls = [], []
        for i in range(first, min(first + batch, spans)):
            parent = "root" if i < 100 else f"s{i // 100}"
            is_call = i % 10 == 0
            span = dict(ROOT_SPAN, span_id=f"s{i}", parent_span_id=parent, start_ts=i)
            span.update(operation="chat" if is_call else "step", is_llm_call=is_call)
            span_batch.append(span)
            if is_call:
                calls.append(
                    {
                        "trace_id": "t",
                        "span_id": f"s{i}",
                        "parent_span_id": parent,
                        "start_ts": i,
                        "workflow": "",
                        "service": "svc",
                        "input_tokens": 10,
                        "output_tokens": 5,
                        "cost_usd": 0.001,
                        "retry_attempt": 0,
                        "status": "ok",
                    }
                )
        out.append((calls, span_batch))
    return out


def run(spans: int, batch: int, chunked: bool) -> dict[str, float]:
    asm = TraceAssembler(grace_s=5, timeout_s=3600, max_open_traces=10, max_trace_spans=spans + 2)
    written = largest = 0
    started = time.perf_counter()
    for calls, span_batch in batches(spans, batch):
        asm.add(calls, span_batch, now_s=1.0)
        for trace_id in asm.dirty_trace_ids():
            if chunked:
                head, chunks = asm.checkpoint_changes(trace_id)
                records = [head, *(chunk for _, chunk in chunks)]
            else:
                records = [asm.export_trace(trace_id)]
            for record in records:
                size = len(orjson.dumps(record))
                written += size
                largest = max(largest, size)
    added_s = time.perf_counter() - started
    asm.add([], [ROOT_SPAN], now_s=2.0)
    started = time.perf_counter()
    closed = asm.close_due(now_s=100.0)
    close_s = time.perf_counter() - started
    assert closed.traces[0]["span_count"] == spans + 1, closed.traces[0]["span_count"]
    assert len(closed.events) == len(range(0, spans, 10))
    return {
        "changelog_mb": round(written / 1e6, 1),
        "largest_record_kb": round(largest / 1e3, 1),
        "add_and_checkpoint_s": round(added_s, 2),
        "close_s": round(close_s, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    chunked = run(args.spans, args.batch, chunked=True)
    whole = run(args.spans, args.batch, chunked=False)
    ratios = {k: round(chunked[k] / whole[k], 4) if whole[k] else None for k in chunked}
    print(
        json.dumps(
            {
                "spans": args.spans,
                "batch": args.batch,
                "chunk_records": CHUNK_RECORDS,
                "chunked_checkpoints": chunked,
                "whole_trace_per_checkpoint": whole,
                "ratio_chunked_vs_whole": ratios,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
