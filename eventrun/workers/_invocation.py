"""One round trip to a worker process, and every way it can end.

:func:`run_invocation` returns ``(result, outcome, reusable)``; outcome is one of ``ok``,
``error`` (the handler raised or returned something unserialisable), ``timeout``,
``crash`` or ``oom``. ``reusable`` is False whenever the worker must be replaced. It
never raises for a worker's misbehaviour; cancellation propagates and the caller kills
the worker (it may be half-way through a frame).

Logs follow Lambda's layout: init output, ``START``, the invocation's output, ``END``,
``REPORT`` (with ``Init Duration`` on a cold start, ``Status`` on a failure).
"""

from __future__ import annotations

import math
import os
import time
from functools import partial
from typing import Any

import structlog

from eventrun.common import TRACE_HEADER

from . import _errors
from ._api import InvokeResult
from ._channel import Channel
from ._launch import ProcessHandle
from ._protocol import ChannelClosed, FrameError, Invoke, Ready, Result, decode_from_worker, encode

__all__ = ["Worker", "format_logs", "init_failure", "run_invocation"]

log = structlog.get_logger("eventrun.workers")


class Worker:
    """The daemon's view of one worker process."""

    __slots__ = (
        "channel",
        "init_duration_s",
        "init_output",
        "max_memory_mb",
        "memfd",
        "proc",
        "requests",
    )

    def __init__(self, proc: ProcessHandle, channel: Channel, memfd: int) -> None:
        self.proc = proc
        self.channel = channel
        self.memfd = memfd
        self.requests = 0
        self.init_duration_s = 0.0
        self.init_output = b""
        self.max_memory_mb = 0

    def leftover_output(self) -> bytes:
        """What the process wrote since its last result (read after a kill or crash)."""
        try:
            size = os.fstat(self.memfd).st_size
            return os.pread(self.memfd, size, 0) if size else b""
        except OSError:
            return b""


def format_logs(
    rid: str,
    *,
    output: bytes,
    duration_s: float,
    memory_mb: int,
    max_memory_mb: int,
    init_duration_s: float | None = None,
    init_output: bytes = b"",
    status: str | None = None,
) -> str:
    text = output.decode("utf-8", "replace")
    if text and not text.endswith("\n"):
        text += "\n"
    ms = duration_s * 1000
    report = (
        f"REPORT RequestId: {rid}\tDuration: {ms:.2f} ms\tBilled Duration: {math.ceil(ms)} ms\t"
        f"Memory Size: {memory_mb} MB\tMax Memory Used: {max_memory_mb} MB\t"
    )
    if init_duration_s is not None:
        report += f"Init Duration: {init_duration_s * 1000:.2f} ms\t"
    if status:
        report += status
    init = init_output.decode("utf-8", "replace")
    if init and not init.endswith("\n"):
        init += "\n"
    return f"{init}START RequestId: {rid} Version: $LATEST\n{text}END RequestId: {rid}\n{report}\n"


def _stamp(rid: str, message: str) -> str:
    now = time.time()
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
    return f"{iso} {rid} {message}\n"


