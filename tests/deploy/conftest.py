"""Prints the container tests' figures (build time, image size, time to ready, records,
lost, duplicates) at the end of the session, and writes them to deploy-figures.json in
pytest's base temporary directory."""

from __future__ import annotations

import json

import pytest

from tests.deploy import test_containers


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    figures = test_containers.FIGURES
    if not figures:
        return
    terminalreporter.section("container figures")
    terminalreporter.write_line(json.dumps(figures, indent=2))
    base = terminalreporter.config._tmp_path_factory.getbasetemp()  # type: ignore[attr-defined]
    (base / "deploy-figures.json").write_text(json.dumps(figures, indent=2))
