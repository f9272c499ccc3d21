"""Shared test setup: real servers on loopback are provided by tests/fixtures/*."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog

from tests._hypothesis import load_profile

HYPOTHESIS_PROFILE = load_profile()

pytest_plugins = [
    "tests.fixtures.redis",
    "tests.fixtures.kafka",
    "tests.fixtures.moto",
]


@pytest.fixture(autouse=True)
def _structlog_defaults() -> Iterator[None]:
    """Each test starts from structlog's defaults: a command run in-process (``eventrun
    check`` configures warnings-only logging) must not hide info events from the next
    test's ``capture_logs``."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


def pytest_report_header() -> str:
    return f"hypothesis profile: {HYPOTHESIS_PROFILE}"
