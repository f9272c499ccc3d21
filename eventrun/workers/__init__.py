"""Running handlers: the Lambda handler contract and worker processes (SPEC §3, §4).

``create_runner(name, settings, config_dir=...)`` returns a :class:`FunctionRunner`:

* ``runtime: process`` -> a pool of worker processes forked from the daemon's zygote
  (one pre-imported template process for every function, :func:`open_zygote`), with
  timeouts, memory limits, crash recovery and recycling;
* ``runtime: inline`` -> handlers called in the daemon's event loop (no isolation: they
  see the daemon's whole environment, memory and descriptors);
* ``runtime: nodejs*`` / ``provided*``, or a ``command`` -> processes that speak Lambda's
  Runtime API, each with its own endpoint (docs/runtimes.md).

Both return :class:`InvokeResult` values: a handler failure is an outcome, never an
exception. Workers never touch brokers; they only run handlers.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from ._api import FunctionRunner, FunctionSettings, InvokeResult, function_environment
from ._context import LambdaContext
from ._handler import load_handler
from ._inline import InlineRunner
from ._pool import ProcessRunner
from ._rapi_launch import problems as runtime_problems
from ._rapi_launch import uses_runtime_api, version_note
from ._rapi_pool import RuntimeApiRunner
from ._zygote_host import Zygote, open_zygote

__all__ = [
    "FunctionRunner",
    "FunctionSettings",
    "InlineRunner",
    "InvokeResult",
    "LambdaContext",
    "ProcessRunner",
    "RuntimeApiRunner",
    "Zygote",
    "code_directory",
    "create_runner",
    "function_environment",
    "load_handler",
    "open_zygote",
    "runs_python_workers",
    "runtime_problems",
    "uses_runtime_api",
    "version_note",
]


def code_directory(settings: FunctionSettings, config_dir: Path) -> Path:
    """The function's code directory (``code:``, relative to the config file's directory;
    that directory itself by default): ``LAMBDA_TASK_ROOT`` and the working directory."""
    code = getattr(settings, "code", None)
    return (Path(config_dir) / code).resolve() if code else Path(config_dir).resolve()


def create_runner(
    name: str,
    settings: FunctionSettings,
    *,
    config_dir: Path,
    region: str = "us-east-1",
    hidden_env: Collection[str] = (),
    zygote: Zygote | None = None,
) -> FunctionRunner:
    """The runner ``settings.runtime`` asks for; enter it with ``async with`` before use.

    ``settings`` may also have ``code`` (the code directory, relative to ``config_dir``)
    and ``command`` (a Runtime API client to run), as the config model has; both are
    optional so that plain test settings without them keep working.

    ``hidden_env``: variables of the daemon a worker never inherits, whatever the
    function's ``inherit_env`` says (the bearer-token variable); ``EVENTRUN_*`` never is.
    ``zygote``: the daemon's (:func:`open_zygote`), for ``runtime: process`` functions.
    """
    code_dir = code_directory(settings, config_dir)
    command = getattr(settings, "command", None)
    if uses_runtime_api(settings.runtime, command):
        return RuntimeApiRunner(
            name,
            settings,
            code_dir=code_dir,
            command=command,
            region=region,
            hidden_env=hidden_env,
        )
    if settings.runtime == "inline":
        return InlineRunner(name, settings, config_dir=code_dir, region=region)
    return ProcessRunner(
        name, settings, config_dir=code_dir, region=region, hidden_env=hidden_env, zygote=zygote
    )


def runs_python_workers(settings: FunctionSettings) -> bool:
    """Whether :func:`create_runner` gives ``settings`` a pool of Python worker processes
    (forked by a zygote)."""
    command = getattr(settings, "command", None)
    return not uses_runtime_api(settings.runtime, command) and settings.runtime != "inline"
