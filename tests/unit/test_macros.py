"""The macro expander follows the ClickHouse plugin's rules (pkg/macros, sqlds, CHDatasource)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from driftline.dashboards.macros import (
    ALL,
    MacroError,
    TimeRange,
    apply_conditional_all,
    apply_macros,
    expand,
    interpolate_variables,
)
from driftline.streams.normalize import safe_name

T0 = datetime(2026, 1, 1, 0, 0, 0, 700_000, tzinfo=UTC)  # sub-second: the plugin floors
RANGE = TimeRange(T0, T0 + timedelta(hours=1), 20)


def test_time_filter_floors_to_unix_seconds() -> None:
    assert apply_macros("WHERE $__timeFilter(ts)", RANGE) == (
        "WHERE ts >= toDateTime(1767225600) AND ts <= toDateTime(1767229200)"
    )


def test_from_and_to_without_parentheses() -> None:
    assert apply_macros("$__fromTime - INTERVAL 6 HOUR, $__toTime", RANGE) == (
        "toDateTime(1767225600) - INTERVAL 6 HOUR, toDateTime(1767229200)"
    )


def test_time_interval_and_interval_seconds() -> None:
    assert apply_macros("$__timeInterval(minute) AS t, $__interval_s", RANGE) == (
        "toStartOfInterval(toDateTime(minute), INTERVAL 20 second) AS t, 20"
    )


def test_interval_is_at_least_one_second() -> None:
    tr = TimeRange(T0, T0 + timedelta(seconds=10), 0)
    assert apply_macros("$__interval_s", tr) == "1"


def test_millisecond_and_date_variants() -> None:
    assert apply_macros("$__timeFilter_ms(ts)", RANGE) == (
        "ts >= fromUnixTimestamp64Milli(1767225600700)"
        " AND ts <= fromUnixTimestamp64Milli(1767229200700)"
    )
    assert apply_macros("$__dateFilter(d)", RANGE) == (
        "d >= toDate('2026-01-01') AND d <= toDate('2026-01-01')"
    )
    assert apply_macros("$__dt(d, t)", RANGE) == (
        "(d >= toDate('2026-01-01') AND d <= toDate('2026-01-01')) AND "
        "(t >= toDateTime(1767225600) AND t <= toDateTime(1767229200))"
    )


def test_macro_name_is_matched_whole() -> None:
    # $__timeFilter must not eat the prefix of $__timeFilter_ms (sqlds matches `\$__name\b`).
    out = apply_macros("$__timeFilter_ms(a) AND $__timeFilter(b)", RANGE)
    assert "fromUnixTimestamp64Milli" in out and "b >= toDateTime(" in out


def test_macro_arguments_may_nest_parentheses() -> None:
    assert apply_macros("$__timeInterval(toDateTime(x, 'UTC'))", RANGE) == (
        "toStartOfInterval(toDateTime(toDateTime(x, 'UTC')), INTERVAL 20 second)"
    )


@pytest.mark.parametrize(
    "sql",
    ["$__timeFilter()", "$__timeFilter(a, b)", "$__interval_s(x)", "$__nope(x)", "$__timeFilter(a"],
)
def test_bad_macros_are_refused(sql: str) -> None:
    with pytest.raises(MacroError):
        apply_macros(sql, RANGE)


def test_conditional_all_keeps_condition_for_a_selection() -> None:
    sql = "WHERE $__conditionalAll(w IN (${w:singlequote}), $w) AND x"
    assert apply_conditional_all(sql, {"w": ["a", "b"]}) == "WHERE w IN (${w:singlequote}) AND x"


@pytest.mark.parametrize("value", [[ALL], ALL, [], ""])
def test_conditional_all_is_one_equals_one_for_all_or_empty(value: list[str] | str) -> None:
    assert apply_conditional_all("WHERE $__conditionalAll(w IN ($w), $w)", {"w": value}) == (
        "WHERE 1=1"
    )


def test_conditional_all_handles_several_and_commas_inside_parentheses() -> None:
    sql = (
        "$__conditionalAll(f(a, b) IN (${w:singlequote}), $w) AND "
        "$__conditionalAll(m IN (${m:singlequote}), $m)"
    )
    assert apply_conditional_all(sql, {"w": ["x"], "m": [ALL]}) == (
        "f(a, b) IN (${w:singlequote}) AND 1=1"
    )


def test_conditional_all_with_wrong_arity_is_refused() -> None:
    with pytest.raises(MacroError):
        apply_conditional_all("$__conditionalAll(a, b, $w)", {"w": [ALL]})


def test_variables_singlequote_escapes_quotes() -> None:
    assert interpolate_variables("IN (${w:singlequote})", {"w": ["a", "o'b"]}) == (
        "IN ('a','o\\'b')"
    )


def test_variables_default_format_is_the_plugins() -> None:
    # multi-value selections are quoted and joined; a single value goes in raw
    assert interpolate_variables("$w / $m / [[m]] / ${m}", {"w": ["a", "b"], "m": "x"}) == (
        "'a','b' / x / x / x"
    )


def test_unknown_variable_and_bare_all_are_refused() -> None:
    with pytest.raises(MacroError, match="not a dashboard variable"):
        interpolate_variables("x = $nope", {})
    with pytest.raises(MacroError, match="conditionalAll"):
        interpolate_variables("w IN (${w:singlequote})", {"w": [ALL]})


def test_macros_survive_variable_interpolation() -> None:
    assert interpolate_variables("$__timeFilter(ts) AND $__interval_s", {}) == (
        "$__timeFilter(ts) AND $__interval_s"
    )


def test_expand_applies_the_steps_in_the_plugins_order() -> None:
    sql = (
        "SELECT $__timeInterval(ts) FROM t WHERE $__timeFilter(ts)"
        " AND $__conditionalAll(w IN (${w:singlequote}), $w)"
    )
    assert expand(sql, RANGE, {"w": ["a"]}) == (
        "SELECT toStartOfInterval(toDateTime(ts), INTERVAL 20 second) FROM t"
        " WHERE ts >= toDateTime(1767225600) AND ts <= toDateTime(1767229200) AND w IN ('a')"
    )


def test_time_range_interval_is_nice_and_bounded() -> None:
    assert TimeRange.between(T0, T0 + timedelta(minutes=30)).interval_s == 60
    assert TimeRange.between(T0, T0 + timedelta(days=1)).interval_s == 600
    with pytest.raises(ValueError):
        TimeRange(T0, T0)
    with pytest.raises(ValueError):
        TimeRange(T0.replace(tzinfo=None), T0 + timedelta(hours=1))


@given(st.lists(st.text(alphabet="ab',()x", max_size=6), min_size=1, max_size=4))
def test_singlequote_output_is_a_valid_string_list(values: list[str]) -> None:
    out = interpolate_variables("${w:singlequote}", {"w": values})
    # every value is quoted, and no unescaped quote can end a literal early
    assert out.count("'") - out.count("\\'") == 2 * len(values)


@pytest.mark.parametrize(
    "value", ["a\\", "zz\\' ) OR 1=1 --", "x\\') OR 1=throwIf(1) --", "$__fromTime", "a$workflow"]
)
def test_values_singlequote_cannot_carry_are_refused(value: str) -> None:
    # Grafana would send them: a trailing backslash escapes the closing quote, a backslash
    # before a quote turns the escape around, and $ is expanded inside the literal.
    with pytest.raises(MacroError, match="cannot carry"):
        interpolate_variables("w IN (${w:singlequote})", {"w": ["ok", value]})


@pytest.mark.parametrize("sql", ["w = $w", "w = ${w}", "w IN (${w:csv})", "w = [[w]]"])
def test_formats_without_escaping_refuse_any_unsafe_character(sql: str) -> None:
    with pytest.raises(MacroError, match="cannot carry"):
        interpolate_variables(sql, {"w": ["x' OR 1=1 --"]})


@given(st.lists(st.text(max_size=30), min_size=1, max_size=4))
def test_every_name_the_normalizer_gives_passes_every_format(texts: list[str]) -> None:
    names = [safe_name(text, "workflow", {}) for text in texts]
    for fmt in ("singlequote", "csv", "raw"):
        interpolate_variables(f"${{w:{fmt}}}", {"w": names})
    out = interpolate_variables("${w:singlequote}", {"w": names})
    assert out == ",".join(f"'{name}'" for name in names)  # nothing needed escaping
