"""eventrun's pytest plugin: test your handlers against your own ``eventrun.yaml``.

Installed with eventrun and loaded by pytest through the ``pytest11`` entry point. It is
inert until a test asks for one of its fixtures (importing it imports nothing of the
runtime); docs/testing.md is the guide.

* ``eventrun_app``: the app of ``eventrun_config`` running in-process (an
  :class:`EventrunApp`): ``invoke``, ``feed``, ``publish``, ``settle``, ``dlq``,
  ``queue``, ``sent``, ``url``;
* ``eventrun_config``: the config file (default: the nearest ``eventrun.yaml`` from the
  test file's folder up to the rootdir, or the ``eventrun_config`` ini option);
* ``eventrun_env``: the environment for ``${VAR}`` interpolation (default ``os.environ``);
* ``eventrun_clock``: run the app on a fake clock and step it (``advance``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from eventrun.pytest_plugin._app import EventrunApp, Invocation, QueuedEntry
    from eventrun.pytest_plugin._fakes import Message

__all__ = ["EventrunApp", "FakeClockHandle", "Invocation", "Message", "QueuedEntry"]


def __getattr__(name: str) -> object:  # lazy: pytest imports this module at start-up
    if name in ("EventrunApp", "Invocation", "QueuedEntry"):
        from eventrun.pytest_plugin import _app

        return getattr(_app, name)
    if name == "Message":
        from eventrun.pytest_plugin._fakes import Message

        return Message
    raise AttributeError(name)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "eventrun_config",
        "eventrun.yaml the eventrun_app fixture runs (relative to the rootdir)",
        default="",
    )


@pytest.fixture
def eventrun_config(request: pytest.FixtureRequest) -> Path:
    """The config file the ``eventrun_app`` fixture runs; override it to choose another."""
    configured = str(request.config.getini("eventrun_config") or "")
    root = request.config.rootpath
    if configured:
        return (root / configured).resolve()
    here = Path(request.path).parent
    for folder in (here, *here.parents):
        if (folder / "eventrun.yaml").is_file():
            return folder / "eventrun.yaml"
        if folder == root:
            break
    raise pytest.UsageError(
        f"no eventrun.yaml in {here} or above it up to {root}: put one there, set the "
        "eventrun_config ini option, or override the eventrun_config fixture"
    )


@pytest.fixture
def eventrun_env() -> Mapping[str, str]:
    """The environment ``${VAR}`` references in the config are read from."""
    return dict(os.environ)


@pytest.fixture
def eventrun_app(
    request: pytest.FixtureRequest,
    eventrun_config: Path,
    eventrun_env: Mapping[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[EventrunApp]:
    """The app running in-process: store in a temporary directory, HTTP on a free port,
    broker triggers and destinations in memory. Stopped (gracefully) after the test."""
    from eventrun.pytest_plugin._app import start_app

    fake = "eventrun_clock" in request.fixturenames
    state = tmp_path_factory.mktemp("eventrun-state")
    app = start_app(eventrun_config, state, eventrun_env, fake)
    try:
        yield app
    finally:
        app.stop()


class FakeClockHandle:
    """The app's fake clock, seen from the test: ``advance(seconds)`` (or ``await
    aadvance``), ``time()`` (epoch seconds), ``monotonic()``."""

    def __init__(self, app: EventrunApp) -> None:
        self._app = app

    def advance(self, seconds: float) -> None:
        self._app.advance(seconds)

    async def aadvance(self, seconds: float) -> None:
        await self._app.aadvance(seconds)

    def time(self) -> float:
        assert self._app.clock is not None
        return self._app.clock.time()

    def monotonic(self) -> float:
        assert self._app.clock is not None
        return self._app.clock.monotonic()


@pytest.fixture
def eventrun_clock(eventrun_app: EventrunApp) -> FakeClockHandle:
    """Run ``eventrun_app`` on a fake clock that moves only when the test advances it."""
    return FakeClockHandle(eventrun_app)
