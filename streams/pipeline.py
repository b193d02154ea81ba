"""The whole span-to-event path without Kafka: normalize, price, assemble, flush.

``driftline normalize FILE`` and tests run recorded OTLP through the same pure
functions the stream agents call (:func:`streams.normalize.normalize_message`,
:class:`streams.pricing.PriceBook`, :class:`streams.traces.TraceAssembler`). Offline
there is no processing clock: every trace stays open until :meth:`finish`, which
flushes them all, so the result does not depend on how spans were batched.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field
from typing import Any, Final

from driftline.config import Settings
from driftline.schemas.event import MAX_ATTRIBUTE_VALUE_CHARS, MAX_EVENT_ATTRIBUTES
from driftline.streams.decode import ContentType, sniff_content_type
from driftline.streams.normalize import (
    DEFAULT_POLICY,
    IngestPolicy,
    NormalizedBatch,
    Reject,
    normalize_message,
)
from driftline.streams.pricing import PriceBook
from driftline.streams.traces import TraceAssembler

__all__ = ["OfflinePipeline", "OfflineResult", "SourcedReject", "split_otlp_file"]

_JSON_WHITESPACE: Final = " \t\r\n"
# The reject reason streams.normalize gives a message that does not decode as OTLP.
REASON_NOT_OTLP: Final = "not_otlp"


@dataclass(slots=True)
class SourcedReject:
    """A reject and the 1-based number of the document (NDJSON line) it came from."""

    document: int
    reject: Reject


@dataclass(slots=True)
class OfflineResult:
    events: list[dict[str, Any]]  # completed, in (start_ts, trace_id, span_id) order
    traces: list[dict[str, Any]]  # in (start_ts, trace_id) order
    rejects: list[SourcedReject]
    span_count: int
    documents: int
    otlp_documents: int  # documents that decoded as OTLP (possibly with rejected spans)
    unknown_models: dict[tuple[str, str], int] = field(default_factory=dict)
    # Of span_count: spans rejected (not whole documents), and spans whose (trace id, span id)
    # an earlier span of the file already had (counted once, like a re-delivery). The rest,
    # beyond the events, are spans that are not LLM calls.
    rejected_spans: int = 0
    duplicate_spans: int = 0
    rejected_documents: int = 0  # whole documents that are not OTLP

    @property
    def skipped_spans(self) -> int:
        """Spans read that are neither events, rejects nor duplicates: not LLM calls."""
        return self.span_count - len(self.events) - self.rejected_spans - self.duplicate_spans


class OfflinePipeline:
    """Feed OTLP documents one by one, then :meth:`finish` for events and traces.

    Parameters
    ----------
    price_book
        Prices to apply; a fresh ``PriceBook()`` (genai-prices only) by default.
    max_attributes, max_attribute_chars
        Bounds of each event's free-form ``attributes`` map.
    policy
        What the normalizer lets in (``[ingest]``: attribute allow list, content opt-ins).
    """

    def __init__(
        self,
        price_book: PriceBook | None = None,
        *,
        max_attributes: int = MAX_EVENT_ATTRIBUTES,
        max_attribute_chars: int = MAX_ATTRIBUTE_VALUE_CHARS,
        policy: IngestPolicy = DEFAULT_POLICY,
    ) -> None:
        self.price_book = price_book if price_book is not None else PriceBook()
        self.policy = policy
        self.max_attributes = max_attributes
        self.max_attribute_chars = max_attribute_chars
        # Nothing closes before finish(): no grace, no timeout, no eviction.
        self._assembler = TraceAssembler(
            grace_s=0.0, timeout_s=math.inf, max_open_traces=sys.maxsize
        )
        self._rejects: list[SourcedReject] = []
        self._span_count = 0
        self._documents = 0
        self._otlp_documents = 0
        self._rejected_spans = 0
        self._rejected_documents = 0
        self._seen_spans: set[tuple[str, str]] = set()
        self._duplicate_spans = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> OfflinePipeline:
        """Price overrides from ``[prices]``, attribute bounds from ``[streams]``, what is let
        in from ``[ingest]`` (a recorded file has no arrival time: only the fixed date bounds)."""
        return cls(
            PriceBook(settings.prices),
            max_attributes=settings.streams.max_span_attributes,
            max_attribute_chars=settings.streams.max_attribute_chars,
            policy=IngestPolicy.from_settings(settings.ingest),
        )

    def feed(self, payload: bytes, content_type: ContentType | None = None) -> NormalizedBatch:
        """Normalize, price and buffer one OTLP message (protobuf or one JSON document)."""
        if content_type is None:
            content_type = sniff_content_type(payload)
        self._documents += 1
        batch = normalize_message(
            payload,
            content_type=content_type,
            max_attributes=self.max_attributes,
            max_attribute_chars=self.max_attribute_chars,
            policy=self.policy,
        )
        if _lacks_otlp_structure(payload, content_type, batch):
            batch.rejects.append(
                Reject(REASON_NOT_OTLP, "JSON document has no resourceSpans", "", "", payload)
            )
        if not _is_undecodable(batch):
            self._otlp_documents += 1
        self._rejects.extend(SourcedReject(self._documents, r) for r in batch.rejects)
        self._span_count += batch.span_count
        if batch.span_count:
            # Past a message's first rejects the rest go within one whole-message reject.
            within = sum(batch.rejected_within_message.values())
            self._rejected_spans += len(batch.rejects) - (1 if within else 0) + within
        else:  # the one reject is the whole document's
            self._rejected_documents += len(batch.rejects)
        seen = self._seen_spans
        for span in batch.spans:  # every span read, LLM call or not, that was not rejected
            key = (span["trace_id"], span["span_id"])
            if key in seen:
                self._duplicate_spans += 1
            else:
                seen.add(key)
        self.price_book.apply(batch.events)
        self._assembler.add(batch.events, batch.spans, now_s=0.0)
        return batch

    def finish(self) -> OfflineResult:
        """Close every trace and return the completed events and trace summaries."""
        closed = self._assembler.flush()
        closed.events.sort(key=lambda e: (e["start_ts"], e["trace_id"], e["span_id"]))
        closed.traces.sort(key=lambda t: (t["start_ts"], t["trace_id"]))
        return OfflineResult(
            events=closed.events,
            traces=closed.traces,
            rejects=self._rejects,
            span_count=self._span_count,
            documents=self._documents,
            otlp_documents=self._otlp_documents,
            unknown_models=dict(self.price_book.unknown_models),
            rejected_spans=self._rejected_spans,
            duplicate_spans=self._duplicate_spans,
            rejected_documents=self._rejected_documents,
        )


def _lacks_otlp_structure(payload: bytes, content_type: str, batch: NormalizedBatch) -> bool:
    """A JSON object without a resourceSpans key anywhere, from which nothing was read.

    OTLP/JSON parsers ignore unknown keys, so ``{"not": "otlp"}`` decodes as an empty
    message; in a file that is a wrong file, not an empty export.
    """
    return (
        content_type == "otlp_json"
        and batch.span_count == 0
        and not batch.rejects
        and b'"resourceSpans"' not in payload
        and b'"resource_spans"' not in payload
    )


def _is_undecodable(batch: NormalizedBatch) -> bool:
    """The message was not OTLP traces at all (as opposed to OTLP with bad spans)."""
    return any(r.reason == REASON_NOT_OTLP for r in batch.rejects)


UTF8_BOM: Final = b"\xef\xbb\xbf"


def split_otlp_file(data: bytes) -> list[tuple[bytes, ContentType]]:
    """The OTLP documents of a file, each with its encoding.

    A file is OTLP/JSON when it starts with ``{``: either one document (possibly
    pretty-printed over many lines) or NDJSON, one document per line, as the
    OpenTelemetry collector's file exporter writes. Anything else is one protobuf
    ``TracesData`` / ``ExportTraceServiceRequest``.

    >>> split_otlp_file(b'{"resourceSpans": []}\\n{"resourceSpans": []}\\n')
    [(b'{"resourceSpans": []}', 'otlp_json'), (b'{"resourceSpans": []}', 'otlp_json')]
    >>> split_otlp_file(b'{\\n  "resourceSpans": []\\n}\\n')
    [(b'{\\n  "resourceSpans": []\\n}\\n', 'otlp_json')]
    >>> split_otlp_file(UTF8_BOM + b'{"resourceSpans": []}')  # as some editors save it
    [(b'{"resourceSpans": []}', 'otlp_json')]
    """
    if data.startswith(UTF8_BOM) and sniff_content_type(data[len(UTF8_BOM) :]) == "otlp_json":
        data = data[len(UTF8_BOM) :]
    if sniff_content_type(data) != "otlp_json":
        return [(data, "otlp_proto")]
    lines = [line for line in (raw.strip() for raw in data.splitlines()) if line]
    if len(lines) > 1 and not _parses_whole(data) and _parses_whole(lines[0]):
        return [(line, "otlp_json") for line in lines]
    # One document, valid or not: a broken one gets one reject, not one per line.
    return [(data, "otlp_json")]


def _parses_whole(data: bytes) -> bool:
    """``data`` is exactly one JSON value (surrounding whitespace aside)."""
    try:
        text = data.decode().strip(_JSON_WHITESPACE)
        _, end = json.JSONDecoder().raw_decode(text)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError too
        return False
    return end == len(text)
