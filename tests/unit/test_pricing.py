"""Cost attribution: hand-computed costs, overrides, cache tokens, unknown models."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from genai_prices import Usage, calc_price
from hypothesis import given
from hypothesis import strategies as st

from driftline.config import PriceOverride
from driftline.schemas.event import (
    PRICE_SOURCE_CONFIG,
    PRICE_SOURCE_GENAI_PRICES,
    PRICE_SOURCE_UNKNOWN,
)
from driftline.streams.pricing import PriceBook

# 2025-06-01 12:00 UTC, outside any off-peak window.
START_TS = 1_748_779_200_000_000


def event(
    provider: str,
    model: str,
    *,
    input_tokens: int = 0,
    output_tokens: int = 0,
    cache_read: int = 0,
    cache_write: int = 0,
    reasoning: int = 0,
    request_model: str | None = None,
) -> dict[str, Any]:
    return {
        "provider": provider,
        "request_model": model if request_model is None else request_model,
        "response_model": model,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_read_tokens": cache_read,
        "cache_write_tokens": cache_write,
        "reasoning_tokens": reasoning,
        "start_ts": START_TS,
        "cost_usd": None,
        "price_source": "",
    }


def override(
    input_per_mtok: float,
    output_per_mtok: float,
    cache_read_per_mtok: float | None = None,
    cache_write_per_mtok: float | None = None,
) -> PriceOverride:
    return PriceOverride.model_validate(
        {
            "input_per_mtok": input_per_mtok,
            "output_per_mtok": output_per_mtok,
            "cache_read_per_mtok": cache_read_per_mtok,
            "cache_write_per_mtok": cache_write_per_mtok,
        }
    )


def priced(book: PriceBook, e: dict[str, Any]) -> dict[str, Any]:
    book.apply([e])
    return e


# Rates below are those of the genai-prices table (USD per million tokens):
# gpt-4o input 2.5, cached input 1.25, output 10;
# claude-sonnet-4-5 input 3 / 6 above 200k input tokens, cache read 0.3 / 0.6,
# cache write 3.75 / 7.5, output 15 / 22.5.


def test_gpt_4o_plain_call() -> None:
    e = priced(PriceBook(), event("openai", "gpt-4o", input_tokens=1000, output_tokens=200))
    # 1000 * 2.5e-6 + 200 * 10e-6
    assert e["cost_usd"] == pytest.approx(0.0045)
    assert e["price_source"] == PRICE_SOURCE_GENAI_PRICES


def test_dated_response_model_matches_family() -> None:
    e = event("openai", "gpt-4o-2024-08-06", input_tokens=1_000_000)
    assert priced(PriceBook(), e)["cost_usd"] == pytest.approx(2.5)


def test_cache_reads_are_part_of_input_and_priced_at_cache_rate() -> None:
    e = priced(
        PriceBook(),
        event("openai", "gpt-4o", input_tokens=1000, cache_read=400, output_tokens=200),
    )
    # 600 uncached * 2.5e-6 + 400 cached * 1.25e-6 + 200 * 10e-6
    assert e["cost_usd"] == pytest.approx(0.0015 + 0.0005 + 0.002)


def test_anthropic_cache_write_and_long_context_tier() -> None:
    e = priced(
        PriceBook(),
        event(
            "anthropic",
            "claude-sonnet-4-5",
            input_tokens=250_000,
            cache_read=50_000,
            cache_write=10_000,
            output_tokens=1000,
        ),
    )
    # Above 200k input tokens every rate is the tier rate:
    # 190k * 6e-6 + 50k * 0.6e-6 + 10k * 7.5e-6 + 1k * 22.5e-6
    assert e["cost_usd"] == pytest.approx(1.14 + 0.03 + 0.075 + 0.0225)


def test_anthropic_below_tier() -> None:
    e = event("anthropic", "claude-sonnet-4-5", input_tokens=10_000, output_tokens=1000)
    # 10k * 3e-6 + 1k * 15e-6
    assert priced(PriceBook(), e)["cost_usd"] == pytest.approx(0.045)


@pytest.mark.parametrize(
    ("provider", "model", "usage"),
    [
        ("openai", "gpt-4o-mini", (12_345, 678, 2_000, 0)),
        ("anthropic", "claude-sonnet-4-5", (150_000, 4_000, 100_000, 20_000)),
        ("anthropic", "claude-sonnet-4-5", (300_000, 4_000, 100_000, 20_000)),
        ("google", "gemini-2.5-flash", (50_000, 3_000, 10_000, 0)),
        ("aws.bedrock", "anthropic.claude-3-5-sonnet-20240620-v1:0", (9_000, 900, 1_000, 500)),
    ],
)
def test_agrees_with_genai_prices_calc_price(
    provider: str, model: str, usage: tuple[int, int, int, int]
) -> None:
    input_tokens, output_tokens, cache_read, cache_write = usage
    e = event(
        provider,
        model,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read=cache_read,
        cache_write=cache_write,
    )
    reference = calc_price(
        Usage(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cache_read_tokens=cache_read,
            cache_write_tokens=cache_write,
        ),
        model,
        provider_id="aws" if provider == "aws.bedrock" else provider,
        genai_request_timestamp=datetime.fromtimestamp(START_TS / 1e6, tz=UTC),
    )
    assert priced(PriceBook(), e)["cost_usd"] == pytest.approx(float(reference.total_price))


def test_reasoning_tokens_are_not_added_twice() -> None:
    book = PriceBook()
    plain = priced(book, event("openai", "gpt-4o", input_tokens=100, output_tokens=500))
    with_reasoning = priced(
        book, event("openai", "gpt-4o", input_tokens=100, output_tokens=500, reasoning=400)
    )
    assert with_reasoning["cost_usd"] == plain["cost_usd"]


def test_override_wins_and_is_marked_config() -> None:
    book = PriceBook({"gpt-4o": override(input_per_mtok=1.0, output_per_mtok=4.0)})
    e = priced(book, event("openai", "gpt-4o", input_tokens=2000, output_tokens=500))
    assert e["cost_usd"] == pytest.approx(2000 * 1e-6 + 500 * 4e-6)
    assert e["price_source"] == PRICE_SOURCE_CONFIG


def test_override_cache_rates_and_their_fallback() -> None:
    overrides = {
        "house-llm": override(
            input_per_mtok=2.0,
            output_per_mtok=8.0,
            cache_read_per_mtok=0.5,
            cache_write_per_mtok=3.0,
        ),
        "house-small": override(input_per_mtok=2.0, output_per_mtok=8.0),
    }
    book = PriceBook(overrides)
    big = priced(
        book,
        event(
            "vllm",
            "house-llm",
            input_tokens=1000,
            cache_read=300,
            cache_write=200,
            output_tokens=10,
        ),
    )
    assert big["cost_usd"] == pytest.approx(500 * 2e-6 + 300 * 0.5e-6 + 200 * 3e-6 + 10 * 8e-6)
    small = priced(
        book,
        event("vllm", "house-small", input_tokens=1000, cache_read=300, cache_write=200),
    )
    # Missing cache rates fall back to the input rate: same as 1000 uncached tokens.
    assert small["cost_usd"] == pytest.approx(1000 * 2e-6)


def test_override_matches_request_model_when_response_model_unknown() -> None:
    book = PriceBook({"house-llm": override(input_per_mtok=1.0, output_per_mtok=1.0)})
    e = event("vllm", "house-llm-2025-01-01-build7", request_model="house-llm", input_tokens=10)
    assert priced(book, e)["cost_usd"] == pytest.approx(10e-6)


def test_unknown_model_is_unpriced_and_counted() -> None:
    book = PriceBook()
    events = [
        event("vllm", "meta-llama/Llama-3.1-8B-Instruct", input_tokens=100),
        event("vllm", "meta-llama/Llama-3.1-8B-Instruct", input_tokens=200),
        event("openai", "no-such-model-xyz", input_tokens=5),
        event("openai", "", request_model=""),
    ]
    book.apply(events)
    assert [e["cost_usd"] for e in events] == [None, None, None, None]
    assert {e["price_source"] for e in events} == {PRICE_SOURCE_UNKNOWN}
    assert book.unknown_models[("vllm", "meta-llama/Llama-3.1-8B-Instruct")] == 2
    assert book.unknown_models[("openai", "no-such-model-xyz")] == 1
    assert book.unknown_models[("openai", "")] == 1


def test_empty_provider_matches_by_model_name() -> None:
    e = priced(PriceBook(), event("", "gpt-4o", input_tokens=1_000_000))
    assert e["cost_usd"] == pytest.approx(2.5)


def test_semconv_provider_names_map_to_the_price_table() -> None:
    book = PriceBook()
    assert book.rates("azure.ai.openai", "gpt-4o") == book.rates("openai", "gpt-4o")
    assert book.rates("gcp.vertex_ai", "gemini-2.5-flash") is not None


def test_cache_tokens_beyond_input_never_price_negative() -> None:
    e = priced(PriceBook(), event("openai", "gpt-4o", input_tokens=100, cache_read=500))
    # Uncached clamps at zero; the reported cache reads are still charged.
    assert e["cost_usd"] == pytest.approx(500 * 1.25e-6)


def test_rates_are_resolved_once_per_provider_and_model() -> None:
    book = PriceBook()
    book.apply([event("openai", "gpt-4o", input_tokens=i) for i in range(50)])
    book.apply([event("anthropic", "claude-sonnet-4-5", input_tokens=i) for i in range(50)])
    assert set(book._resolved) == {("openai", "gpt-4o"), ("anthropic", "claude-sonnet-4-5")}


tokens = st.integers(min_value=-10, max_value=5_000_000)
models = st.sampled_from(
    [
        ("openai", "gpt-4o"),
        ("anthropic", "claude-sonnet-4-5"),
        ("google", "gemini-2.5-pro"),
        ("deepseek", "deepseek-chat"),
        ("vllm", "house-llm"),
    ]
)
BOOK = PriceBook({"house-llm": override(input_per_mtok=0.2, output_per_mtok=0.4)})


@given(models, tokens, tokens, tokens, tokens, st.integers(min_value=1, max_value=100_000))
def test_cost_never_negative_and_monotone_in_output(
    model: tuple[str, str],
    input_tokens: int,
    output_tokens: int,
    cache_read: int,
    cache_write: int,
    more_output: int,
) -> None:
    provider, name = model

    def call(output: int) -> dict[str, Any]:
        return event(
            provider,
            name,
            input_tokens=input_tokens,
            cache_read=cache_read,
            cache_write=cache_write,
            output_tokens=output,
        )

    less = priced(BOOK, call(output_tokens))
    more = priced(BOOK, call(output_tokens + more_output))
    assert less["cost_usd"] is not None and more["cost_usd"] is not None
    assert less["cost_usd"] >= 0
    assert more["cost_usd"] >= less["cost_usd"]


def test_time_of_day_prices_follow_the_request_time() -> None:
    # deepseek-chat: 0.27 in / 1.1 out per MTok 00:30-16:30 UTC, half that off-peak.
    book = PriceBook()
    peak = event("deepseek", "deepseek-chat", input_tokens=1_000_000, output_tokens=1_000_000)
    off_peak = dict(peak, start_ts=START_TS + 8 * 3600 * 1_000_000)  # 20:00 UTC
    book.apply([peak, off_peak])
    assert peak["cost_usd"] == pytest.approx(0.27 + 1.1)
    assert off_peak["cost_usd"] == pytest.approx(0.135 + 0.55)
