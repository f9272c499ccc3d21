"""Shared test setup: real servers on loopback are provided by tests/fixtures/*."""

from __future__ import annotations

pytest_plugins = [
    "tests.fixtures.redis",
    "tests.fixtures.kafka",
    "tests.fixtures.moto",
]
