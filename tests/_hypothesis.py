"""Hypothesis profiles: deterministic in CI, exploring under ``make fuzz``.

- ``ci`` (loaded when ``$CI`` is set): ``derandomize=True`` — each property test draws the
  same examples on every run, from a seed derived from the test itself — and no example
  database, so a CI run never depends on what an earlier run left behind. A property test
  fails in CI only when the code changed.
- ``dev`` (the default for ``make test`` on a developer's machine): random, with the
  local example database in ``.hypothesis/`` so a failure found once replays first.
- ``fuzz`` (``make fuzz``): random seeds and :data:`SCALE` times the examples of each
  test, the database kept so a failure reproduces; ``make fuzz`` repeats rounds for
  ``FUZZ_MINUTES``.

None of them has a deadline or fails on slow data generation: the suite runs on a 2-core
machine next to real brokers, and timing is bench/'s business, not the tests'.

Every failure an exploring run finds becomes an explicit ``@example`` (or a row in a
table test) next to the property, so CI keeps checking it with the ``ci`` profile.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

__all__ = ["SCALE", "examples", "load_profile"]

SCALE = max(1, int(os.environ.get("EVENTRUN_FUZZ_SCALE", "1")))
"""How many times more examples each property draws (``make fuzz`` sets 10)."""

_RELAXED = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}

settings.register_profile("ci", derandomize=True, database=None, print_blob=True, **_RELAXED)
settings.register_profile("dev", **_RELAXED)
settings.register_profile("fuzz", print_blob=True, **_RELAXED)


def examples(n: int) -> int:
    """A property's example count: ``n`` in CI and ``make test``, ``n * SCALE`` when
    fuzzing."""
    return n * SCALE


def load_profile() -> str:
    """Load the profile ``$HYPOTHESIS_PROFILE`` names, else ``ci`` under ``$CI``, else
    ``dev``; return its name."""
    name = os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
    settings.load_profile(name)
    return name
