"""Shared test setup: real servers on loopback are provided by tests/fixtures/*."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from tests._hypothesis import load_profile

HYPOTHESIS_PROFILE = load_profile()

pytest_plugins = [
    "tests.fixtures.redis",
    "tests.fixtures.disk",
    "tests.fixtures.kafka",
    "tests.fixtures.moto",
    "tests.fixtures.kinesalite",
    "tests.fixtures.netns",
    "tests.fixtures.faultproxy",
    "tests.fixtures.otlp",
    "tests.fixtures.prometheus",
]


@pytest.fixture(autouse=True)
def _structlog_defaults() -> Iterator[None]:
    """Each test starts from structlog's defaults: a command run in-process (``eventrun
    check`` configures warnings-only logging) must not hide info events from the next
    test's ``capture_logs``."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


def _written_under(root: Path, module: object) -> bool:
    file = getattr(module, "__file__", None)
    return bool(file) and Path(file).resolve().is_relative_to(root)


@pytest.fixture(autouse=True)
def _handler_imports_isolated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Handlers imported in-process (``eventrun check`` under CliRunner, inline runtimes)
    leave their modules in ``sys.modules`` and their task root on ``sys.path``: a later
    test's handler module of the same name (``app``, ``fns``) would resolve to the old one
    (``'app' is not a package``). Each test starts with the path it found, and modules
    written under pytest's temporary directories are forgotten — only those: a library
    imported for the first time during a test stays (a clone and its venv may live in
    /tmp, and a re-imported httpcore has other exception classes than httpx maps)."""
    root = tmp_path_factory.getbasetemp().resolve()
    path = list(sys.path)
    before = set(sys.modules)
    yield
    sys.path[:] = path
    for name in [n for n in sys.modules if n not in before]:
        if _written_under(root, sys.modules[name]):
            del sys.modules[name]


def pytest_report_header() -> str:
    return f"hypothesis profile: {HYPOTHESIS_PROFILE}"
