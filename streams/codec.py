"""JSON between the stream's stages and in its state tables: one encoder, a fast one.

Every span crosses two internal topics and every event is decoded by two agents, so this
encoding was about half of a worker's CPU with the standard library's ``json`` (profiled on
``bench/bench_pipeline.py``); orjson does the same work several times faster and writes
standard JSON (compact, UTF-8; a NaN becomes null).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any, Final

import orjson

__all__ = ["dumps", "encode_in_parts", "loads"]

_OPTIONS: Final = orjson.OPT_SERIALIZE_NUMPY
# Keys that are not plain str (ints, enums, str subclasses) need OPT_NON_STR_KEYS, which
# makes every dump slower (1.3-1.5x on the worker's span and event batches, measured with
# orjson 3.13), so it is the fallback for the few values that have them, not the default:
# the bytes written are the same either way.
_NON_STR_KEYS: Final = _OPTIONS | orjson.OPT_NON_STR_KEYS
# Parts of a batch too large for one message are sized to this share of the limit, from the
# whole batch's bytes per item: items differ in size, and a part that still comes out too
# large is halved.
_FILL: Final = 0.8
# A batch this large is sized from samples of it (beginning, middle and end: decode's
# batches hold the calls of each source message before its other spans) rather than from
# encoding it whole first; below it the whole is encoded first (it may fit).
SAMPLED_FROM: Final = 2048
_SAMPLE: Final = 64


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


def encode_in_parts(count: int, encode: Callable[[int, int], bytes], limit: int) -> list[bytes]:
    """``encode(start, end)`` of consecutive ranges covering ``range(count)``, in order, each
    value at most ``limit`` bytes unless it is one item alone (sent as it is: the producer
    refuses it loudly).

    The whole batch is encoded once; if it is too large, it is cut into as many equal parts
    as its size asks for. Halving it until every half fit, as the stages did, encoded a batch
    16 times too large five times over (about 5% of a worker's CPU on
    ``bench/bench_pipeline.py``'s batches); this encodes it about twice. A batch of
    ``SAMPLED_FROM`` items or more (a backlog's) is sized from three samples of its items
    instead, and encoded about once.

    >>> items = [str(i) * 10 for i in range(100)]
    >>> parts = encode_in_parts(100, lambda i, j: dumps(items[i:j]), 300)
    >>> all(len(p) <= 300 for p in parts), [x for p in parts for x in loads(p)] == items
    (True, True)
    >>> len(parts), len(encode_in_parts(100, lambda i, j: dumps(items[i:j]), 10**6))
    (10, 1)
    >>> encode_in_parts(1, lambda i, j: dumps(["x" * 50][i:j]), 10)  # one item over the limit
    [b'["xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"]']
    """
    if count >= SAMPLED_FROM:
        starts = (0, (count - _SAMPLE) // 2, count - _SAMPLE)
        per_item = sum(len(encode(i, i + _SAMPLE)) for i in starts) / (3 * _SAMPLE)
        if per_item * count > limit:
            return _in_parts(count, per_item, encode, limit)
    whole = encode(0, count)
    if len(whole) <= limit or count <= 1:
        return [whole]
    return _in_parts(count, len(whole) / count, encode, limit)


def _in_parts(
    count: int, per_item: float, encode: Callable[[int, int], bytes], limit: int
) -> list[bytes]:
    # Items per part from the bytes per item, then parts of even counts, none larger.
    per_part = max(int(limit * _FILL / per_item), 1)
    parts = math.ceil(count / per_part)
    bounds = [count * k // parts for k in range(parts + 1)]
    out: list[bytes] = []
    for start, end in itertools.pairwise(bounds):
        out += _halved(start, end, encode, limit)
    return out


def _halved(start: int, end: int, encode: Callable[[int, int], bytes], limit: int) -> list[bytes]:
    value = encode(start, end)
    if len(value) <= limit or end - start <= 1:
        return [value]
    middle = (start + end) // 2
    return _halved(start, middle, encode, limit) + _halved(middle, end, encode, limit)
