"""Random configuration files and environment variables through ``load_settings``.

Sections and keys are mostly real ones (misspelt or not), values of every TOML type and some
that no field takes (NaN, infinity, huge integers, nested tables, control characters).
Loading gives :class:`Settings` or a :class:`ConfigError` that names a field it was given;
never another exception.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from driftline.config import ENV_PREFIX, ConfigError, Settings, load_settings
from tests.fuzz.profiles import fuzz_settings
from tests.fuzz.strategies import INT64_MAX, INT64_MIN, hostile_text, mostly

pytestmark = pytest.mark.fuzz

SECTIONS: dict[str, tuple[str, ...]] = {
    name: tuple(annotation.model_fields)
    for name, info in Settings.model_fields.items()
    if isinstance(annotation := info.annotation, type) and issubclass(annotation, BaseModel)
}
_scalar = st.one_of(
    hostile_text,
    st.integers(INT64_MIN, INT64_MAX),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.sampled_from([0, -1, 1, 0.5, "", "localhost:9092", "chdb://var/store", "gpt-4o"]),
)
toml_value = st.recursive(
    _scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(hostile_text, inner, max_size=3)
    ),
    max_leaves=6,
)


@st.composite
def config_document(draw: st.DrawFn) -> dict[str, Any]:
    section_names = st.one_of(
        st.sampled_from(sorted(SECTIONS)), st.sampled_from(sorted(SECTIONS)).map(str.upper)
    )
    doc: dict[str, Any] = {}
    for section in draw(st.lists(mostly(section_names, hostile_text, 6), max_size=4)):
        fields = SECTIONS.get(section, ("key",))
        field_names = mostly(st.sampled_from(fields), hostile_text, 6)
        doc[section] = draw(st.dictionaries(field_names, toml_value, max_size=4))
    return doc


@st.composite
def environment(draw: st.DrawFn) -> dict[str, str]:
    """``DRIFTLINE_<SECTION>__<FIELD>`` variables (the documented override), some misspelt."""
    env: dict[str, str] = {}
    for section in draw(st.lists(st.sampled_from(sorted(SECTIONS)), max_size=3)):
        field = draw(
            mostly(
                st.sampled_from(SECTIONS[section]), st.from_regex(r"[A-Z]{1,8}", fullmatch=True), 6
            )
        )
        value = draw(
            st.one_of(
                hostile_text,
                st.integers().map(str),
                st.sampled_from(["nan", "inf", "[1,2]", "{}", "true"]),
            )
        )
        if "\x00" not in value:
            env[f"{ENV_PREFIX}{section}__{field}".upper()] = value
    return env


def _string(text: str) -> str:
    # JSON escapes are TOML's, but TOML also forbids a raw DEL and wants astral characters raw.
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007F")


def _toml(value: Any) -> str:
    """A TOML value (inline tables and arrays; JSON string escapes are valid TOML)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return "{" + ", ".join(f"{_string(k)} = {_toml(v)}" for k, v in value.items()) + "}"


def _document_text(doc: dict[str, Any]) -> str:
    lines = []
    for section, fields in doc.items():
        lines.append(f"[{_string(section)}]")
        lines.extend(f"{_string(key)} = {_toml(value)}" for key, value in fields.items())
    return "\n".join(lines) + "\n"


def _names(doc: dict[str, Any], env: dict[str, str]) -> set[str]:
    names = set(env)
    for section, fields in doc.items():
        names.add(section)
        names.update(fields)
    return names


@fuzz_settings(share=3.0)
@given(doc=config_document(), env=environment())
def test_loading_gives_settings_or_an_error_naming_a_field(
    doc: dict[str, Any], env: dict[str, str]
) -> None:
    with tempfile.TemporaryDirectory() as folder, pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.upper().startswith(ENV_PREFIX):
                patch.delenv(name)
        for name, value in env.items():
            patch.setenv(name, value)
        patch.chdir(folder)
        path = Path(folder) / "driftline.toml"
        path.write_text(_document_text(doc))
        try:
            loaded = load_settings(path)
        except ConfigError as exc:
            message = str(exc)
            named = _names(doc, env)
            # A blank key is named by the empty place it holds in "<section>.<key>: why".
            assert any(name in message for name in named if name.strip()) or (
                "TOML" in message or any(not name.strip() for name in named)
            ), message
        else:
            assert isinstance(loaded, Settings)


@pytest.mark.parametrize("name", ["DRIFTLINE_PAGERDUTY__ROUTES", "DRIFTLINE_WORKFLOWS"])
def test_a_variable_that_is_not_json_for_a_table_field_is_a_config_error(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in list(os.environ):
        if variable.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(variable)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(name, "x")

    with pytest.raises(ConfigError, match=name):
        load_settings()
