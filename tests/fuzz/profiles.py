"""Hypothesis profiles of the fuzzers: a short reproducible pass for CI, a long one on demand.

``ci`` (the default) runs each fuzzer on a fixed number of examples with derandomized
generation, so a CI failure reproduces on any machine from the test name alone. Setting
``DRIFTLINE_FUZZ_EXAMPLES=N`` selects ``long``: N random examples per fuzzer, no time limit
per example, and a failing example saved in ``.hypothesis/`` to replay next time.
"""

from __future__ import annotations

import os
from typing import Final

from hypothesis import HealthCheck, settings

ENV_FUZZ_EXAMPLES: Final = "DRIFTLINE_FUZZ_EXAMPLES"
CI_PROFILE: Final = "driftline-fuzz-ci"
LONG_PROFILE: Final = "driftline-fuzz-long"
CI_EXAMPLES: Final = 60
# Hostile messages are large by design, and the store-backed fuzzers share one store.
_SUPPRESSED: Final = (
    HealthCheck.too_slow,
    HealthCheck.data_too_large,
    HealthCheck.function_scoped_fixture,
    HealthCheck.large_base_example,
)


def _examples_from_env() -> int | None:
    raw = os.environ.get(ENV_FUZZ_EXAMPLES, "").strip()
    if not raw:
        return None
    try:
        examples = int(raw)
    except ValueError:
        raise ValueError(f"{ENV_FUZZ_EXAMPLES} must be a whole number, got {raw!r}") from None
    if examples < 1:
        raise ValueError(f"{ENV_FUZZ_EXAMPLES} must be at least 1, got {examples}")
    return examples


settings.register_profile(
    CI_PROFILE,
    max_examples=CI_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=_SUPPRESSED,
)
settings.register_profile(
    LONG_PROFILE,
    max_examples=_examples_from_env() or CI_EXAMPLES,
    deadline=None,
    derandomize=False,
    print_blob=True,
    suppress_health_check=_SUPPRESSED,
)


def fuzz_settings(share: float = 1.0) -> settings:
    """The selected profile; ``share`` scales the CI example count for a slow fuzzer."""
    if _examples_from_env() is not None:
        return settings(settings.get_profile(LONG_PROFILE))
    return settings(settings.get_profile(CI_PROFILE), max_examples=max(1, int(CI_EXAMPLES * share)))
