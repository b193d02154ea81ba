"""streams.codec writes the same bytes whether or not a value has keys that are not str."""

from __future__ import annotations

import enum
from typing import Any

import numpy as np
import orjson
import pytest

from driftline.streams.codec import dumps, loads

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
