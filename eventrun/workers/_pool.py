"""One function's pool of worker processes (Lambda's execution environments).

Contract (SPEC §4):

* at most ``concurrency`` invocations run at once (an anyio Semaphore; ``wait=False``
  raises FunctionSaturated instead of queueing); workers are spawned on demand up to
  that bound, ``min_warm`` are started (initialised) in ``__aenter__`` and replenished;
* a worker runs one invocation at a time, is reused warm (LIFO), and is retired after
  ``max_requests`` invocations (0 = never);
* timeout -> SIGKILL at the deadline, ``Sandbox.Timedout``; exit/signal -> ``Runtime.ExitError``;
  memory -> ``Runtime.OutOfMemory``; a garbled frame counts as a crash. The worker is
  replaced in every case and the result is an :class:`InvokeResult`, never an exception;
* a cancelled invocation kills its worker (it may be half-way through a frame).

Isolation (docs/security.md, "Workers"): a worker's environment is built from nothing
(:func:`~._api.function_environment`: ``inherit_env`` names of the daemon's, never
``EVENTRUN_*`` nor ``hidden_env``), and a process that runs pools makes itself
non-dumpable so its workers cannot read its ``/proc/PID/environ`` (:mod:`._harden`).

The round trip itself lives in :mod:`._invocation`.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
from collections.abc import Callable, Collection, Mapping
from contextlib import AsyncExitStack
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import anyio
import structlog
from anyio.abc import TaskGroup

from eventrun.common import new_request_id

from . import _harden
from ._api import (
    FunctionSettings,
    InvokeResult,
    acquire_slot,
    function_environment,
    log_stream_name,
)
from ._channel import Channel
from ._invocation import Worker, init_failure, run_invocation
from ._launch import Launcher, SpawnLauncher
from ._protocol import ChannelClosed, FrameError, Ready, decode_from_worker
from ._zygote_host import Zygote, ZygoteLauncher, startup_environment

__all__ = ["ProcessRunner"]

log = structlog.get_logger("eventrun.workers")

_OUTCOME_COUNTERS = {
    "error": ("errors",),
    "timeout": ("errors", "timeouts"),
    "crash": ("errors", "crashes"),
    "oom": ("errors", "crashes", "out_of_memory"),
    "init_error": ("errors",),
}


class ProcessRunner:
    """A ``runtime: process`` function: a pool of worker processes."""

    def __init__(
        self,
        name: str,
        settings: FunctionSettings,
        *,
        config_dir: Path,
        region: str = "us-east-1",
        fork_server: bool = True,
        init_timeout: float = 10.0,
        stop_grace: float = 2.0,
        hidden_env: Collection[str] = (),
        zygote: Zygote | None = None,
    ) -> None:
        """``zygote``: the daemon's, which forks this pool's workers when the function's
        interpreter start-up variables are its own; otherwise (or without one) the pool
        starts a zygote of its own with its first worker. ``fork_server=False``: a fresh
        interpreter per worker."""
        self.name = name
        self.settings = settings
        self.task_root = Path(config_dir).resolve()
        self.env = function_environment(name, settings, self.task_root, region, hidden=hidden_env)
        self.init_timeout = init_timeout
        self.stop_grace = stop_grace
        self._fork_server = fork_server
        self._zygote = zygote
        # fast_acquire: a free slot is taken without a trip through the event loop (an
        # invocation always suspends anyway, waiting for its worker's answer)
        self._slots = anyio.Semaphore(max(1, settings.concurrency), fast_acquire=True)
        self._idle: list[Worker] = []
        self._workers: set[Worker] = set()
        self._busy = 0
        self._closing = False
        self._stack: AsyncExitStack | None = None
        self._tg: TaskGroup | None = None
        self._launcher: Launcher | None = None
        # bound once: a per-call lookup through structlog's lazy proxy costs microseconds
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
        _harden.make_undumpable()
        async with AsyncExitStack() as stack:
            self._tg = await stack.enter_async_context(anyio.create_task_group())
            stack.push_async_callback(self._stop)
            self._launcher = SpawnLauncher(self._tg, self.env, self.task_root)
            if self._fork_server:
                self._launcher = await self._zygote_launcher(self._tg)
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
        """SIGTERM every worker, wait ``stop_grace``, SIGKILL the rest, stop the launcher."""
        self._closing = True
        with anyio.CancelScope(shield=True):
            workers = list(self._workers)
            for worker in workers:
                worker.channel.close()
                worker.proc.kill(signal.SIGTERM)
            with anyio.move_on_after(self.stop_grace):
                for worker in workers:
                    await worker.proc.exited.wait()
            for worker in workers:
                worker.proc.kill()
                self._forget(worker)
            if self._launcher is not None:
                await self._launcher.aclose()
            with anyio.move_on_after(self.stop_grace):
                for worker in workers:
                    await worker.proc.exited.wait()
        if self._tg is not None:
            self._tg.cancel_scope.cancel()

    async def _zygote_launcher(self, tg: TaskGroup) -> ZygoteLauncher:
        shared = self._zygote
        if shared is not None and shared.serves(self.env):
            return ZygoteLauncher(tg, shared, self.env, self.task_root, own=False)
        if shared is not None:
            ours, theirs = startup_environment(self.env), startup_environment(shared.env)
            differ = [k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k)]
            log.info(
                "zygote.own",
                function=self.name,
                reason="interpreter start-up variables differ from the daemon's zygote",
                variables=sorted(differ),
            )
        # min_warm 0: the pool's own zygote starts with its first worker, not here, so
        # an idle function costs no process (and no memory).
        own = Zygote(self.env, self.task_root, name=self.name, stop_grace=self.stop_grace)
        launcher = ZygoteLauncher(tg, own, self.env, self.task_root, own=True)
        if self._warm_target() > 0:
            await launcher.ensure_started()
        return launcher

    def _warm_target(self) -> int:
        return min(self.settings.min_warm, max(1, self.settings.concurrency))

    # -- workers -------------------------------------------------------------------

    async def _start_worker(self) -> tuple[Worker, Ready]:
        """Spawn a worker and wait for its init phase; raises on failure to start."""
        assert self._launcher is not None
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        memfd = os.memfd_create(f"eventrun-{self.name}", os.MFD_CLOEXEC)
        started = anyio.current_time()
        try:
            proc = await self._launcher.spawn(log_stream_name(secrets.token_hex(16)), theirs, memfd)
        except BaseException:
            mine.close()
            os.close(memfd)
            raise
        finally:
            theirs.close()
        try:
            channel = await Channel.open(mine)
        except BaseException:
            proc.kill()
            os.close(memfd)
            raise
        worker = Worker(proc, channel, memfd)
        self._workers.add(worker)
        try:
            with anyio.fail_after(self.init_timeout):
                ready = decode_from_worker(await worker.channel.receive())
            if not isinstance(ready, Ready):
                raise FrameError(f"expected ready, got {type(ready).__name__}")
        except BaseException:
            self._discard(worker)
            raise
        worker.init_duration_s = anyio.current_time() - started
        worker.init_output = ready.init_output
        self._counts["cold_starts"] += 1
        log.info(
            "worker.cold_start",
            function=self.name,
            pid=proc.pid,
            init_duration_s=round(worker.init_duration_s, 6),
            ok=ready.error_type is None,
        )
        return worker, ready

    async def _add_warm(self) -> None:
        if self._closing or len(self._workers) >= self._warm_target():
            return
        try:
            worker, ready = await self._start_worker()
        except (ChannelClosed, FrameError, TimeoutError, OSError) as exc:
            log.warning("worker.start_failed", function=self.name, error=repr(exc))
            return
        if ready.error_type is not None:
            log.warning("worker.init_failed", function=self.name, error_type=ready.error_type)
            self._discard(worker)
            return
        self._idle.append(worker)

    def _discard(self, worker: Worker) -> None:
        """Kill a worker now (sync: safe in ``finally`` under cancellation)."""
        worker.proc.kill()
        self._forget(worker)
        self._replenish()

    def _retire(self, worker: Worker) -> None:
        """Let a healthy worker exit on EOF; SIGKILL it if it lingers."""
        self._forget(worker)
        if self._tg is not None:
            self._tg.start_soon(self._reap_retired, worker)
        self._replenish()

    async def _reap_retired(self, worker: Worker) -> None:
        if not await worker.proc.wait(self.stop_grace):
            worker.proc.kill()

    def _forget(self, worker: Worker) -> None:
        if worker in self._workers:
            self._workers.discard(worker)
            worker.channel.close()
            os.close(worker.memfd)
        if worker in self._idle:
            self._idle.remove(worker)

    def _replenish(self) -> None:
        if not self._closing and self._tg is not None and len(self._workers) < self._warm_target():
            self._tg.start_soon(self._add_warm)

    def _checkin(self, worker: Worker) -> None:
        max_requests = self.settings.max_requests
        if max_requests and worker.requests >= max_requests:
            self._counts["recycled"] += 1
            self._retire(worker)
        elif self._closing or len(self._workers) > max(1, self.settings.concurrency):
            self._retire(worker)
        else:
            self._idle.append(worker)

    def _checkout(self) -> Worker | None:
        while self._idle:
            worker = self._idle.pop()
            if not worker.proc.exited.is_set():
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
        event: Any = None,  # unused: a worker decodes its own copy of payload
        stream: Callable[[bytes], None] | None = None,  # Python handlers never stream
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
            "invoke.done",
            request_id=rid,
            duration_s=round(result.duration_s, 6),
            outcome=outcome,
        )
        return result

    async def _invoke(
        self,
        rid: str,
        payload: bytes,
        client_context: dict[str, Any] | None,
        identity: dict[str, Any] | None,
    ) -> tuple[InvokeResult, str]:
        worker = self._checkout()
        init_duration: float | None = None
        if worker is None:
            try:
                worker, ready = await self._start_worker()
            except (ChannelClosed, FrameError, TimeoutError, OSError) as exc:
                return init_failure(rid, None, exc, self.settings.memory_mb), "crash"
            if ready.error_type is not None:
                self._discard(worker)
                return init_failure(rid, ready, None, self.settings.memory_mb), "init_error"
            init_duration = worker.init_duration_s
        reusable = False
        try:
            result, outcome, reusable = await run_invocation(
                worker,
                rid,
                payload,
                client_context,
                identity,
                timeout_s=self.settings.timeout,
                memory_mb=self.settings.memory_mb,
                init_duration_s=init_duration,
            )
        finally:
            if reusable:
                self._checkin(worker)
            else:
                self._discard(worker)
        return result, outcome

    def statistics(self) -> Mapping[str, int | float]:
        """See :meth:`FunctionRunner.statistics`."""
        return {
            "workers": len(self._workers),
            "busy": self._busy,
            "idle": len(self._idle),
            **self._counts,
        }
