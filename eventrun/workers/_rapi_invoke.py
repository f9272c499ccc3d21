"""One invocation through a runtime process's Runtime API, and every way it can end.

The platform's duties, which no interface client does itself, are done here:

* the deadline: a timer kills the process group at ``timeout`` (``Sandbox.Timedout``);
* memory: while an invocation runs, the process's resident set is read every 50 ms;
  above ``memory_mb`` the process group is killed (``Runtime.OutOfMemory``). Only the
  runtime's own process is measured (its children, e.g. a shell bootstrap's, are not);
* a process that exits mid-invocation: ``Runtime.ExitError`` with its exit status;
* a process that never got through init: its ``/init/error``, ``Runtime.ExitError`` or
  ``Sandbox.Timedout`` (:func:`init_failure`);
* logs in Lambda's layout (START / output / END / REPORT), as for Python workers.

:func:`invoke_once` returns ``(result, outcome, reusable)`` like
:func:`._invocation.run_invocation`; outcome is ``ok``, ``error``, ``timeout``, ``oom``
or ``crash``.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from functools import partial
from typing import Any

import anyio

from eventrun.common import TRACE_HEADER

from . import _errors
from ._api import InvokeResult
from ._invocation import format_logs
from ._rapi_endpoint import Invocation
from ._rapi_worker import RapiWorker

__all__ = ["header_json", "init_failure", "invoke_once", "trace_id"]

_WATCH_S = 0.05


def trace_id() -> str:
    """An X-Ray trace header, as Lambda hands one to every invocation: the invocation
    span's when traces are on (``eventrun.common.TRACE_HEADER``), else a fresh one."""
    current = TRACE_HEADER.get()
    if current is not None:
        return current
    root = f"1-{int(time.time()):08x}-{secrets.token_hex(12)}"
    return f"Root={root};Parent={secrets.token_hex(8)};Sampled=0"


async def invoke_once(
    worker: RapiWorker,
    invocation: Invocation,
    *,
    timeout_s: float,
    memory_mb: int,
    init_duration_s: float | None,
) -> tuple[InvokeResult, str, bool]:
    """Hand ``invocation`` over and wait for its answer, the deadline or the process's
    end. Returns ``(result, outcome, reusable)`` as :func:`._invocation.run_invocation`."""
    rid = invocation.request_id
    init_output, worker.init_output = worker.init_output, b""
    loop = asyncio.get_running_loop()
    started = loop.time()
    expired: list[bool] = []
    timer = loop.call_later(timeout_s, _expire, worker, invocation, expired)
    watch = _MemoryWatch(loop, worker, invocation, memory_mb)
    try:
        try:
            worker.endpoint.deliver(invocation)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass  # the process is already gone: handled as a crash below
        else:
            await invocation.done.wait()
    finally:
        timer.cancel()
        watch.cancel()
    duration = loop.time() - started
    log = partial(
        format_logs,
        rid,
        memory_mb=memory_mb,
        init_duration_s=init_duration_s,
        init_output=init_output,
    )
    if expired:
        output = worker.take_output() + _stamp(rid, f"Task timed out after {timeout_s:.2f} seconds")
        logs = log(
            output=output,
            duration_s=timeout_s,
            max_memory_mb=worker.max_memory_mb(),
            status="Status: timeout",
        )
        payload = _errors.timeout_error(rid, timeout_s)
        return (
            InvokeResult(rid, False, payload, "Sandbox.Timedout", logs, timeout_s, init_duration_s),
            "timeout",
            False,
        )
    if watch.tripped:
        reason = "Runtime exited with error: signal: killed"
        logs = log(
            output=worker.take_output()
            + _stamp(rid, f"Error: memory limit of {memory_mb} MB exceeded; {reason}"),
            duration_s=duration,
            max_memory_mb=watch.tripped // (1024 * 1024),
            status="Status: error\tError Type: Runtime.OutOfMemory",
        )
        payload = _errors.runtime_error("Runtime.OutOfMemory", rid, reason)
        result = InvokeResult(
            rid, False, payload, "Runtime.OutOfMemory", logs, duration, init_duration_s
        )
        return result, "oom", False
    if not invocation.answered:
        if not worker.exited.is_set():
            await worker.exited.wait()
        reason = _errors.exit_reason(worker.returncode)
        logs = log(
            output=worker.take_output() + _stamp(rid, f"Error: {reason}"),
            duration_s=duration,
            max_memory_mb=0,
            status="Status: error\tError Type: Runtime.ExitError",
        )
        payload = _errors.runtime_error("Runtime.ExitError", rid, reason)
        result = InvokeResult(
            rid, False, payload, "Runtime.ExitError", logs, duration, init_duration_s
        )
        return result, "crash", False
    worker.requests += 1
    output = worker.take_output()

    def formatted() -> str:  # formatted when read; the peak RSS read then too (47 us)
        return log(output=output, duration_s=duration, max_memory_mb=worker.max_memory_mb())

    result = InvokeResult(
        rid,
        invocation.ok,
        invocation.body,
        invocation.error_type,
        formatted,
        duration,
        init_duration_s,
    )
    return result, ("ok" if invocation.ok else "error"), not worker.exited.is_set()


