"""``runtime: inline``: handlers called in the daemon's own event loop (no isolation).

``async def`` handlers are awaited directly; sync handlers run in a worker thread
(``anyio.to_thread``, bounded by the function's ``concurrency``). Same contract as the
process pool: same :class:`InvokeResult` shapes, ``concurrency`` slots with
``wait=False`` -> FunctionSaturated, the timeout enforced (``Sandbox.Timedout``) with
``asyncio.timeout`` once an async handler suspends (see ``_call_async``; the daemon runs
on asyncio) and with an anyio scope around a sync handler's thread.

Limits of running in-process: no isolation at all (docs/security.md, "Workers"): the
handler sees the daemon's whole environment (its bearer tokens included; ``inherit_env``
does not apply), memory and descriptors. A timed-out *sync* handler cannot be killed; its
thread runs on (holding a thread slot) while the caller gets its timeout result. No memory
limit. Output capture is per invocation for ``logging`` records only (they are
attributed through a context variable); ``print`` goes to the daemon's stdout.

The event: decoded from the payload bytes for each invocation, as Lambda does, except
when the caller hands over the event object itself (``invoke(event=...)``: the
dispatcher of a batch trigger, which restores every record's event from the bytes when
the batch did not fully succeed, see :mod:`eventrun.dispatch._shared_events`). Either way, what a
handler does to its event never reaches a retry or a failure record.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import secrets
import time
import types
from collections.abc import Callable, Coroutine, Generator, Mapping
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import anyio
import anyio.to_thread
import msgspec
import structlog

from eventrun.common import new_request_id

from . import _errors
from ._api import (
    FunctionSettings,
    InvokeResult,
    acquire_slot,
    log_stream_name,
)
from ._context import FunctionInfo, LambdaContext
from ._handler import HandlerLoadFailure, resolve_handler
from ._invocation import format_logs

__all__ = ["InlineRunner"]

log = structlog.get_logger("eventrun.workers")

_captured: contextvars.ContextVar[tuple[str, list[str]] | None] = contextvars.ContextVar(
    "eventrun_inline_logs", default=None
)
_RUNTIME_DIRS = (
    *tuple(str(Path(m.__file__).parent) for m in (anyio, inspect, contextvars) if m.__file__),
    str(Path(__file__).parent),
)


class _CaptureHandler(logging.Handler):
    """Appends records emitted inside an inline invocation to that invocation's logs."""

    def __init__(self) -> None:
        super().__init__()
        fmt = logging.Formatter(
            "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s",
            "%Y-%m-%dT%H:%M:%S",
        )
        fmt.converter = time.gmtime
        self.setFormatter(fmt)
        self.users = 0

    def emit(self, record: logging.LogRecord) -> None:
        sink = _captured.get()
        if sink is not None:
            record.aws_request_id = sink[0]
            sink[1].append(self.format(record) + "\n")


_capture_handler = _CaptureHandler()


def _user_traceback(tb: TracebackType | None) -> TracebackType | None:
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_RUNTIME_DIRS):
        tb = tb.tb_next
    return tb


_FINISHED = object()


@types.coroutine
def _resume(coro: Coroutine[Any, Any, Any], pending: Any) -> Generator[Any, Any, Any]:
    """Finish ``coro`` from its first suspension, ``pending`` (what it handed the event
    loop), exactly as ``await coro`` would have: results and exceptions (cancellation
    included) go into it, what it awaits next goes out."""
    while True:
        try:
            sent = yield pending
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:
            try:
                pending = coro.throw(exc)
            except StopIteration as done:
                return done.value
        else:
            try:
                pending = coro.send(sent)
            except StopIteration as done:
                return done.value


