"""The workers package's public shapes: settings it reads, results it returns, runners.

``FunctionSettings`` is structural so that both the config layer's pydantic
``FunctionConfig`` and a plain test dataclass satisfy it; this package never imports
``eventrun.config``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

import anyio

from eventrun.exceptions import FunctionSaturated

__all__ = [
    "FunctionRunner",
    "FunctionSettings",
    "InvokeResult",
    "acquire_slot",
    "function_environment",
    "log_stream_name",
]


class FunctionSettings(Protocol):
    """What a runner needs from a function's config (durations already in seconds)."""

    @property
    def handler(self) -> str: ...
    @property
    def runtime(self) -> str:
        """``process`` (or ``python3.X``), ``inline``, ``nodejs*``, ``provided*``."""
        ...

    @property
    def timeout(self) -> float: ...
    @property
    def memory_mb(self) -> int: ...
    @property
    def concurrency(self) -> int: ...
    @property
    def min_warm(self) -> int: ...
    @property
    def max_requests(self) -> int: ...
    @property
    def environment(self) -> Mapping[str, str]: ...
    @property
    def inherit_env(self) -> Sequence[str]: ...


@dataclass(slots=True, frozen=True)
class InvokeResult:
    """The outcome of one invocation. Handler failures are results, never exceptions."""

    request_id: str
    ok: bool
    payload: bytes
    """The return value as JSON bytes (``b"null"`` for None), or Lambda's error JSON."""
    error_type: str | None
    """None when ok; the exception class name, or ``Sandbox.Timedout``,
    ``Runtime.OutOfMemory``, ``Runtime.ExitError``, ``Runtime.ImportModuleError``,
    ``Runtime.HandlerNotFound``, ``Runtime.MarshalError``..."""
    log_source: str | Callable[[], str]
    """The logs, or what formats them when read (most callers never read them)."""
    duration_s: float
    init_duration_s: float | None
    """Set when this invocation paid a cold start (spawn + handler import)."""

    @property
    def logs(self) -> str:
        """This invocation's output in Lambda's format (START / output / END / REPORT)."""
        source = self.log_source
        return source if isinstance(source, str) else source()