class _MemoryWatch:
    """Reads the resident set every 50 ms while an invocation runs (a plain timer chain:
    an invocation shorter than that costs nothing); over the limit it kills the process
    and records the size in ``tripped``."""

    __slots__ = ("handle", "invocation", "limit", "loop", "tripped", "worker")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        worker: RapiWorker,
        invocation: Invocation,
        memory_mb: int,
    ) -> None:
        self.loop, self.worker, self.invocation = loop, worker, invocation
        self.limit = memory_mb * 1024 * 1024
        self.tripped = 0
        self.handle = loop.call_later(_WATCH_S, self._check)

    def _check(self) -> None:
        if self.invocation.answered or self.invocation.done.is_set():
            return
        rss = self.worker.rss_bytes()
        if rss > self.limit:
            self.tripped = rss
            self.worker.kill()
            self.invocation.done.set()
            return
        self.handle = self.loop.call_later(_WATCH_S, self._check)

    def cancel(self) -> None:
        self.handle.cancel()


def _expire(worker: RapiWorker, invocation: Invocation, expired: list[bool]) -> None:
    if not invocation.answered:
        expired.append(True)
        worker.kill()
        invocation.done.set()


def _stamp(rid: str, message: str) -> bytes:
    now = time.time()
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
    return f"{iso} {rid} {message}\n".encode()


def header_json(value: dict[str, Any] | None) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"))


def init_failure(rid: str, worker: RapiWorker, memory_mb: int, init_timeout: float) -> InvokeResult:
    """The result of an invocation whose process did not initialise: its ``/init/error``,
    its exit (``Runtime.ExitError``) or no ``/next`` within ``init_timeout``."""
    endpoint = worker.endpoint
    if endpoint.init_error is not None:
        error_type, payload = endpoint.init_error
    elif worker.exited.is_set():
        error_type = "Runtime.ExitError"
        payload = _errors.runtime_error(error_type, rid, _errors.exit_reason(worker.returncode))
    else:
        error_type = "Sandbox.Timedout"
        payload = _errors.runtime_error(
            error_type, rid, f"Init timed out after {init_timeout:.2f} seconds"
        )
    logs = format_logs(
        rid,
        output=b"",
        duration_s=0.0,
        memory_mb=memory_mb,
        max_memory_mb=0,
        init_duration_s=worker.init_duration_s,
        init_output=worker.take_output(),
        status=f"Status: error\tError Type: {error_type}",
    )
    return InvokeResult(rid, False, payload, error_type, logs, 0.0, worker.init_duration_s)
