"""Exit codes shared by every ``driftline`` command, and the text their ``--help`` shows.

Scripts and CI can tell "ran and found nothing" from "could not run" without parsing output.
"""

from __future__ import annotations

from typing import Final

EXIT_OK: Final = 0  # the command did what it was asked
EXIT_FAILED: Final = 1  # it ran, but the work failed (a query, a delivery, rejected input)
EXIT_UNUSABLE: Final = 2  # it could not start: bad arguments, configuration, input or store

EXIT_CODES_HELP: Final = """exit codes:
  0  done
  1  ran, but the work failed (a query failed, input was rejected, a page was not delivered)
  2  could not run: bad arguments or configuration, unreadable input, no store at the path"""
