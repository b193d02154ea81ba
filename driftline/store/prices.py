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

from driftline.schemas.tables import MODEL_PRICES
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


PRICES_TABLE = MODEL_PRICES.name
_PER_MTOK = 1_000_000
_ARROW_TYPES = {"str": pa.string(), "float": pa.float64(), "ts": pa.timestamp("us", "UTC")}
# The table's columns in order, typed as its fields say.
_SCHEMA = pa.schema([(f.name, _ARROW_TYPES[f.kind]) for f in MODEL_PRICES.fields])


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
    rows: list[dict[str, object]] = []
    now = datetime.now(UTC)
    for provider, model in seen_models(store) if models is None else models:
        rates = book.rates(provider, model)
        if rates is None:
            continue
        rows.append(
            {
                "provider": provider,
                "model": model,
                "input_per_mtok": _base(rates.input),
                "output_per_mtok": _base(rates.output),
                "cache_read_per_mtok": _base(rates.cache_read),
                "cache_write_per_mtok": _base(rates.cache_write),
                "source": rates.source,
                "updated_at": now,
            }
        )
    if rows:
        store.insert_arrow(PRICES_TABLE, pa.Table.from_pylist(rows, _SCHEMA))
    return len(rows)
