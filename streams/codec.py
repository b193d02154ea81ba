"""JSON between the stream's stages and in its state tables: one encoder, a fast one.

Every span crosses two internal topics and every event is decoded by two agents, so this
encoding was about half of a worker's CPU with the standard library's ``json`` (profiled on
``bench/bench_pipeline.py``); orjson does the same work several times faster and writes
standard JSON (compact, UTF-8; a NaN becomes null).
"""

from __future__ import annotations

from typing import Any, Final

import orjson

__all__ = ["dumps", "loads"]

_OPTIONS: Final = orjson.OPT_SERIALIZE_NUMPY
# Keys that are not plain str (ints, enums, str subclasses) need OPT_NON_STR_KEYS, which
# makes every dump slower (1.3-1.5x on the worker's span and event batches, measured with
# orjson 3.13), so it is the fallback for the few values that have them, not the default:
# the bytes written are the same either way.
_NON_STR_KEYS: Final = _OPTIONS | orjson.OPT_NON_STR_KEYS


def dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON.

    >>> dumps({"a": [1, 2.5, None], "é": "ü"})
    b'{"a":[1,2.5,null],"\\xc3\\xa9":"\\xc3\\xbc"}'
    >>> dumps({1: "a", "b": {2: None}})
    b'{"1":"a","b":{"2":null}}'
    """
    try:
        return orjson.dumps(obj, option=_OPTIONS)
    except TypeError:
        return orjson.dumps(obj, option=_NON_STR_KEYS)


def loads(data: bytes | str) -> Any:
    return orjson.loads(data)
