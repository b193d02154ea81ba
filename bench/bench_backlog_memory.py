"""Worker memory under a backlog: RSS while it works off 1M spans already waiting in Kafka.

A worker that falls behind (an outage of the store, a deploy, a burst) finds its whole
backlog on ``otlp_spans`` when it starts. Its memory must not grow with that backlog:
each stage reads bounded batches (``streams.batch_max_messages``, the store's and the
monitor's batch sizes), the decode cache holds at most a store batch (2,000 messages,
64 MiB), librdkafka's prefetch is bounded per partition, and the open traces by
``streams.max_open_traces``. This bench checks that claim end to end, in one run:

1. a fresh embedded stack (tansu, one Faust worker with chdb) without its worker;
2. the backlog produced onto ``otlp_spans`` first (pre-encoded ``realistic_message``
   messages of 1,000 spans, 4 partitions), then the worker started;
3. the worker's resident memory (``VmRSS`` of its process, chdb and librdkafka inside it)
   sampled every 0.25 s until every event is out on ``llm_events`` and committed;
4. the same for a backlog a tenth the size (the baseline, same run, same messages).

It prints the peak RSS of each, their ratio (1.0: the backlog's size does not show in
memory), the backlog's bytes, and whether every event was stored once.

    .venv/bin/python bench/bench_backlog_memory.py [--spans 1000000] [--baseline-spans 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench_pipeline import (  # noqa: E402
    PAGING_ENV,
    PARTITIONS,
    STALL_TIMEOUT_S,
    EventsReader,
    build_messages,
    committed_all,
    cpu_seconds,
    events_consumers,
    normalize_all,
    produce,
    stored_counts,
    write_config,
)
from confluent_kafka import Consumer, TopicPartition  # noqa: E402

from driftline.config import load_settings  # noqa: E402
from driftline.stack import EmbeddedStack  # noqa: E402
from driftline.store import open_store  # noqa: E402
from driftline.streams import topics  # noqa: E402

SAMPLE_S = 0.25
DEFAULT_BATCH_MESSAGES = 64


def rss_mib(pid: int | None) -> float:
    """Resident memory of a live process in MiB (0.0 if gone)."""
    if pid is None:
        return 0.0
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return 0.0


class RssSampler(threading.Thread):
    """Samples a process's RSS every ``SAMPLE_S`` until stopped; keeps the peak and a trace."""

    def __init__(self, pid: int | None) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.samples: list[tuple[float, float]] = []
        self._stop_event = threading.Event()
        self._t0 = time.perf_counter()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.samples.append((time.perf_counter() - self._t0, rss_mib(self.pid)))
            self._stop_event.wait(SAMPLE_S)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()

    @property
    def peak(self) -> float:
        return max((rss for _, rss in self.samples), default=0.0)

    def quartiles(self) -> list[float]:
        """Peak RSS in each quarter of the run: flat when memory does not grow with time."""
        if not self.samples:
            return []
        end = self.samples[-1][0] or 1.0
        quarters = [0.0] * 4
        for t, rss in self.samples:
            q = min(int(4 * t / end), 3)
            quarters[q] = max(quarters[q], rss)
        return [round(q) for q in quarters]


class PositionsReader(EventsReader):
    """An :class:`EventsReader` that also remembers the message each event came in."""

    def __init__(self, consumer: Consumer) -> None:
        super().__init__(consumer)
        self.positions: dict[str, tuple[int, int]] = {}
        self.message_sizes: dict[tuple[int, int], int] = {}

    def took(self, where: tuple[int, int], doc: dict[str, Any]) -> None:
        super().took(where, doc)
        events = doc.get("events", [])
        if events:
            self.message_sizes[where] = len(events)
            for e in events:
                self.positions[e["span_id"]] = where