class InlineRunner:
    """Runs one function's handler in this process and event loop."""

    def __init__(
        self, name: str, settings: FunctionSettings, *, config_dir: Path, region: str = "us-east-1"
    ) -> None:
        self.name = name
        self.settings = settings
        self.task_root = Path(config_dir).resolve()
        self._info = FunctionInfo(
            function_name=name,
            region=region,
            memory_mb=settings.memory_mb,
            log_stream_name=log_stream_name(secrets.token_hex(16)),
        )
        concurrency = max(1, settings.concurrency)
        # fast_acquire: a free slot is taken without a trip through the event loop
        self._slots = anyio.Semaphore(concurrency, fast_acquire=True)
        self._threads = anyio.CapacityLimiter(concurrency)
        self._handler: Callable[..., Any] | None = None
        self._init_error: HandlerLoadFailure | None = None
        self._init_duration: float | None = None
        self._is_async = False
        self._busy = 0
        self._counts = dict.fromkeys(("cold_starts", "invocations", "errors", "timeouts"), 0)
        # bound once: a per-call lookup through structlog's lazy proxy costs microseconds
        self._log = log.bind(function=name)

    async def __aenter__(self) -> Self:
        started = anyio.current_time()
        try:
            self._handler = await anyio.to_thread.run_sync(
                resolve_handler, self.settings.handler, self.task_root
            )
            self._is_async = inspect.iscoroutinefunction(self._handler)
        except HandlerLoadFailure as exc:
            self._init_error = exc
            log.warning("worker.init_failed", function=self.name, error_type=exc.error_type)
        self._init_duration = anyio.current_time() - started
        self._counts["cold_starts"] += 1
        log.info(
            "worker.cold_start",
            function=self.name,
            pid=0,
            init_duration_s=round(self._init_duration, 6),
            ok=self._handler is not None,
        )
        if _capture_handler.users == 0:
            logging.getLogger().addHandler(_capture_handler)
        _capture_handler.users += 1
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _capture_handler.users -= 1
        if _capture_handler.users == 0:
            logging.getLogger().removeHandler(_capture_handler)

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
        stream: Callable[[bytes], None] | None = None,  # Python handlers never stream
    ) -> InvokeResult:
        """See :meth:`FunctionRunner.invoke`."""
        rid = request_id or new_request_id()
        await acquire_slot(
            self._slots, wait=wait, name=self.name, concurrency=self.settings.concurrency
        )
        self._busy += 1
        try:
            result, outcome = await self._invoke(rid, payload, client_context, identity, event)
        finally:
            self._busy -= 1
            self._slots.release()
        self._counts["invocations"] += 1
        if outcome != "ok":
            self._counts["errors"] += 1
        if outcome == "timeout":
            self._counts["timeouts"] += 1
        (self._log.info if log_done else self._log.debug)(
            "invoke.done",
            request_id=rid,
            duration_s=round(result.duration_s, 6),
            outcome=outcome,
        )
        return result

    async def _call_sync(self, handler: Callable[..., Any], event: Any, ctx: LambdaContext) -> Any:
        """A sync handler, in a worker thread (async ones are driven in _invoke)."""
        return await anyio.to_thread.run_sync(
            handler, event, ctx, limiter=self._threads, abandon_on_cancel=True
        )

    async def _call_async(
        self, handler: Callable[..., Any], event: Any, ctx: LambdaContext, started: float
    ) -> tuple[Any, bool]:
        """An async handler, driven by hand until it first suspends: ``(value, timed_out)``.

        A handler that returns without awaiting (the common trivial one) cannot time out,
        so it runs with no timer at all. One that suspends is resumed under
        ``asyncio.timeout``, armed with what is left of its time: unlike an anyio cancel
        scope, that can be entered after the handler opened scopes or task groups of its
        own (they see an ordinary task cancellation, as they would under any caller's
        timeout). Both were measured on the hot path: an anyio scope entered up front
        cost about 4 us per invocation, a fifth of an inline invocation's overhead.
        """
        coro = handler(event, ctx)
        try:
            pending = coro.send(None)
        except StopIteration as done:
            value = done.value
            if not inspect.isawaitable(value):
                return value, False
            pending = _FINISHED
        left = self.settings.timeout - (time.perf_counter() - started)
        deadline = asyncio.timeout(left)
        try:
            async with deadline:
                if pending is not _FINISHED:
                    value = await _resume(coro, pending)
                if inspect.isawaitable(value):
                    value = await value
        except TimeoutError:
            if not deadline.expired():
                raise  # the handler's own TimeoutError: an error like any other
        # expired also when the handler swallowed the cancellation and returned late
        return (None, True) if deadline.expired() else (value, False)

    async def _invoke(
        self,
        rid: str,
        payload: bytes,
        client_context: dict[str, Any] | None,
        identity: dict[str, Any] | None,
        shared: Any = None,
    ) -> tuple[InvokeResult, str]:
        init_duration, self._init_duration = self._init_duration, None
        timeout, memory_mb = self.settings.timeout, self.settings.memory_mb
        if self._handler is None:
            fault = self._init_error
            assert fault is not None
            body = _errors.init_error(fault.error_type, fault.message, fault.stack)
            init_logs = format_logs(
                rid,
                output=f"[ERROR] {fault.error_type}: {fault.message}\n".encode(),
                duration_s=0.0,
                memory_mb=memory_mb,
                max_memory_mb=0,
                init_duration_s=init_duration,
            )
            return InvokeResult(
                rid, False, body, fault.error_type, init_logs, 0.0, init_duration
            ), "error"
        lines: list[str] = []
        token = _captured.set((rid, lines))
        started = time.perf_counter()
        ok, error_type, outcome = False, None, "error"
        timed_out = False
        try:
            try:
                ctx = LambdaContext(
                    self._info, rid, time.monotonic() + timeout, client_context, identity
                )
                event = msgspec.json.decode(payload) if shared is None else shared
                if self._is_async:
                    value, timed_out = await self._call_async(self._handler, event, ctx, started)
                else:
                    with anyio.move_on_after(timeout) as scope:
                        value = await self._call_sync(self._handler, event, ctx)
                        if inspect.isawaitable(value):
                            value = await value
                    timed_out = scope.cancelled_caught
                if not timed_out:
                    body, ok, outcome = _errors.marshal(value), True, "ok"
            except _errors.MarshalFailure as exc:
                error_type, body = "Runtime.MarshalError", _errors.marshal_error(str(exc), rid)
            except Exception as exc:
                error_type = type(exc).__name__
                body = _errors.handler_error(exc, rid, _user_traceback(exc.__traceback__))
                lines.append(f"[ERROR] {error_type}: {exc}\n")
        finally:
            _captured.reset(token)
        duration = time.perf_counter() - started
        status = None
        if timed_out:
            ok, error_type, outcome, duration = False, "Sandbox.Timedout", "timeout", timeout
            body = _errors.timeout_error(rid, timeout)
            lines.append(f"{rid} Task timed out after {timeout:.2f} seconds\n")
            status = "Status: timeout"
        logs = partial(  # formatted if read, like a process worker's
            format_logs,
            rid,
            # what was printed by now (a task the handler left may print later)
            output="".join(lines).encode(),
            duration_s=duration,
            memory_mb=memory_mb,
            max_memory_mb=0,
            init_duration_s=init_duration,
            status=status,
        )
        return InvokeResult(rid, ok, body, error_type, logs, duration, init_duration), outcome

    def statistics(self) -> Mapping[str, int | float]:
        """See :meth:`FunctionRunner.statistics` (workers = 1: the daemon itself)."""
        return {
            "workers": 1,
            "busy": self._busy,
            "idle": int(self._busy == 0),
            **self._counts,
            "crashes": 0,
            "recycled": 0,
        }
