"""Expand a panel's SQL the way Grafana and the ClickHouse plugin do, for a time range.

A panel's ``rawSql`` goes through three steps before ClickHouse sees it:

1. the plugin's frontend replaces ``$__conditionalAll(cond, $var)``: ``cond`` when the
   variable has a concrete selection, ``1=1`` when it is All (``$__all``) or empty. Occurrences
   are handled from the last to the first; arguments split at commas outside parentheses;
2. Grafana replaces template variables (``$var``, ``${var}``, ``${var:singlequote}``,
   ``[[var]]``). Without a format the plugin's own formatter applies: a multi-value selection
   becomes ``'a','b'``, a single value is inserted as is;
3. the plugin's backend (sqlds) expands its macros, each ``$__name`` followed by an optional
   balanced ``(args)``: ``$__timeFilter(col)`` -> ``col >= toDateTime(from) AND col <=
   toDateTime(to)``, ``$__timeInterval(col)`` -> ``toStartOfInterval(toDateTime(col), INTERVAL
   n second)``, ``$__fromTime`` / ``$__toTime`` -> ``toDateTime(unix_s)``, ``$__interval_s`` ->
   ``n`` (at least 1), plus the ``_ms`` and date variants.

Where Grafana would silently send broken SQL (a variable that does not exist, All outside
``$__conditionalAll``, a macro with the wrong argument count) this raises :class:`MacroError`,
so tests catch it before a dashboard does. So it does for a value no variable format can carry
into SQL intact: ``singlequote`` escapes quotes but not backslashes (a value ending in a
backslash ends the literal early, a backslash before a quote escapes it), the plugin's
backend expands ``$__`` macros inside literals too, and the other formats do not escape at
all. The normalizer keeps every name that reaches a dashboard free of such characters
(:data:`schemas.event.UNSAFE_NAME_CHAR`), and the static report, which expands through here,
refuses a hand-typed one.

>>> tr = TimeRange(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 1, tzinfo=UTC), 60)
>>> sql = expand("SELECT $__timeInterval(ts) AS t FROM x WHERE $__timeFilter(ts)"
...             " AND $__conditionalAll(w IN (${workflow:singlequote}), $workflow)",
...             tr, {"workflow": ALL})
>>> print(*sql.split(" WHERE "), sep=" WHERE" + chr(10))
SELECT toStartOfInterval(toDateTime(ts), INTERVAL 60 second) AS t FROM x WHERE
ts >= toDateTime(1767225600) AND ts <= toDateTime(1767229200) AND 1=1
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from driftline.schemas.event import UNSAFE_NAME_CHAR

ALL: Final = "$__all"  # the value Grafana gives a variable whose selection is All

VariableValue = str | Sequence[str]
Variables = Mapping[str, VariableValue]

# Intervals a report may pick (seconds): the per-minute rollups make one minute the floor.
NICE_INTERVALS_S: Final = (
    60,
    120,
    300,
    600,
    900,
    1200,
    1800,
    3600,
    7200,
    10800,
    21600,
    43200,
    86400,
    604800,
)


class MacroError(ValueError):
    """A panel query that Grafana or the plugin could not turn into valid SQL."""


@dataclass(frozen=True, slots=True)
class TimeRange:
    """The dashboard time range and the interval Grafana would pick for a panel."""

    start: datetime
    end: datetime
    interval_s: int = 60

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("TimeRange needs timezone-aware datetimes (use tzinfo=UTC)")
        if self.end <= self.start:
            raise ValueError(f"TimeRange end {self.end} must be after start {self.start}")

    @classmethod
    def between(cls, start: datetime, end: datetime, max_points: int = 240) -> TimeRange:
        """A range with the smallest nice interval giving at most ``max_points`` buckets.

        >>> t0 = datetime(2026, 1, 1, tzinfo=UTC)
        >>> TimeRange.between(t0, t0 + timedelta(hours=6)).interval_s
        120
        """
        span_s = (end - start).total_seconds()
        wanted = span_s / max(max_points, 1)
        interval = next((s for s in NICE_INTERVALS_S if s >= wanted), NICE_INTERVALS_S[-1])
        return cls(start, end, interval)

    @classmethod
    def last(cls, duration: timedelta, now: datetime | None = None) -> TimeRange:
        end = now or datetime.now(UTC)
        return cls.between(end - duration, end)


def expand(sql: str, time_range: TimeRange, variables: Variables | None = None) -> str:
    """``sql`` as ClickHouse receives it from a dashboard with these variables and range."""
    variables = variables or {}
    sql = apply_conditional_all(sql, variables)
    sql = interpolate_variables(sql, variables)
    return apply_macros(sql, time_range)


# -- step 1: $__conditionalAll (plugin frontend) -------------------------------------------

_CONDITIONAL_ALL: Final = "$__conditionalAll("


def apply_conditional_all(sql: str, variables: Variables) -> str:
    """Replace each ``$__conditionalAll(cond, $var)``, last occurrence first.

    >>> apply_conditional_all("a AND $__conditionalAll(f(x, y) = 1, $v)", {"v": ["q"]})
    'a AND f(x, y) = 1'
    >>> apply_conditional_all("$__conditionalAll(x = 1, $v)", {"v": [ALL]})
    '1=1'
    """
    index = sql.rfind(_CONDITIONAL_ALL)
    while index != -1:
        args, end = _split_args(sql, index + len(_CONDITIONAL_ALL) - 1)
        if len(args) != 2:
            raise MacroError(
                f"$__conditionalAll takes (condition, $variable), got {len(args)} argument(s) "
                f"at: {sql[index : index + 80]!r}"
            )
        condition, variable = args[0], args[1].strip()
        name = variable[1:]
        phrase = condition
        if name in variables and _as_text(variables[name]) in ("", ALL):
            phrase = "1=1"
        sql = sql[:index] + phrase + sql[end:]
        index = sql.rfind(_CONDITIONAL_ALL)
    return sql


def _as_text(value: VariableValue) -> str:
    # JavaScript's Array.prototype.toString: elements joined by commas.
    return value if isinstance(value, str) else ",".join(value)


def _split_args(sql: str, open_index: int) -> tuple[list[str], int]:
    """Arguments of the parenthesized list opening at ``open_index``, and the index after it.

    Commas split arguments only at depth one; arguments keep their whitespace.
    """
    depth = 0
    args: list[str] = []
    start = open_index + 1
    for i in range(open_index, len(sql)):
        char = sql[i]
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                args.append(sql[start:i])
                return args, i + 1
        elif char == "," and depth == 1:
            args.append(sql[start:i])
            start = i + 1
    raise MacroError(f"unbalanced parentheses after: {sql[max(open_index - 20, 0) :][:80]!r}")


# -- step 2: template variables (Grafana) -------------------------------------------------

_VARIABLE: Final = re.compile(
    r"\$(?P<plain>\w+)|\[\[(?P<old>\w+?)(?::(?P<oldfmt>\w+))?\]\]"
    r"|\$\{(?P<braced>\w+)(?::(?P<fmt>[^}]+))?\}"
)


def interpolate_variables(sql: str, variables: Variables) -> str:
    """Replace template variables; ``$__`` names are macros and stay for step 3.

    >>> interpolate_variables("w IN (${w:singlequote}) AND m = $m", {"w": ["a", "b'c"], "m": "x"})
    "w IN ('a','b\\\\'c') AND m = x"
    """

    def replace(match: re.Match[str]) -> str:
        name = match["plain"] or match["old"] or match["braced"]
        fmt = match["oldfmt"] or match["fmt"]
        if name.startswith("__"):
            return match[0]
        if name not in variables:
            raise MacroError(
                f"the query uses ${name}, which is not a dashboard variable "
                f"(known: {', '.join(sorted(variables)) or 'none'})"
            )
        value = variables[name]
        values = [value] if isinstance(value, str) else list(value)
        if ALL in values:
            raise MacroError(
                f"${name} is All here; wrap its condition in $__conditionalAll(..., ${name})"
            )
        for one in values:
            _check_value(one, fmt, name)
        return _format(values, multi=not isinstance(value, str), fmt=fmt, name=name)

    return _VARIABLE.sub(replace, sql)


# What ${var:singlequote} cannot carry: a backslash (ClickHouse's escape character, which the
# format leaves alone) and "$" (the plugin's backend expands macros inside literals).
_UNQUOTABLE: Final = re.compile(r"[\\$]")


def _check_value(value: str, fmt: str | None, name: str) -> None:
    found = (_UNQUOTABLE if fmt == "singlequote" else UNSAFE_NAME_CHAR).search(value)
    if found:
        raise MacroError(
            f"${name} = {value!r} holds {found[0]!r}, which the {fmt or 'default'} format "
            "cannot carry into SQL intact; names from spans never hold it (the normalizer "
            "makes them safe)"
        )


def _format(values: list[str], *, multi: bool, fmt: str | None, name: str) -> str:
    if fmt is None:
        # The plugin's formatter: quote multi-value selections, insert single values raw.
        return "'" + "','".join(values) + "'" if multi else values[0]
    if fmt == "singlequote":
        return ",".join("'" + v.replace("'", "\\'") + "'" for v in values)
    if fmt == "raw":
        return ",".join(values)
    if fmt == "csv":
        return ",".join(values)
    raise MacroError(f"${{{name}:{fmt}}}: format {fmt!r} is not supported here")


# -- step 3: plugin macros (backend) ------------------------------------------------------

_MACRO: Final = re.compile(r"\$__(\w+)")


def apply_macros(sql: str, time_range: TimeRange) -> str:
    """Expand the plugin's ``$__`` macros, left to right.

    >>> tr = TimeRange(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC), 300)
    >>> for part in apply_macros("$__fromTime_ms; $__interval_s; $__dateFilter(d)", tr).split("; "):
    ...     print(part)
    fromUnixTimestamp64Milli(1767225600000)
    300
    d >= toDate('2026-01-01') AND d <= toDate('2026-01-02')
    """
    out: list[str] = []
    position = 0
    for match in _MACRO.finditer(sql):
        if match.start() < position:
            continue  # inside the arguments of a macro already expanded
        name = match[1]
        expander = _MACROS.get(name)
        if expander is None:
            raise MacroError(f"$__{name} is not a macro of the ClickHouse plugin")
        end = match.end()
        args: list[str] = []
        if sql.startswith("(", end):
            raw_args, end = _split_args(sql, end)
            args = [a.strip() for a in raw_args]
            if args == [""]:
                args = []
        out.append(sql[position : match.start()])
        out.append(expander(time_range, args, name))
        position = end
    out.append(sql[position:])
    return "".join(out)


def _seconds(t: datetime) -> int:
    return math.floor(t.timestamp())


def _date_time(t: datetime) -> str:
    return f"toDateTime({_seconds(t)})"


def _date_time64(t: datetime) -> str:
    return f"fromUnixTimestamp64Milli({math.floor(t.timestamp() * 1000)})"


def _date(t: datetime) -> str:
    return f"toDate('{t.astimezone(UTC):%Y-%m-%d}')"


def _expect(args: list[str], count: int, name: str) -> None:
    if len(args) != count:
        raise MacroError(f"$__{name} takes {count} argument(s), got {len(args)}: {args}")


def _between(render: Callable[[datetime], str]) -> Callable[[TimeRange, list[str], str], str]:
    def expand_filter(tr: TimeRange, args: list[str], name: str) -> str:
        _expect(args, 1, name)
        column = args[0]
        return f"{column} >= {render(tr.start)} AND {column} <= {render(tr.end)}"

    return expand_filter


def _constant(render: Callable[[TimeRange], str]) -> Callable[[TimeRange, list[str], str], str]:
    def expand_constant(tr: TimeRange, args: list[str], name: str) -> str:
        _expect(args, 0, name)
        return render(tr)

    return expand_constant


def _date_time_filter(tr: TimeRange, args: list[str], name: str) -> str:
    _expect(args, 2, name)
    date_column, time_column = args
    return (
        f"({date_column} >= {_date(tr.start)} AND {date_column} <= {_date(tr.end)}) AND "
        f"({time_column} >= {_date_time(tr.start)} AND {time_column} <= {_date_time(tr.end)})"
    )


def _time_interval(tr: TimeRange, args: list[str], name: str) -> str:
    _expect(args, 1, name)
    return f"toStartOfInterval(toDateTime({args[0]}), INTERVAL {max(tr.interval_s, 1)} second)"


def _time_interval_ms(tr: TimeRange, args: list[str], name: str) -> str:
    _expect(args, 1, name)
    ms = max(tr.interval_s * 1000, 1)
    return f"toStartOfInterval(toDateTime64({args[0]}, 3), INTERVAL {ms} millisecond)"


_MACROS: Final[dict[str, Callable[[TimeRange, list[str], str], str]]] = {
    "fromTime": _constant(lambda tr: _date_time(tr.start)),
    "toTime": _constant(lambda tr: _date_time(tr.end)),
    "fromTime_ms": _constant(lambda tr: _date_time64(tr.start)),
    "toTime_ms": _constant(lambda tr: _date_time64(tr.end)),
    "timeFilter": _between(_date_time),
    "timeFilter_ms": _between(_date_time64),
    "dateFilter": _between(_date),
    "dateTimeFilter": _date_time_filter,
    "dt": _date_time_filter,
    "timeInterval": _time_interval,
    "timeInterval_ms": _time_interval_ms,
    "interval_s": _constant(lambda tr: str(max(tr.interval_s, 1))),
}
MACRO_NAMES: Final = tuple(_MACROS)
