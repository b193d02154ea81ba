"""Shared behaviour of simulated traffic: who calls, how big, how slow, how it fails.

Distributions follow what production LLM traffic looks like: token counts are
lognormal, latency is time to first token plus output tokens over a decode speed
(so it rises with output length), a small share of calls fail and are retried
with backoff, and self-hosted servers slow down as their KV cache fills.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import numpy as np

from driftline.schemas import attributes as a

from ..incidents import Effects
from ..plan import LlmCall, SpanPlan

MICROS: Final = 1_000_000
TENANTS: Final = ("acme", "globex", "initech", "umbrella", "hooli", "stark")
_TENANT_WEIGHTS: Final = np.array([0.34, 0.22, 0.16, 0.12, 0.1, 0.06])
ERROR_TYPES: Final = ("RateLimitError", "APITimeoutError", "InternalServerError")
_ERROR_WEIGHTS: Final = np.array([0.7, 0.15, 0.15])
BASE_RETRY_PROBABILITY: Final = 0.02
MAX_ATTEMPTS: Final = 4
CHARS_PER_TOKEN: Final = 4.1


def us(seconds: float) -> int:
    return round(seconds * MICROS)


@dataclass(slots=True)
class Traffic:
    """Seeded sampling helpers shared by all workflows (one numpy Generator)."""

    rng: np.random.Generator
    _sessions: dict[str, list[str]] = field(default_factory=dict)
    _cumulative: dict[int, list[float]] = field(default_factory=dict)

    def chance(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    def pick(self, options: tuple[str, ...], weights: np.ndarray | None = None) -> str:
        if weights is None:
            return options[int(self.rng.integers(0, len(options)))]
        # Weights are module constants: their cumulative sums are computed once.
        cumulative = self._cumulative.get(id(weights))
        if cumulative is None:
            cumulative = list(itertools.accumulate(float(w) for w in weights / weights.sum()))
            self._cumulative[id(weights)] = cumulative
        index = bisect.bisect_right(cumulative, float(self.rng.random()))
        return options[min(index, len(options) - 1)]

    def lognormal_int(self, median: float, sigma: float, lo: int = 1, hi: int = 1_000_000) -> int:
        value = round(median * math.exp(sigma * float(self.rng.standard_normal())))
        return min(max(value, lo), hi)

    def tenant(self) -> str:
        return self.pick(TENANTS, _TENANT_WEIGHTS)

    def user_hash(self, tenant: str) -> str:
        user = int(self.rng.zipf(1.6)) % 5000
        return hashlib.blake2b(f"{tenant}/{user}".encode(), digest_size=8).hexdigest()

    def session_id(self, user_hash: str, p_continue: float) -> str:
        """A user's recent session, or a new one."""
        recent = self._sessions.setdefault(user_hash, [])
        if recent and self.chance(p_continue):
            return recent[-1]
        session = f"sess-{int(self.rng.integers(0, 2**48)):012x}"
        recent.append(session)
        del recent[:-3]
        return session

    def ttft_s(self, input_tokens: int, base_s: float) -> float:
        """Time to first token: network + queue + prefill (grows with the prompt)."""
        jitter = float(np.exp(0.35 * self.rng.standard_normal()))
        return base_s * jitter + input_tokens * 4e-5

    def decode_s(self, output_tokens: int, tokens_per_s: float) -> float:
        speed = tokens_per_s * float(np.exp(0.15 * self.rng.standard_normal()))
        return output_tokens / max(speed, 1.0)

    def output_chars(self, output_tokens: int) -> int:
        per_token = CHARS_PER_TOKEN * float(np.exp(0.08 * self.rng.standard_normal()))
        return max(0, round(output_tokens * per_token))

    def finish_reason(self, tool_share: float, filter_share: float = 0.004) -> str:
        u = self.rng.random()
        if u < filter_share:
            return "content_filter"
        if u < filter_share + tool_share:
            return "tool_calls"
        return "stop"

    def failed_attempts(self, effects: Effects, base: float = BASE_RETRY_PROBABILITY) -> int:
        """How many attempts fail before one succeeds; MAX_ATTEMPTS means all failed."""
        p = base if effects.retry_probability is None else effects.retry_probability
        failed = 0
        while failed < MAX_ATTEMPTS and self.chance(p):
            failed += 1
        return failed

    def error_type(self) -> str:
        return self.pick(ERROR_TYPES, _ERROR_WEIGHTS)


def output_tokens(
    traffic: Traffic, effects: Effects, median: float, sigma: float, max_tokens: int
) -> tuple[int, bool]:
    """Output tokens under the active incidents, and whether the limit cut them."""
    tokens = traffic.lognormal_int(median * effects.output_token_factor, sigma, hi=10 * max_tokens)
    limit = max_tokens
    if effects.truncate_factor is not None:
        # A lowered max_tokens or a bad stop sequence: answers are cut at a fraction of
        # their usual length.
        limit = min(limit, max(8, round(median * effects.truncate_factor)))
    if tokens >= limit:
        return limit, True
    return tokens, False


def with_retries(
    traffic: Traffic,
    effects: Effects,
    start_us: int,
    make_call: Callable[[int, int], SpanPlan],
    make_failure: Callable[[int, int, str], SpanPlan],
) -> tuple[list[SpanPlan], int]:
    """Failed attempts (with backoff) then the successful call; returns spans and end time.

    ``make_call(start_us, attempt)`` builds a successful attempt,
    ``make_failure(start_us, attempt, error_type)`` a failed one.
    """
    spans: list[SpanPlan] = []
    failed = traffic.failed_attempts(effects)
    t = start_us
    for attempt in range(failed):
        span = make_failure(t, attempt, traffic.error_type())
        spans.append(span)
        backoff = 0.5 * 2**attempt * (1 + traffic.rng.random())
        t = span.end_us + us(backoff)
    if failed < MAX_ATTEMPTS:
        span = make_call(t, failed)
        spans.append(span)
    return spans, spans[-1].end_us


def failure_duration_s(traffic: Traffic, error_type: str) -> float:
    if error_type == "APITimeoutError":
        return 10.0 + traffic.rng.random()
    return 0.05 + 0.3 * traffic.rng.random()


def failed_call(call: LlmCall, error_type: str, attempt: int) -> LlmCall:
    """The same request, failed: no usage, no output."""
    return LlmCall(
        operation=call.operation,
        provider=call.provider,
        request_model=call.request_model,
        response_model="",
        retry_attempt=attempt,
        error_type=error_type,
        agent=call.agent,
        model_version=call.model_version,
        app_context=call.app_context,
    )


def error_status(span: SpanPlan, error_type: str) -> SpanPlan:
    span.status = "error"
    span.status_message = error_type
    span.attributes.setdefault(a.ERROR_TYPE, error_type)
    return span
