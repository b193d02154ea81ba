"""Cost attribution: USD per LLM call from token counts and a price table.

Rates come from the ``genai-prices`` table, with per-model overrides from the
configuration (``[prices]``, USD per million tokens) taking precedence. Looking a
model up in ``genai-prices`` costs tens to hundreds of microseconds, so rates are
resolved once per (provider, model) and cached; pricing an event is then a few
multiplications.

Token accounting (DESIGN.md, "Usage and cost"): cache reads and cache writes are
part of ``input_tokens``, and reasoning tokens are part of ``output_tokens``::

    uncached = max(0, input - cache_read - cache_write)
    cost = uncached * input_rate + cache_read * cache_read_rate
           + cache_write * cache_write_rate + output * output_rate

A missing cache rate falls back to the input rate. A model that neither the
overrides nor ``genai-prices`` know is left unpriced (``cost_usd`` None,
``price_source`` "unknown") and counted in :attr:`PriceBook.unknown_models`.

Provider matching: a provider name that ``genai-prices`` does not know (for
example ``vllm``, a self-hosted server) is not guessed from the model name, since
a self-hosted model has no list price; an empty provider is matched by model name
alone. Self-hosted models get a cost through a configuration override.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

from genai_prices import data_snapshot
from genai_prices.data_snapshot import find_provider_by_id
from genai_prices.types import ModelInfo, ModelPrice, Provider, TieredPrices

from driftline.config import PriceOverride
from driftline.schemas.event import (
    PRICE_SOURCE_CONFIG,
    PRICE_SOURCE_GENAI_PRICES,
    PRICE_SOURCE_UNKNOWN,
)

__all__ = ["PriceBook", "Rates"]

_PER_MTOK: Final = 1_000_000
_COST_DECIMALS: Final = 12
# OpenTelemetry provider names that genai-prices spells differently.
_PROVIDER_ALIASES: Final = {
    "x_ai": "x-ai",
    "gcp.gen_ai": "google",
    "azure.ai.inference": "azure",
    "mistral_ai": "mistral",
}
# Prices that change with the time of the request (off-peak hours, announced
# changes) are resolved per minute of the request and kept in a bounded cache.
_TIMED_CACHE_MAX: Final = 4096
_MICROS_PER_MINUTE: Final = 60_000_000

# A rate as (threshold, USD per token) pairs, highest threshold first; the last
# pair has threshold -1 (the base rate). genai-prices tiers are "cliff" tiers: once
# the request's input tokens exceed a threshold, that tier's rate applies to all
# tokens of that kind.
Rate = tuple[tuple[int, float], ...]


@dataclass(frozen=True, slots=True)
class Rates:
    """Resolved USD-per-token rates of one model."""

    input: Rate
    output: Rate
    cache_read: Rate
    cache_write: Rate
    per_request: float
    source: str

    def cost(
        self, input_tokens: int, output_tokens: int, cache_read: int, cache_write: int
    ) -> float:
        """USD for one call; token counts below zero count as zero."""
        input_tokens = max(input_tokens, 0)
        cache_read = max(cache_read, 0)
        cache_write = max(cache_write, 0)
        uncached = max(input_tokens - cache_read - cache_write, 0)
        return (
            uncached * _rate_at(self.input, input_tokens)
            + cache_read * _rate_at(self.cache_read, input_tokens)
            + cache_write * _rate_at(self.cache_write, input_tokens)
            + max(output_tokens, 0) * _rate_at(self.output, input_tokens)
            + self.per_request
        )


def _rate_at(rate: Rate, input_tokens: int) -> float:
    for threshold, per_token in rate:
        if input_tokens > threshold:
            return per_token
    return rate[-1][1]


def _flat(per_mtok: float) -> Rate:
    return ((-1, per_mtok / _PER_MTOK),)


def _from_genai(value: Decimal | TieredPrices) -> Rate:
    if isinstance(value, TieredPrices):
        tiers = [(t.start, float(t.price) / _PER_MTOK) for t in value.tiers]
        tiers.sort(reverse=True)
        return (*tiers, (-1, float(value.base) / _PER_MTOK))
    return _flat(float(value))


def rates_from_override(override: PriceOverride) -> Rates:
    """Rates from a configuration override (USD per million tokens)."""
    cache_read = override.cache_read_per_mtok
    cache_write = override.cache_write_per_mtok
    return Rates(
        input=_flat(override.input_per_mtok),
        output=_flat(override.output_per_mtok),
        cache_read=_flat(override.input_per_mtok if cache_read is None else cache_read),
        cache_write=_flat(override.input_per_mtok if cache_write is None else cache_write),
        per_request=0.0,
        source=PRICE_SOURCE_CONFIG,
    )


def rates_from_model_price(price: ModelPrice) -> Rates:
    """Rates from a genai-prices ``ModelPrice``; absent cache rates fall back to input."""
    zero: Decimal = Decimal(0)
    input_rate = _from_genai(price.input_mtok if price.input_mtok is not None else zero)
    cache_read = price.cache_read_mtok
    # Anthropic lists the 5-minute cache write as cache_write_mtok; some models only
    # carry the explicit 5-minute key.
    cache_write = price.cache_write_mtok
    if cache_write is None:
        cache_write = price.cache_write_5m_mtok
    requests = price.requests_kcount
    per_request = 0.0
    if isinstance(requests, Decimal):
        per_request = float(requests) / 1000
    return Rates(
        input=input_rate,
        output=_from_genai(price.output_mtok if price.output_mtok is not None else zero),
        cache_read=input_rate if cache_read is None else _from_genai(cache_read),
        cache_write=input_rate if cache_write is None else _from_genai(cache_write),
        per_request=per_request,
        source=PRICE_SOURCE_GENAI_PRICES,
    )


@dataclass(frozen=True, slots=True)
class _TimedModel:
    """A genai-prices model whose price depends on the request time."""

    model: ModelInfo


_Resolved = Rates | _TimedModel | None


class PriceBook:
    """Fills ``cost_usd`` and ``price_source`` of normalized events.

    Parameters
    ----------
    overrides
        Model name -> :class:`driftline.config.PriceOverride`; an override wins
        over ``genai-prices`` for any provider. Names match exactly, then
        case-insensitively.

    Examples
    --------
    >>> from driftline.config import PriceOverride
    >>> book = PriceBook({"house-llm": PriceOverride(input_per_mtok=1.0, output_per_mtok=2.0)})
    >>> event = {"provider": "vllm", "request_model": "house-llm", "response_model": "",
    ...          "input_tokens": 1000, "output_tokens": 500, "cache_read_tokens": 0,
    ...          "cache_write_tokens": 0, "start_ts": 0}
    >>> book.apply([event])
    >>> event["cost_usd"], event["price_source"]
    (0.002, 'config')
    """

    def __init__(self, overrides: Mapping[str, PriceOverride] | None = None) -> None:
        self.overrides: dict[str, PriceOverride] = dict(overrides or {})
        self._override_rates = {name: rates_from_override(o) for name, o in self.overrides.items()}
        self._override_rates_lower = {
            name.lower(): rates for name, rates in self._override_rates.items()
        }
        self._resolved: dict[tuple[str, str], _Resolved] = {}
        self._timed: dict[tuple[str, int], Rates] = {}
        self.unknown_models: Counter[tuple[str, str]] = Counter()

    def apply(self, events: list[dict[str, Any]]) -> None:
        """Fill ``cost_usd`` and ``price_source`` of each event in place."""
        for event in events:
            provider = event.get("provider") or ""
            response_model = event.get("response_model") or ""
            request_model = event.get("request_model") or ""
            rates = self._rates_for(provider, response_model, event)
            if rates is None and request_model and request_model != response_model:
                rates = self._rates_for(provider, request_model, event)
            if rates is None:
                event["cost_usd"] = None
                event["price_source"] = PRICE_SOURCE_UNKNOWN
                self.unknown_models[(provider, response_model or request_model)] += 1
                continue
            cost = rates.cost(
                event.get("input_tokens") or 0,
                event.get("output_tokens") or 0,
                event.get("cache_read_tokens") or 0,
                event.get("cache_write_tokens") or 0,
            )
            # Rounding hides float noise (0.0045000000000000005) far below a cent.
            event["cost_usd"] = round(cost, _COST_DECIMALS)
            event["price_source"] = rates.source

    def rates(self, provider: str, model: str, at: datetime | None = None) -> Rates | None:
        """The rates used for ``model`` served by ``provider``; None when unknown."""
        at_us = int((at or datetime.now(UTC)).timestamp() * 1_000_000)
        return self._rates_for(provider, model, {"start_ts": at_us})

    def _rates_for(self, provider: str, model: str, event: Mapping[str, Any]) -> Rates | None:
        if not model:
            return None
        key = (provider, model)
        try:
            resolved = self._resolved[key]
        except KeyError:
            resolved = self._resolved[key] = self._resolve(provider, model)
        if isinstance(resolved, _TimedModel):
            return self._timed_rates(resolved.model, int(event.get("start_ts") or 0))
        return resolved

    def _resolve(self, provider: str, model: str) -> _Resolved:
        override = self._override_rates.get(model) or self._override_rates_lower.get(model.lower())
        if override is not None:
            return override
        info = _find_model(provider, model)
        if info is None:
            return None
        if isinstance(info.prices, ModelPrice):
            return rates_from_model_price(info.prices)
        return _TimedModel(info)

    def _timed_rates(self, model: ModelInfo, start_us: int) -> Rates:
        minute = start_us // _MICROS_PER_MINUTE
        key = (model.id, minute)
        rates = self._timed.get(key)
        if rates is None:
            if len(self._timed) >= _TIMED_CACHE_MAX:
                self._timed.clear()
            at = datetime.fromtimestamp(minute * 60, tz=UTC)
            rates = self._timed[key] = rates_from_model_price(model.get_prices(at))
        return rates


def _find_model(provider: str, model: str) -> ModelInfo | None:
    snapshot = data_snapshot.get_snapshot()
    provider_id = provider.strip().lower()
    found: Provider | None = None
    if provider_id:
        provider_id = _PROVIDER_ALIASES.get(provider_id, provider_id)
        found = find_provider_by_id(snapshot.providers, provider_id)
        if found is None:
            return None
    try:
        _, info = snapshot.find_provider_model(model, found, None, None)
    except LookupError:
        return None
    return info
