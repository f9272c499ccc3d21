"""Running handlers: the Lambda handler contract and worker processes (SPEC §3, §4).

``create_runner(name, settings, config_dir=...)`` returns a :class:`FunctionRunner`:

* ``runtime: process`` -> a pool of worker processes forked from a per-function
  template (fork server), with timeouts, memory limits, crash recovery and recycling;
* ``runtime: inline`` -> handlers called in the daemon's event loop (no isolation: they
  see the daemon's whole environment, memory and descriptors).

Both return :class:`InvokeResult` values: a handler failure is an outcome, never an
exception. Workers never touch brokers; they only run handlers.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from ._api import FunctionRunner, FunctionSettings, InvokeResult
from ._context import LambdaContext
from ._handler import load_handler
from ._inline import InlineRunner
from ._pool import ProcessRunner

__all__ = [
    "FunctionRunner",
    "FunctionSettings",
    "InlineRunner",
    "InvokeResult",
    "LambdaContext",
    "ProcessRunner",
    "create_runner",
    "load_handler",
]


def create_runner(
    name: str,
    settings: FunctionSettings,
    *,
    config_dir: Path,
    region: str = "us-east-1",
    hidden_env: Collection[str] = (),
) -> FunctionRunner:
    """The runner ``settings.runtime`` asks for; enter it with ``async with`` before use.

    ``hidden_env``: variables of the daemon a worker never inherits, whatever the
    function's ``inherit_env`` says (the bearer-token variable); ``EVENTRUN_*`` never is.
    """
    if settings.runtime == "inline":
        return InlineRunner(name, settings, config_dir=config_dir, region=region)
    return ProcessRunner(
        name, settings, config_dir=config_dir, region=region, hidden_env=hidden_env
    )