def read_again(settings: Any, bootstrap: str, quiet_s: float = 15.0) -> PositionsReader:
    """``llm_events`` read once more from the beginning by a new reader, until nothing new
    came for ``quiet_s``: tells a reader that missed messages from a topic that lacks them.
    The caller closes the returned reader's consumer."""
    consumer, group_consumer = events_consumers(settings, bootstrap)
    group_consumer.close()
    reader = PositionsReader(consumer)
    began = time.perf_counter()
    while time.perf_counter() - max(reader.last_event_s, began) < quiet_s:
        reader.poll(1.0)
    return reader


def positions_against_ends(consumer: Consumer) -> dict[int, list[int]]:
    """Per partition of ``llm_events``: [the reader's position, the broker's high watermark]."""
    assigned = [TopicPartition(topics.LLM_EVENTS, p) for p in range(PARTITIONS)]
    return {
        tp.partition: [tp.offset, consumer.get_watermark_offsets(tp, timeout=10)[1]]
        for tp in consumer.position(assigned)
    }


def missing_report(settings: Any, reader: PositionsReader) -> dict[str, Any]:
    """Which ``llm_events`` messages the events missing from the store came in."""
    store = open_store(settings.store.url, settings.store)
    try:
        stored = set(
            store.query("SELECT span_id FROM driftline.llm_requests").column(0).to_pylist()
        )
    finally:
        store.close()
    missing = [s for s in reader.span_ids if s not in stored]
    per_message = Counter(reader.positions[s] for s in missing)
    return {
        "missing": len(missing),
        "messages": [
            {"partition": p, "offset": o, "missing": n, "events": reader.message_sizes[(p, o)]}
            for (p, o), n in sorted(per_message.items())
        ],
    }


