"""A strict reader of the Prometheus text format 0.0.4, for tests of the worker's /metrics."""

from __future__ import annotations

import re

Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]

NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL_VALUE = r'"(?:[^"\\\n]|\\[\\"n])*"'
SAMPLE = re.compile(
    rf"(?P<name>{NAME.pattern})"
    rf"(?:\{{(?P<labels>[a-zA-Z_][a-zA-Z0-9_]*={LABEL_VALUE}"
    rf"(?:,[a-zA-Z_][a-zA-Z0-9_]*={LABEL_VALUE})*)\}})?"
    r" (?P<value>-?[0-9.e+-]+|NaN|\+Inf|-Inf)"
)
_ESCAPE = re.compile(r"\\(.)")


def _unescape(match: re.Match[str]) -> str:
    return "\n" if match[1] == "n" else match[1]


def parse(text: str) -> Samples:
    """Samples by metric name and labels; asserts the text format 0.0.4 on the way.

    Each family has one HELP and one TYPE line, before its samples; counters end in _total;
    a histogram's samples are its _bucket (with le), _sum and _count series; no sample
    appears twice.
    """
    assert text.endswith("\n")
    out: Samples = {}
    typed: dict[str, str] = {}
    helped: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split(" ", 3)[2]
            assert NAME.fullmatch(name) and name not in helped, line
            helped.add(name)
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name in helped and name not in typed, line
            assert kind in ("counter", "gauge", "histogram"), line
            assert (kind == "counter") == name.endswith("_total"), line
            typed[name] = kind
            if kind == "histogram":
                for suffix in ("_bucket", "_sum", "_count"):
                    typed[name + suffix] = kind
            continue
        match = SAMPLE.fullmatch(line)
        assert match, f"not a sample line: {line!r}"
        name = match["name"]
        assert name in typed, f"sample before its TYPE: {line!r}"
        labels = tuple(
            (key, _ESCAPE.sub(_unescape, quoted[1:-1]))
            for key, quoted in re.findall(rf"([a-zA-Z_][a-zA-Z0-9_]*)=({LABEL_VALUE})", line)
        )
        if name.endswith("_bucket") and typed[name] == "histogram":
            assert labels and labels[-1][0] == "le", f"a bucket without le: {line!r}"
        samples = out.setdefault(name, {})
        assert labels not in samples, f"duplicate sample {line!r}"
        samples[labels] = float(match["value"])
    return out
