"""Write the base token rates of the models a store has seen into ``driftline.model_prices``.

The cache-savings query needs each model's input and cache rates; events carry only the
resulting cost. Rates come from a price book (``driftline.streams.pricing.PriceBook``: config
overrides over genai-prices); tiered rates are written at their base tier. The store layer sits
below the streams, so it asks only for the small interface below.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Protocol

import pyarrow as pa

from driftline.store.base import Store

Tiers = tuple[tuple[int, float], ...]


class ModelRates(Protocol):
    """USD per token of one model, each rate as (from_tokens, rate) tiers."""

    @property
    def input(self) -> Tiers: ...
    @property
    def output(self) -> Tiers: ...
    @property
    def cache_read(self) -> Tiers: ...
    @property
    def cache_write(self) -> Tiers: ...
    @property
    def source(self) -> str: ...


class RateBook(Protocol):
    def rates(self, provider: str, model: str) -> ModelRates | None: ...


PRICES_TABLE = "driftline.model_prices"
_PER_MTOK = 1_000_000


def _base(rate: Tiers) -> float:
    return rate[-1][1] * _PER_MTOK


def seen_models(store: Store) -> list[tuple[str, str]]:
    """Distinct (provider, model) pairs in llm_requests."""
    table = store.query("SELECT DISTINCT provider, model FROM driftline.llm_requests ORDER BY 1, 2")
    providers = table.column("provider").to_pylist()
    return list(zip(providers, table.column("model").to_pylist(), strict=True))


def write_model_prices(
    store: Store, book: RateBook, models: Iterable[tuple[str, str]] | None = None
) -> int:
    """Write rates for ``models`` (default: every model seen); return rows written."""
    rows: dict[str, list[object]] = {
        k: []
        for k in (
            "provider",
            "model",
            "input_per_mtok",
            "output_per_mtok",
            "cache_read_per_mtok",
            "cache_write_per_mtok",
            "source",
        )
    }
    for provider, model in seen_models(store) if models is None else models:
        rates = book.rates(provider, model)
        if rates is None:
            continue
        for name, value in (
            ("provider", provider),
            ("model", model),
            ("input_per_mtok", _base(rates.input)),
            ("output_per_mtok", _base(rates.output)),
            ("cache_read_per_mtok", _base(rates.cache_read)),
            ("cache_write_per_mtok", _base(rates.cache_write)),
            ("source", rates.source),
        ):
            rows[name].append(value)
    count = len(rows["model"])
    if count:
        now = datetime.now(UTC)
        table = pa.table({**rows, "updated_at": pa.array([now] * count, pa.timestamp("us", "UTC"))})
        store.insert_arrow(PRICES_TABLE, table)
    return count
