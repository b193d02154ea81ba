"""Where particular instrumentations depart from the conventions, and what the normalizer
does about it.

Unknown instrumentations are read by the conventions alone (:mod:`schemas.attributes`).
A library that emits something the conventions read differently gets a :class:`ScopeRule`
here, keyed by the ``InstrumentationScope`` name its spans arrive under and bounded by
version: each rule says which version it was seen on, and applies to scope versions below
``fixed_in`` (``None``: every version, until a release is seen to fix it). The integration
matrix (``tests/integration/test_instrumentations.py``) drives the real libraries and fails
when one changes what it emits; ``docs/instrumentations.md`` is written from the same rules.

Departures that cannot be mistaken for anything else are handled for every span, without a
rule: finish reasons sent as a JSON string (``'["stop"]'``), the alias keys in
:mod:`schemas.attributes`, and an error class taken from the span's ``exception`` event.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

# logfire's attributes (not GenAI conventions): its span kind, and the seconds a streamed
# call lasted, set on the log record that carries the stream's usage.
LOGFIRE_SPAN_TYPE: Final = "logfire.span_type"
LOGFIRE_SPAN_TYPE_LOG: Final = "log"
LOGFIRE_STREAM_DURATION: Final = "duration"
# openlit marks streamed calls; its time to first token is set on every call.
OPENLIT_STREAM: Final = "gen_ai.request.stream"
# LiteLLM's callback: the provider's usage, as the text of a Python dict.
LITELLM_USAGE_OBJECT: Final = "metadata.usage_object"


@dataclass(frozen=True, slots=True)
class ScopeRule:
    """One library's departure from the conventions and the correction driftline applies."""

    library: str  # the package users install
    scope_names: tuple[str, ...]  # InstrumentationScope.name of its spans
    seen_version: str  # the version the departure was observed on (the matrix's)
    fixed_in: tuple[int, ...] | None  # first scope version without it; None: not fixed yet
    deviation: str  # what the library emits (for the docs)
    handling: str  # what the normalizer does (for the docs)
    # The corrections, each off unless set:
    # input tokens exclude cache reads and writes for these providers: add them.
    inputs_exclude_cache_for: frozenset[str] = frozenset()
    # A streamed call is a short opening span without usage, then a zero-length log record
    # with the usage and a ``duration`` attribute: the log record is the call, lasting
    # ``duration`` up to its timestamp; the opening span is not a call.
    stream_as_log_record: bool = False
    # Time to first token is set on non-streamed calls too (where it is the latency): read
    # it only when the span says the call was streamed.
    ttft_only_when_streamed: bool = False
    # scope name -> provider: a failed call's span has no attributes at all, only its name
    # ("chat <model>") and status; it is read as a failed call of that provider.
    bare_failure_providers: Mapping[str, str] = field(default_factory=dict)
    # Model names carry the provider as a prefix (``openai/gpt-4o-mini``): drop it when it
    # is the span's provider, so the model is priced and grouped like everyone else's.
    model_prefixed_by_provider: bool = False
    # Cache and reasoning tokens are missing from the attributes but present in this key's
    # text, LiteLLM's usage object written as a Python literal: read them from there.
    usage_literal_key: str = ""


SCOPE_RULES: Final = (
    ScopeRule(
        library="logfire",
        scope_names=("logfire.openai", "logfire.anthropic"),
        seen_version="5.4.0",
        fixed_in=None,
        deviation=(
            "a streamed call is two `chat` spans: the request span (a few ms, no usage) and a "
            "zero-length log record holding the usage and a `duration` attribute"
        ),
        handling=(
            "the log record is the call, with latency `duration` ending at its timestamp; "
            "the request span stays in the trace but is not counted as a call (a stream "
            "abandoned before its end has no log record, and so no call)"
        ),
        stream_as_log_record=True,
    ),
    ScopeRule(
        library="openlit",
        # openlit 1.45.0 leaves the scope version empty: the rule holds for every version.
        scope_names=("openlit.instrumentation.anthropic", "openlit.instrumentation.openai"),
        seen_version="1.45.0",
        fixed_in=None,
        deviation=(
            "with Anthropic, `gen_ai.usage.input_tokens` is Anthropic's uncached count "
            "(and a streamed call reports no cache tokens at all); "
            "`gen_ai.server.time_to_first_token` is set on non-streamed calls too, equal to "
            "the latency; a failed Anthropic call's span has no attributes"
        ),
        handling=(
            "cache reads and writes are added to the input tokens of Anthropic calls; time "
            "to first token is read only on streamed calls (`gen_ai.request.stream`), as "
            "every other instrumentation reports it; a failed Anthropic call is read from its "
            "span name (`chat <model>`) and status; the cache tokens of a streamed Anthropic "
            "call cannot be recovered"
        ),
        inputs_exclude_cache_for=frozenset({"anthropic"}),
        ttft_only_when_streamed=True,
        bare_failure_providers={"openlit.instrumentation.anthropic": "anthropic"},
    ),
    ScopeRule(
        library="openinference-instrumentation-litellm",
        scope_names=("openinference.instrumentation.litellm",),
        seen_version="0.1.51",
        fixed_in=None,
        deviation=(
            "`llm.model_name` is LiteLLM's model string, provider prefix included "
            "(`openai/gpt-4o-mini`), and there is no response model"
        ),
        handling="the prefix is dropped when it names the span's provider (`gpt-4o-mini`)",
        model_prefixed_by_provider=True,
    ),
    ScopeRule(
        library="litellm (OpenTelemetry callback)",
        # LiteLLM leaves the scope version empty: the rule holds for every version.
        scope_names=("litellm",),
        seen_version="1.83.0",
        fixed_in=None,
        deviation=(
            "no cache or reasoning token attributes: they are only in "
            "`metadata.usage_object`, the provider's usage written as a Python dict"
        ),
        handling=(
            "cache reads (`prompt_tokens_details.cached_tokens`, `cache_read_input_tokens`), "
            "cache writes (`cache_creation_input_tokens`) and reasoning tokens "
            "(`completion_tokens_details.reasoning_tokens`) are read from that text, parsed "
            "as a literal (never evaluated), when the span has none of its own"
        ),
        usage_literal_key=LITELLM_USAGE_OBJECT,
    ),
)

_VERSION_PART: Final = re.compile(r"\d+")


def version_tuple(version: str) -> tuple[int, ...]:
    """The leading numbers of a version: ``"5.4.0b1"`` -> ``(5, 4, 0)``; ``""`` -> ``()``.

    >>> version_tuple("1.45.0"), version_tuple("0.62.4rc1"), version_tuple("")
    ((1, 45, 0), (0, 62, 4), ())
    """
    parts = []
    for piece in version.split("."):
        match = _VERSION_PART.match(piece)
        if match is None:
            break
        parts.append(int(match.group()))
        if match.end() != len(piece):
            break
    return tuple(parts)


@functools.lru_cache(maxsize=256)
def rule_for_scope(name: str, version: str) -> ScopeRule | None:
    """The rule for spans of this instrumentation scope, if its library departs here.

    >>> rule_for_scope("logfire.openai", "5.4.0").library
    'logfire'
    >>> rule_for_scope("opentelemetry.instrumentation.openai_v2", "2.4b0") is None
    True
    """
    for rule in SCOPE_RULES:
        if name in rule.scope_names:
            if rule.fixed_in is not None and version_tuple(version) >= rule.fixed_in:
                return None
            return rule
    return None
