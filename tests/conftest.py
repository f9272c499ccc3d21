"""Shared test setup: real servers on loopback are provided by tests/fixtures/*."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

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


_TMP = Path(tempfile.gettempdir()).resolve()
_REPO = Path(__file__).resolve().parents[1]  # its venv too: a clone may live in /tmp


def _test_app_module(module: object) -> bool:
    """A handler module a test wrote into a temporary directory (not eventrun's own
    modules or a library's, even when the checkout itself is under /tmp)."""
    file = getattr(module, "__file__", None)
    if not file:
        return False
    path = Path(file).resolve()
    return path.is_relative_to(_TMP) and not path.is_relative_to(_REPO)


@pytest.fixture(autouse=True)
def _handler_imports_isolated() -> Iterator[None]:
    """Handlers imported in-process (``eventrun check`` under CliRunner, inline runtimes)
    leave their modules in ``sys.modules`` and their task root on ``sys.path``: a later
    test's handler module of the same name (``app``, ``fns``) would resolve to the old one
    (``'app' is not a package``). Each test starts with the modules and path it found."""
    path = list(sys.path)
    before = set(sys.modules)
    yield
    sys.path[:] = path
    for name in [n for n in sys.modules if n not in before]:
        if _test_app_module(sys.modules[name]):
            del sys.modules[name]


def pytest_report_header() -> str:
    return f"hypothesis profile: {HYPOTHESIS_PROFILE}"
