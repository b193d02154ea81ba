"""``driftline normalize``'s last line: what became of the spans read adds up to the spans
read (events, rejected, duplicates, skipped), and documents rejected whole are told apart."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from driftline.cli import main
from driftline.schemas import attributes as a
from driftline.streams.pipeline import OfflinePipeline

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # tests.utils is a package of the repository root
    sys.path.insert(0, str(REPO))

from tests.utils.otlp_factory import (  # noqa: E402
    BASE_TIME_NS,
    make_resource_spans,
    make_span,
    to_otlp_json,
    traces_data,
)

TRACE = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")
CALL = {
    a.GEN_AI_OPERATION_NAME: a.OP_CHAT,
    a.GEN_AI_REQUEST_MODEL: "gpt-4o",
    a.GEN_AI_USAGE_INPUT_TOKENS: 10,
    a.GEN_AI_USAGE_OUTPUT_TOKENS: 5,
}
SUMMARY = re.compile(
    r"(?P<documents>\d+) documents(?: \((?P<rejected_documents>\d+) rejected\))?, "
    r"(?P<spans>\d+) spans: (?P<events>\d+) events, (?P<rejected>\d+) rejected, "
    r"(?P<duplicates>\d+) duplicates, (?P<skipped>\d+) skipped \(not LLM calls\)"
)


def document(calls: int = 3, others: int = 2, broken: int = 0) -> bytes:
    """One OTLP/JSON document: a root span, ``calls`` LLM calls, ``others - 1`` plain spans,
    ``broken`` spans that are rejected (no span id, no trace id, or times out of bounds)."""
    spans = [make_span(trace_id=TRACE, span_id=b"\x00" * 7 + b"\x01", name="root")]
    for n in range(calls):
        spans.append(
            make_span(
                trace_id=TRACE,
                span_id=(100 + n).to_bytes(8, "big"),
                parent_span_id=b"\x00" * 7 + b"\x01",
                start_ns=BASE_TIME_NS + n,
                attributes=CALL,
            )
        )
    for n in range(others - 1):
        spans.append(make_span(trace_id=TRACE, span_id=(200 + n).to_bytes(8, "big"), name="work"))
    for n in range(broken):
        if n % 3 == 0:
            fields: dict[str, Any] = {"trace_id": TRACE, "span_id": b""}
        elif n % 3 == 1:
            fields = {"trace_id": b"", "span_id": (300 + n).to_bytes(8, "big")}
        else:
            fields = {"trace_id": TRACE, "span_id": (300 + n).to_bytes(8, "big"), "start_ns": 1}
        spans.append(make_span(attributes=CALL, **fields))
    return to_otlp_json(traces_data(make_resource_spans(spans)))


def summary(tmp_path: Path, content: bytes, capsys: pytest.CaptureFixture[str]) -> dict[str, int]:
    path = tmp_path / "spans.json"
    path.write_bytes(content)
    main(["normalize", str(path)])
    err = capsys.readouterr().err.splitlines()[-1]
    match = SUMMARY.search(err)
    assert match, err
    counts = {k: int(v or 0) for k, v in match.groupdict().items()}
    parts = counts["events"] + counts["rejected"] + counts["duplicates"] + counts["skipped"]
    assert parts == counts["spans"], err
    return counts


@pytest.fixture(autouse=True)
def no_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("DRIFTLINE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)


def one_line(doc: bytes) -> bytes:
    return json.dumps(json.loads(doc)).encode()


def test_a_file_concatenated_with_itself_counts_its_spans_as_duplicates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = one_line(document(calls=3, others=2, broken=1))
    once = summary(tmp_path, doc + b"\n", capsys)
    assert (once["spans"], once["events"], once["rejected"], once["skipped"]) == (6, 3, 1, 2)
    assert once["duplicates"] == 0
    twice = summary(tmp_path, doc + b"\n" + doc + b"\n", capsys)
    assert (twice["spans"], twice["events"], twice["rejected"]) == (12, 3, 2)
    assert (twice["duplicates"], twice["skipped"]) == (5, 2)


def test_all_spans_rejected_leaves_nothing_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    counts = summary(tmp_path, _only_broken(8), capsys)
    assert (counts["spans"], counts["events"], counts["rejected"]) == (8, 0, 8)
    assert (counts["duplicates"], counts["skipped"]) == (0, 0)


def _only_broken(count: int) -> bytes:
    doc = json.loads(document(calls=0, others=1, broken=count))
    spans = doc["resourceSpans"][0]["scopeSpans"][0]["spans"]
    doc["resourceSpans"][0]["scopeSpans"][0]["spans"] = spans[1:]  # without the root
    return json.dumps(doc).encode()


def test_documents_rejected_whole_are_not_counted_as_spans(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    content = b"\n".join(
        [
            one_line(document(calls=2, others=1)),
            json.dumps({"resourceSpans": 5}).encode(),
            _only_broken(4),
        ]
    )
    counts = summary(tmp_path, content, capsys)
    assert (counts["documents"], counts["rejected_documents"]) == (3, 1)
    assert (counts["spans"], counts["events"], counts["rejected"], counts["skipped"]) == (
        7,
        2,
        4,
        1,
    )


def test_the_offline_result_counts_rejected_and_duplicate_spans() -> None:
    pipeline = OfflinePipeline()
    doc = document(calls=2, others=3, broken=2)
    pipeline.feed(doc)
    pipeline.feed(doc)
    result = pipeline.finish()
    assert (result.span_count, len(result.events)) == (14, 2)
    assert (result.rejected_spans, result.duplicate_spans, result.skipped_spans) == (4, 5, 3)