async def run_invocation(
    worker: Worker,
    rid: str,
    payload: bytes,
    client_context: dict[str, Any] | None,
    identity: dict[str, Any] | None,
    *,
    timeout_s: float,
    memory_mb: int,
    init_duration_s: float | None,
) -> tuple[InvokeResult, str, bool]:
    timeout = timeout_s
    init_output, worker.init_output = worker.init_output, b""
    loop = worker.channel.loop  # not asyncio.get_running_loop(): a getpid call on 3.11
    started = loop.time()
    deadline = time.monotonic() + timeout
    trace = TRACE_HEADER.get()
    frame = encode(Invoke(rid, payload, deadline, client_context, identity, trace))
    # The deadline is a plain timer that kills the worker and closes its channel, so the
    # pending receive fails at once: no cancellation machinery on the hot path (an anyio
    # deadline scope cost 12 us per invocation on the bench machine, asyncio.timeout 4,
    # a timer 2). A worker that dies on its own is told apart by ``expired``.
    expired: list[bool] = []
    timer = loop.call_later(timeout, _expire, worker, expired)
    try:
        try:
            await worker.channel.send(frame)
            body = await worker.channel.receive()
        except ChannelClosed:
            if not expired:
                raise
        finally:
            timer.cancel()
        if expired:
            reason = f"Task timed out after {timeout:.2f} seconds"
            output = worker.leftover_output() + _stamp(rid, reason).encode()
            logs = format_logs(
                rid,
                output=output,
                duration_s=timeout,
                memory_mb=memory_mb,
                max_memory_mb=worker.max_memory_mb,
                init_duration_s=init_duration_s,
                init_output=init_output,
                status="Status: timeout",
            )
            result = InvokeResult(
                rid,
                False,
                _errors.timeout_error(rid, timeout),
                "Sandbox.Timedout",
                logs,
                timeout,
                init_duration_s,
            )
            return result, "timeout", False
        msg = decode_from_worker(body)
        if not isinstance(msg, Result) or msg.request_id != rid:
            raise FrameError(f"expected the result of {rid}, got {type(msg).__name__}")
    except (ChannelClosed, FrameError) as exc:
        result = await _crashed(
            worker,
            rid,
            exc,
            loop.time() - started,
            memory_mb,
            init_duration_s,
            init_output,
        )
        return result, "crash", False
    worker.requests += 1
    worker.max_memory_mb = msg.max_memory_mb
    status = f"Status: error\tError Type: {msg.error_type}" if msg.fatal else None
    formatted = partial(  # formatted if read (1.2 us, on every invocation otherwise)
        format_logs,
        rid,
        output=msg.output,
        duration_s=msg.duration_s,
        memory_mb=memory_mb,
        max_memory_mb=msg.max_memory_mb,
        init_duration_s=init_duration_s,
        init_output=init_output,
        status=status,
    )
    result = InvokeResult(
        rid, msg.ok, msg.payload, msg.error_type, formatted, msg.duration_s, init_duration_s
    )
    outcome = "ok" if msg.ok else ("oom" if msg.fatal else "error")
    return result, outcome, not msg.fatal


def _expire(worker: Worker, expired: list[bool]) -> None:
    """An invocation ran out of time: kill its worker (as Lambda does) and close the
    channel so the waiting receive returns now, whatever state the process is in."""
    expired.append(True)
    worker.proc.kill()
    worker.channel.close()


async def _crashed(
    worker: Worker,
    rid: str,
    exc: Exception,
    duration_s: float,
    memory_mb: int,
    init_duration_s: float | None,
    init_output: bytes,
) -> InvokeResult:
    proc = worker.proc
    garbled = isinstance(exc, FrameError)
    if garbled:
        log.warning("worker.protocol_error", pid=proc.pid, error=str(exc))
        proc.kill()
    if not await proc.wait(2.0):
        proc.kill()
        await proc.wait(2.0)
    reason = _errors.exit_reason(None if garbled else proc.returncode)
    output = worker.leftover_output() + _stamp(rid, f"Error: {reason}").encode()
    logs = format_logs(
        rid,
        output=output,
        duration_s=duration_s,
        memory_mb=memory_mb,
        max_memory_mb=worker.max_memory_mb,
        init_duration_s=init_duration_s,
        init_output=init_output,
        status="Status: error\tError Type: Runtime.ExitError",
    )
    payload = _errors.runtime_error("Runtime.ExitError", rid, reason)
    return InvokeResult(rid, False, payload, "Runtime.ExitError", logs, duration_s, init_duration_s)


def init_failure(
    rid: str, ready: Ready | None, exc: BaseException | None, memory_mb: int
) -> InvokeResult:
    """The result of an invocation whose worker could not be initialised."""
    if ready is not None and ready.error_type is not None:
        error_type, payload = ready.error_type, ready.error
        output, duration = b"", ready.init_duration_s
        init_output = ready.init_output
    else:
        timed_out = isinstance(exc, TimeoutError)
        error_type = "Sandbox.Timedout" if timed_out else "Runtime.ExitError"
        reason = "Init timed out" if timed_out else _errors.exit_reason(None)
        payload = _errors.runtime_error(error_type, rid, reason)
        output, duration, init_output = _stamp(rid, reason).encode(), 0.0, b""
    logs = format_logs(
        rid,
        output=output,
        duration_s=0.0,
        memory_mb=memory_mb,
        max_memory_mb=0,
        init_duration_s=duration,
        init_output=init_output,
        status=f"Status: error\tError Type: {error_type}",
    )
    return InvokeResult(rid, False, payload, error_type, logs, 0.0, duration)
