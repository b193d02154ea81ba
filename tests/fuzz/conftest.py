"""Fuzzers of the entry points that take outside input; profiles in :mod:`tests.fuzz.profiles`.

The profiles are applied per test (``@fuzz_settings()``), never loaded globally, so the rest
of the suite keeps its own hypothesis settings.
"""

from tests.fuzz import profiles  # noqa: F401  (registers the profiles)