class FunctionRunner(Protocol):
    """Runs one function's invocations (a process pool, or inline in the daemon)."""

    name: str

    async def __aenter__(self) -> Self:
        """Start ``min_warm`` initialised workers, then return."""
        ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop every worker (SIGTERM, grace, SIGKILL); leave no process or task behind."""
        ...

    async def invoke(
        self,
        payload: bytes,
        *,
        request_id: str | None = None,
        wait: bool = True,
        client_context: dict[str, Any] | None = None,
        identity: dict[str, Any] | None = None,
        log_done: bool = True,
        event: Any = None,
        stream: Callable[[bytes], None] | None = None,
    ) -> InvokeResult:
        """Run the handler once on ``payload`` (the event as JSON bytes).

        ``stream``, when given, takes a response the function streams (a Runtime API
        function posting in ``streaming`` mode) as it arrives, in Lambda's
        HTTP-integration form (a JSON prelude, 8 NUL bytes, then the body); the result's
        payload is then empty. A function that answers whole never calls it.

        ``event``, when given, is the object ``payload`` encodes, handed over by its
        caller (the dispatcher of an ``inline`` function): a runner that calls the
        handler in this process passes it as is instead of decoding a copy; a process
        runner ignores it.

        ``wait=True`` waits for a free concurrency slot; ``wait=False`` raises
        :class:`~eventrun.exceptions.FunctionSaturated` when every slot is busy.
        Each invocation logs ``invoke.done`` at info level, or at debug level with
        ``log_done=False`` (the caller logs the outcome itself, as the dispatcher's
        ``batch.done`` does).
        """
        ...

    def statistics(self) -> Mapping[str, int | float]:
        """workers, busy, idle, cold_starts, invocations, errors, timeouts, crashes, recycled."""
        ...


async def acquire_slot(slots: anyio.Semaphore, *, wait: bool, name: str, concurrency: int) -> None:
    """Take one of the function's concurrency slots: wait for it (backpressure), or raise
    FunctionSaturated at once (the Invoke API's 429) when ``wait`` is False."""
    # A free slot is taken without Semaphore.acquire's cancellation checkpoint: that
    # looks up the current task, a getpid system call per invocation on Python 3.11 (the
    # invocation suspends at once anyway, on its worker's answer or its handler)
    try:
        slots.acquire_nowait()
    except anyio.WouldBlock:
        if not wait:
            raise FunctionSaturated(
                f"function {name!r}: all {concurrency} concurrency slots "
                "are busy; retry later or raise its concurrency"
            ) from None
    else:
        return
    await slots.acquire()


def log_stream_name(worker_id: str, now: float | None = None) -> str:
    """``YYYY/MM/DD/[$LATEST]<hex>``, as Lambda names an execution environment's stream."""
    import time

    return time.strftime("%Y/%m/%d", time.gmtime(now)) + f"/[$LATEST]{worker_id}"


def function_environment(
    name: str,
    settings: FunctionSettings,
    task_root: Path,
    region: str,
    *,
    hidden: Collection[str] = (),
    environ: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """A worker's whole environment, built from nothing (SPEC §4; docs/security.md, "Workers").

    In order, later ones winning: the daemon's variables whose names match one of
    ``settings.inherit_env`` (names or ``fnmatch`` globs, case-sensitive), minus every
    ``EVENTRUN_*`` variable and the names in ``hidden`` (the bearer-token variable),
    plus coverage.py's subprocess variables when set; then ``PYTHONUNBUFFERED=1``; then
    ``settings.environment``; then Lambda's reserved variables (Lambda refuses to let a
    function set them). ``AWS_LAMBDA_LOG_STREAM_NAME`` is per worker and set when a
    worker starts. Nothing else of the daemon's environment reaches a worker.

    Built once per pool, so it costs an invocation nothing.
    """
    source = os.environ if environ is None else environ
    exact = {p for p in settings.inherit_env if not _GLOB.intersection(p)}
    globs = [p for p in settings.inherit_env if _GLOB.intersection(p)]
    env = {
        key: value
        for key, value in source.items()
        if (key in exact or any(fnmatchcase(key, g) for g in globs))
        and not key.startswith("EVENTRUN_")
        and key not in hidden
    }
    for key in _TOOLING:  # coverage.py measuring the daemon measures its workers too
        if key in source:
            env[key] = source[key]
    _keep_importable(env, source)
    # unbuffered, as Lambda's runtime writes: output printed before a kill is kept
    env["PYTHONUNBUFFERED"] = "1"
    env.update(settings.environment)
    env.update(
        {
            "AWS_LAMBDA_FUNCTION_NAME": name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(settings.memory_mb),
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_TIMEOUT": str(int(max(1, round(settings.timeout)))),
            "AWS_REGION": region,
            "AWS_DEFAULT_REGION": region,
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": "",
            "LAMBDA_TASK_ROOT": str(task_root),
            "_HANDLER": settings.handler,
            "AWS_EXECUTION_ENV": f"AWS_Lambda_python{sys.version_info[0]}.{sys.version_info[1]}",
        }
    )
    return env


_GLOB = frozenset("*?[")
_TOOLING = ("COVERAGE_PROCESS_START", "COVERAGE_PROCESS_CONFIG")


def _keep_importable(env: dict[str, str], source: Mapping[str, str]) -> None:
    """Workers start as ``python -m eventrun.workers...``: when the daemon found eventrun
    through a ``PYTHONPATH`` entry (a source checkout) that ``inherit_env`` left out, the
    worker's ``PYTHONPATH`` gets that one entry."""
    root = str(Path(__file__).resolve().parent.parent.parent)
    daemon_path = source.get("PYTHONPATH", "").split(os.pathsep)
    if not any(p and str(Path(p).resolve()) == root for p in daemon_path):
        return
    ours = env.get("PYTHONPATH", "").split(os.pathsep)
    # a relative entry ("PYTHONPATH=. eventrun run") means another directory in the
    # worker, whose cwd is the task root: only an absolute one keeps eventrun importable
    if not any(p and os.path.isabs(p) and str(Path(p).resolve()) == root for p in ours):
        env["PYTHONPATH"] = os.pathsep.join([root, *(p for p in ours if p)])
