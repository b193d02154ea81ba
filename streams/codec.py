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

_OPTIONS: Final = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON.

    >>> dumps({"a": [1, 2.5, None], "é": "ü"})
    b'{"a":[1,2.5,null],"\\xc3\\xa9":"\\xc3\\xbc"}'
    """
    return orjson.dumps(obj, option=_OPTIONS)


def loads(data: bytes | str) -> Any:
    return orjson.loads(data)
