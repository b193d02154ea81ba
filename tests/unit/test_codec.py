"""streams.codec writes the same bytes whether or not a value has keys that are not str, and
cuts a batch into messages that fit, in order, encoding it about twice at most."""

from __future__ import annotations

import enum
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftline.streams.codec import SAMPLED_FROM, dumps, encode_in_parts, loads

_EVERY_KEY_KIND = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


class Kind(enum.Enum):
    SPAN = "span"


class Name(str):
    pass


@pytest.mark.parametrize(
    "value",
    [
        {"events": [{"span_id": "a", "start_ts": 1_700_000_000_000_000, "cost": 0.25}]},
        {"spans": [], "early": [True, False], "nested": {"x": [None, 1.5, "é"]}},
        {1: "int key", "b": {2: None, 3.5: "float key"}},
        {Kind.SPAN: "enum key"},
        {Name("subclass"): 1},
        {"array": np.arange(3, dtype=np.int64), "scalar": np.float64(2.5)},
        [float("nan"), {"k": float("inf")}],
    ],
)
def test_the_bytes_are_those_of_the_encoder_that_takes_every_key(value: Any) -> None:
    assert dumps(value) == orjson.dumps(value, option=_EVERY_KEY_KIND)


def test_a_value_that_cannot_be_encoded_still_raises() -> None:
    with pytest.raises(TypeError):
        dumps({"x": object()})


def test_round_trip() -> None:
    value = {"events": [{"span_id": "a", "tokens": 3}], "traces": []}
    assert loads(dumps(value)) == value


def _counting(items: list[str], encoded: list[int]) -> Any:
    def encode(start: int, end: int) -> bytes:
        value = dumps({"items": items[start:end]})
        encoded.append(len(value))
        return value

    return encode


@given(st.lists(st.text(max_size=300), max_size=400), st.integers(min_value=40, max_value=20_000))
def test_parts_keep_order_and_fit_the_limit(items: list[str], limit: int) -> None:
    values = encode_in_parts(len(items), _counting(items, []), limit)
    parts = [loads(v)["items"] for v in values]
    assert [x for part in parts for x in part] == items
    # Alone an item may exceed the limit; a message of two or more fits it.
    assert all(len(v) <= limit for v, part in zip(values, parts, strict=True) if len(part) > 1)


@settings(max_examples=30, deadline=None)
@given(
    st.integers(min_value=2_000, max_value=5_000),
    st.lists(st.sampled_from([0, 10, 300]), min_size=1, max_size=5),
    st.integers(min_value=300, max_value=200_000),
)
def test_a_large_batch_of_unlike_items_keeps_order_and_fits(
    count: int, sizes: list[int], limit: int
) -> None:
    """Sized from samples that may not look like the rest (runs of items of one size): a
    part that comes out too large is halved."""
    items = ["x" * sizes[i * len(sizes) // count] for i in range(count)]
    values = encode_in_parts(len(items), _counting(items, []), limit)
    parts = [loads(v)["items"] for v in values]
    assert [x for part in parts for x in part] == items
    assert all(len(v) <= limit for v, part in zip(values, parts, strict=True) if len(part) > 1)


@given(
    st.integers(min_value=0, max_value=6_000),
    st.integers(min_value=1, max_value=200),
    st.integers(min_value=1_000, max_value=500_000),
)
def test_a_batch_of_like_items_is_encoded_at_most_about_twice(
    count: int, size: int, limit: int
) -> None:
    items = ["x" * size] * count
    encoded: list[int] = []
    values = encode_in_parts(count, _counting(items, encoded), limit)
    whole = len(dumps({"items": items}))
    assert all(len(v) <= limit for v in values)
    assert [x for v in values for x in loads(v)["items"]] == items
    sampled = 3 if count >= SAMPLED_FROM else 0
    if whole <= limit:  # (a sampled batch that fits is encoded whole after its samples)
        assert encoded[sampled:] == [whole]
    elif sampled:  # three samples of 64 items, then each part once
        assert len(encoded) == 3 + len(values)
        assert sum(encoded) <= whole * (1 + 192 / count) + 16 * len(encoded)
    else:  # the whole once, then each part once (halving it encoded a 16x batch 5 times)
        assert len(encoded) == 1 + len(values)
        assert sum(encoded) <= 2 * whole + 16 * len(values)
