"""Printing outside text to a terminal: names from a configuration file, values from spans.

Either may hold control characters; printed raw, an escape sequence would retitle, clear or
reprogram the reader's terminal, and a right-to-left override would show a value as other
text. Every command prints such text through here.
"""

from __future__ import annotations

import re
import sys
from typing import Final

from driftline.config import ConfigError

# Control characters (C0, DEL, C1) a terminal may act on, and the text-direction overrides
# and isolates that make a value display as other text.
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def escape_controls(text: str) -> str:
    r"""``text`` with every C0 control character, DEL and C1 control character as ``\xNN``,
    and every text-direction override or isolate as ``\uNNNN``.

    Stored values come from spans; printed raw, an escape sequence in one would retitle,
    clear or reprogram the analyst's terminal, and a right-to-left override would show a
    value as other text.

    >>> print(escape_controls("a\x1b]0;title\x07b\tc\x9b"))
    a\x1b]0;title\x07b\x09c\x9b
    >>> print(escape_controls("cost\u202egpj.exe"))
    cost\u202egpj.exe
    """
    return _CONTROL.sub(_escaped, text)


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def print_config_error(exc: ConfigError) -> None:
    r"""A configuration error on stderr, one line each, control characters escaped (a
    ``[workflows]`` key or an environment value may hold anything).

    >>> import contextlib, io
    >>> err = io.StringIO()
    >>> with contextlib.redirect_stderr(err):
    ...     print_config_error(ConfigError("invalid configuration:", "  workflows.a\x1b[2J: bad"))
    >>> print(err.getvalue(), end="")
    invalid configuration:
      workflows.a\x1b[2J: bad
    """
    for line in exc.lines:
        print(escape_controls(line), file=sys.stderr)