def run_backlog(payloads: list[bytes], expected_events: int, batch_messages: int) -> dict[str, Any]:
    """Produce ``payloads`` with no worker running, then start one and watch its memory."""
    directory = Path(tempfile.mkdtemp(prefix="driftline-bench-backlog-"))
    config_file = write_config(directory, batch_messages, None)
    settings = load_settings(config_file)
    stack = EmbeddedStack(settings, config_file=config_file, with_worker=False)
    reader: PositionsReader | None = None
    group_consumer: Consumer | None = None
    stall: dict[str, Any] = {}
    sampler: RssSampler | None = None
    try:
        bootstrap = stack.start().bootstrap_servers
        produce_s = produce(settings, bootstrap, payloads)
        started = time.perf_counter()
        ready_s = stack.restart_worker()
        pid = stack.worker.pid if stack.worker else None
        sampler = RssSampler(pid)
        sampler.start()
        rss_at_ready = rss_mib(pid)
        cpu_before = cpu_seconds(pid)
        consumer, group_consumer = events_consumers(settings, bootstrap)
        reader = PositionsReader(consumer)
        while len(reader.span_ids) < expected_events:
            reader.poll()
            if time.perf_counter() - max(reader.last_event_s, started) > STALL_TIMEOUT_S:
                stack.check_alive()
                stall = {
                    "distinct_events_read": len(reader.span_ids),
                    "events_read": reader.events,
                    "reader_errors": dict(reader.errors),
                    "reader_skipped_offsets": reader.skipped_offsets,
                    "position_and_end": positions_against_ends(reader.consumer),
                }
                reader.consumer.close()
                reader = None  # closed: not again on the way out if the re-read fails
                reader = read_again(settings, bootstrap)
                stall["read_again_distinct"] = len(reader.span_ids)
                stall["read_again_errors"] = dict(reader.errors)
                print(json.dumps({"reader_stalled": stall}), file=sys.stderr)
                if len(reader.span_ids) < expected_events:
                    raise RuntimeError(
                        f"stalled: {len(reader.span_ids)} of {expected_events} distinct events"
                        f" on llm_events read again from the beginning; {stall}"
                    )
        reader.poll(1.0)
        deadline = time.perf_counter() + 120
        while not committed_all(group_consumer, reader.end_offsets):
            if time.perf_counter() > deadline:
                raise RuntimeError("the worker did not commit llm_events within 120 s")
            time.sleep(0.1)
        # Not measured when the reader stalled: the time includes its wait and the re-read.
        drained_s = None if stall else time.perf_counter() - started
        cpu_s = cpu_seconds(pid) - cpu_before
        sampler.stop()
        rss_at_end = rss_mib(pid)
    finally:
        if sampler is not None and sampler.is_alive():
            sampler.stop()
        for c in (reader.consumer if reader else None, group_consumer):
            if c is not None:
                c.close()
        stack.stop()
    stored = stored_counts(settings)
    exact = (
        reader is not None
        and len(reader.span_ids) == expected_events
        and stored["rows"] == expected_events == stored["distinct_spans"]
    )
    log_path = settings.embedded.data_dir / "worker.log"
    log_text = log_path.read_text(errors="replace") if log_path.exists() else ""
    offset_gaps = log_text.count("skipped by the fetch")
    if exact:
        shutil.rmtree(directory, ignore_errors=True)
    else:
        print(f"not exact: data directory and worker log kept in {directory}", file=sys.stderr)
        if reader is not None:
            print(json.dumps(missing_report(settings, reader), indent=1), file=sys.stderr)
    return {
        "messages": len(payloads),
        "backlog_mib": round(sum(map(len, payloads)) / 2**20, 1),
        "produce_s": round(produce_s, 1),
        "worker_ready_s": round(ready_s, 1),
        "drained_s": None if drained_s is None else round(drained_s, 1),
        "worker_cpu_s": round(cpu_s, 1),
        "rss_at_ready_mib": round(rss_at_ready),
        "rss_peak_mib": round(sampler.peak),
        "rss_peak_per_quarter_mib": sampler.quartiles(),
        "rss_at_end_mib": round(rss_at_end),
        "events_read": reader.events if reader else 0,
        "distinct_events_read": len(reader.span_ids) if reader else 0,
        "stored": stored,
        "offset_gaps_logged": offset_gaps,
        "reader_stalled": stall or None,
        "reader_errors": dict(reader.errors) if reader else {},
        "reader_skipped_offsets": reader.skipped_offsets if reader else 0,
        "every_event_once": exact,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=1_000_000, help="spans in the backlog")
    parser.add_argument("--baseline-spans", type=int, default=100_000)
    parser.add_argument("--spans-per-message", type=int, default=1000)
    parser.add_argument("--batch-max-messages", type=int, default=DEFAULT_BATCH_MESSAGES)
    args = parser.parse_args(argv)
    for name in PAGING_ENV:  # the worker must not page anything from a benchmark
        os.environ.pop(name, None)
    count = -(-args.spans // args.spans_per_message)
    small_count = -(-args.baseline_spans // args.spans_per_message)
    print(f"building {count} messages of {args.spans_per_message} spans ...", file=sys.stderr)
    payloads = build_messages(count, args.spans_per_message)
    runs = {}
    for name, part in (("baseline", payloads[:small_count]), ("backlog", payloads)):
        expected = normalize_all(part)
        print(f"{name}: {expected.spans} spans, {expected.events} events ...", file=sys.stderr)
        runs[name] = {
            "spans": expected.spans,
            **run_backlog(part, expected.events, args.batch_max_messages),
        }
    report = {
        **runs,
        "ratio_peak_rss_backlog_vs_baseline": round(
            runs["backlog"]["rss_peak_mib"] / max(runs["baseline"]["rss_peak_mib"], 1.0), 2
        ),
        "ratio_backlog_size": round(runs["backlog"]["spans"] / runs["baseline"]["spans"], 1),
        "every_event_once": all(r["every_event_once"] for r in runs.values()),
    }
    print(json.dumps(report, indent=2))
    return 0 if report["every_event_once"] else 1


if __name__ == "__main__":
    sys.exit(main())
