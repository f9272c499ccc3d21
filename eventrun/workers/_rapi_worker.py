"""One runtime process and its own Runtime API endpoint, and one invocation through it.

The platform's duties, which no interface client does itself, are done here:

* the deadline: a timer kills the process group at ``timeout`` (``Sandbox.Timedout``);
* a process that exits mid-invocation: ``Runtime.ExitError`` with its exit status;
* memory: while an invocation runs, the process's resident set is read every 50 ms;
  above ``memory_mb`` the process group is killed (``Runtime.OutOfMemory``). Only the
  runtime's own process is measured (its children, e.g. a shell bootstrap's, are not);
* output: stdout and stderr go to a memfd opened ``O_APPEND``; what an invocation wrote
  is read and the file emptied when it ends, so its logs are its own (START / END /
  REPORT added as for Python workers);
* the parent-death signal: ``setpriv --pdeathsig KILL`` (util-linux) when available, so
  a daemon killed with SIGKILL leaves no runtime process behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import Process, SocketAttribute, TaskGroup

from . import _errors
from ._api import InvokeResult
from ._invocation import format_logs
from ._rapi_endpoint import MAX_PAYLOAD, Endpoint, Invocation
from ._rapi_http import serve_connection

__all__ = ["RapiWorker", "invoke_once", "start_worker"]

_SETPRIV = shutil.which("setpriv")
_PAGE = os.sysconf("SC_PAGE_SIZE")
_WATCH_S = 0.05


class RapiWorker:
    """The daemon's view of one runtime process."""

    def __init__(self, memfd: int) -> None:
        self.endpoint = Endpoint(self._ready)
        self.memfd = memfd
        self.proc: Process | None = None
        self.pid = 0
        self.exited = anyio.Event()
        self.returncode: int | None = None
        self.scope = anyio.CancelScope()
        self.requests = 0
        self.init_duration_s = 0.0
        self.init_output = b""
        self.port = 0

    def _ready(self) -> None:
        self.init_output = self.take_output()

    def take_output(self) -> bytes:
        """What the process wrote since the last call; empties the file."""
        try:
            size = os.fstat(self.memfd).st_size
            if not size:
                return b""
            data = os.pread(self.memfd, size, 0)
            os.ftruncate(self.memfd, 0)
            return data
        except OSError:
            return b""

    def max_memory_mb(self) -> int:
        with contextlib.suppress(OSError, ValueError), open(f"/proc/{self.pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) // 1024
        return 0

    def rss_bytes(self) -> int:
        """The process's resident set now (0 once it is gone)."""
        try:
            with open(f"/proc/{self.pid}/statm", "rb") as f:
                return int(f.read().split()[1]) * _PAGE
        except (OSError, ValueError, IndexError):
            return 0

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group (a bootstrap's children too) unless reaped."""
        if self.pid and not self.exited.is_set():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, sig)

    def close(self) -> None:
        """Kill the process, stop serving its endpoint, release the memfd."""
        self.kill()
        self.scope.cancel()
        if self.memfd >= 0:
            os.close(self.memfd)
            self.memfd = -1


async def start_worker(
    tg: TaskGroup,
    argv: Sequence[str],
    env: Mapping[str, str],
    cwd: Path,
    *,
    name: str,
    log_stream: str,
) -> RapiWorker:
    """Spawn a runtime process with its endpoint; returns before init completes
    (``worker.endpoint.init_done`` says when it has)."""
    memfd = os.memfd_create(f"eventrun-{name}", os.MFD_CLOEXEC)
    worker = RapiWorker(memfd)
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    worker.port = listener.extra(SocketAttribute.local_port)
    out = os.open(f"/proc/self/fd/{memfd}", os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    command = [*argv]
    if _SETPRIV is not None:
        command = [_SETPRIV, "--pdeathsig", "KILL", "--", *command]
    try:
        worker.proc = await anyio.open_process(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            cwd=cwd,
            env={
                **env,
                "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{worker.port}",
                "AWS_LAMBDA_LOG_STREAM_NAME": log_stream,
            },
            start_new_session=True,
        )
    except BaseException:
        await listener.aclose()
        os.close(memfd)
        raise
    finally:
        os.close(out)
    worker.pid = worker.proc.pid
    tg.start_soon(_run, worker, listener)
    return worker


async def _run(worker: RapiWorker, listener: Any) -> None:
    """Serve the endpoint until the process exits; then wake whoever waits on it."""
    assert worker.proc is not None
    route = partial(serve_connection, route=worker.endpoint.route, body_limit=MAX_PAYLOAD)
    try:
        with worker.scope:
            async with listener, anyio.create_task_group() as tg:
                tg.start_soon(listener.serve, route, tg)
                worker.returncode = await worker.proc.wait()
                tg.cancel_scope.cancel()
    finally:
        worker.exited.set()
        worker.endpoint.abort()
        with anyio.CancelScope(shield=True):
            worker.kill()
            if worker.returncode is None:
                with anyio.move_on_after(5):
                    worker.returncode = await worker.proc.wait()
            await worker.proc.aclose()


def trace_id() -> str:
    """An X-Ray trace header, as Lambda hands one to every invocation."""
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
