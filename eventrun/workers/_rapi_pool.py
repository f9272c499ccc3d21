"""A function in any language: a pool of processes that speak Lambda's Runtime API.

``runtime: nodejs*``, ``provided*``, or a ``command:`` (docs/runtimes.md). The same
contract as :class:`~._pool.ProcessRunner` (SPEC §4), so the dispatcher, retries, DLQs
and metrics treat these functions like Python ones:

* one process per concurrency slot, spawned on demand (``min_warm`` kept initialised),
  each with its own endpoint on loopback (``AWS_LAMBDA_RUNTIME_API``) and one
  invocation at a time; warm processes are reused (LIFO) and retired after
  ``max_requests``;
* init: the process is ready at its first ``/next``; ``/init/error`` or an exit before
  it fails the invocation that started it (the next one starts a fresh process);
* timeout -> the process group is killed, ``Sandbox.Timedout``; resident memory over
  ``memory_mb`` -> killed, ``Runtime.OutOfMemory``; an exit mid-invocation ->
  ``Runtime.ExitError``; each replaces the process;
* shutdown: SIGTERM, ``stop_grace``, SIGKILL, then the endpoints close.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Collection, Mapping, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import anyio
import structlog
from anyio.abc import TaskGroup

from eventrun.common import new_request_id
from eventrun.exceptions import ConfigError

from . import _errors, _harden
from ._api import (
    FunctionSettings,
    InvokeResult,
    acquire_slot,
    function_environment,
    log_stream_name,
)
from ._context import function_arn
from ._rapi_endpoint import Invocation
from ._rapi_invoke import header_json, init_failure, invoke_once, trace_id
from ._rapi_launch import runtime_api_env, runtime_command
from ._rapi_worker import RapiWorker, start_worker

__all__ = ["RuntimeApiRunner"]

log = structlog.get_logger("eventrun.workers")

_OUTCOME_COUNTERS = {
    "error": ("errors",),
    "timeout": ("errors", "timeouts"),
    "crash": ("errors", "crashes"),
    "oom": ("errors", "crashes", "out_of_memory"),
    "init_error": ("errors",),
}


class RuntimeApiRunner:
    """A function whose processes are Runtime API clients (Node.js, ``bootstrap``...)."""

    def __init__(
        self,
        name: str,
        settings: FunctionSettings,
        *,
        code_dir: Path,
        command: Sequence[str] | None = None,
        region: str = "us-east-1",
        init_timeout: float = 10.0,
        stop_grace: float = 2.0,
        hidden_env: Collection[str] = (),
    ) -> None:
        self.name = name
        self.settings = settings
        self.code_dir = Path(code_dir).resolve()
        base = function_environment(name, settings, self.code_dir, region, hidden=hidden_env)
        try:
            self.argv = runtime_command(
                settings.runtime, command, settings.handler, self.code_dir, base, settings.memory_mb
            )
        except ConfigError as exc:
            raise ConfigError(f"function {name!r}: {exc}") from None
        self.env = runtime_api_env(
            base, runtime=settings.runtime, command=command, code_dir=self.code_dir, argv=self.argv
        )
        self.arn = function_arn(region, name)
        self.init_timeout = init_timeout
        self.stop_grace = stop_grace
        self._slots = anyio.Semaphore(max(1, settings.concurrency), fast_acquire=True)
        self._idle: list[RapiWorker] = []
        self._workers: set[RapiWorker] = set()
        self._busy = 0
        self._closing = False
        self._stack: AsyncExitStack | None = None
        self._tg: TaskGroup | None = None
        self._log = log.bind(function=name)
        self._counts = dict.fromkeys(
            (
                "cold_starts",
                "invocations",
                "errors",
                "timeouts",
                "crashes",
                "out_of_memory",
                "recycled",
            ),
            0,
        )

    # -- lifecycle -----------------------------------------------------------------

    async def __aenter__(self) -> Self:
        _harden.make_undumpable()  # runtimes cannot read the daemon's /proc/PID/environ
        async with AsyncExitStack() as stack:
            self._tg = await stack.enter_async_context(anyio.create_task_group())
            stack.push_async_callback(self._stop)
            async with anyio.create_task_group() as warm:
                for _ in range(self._warm_target()):
                    warm.start_soon(self._add_warm)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._stack is not None:
            stack, self._stack = self._stack, None
            await stack.__aexit__(exc_type, exc, tb)

    async def _stop(self) -> None:
        """SIGTERM every process, wait ``stop_grace``, SIGKILL the rest, close endpoints."""
        self._closing = True
        with anyio.CancelScope(shield=True):
            workers = list(self._workers)
            for worker in workers:
                worker.kill(signal.SIGTERM)
            with anyio.move_on_after(self.stop_grace):
                for worker in workers:
                    await worker.exited.wait()
            for worker in workers:
                self._forget(worker)
            with anyio.move_on_after(self.stop_grace):
                for worker in workers:
                    await worker.exited.wait()
        if self._tg is not None:
            self._tg.cancel_scope.cancel()

    def _warm_target(self) -> int:
        return min(self.settings.min_warm, max(1, self.settings.concurrency))

    # -- processes -----------------------------------------------------------------

    async def _start_worker(self, *, provisioned: bool = False) -> RapiWorker:
        """Spawn a runtime process and wait for the end of its init phase: its first
        ``/next``, its ``/init/error``, its exit, or ``init_timeout``. ``provisioned``:
        a ``min_warm`` process (``AWS_LAMBDA_INITIALIZATION_TYPE=provisioned-concurrency``)."""
        assert self._tg is not None
        started = anyio.current_time()
        env = self.env
        if provisioned:
            env = {**env, "AWS_LAMBDA_INITIALIZATION_TYPE": "provisioned-concurrency"}
        worker = await start_worker(
            self._tg,
            self.argv,
            env,
            self.code_dir,
            name=self.name,
            log_stream=log_stream_name(worker_id := new_request_id().replace("-", "")),
        )
        self._workers.add(worker)
        try:
            with anyio.move_on_after(self.init_timeout):
                await worker.endpoint.init_done.wait()
        except BaseException:
            self._discard(worker)
            raise
        worker.init_duration_s = anyio.current_time() - started
        self._counts["cold_starts"] += 1
        self._log.info(
            "worker.cold_start",
            pid=worker.pid,
            worker=worker_id[:8],
            init_duration_s=round(worker.init_duration_s, 6),
            ok=worker.endpoint.state == "ready",
        )
        return worker

    def _init_failure(self, rid: str, worker: RapiWorker) -> InvokeResult:
        result = init_failure(rid, worker, self.settings.memory_mb, self.init_timeout)
        self._log.warning("worker.init_failed", error_type=result.error_type)
        return result

    async def _add_warm(self) -> None:
        if self._closing or len(self._workers) >= self._warm_target():
            return
        try:
            worker = await self._start_worker(provisioned=True)
        except OSError as exc:
            self._log.warning("worker.start_failed", error=repr(exc))
            return
        if worker.endpoint.state != "ready":
            self._init_failure("-", worker)
            self._discard(worker, replenish=False)
            return
        self._idle.append(worker)

    def _discard(self, worker: RapiWorker, *, replenish: bool = True) -> None:
        self._forget(worker)
        if replenish:
            self._replenish()

    def _forget(self, worker: RapiWorker) -> None:
        if worker in self._workers:
            self._workers.discard(worker)
            worker.close()
        if worker in self._idle:
            self._idle.remove(worker)

    def _replenish(self) -> None:
        if not self._closing and self._tg is not None and len(self._workers) < self._warm_target():
            self._tg.start_soon(self._add_warm)

    def _retire(self, worker: RapiWorker) -> None:
        """SIGTERM a healthy process (Lambda's shutdown), SIGKILL it if it lingers."""
        self._workers.discard(worker)
        worker.kill(signal.SIGTERM)
        if self._tg is not None:
            self._tg.start_soon(self._reap, worker)
        self._replenish()

    async def _reap(self, worker: RapiWorker) -> None:
        try:
            with anyio.move_on_after(self.stop_grace):
                await worker.exited.wait()
        finally:  # also when shutdown cancels the wait: SIGKILL, release the memfd
            worker.close()

    def _checkin(self, worker: RapiWorker) -> None:
        max_requests = self.settings.max_requests
        if max_requests and worker.requests >= max_requests:
            self._counts["recycled"] += 1
            self._retire(worker)
        elif self._closing or len(self._workers) > max(1, self.settings.concurrency):
            self._retire(worker)
        else:
            self._idle.append(worker)

    def _checkout(self) -> RapiWorker | None:
        while self._idle:
            worker = self._idle.pop()
            if not worker.exited.is_set():
                return worker
            self._discard(worker)
        return None

    # -- invoke --------------------------------------------------------------------

    async def invoke(
        self,
        payload: bytes,
        *,
        request_id: str | None = None,
        wait: bool = True,
        client_context: dict[str, Any] | None = None,
        identity: dict[str, Any] | None = None,
        log_done: bool = True,
        event: Any = None,  # unused: the runtime decodes its own copy of payload
    ) -> InvokeResult:
        """See :meth:`FunctionRunner.invoke`."""
        rid = request_id or new_request_id()
        await acquire_slot(
            self._slots, wait=wait, name=self.name, concurrency=self.settings.concurrency
        )
        try:
            self._busy += 1
            result, outcome = await self._invoke(rid, payload, client_context, identity)
        finally:
            self._busy -= 1
            self._slots.release()
        self._counts["invocations"] += 1
        for counter in _OUTCOME_COUNTERS.get(outcome, ()):
            self._counts[counter] += 1
        (self._log.info if log_done else self._log.debug)(
            "invoke.done", request_id=rid, duration_s=round(result.duration_s, 6), outcome=outcome
        )
        return result

    async def _invoke(
        self,
        rid: str,
        payload: bytes,
        client_context: dict[str, Any] | None,
        identity: dict[str, Any] | None,
    ) -> tuple[InvokeResult, str]:
        """Run on a warm process, or a new one; a warm process that died before its
        ``/next`` took the event (awslambdaric exits when a response is refused) is
        replaced and the event handed to a fresh one, as Lambda re-initialises."""
        while True:
            worker = self._checkout()
            warm = worker is not None
            init_duration: float | None = None
            if worker is None:
                started = await self._started_worker(rid)
                if isinstance(started, tuple):
                    return started
                worker = started
                init_duration = worker.init_duration_s
            invocation = self._invocation(rid, payload, client_context, identity)
            reusable = False
            try:
                result, outcome, reusable = await invoke_once(
                    worker,
                    invocation,
                    timeout_s=self.settings.timeout,
                    memory_mb=self.settings.memory_mb,
                    init_duration_s=init_duration,
                )
            finally:
                if reusable:
                    self._checkin(worker)
                else:
                    self._discard(worker)
            if warm and outcome == "crash" and not invocation.taken:
                continue
            return result, outcome

    async def _started_worker(self, rid: str) -> RapiWorker | tuple[InvokeResult, str]:
        """A new initialised process, or the failed result of the invocation waiting."""
        try:
            worker = await self._start_worker()
        except OSError as exc:
            reason = f"Runtime failed to start: {exc}"
            body = _errors.runtime_error("Runtime.ExitError", rid, reason)
            result = InvokeResult(rid, False, body, "Runtime.ExitError", reason, 0.0, None)
            return result, "crash"
        if worker.endpoint.state != "ready":
            result = self._init_failure(rid, worker)
            self._discard(worker)
            return result, "init_error"
        return worker

    def _invocation(
        self,
        rid: str,
        payload: bytes,
        client_context: dict[str, Any] | None,
        identity: dict[str, Any] | None,
    ) -> Invocation:
        return Invocation(
            rid,
            payload,
            int((time.time() + self.settings.timeout) * 1000),
            self.arn,
            trace_id(),
            header_json(client_context),
            header_json(identity),
        )

    def statistics(self) -> Mapping[str, int | float]:
        """See :meth:`FunctionRunner.statistics`."""
        return {
            "workers": len(self._workers),
            "busy": self._busy,
            "idle": len(self._idle),
            **self._counts,
        }
