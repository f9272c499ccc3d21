"""Starting worker processes: fork server (fast) or a fresh interpreter per worker.

A launcher turns (socket, output memfd, log stream name) into a running worker process
and reports its exit status through :class:`ProcessHandle`. Both launchers run their
background tasks (exit waiters, the fork server's reader) in the pool's task group.

:class:`ForkServerLauncher` falls back to :class:`SpawnLauncher` if its template process
dies, so a pool keeps working (slower) instead of failing.

Neither hands a worker anything of the daemon's but the environment it was given: stdin
is ``/dev/null``, stdout/stderr the worker's memfd (the template's own memfd for a fork
server, whose tail is logged if the template fails), no other descriptor.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import anyio
import msgspec
import structlog
from anyio.abc import Process, TaskGroup

from ._protocol import Exited, FromTemplate, Hello, Spawn, Spawned

__all__ = ["ForkServerLauncher", "Launcher", "ProcessHandle", "SpawnLauncher"]

log = structlog.get_logger("eventrun.workers")

_decode = msgspec.msgpack.Decoder(FromTemplate).decode


class ProcessHandle:
    """A worker process: its pid and, once reaped, its returncode (negative = signal)."""

    __slots__ = ("exited", "pid", "returncode")

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.exited = anyio.Event()
        self.returncode: int | None = None

    def set_exited(self, returncode: int | None) -> None:
        if not self.exited.is_set():
            self.returncode = returncode
            self.exited.set()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the process unless it has been reaped (its pid may be reused then)."""
        if not self.exited.is_set():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    async def wait(self, within: float) -> bool:
        """Wait up to ``within`` seconds for the exit; True if it exited."""
        with anyio.move_on_after(within):
            await self.exited.wait()
        return self.exited.is_set()


class Launcher(Protocol):
    async def spawn(self, log_stream: str, sock: socket.socket, memfd: int) -> ProcessHandle: ...
    async def aclose(self) -> None: ...


class SpawnLauncher:
    """``python -m eventrun.workers._child FD`` per worker."""

    def __init__(self, tg: TaskGroup, env: Mapping[str, str], cwd: Path) -> None:
        self._tg, self._env, self._cwd = tg, env, cwd

    async def spawn(self, log_stream: str, sock: socket.socket, memfd: int) -> ProcessHandle:
        fd = sock.fileno()
        proc = await anyio.open_process(
            [sys.executable, "-m", "eventrun.workers._child", str(fd)],
            stdin=subprocess.DEVNULL,
            stdout=memfd,
            stderr=memfd,
            cwd=self._cwd,
            env={**self._env, "AWS_LAMBDA_LOG_STREAM_NAME": log_stream},
            start_new_session=True,
            pass_fds=(fd,),
        )
        handle = ProcessHandle(proc.pid)
        self._tg.start_soon(self._wait, proc, handle)
        return handle

    @staticmethod
    async def _wait(proc: Process, handle: ProcessHandle) -> None:
        try:
            handle.set_exited(await proc.wait())
        finally:
            with anyio.CancelScope(shield=True):
                await proc.aclose()

    async def aclose(self) -> None:
        pass


class ForkServerLauncher:
    """One template process per pool; workers are forked from it in about a millisecond.

    The template is started by :meth:`start` or, lazily, by the first :meth:`spawn`
    (a pool with ``min_warm: 0`` holds no template until its first invocation, which
    then pays the template's start as part of its cold start). If the template cannot be
    started, ``spawn`` falls back to :class:`SpawnLauncher` for good.
    """

    def __init__(self, tg: TaskGroup, env: Mapping[str, str], cwd: Path, *, name: str = "") -> None:
        self._tg = tg
        self._name = name
        self._started = False
        self._start_lock = anyio.Lock()
        self._fallback = SpawnLauncher(tg, env, cwd)
        self._env, self._cwd = env, cwd
        self._tokens = itertools.count()
        self._pending: dict[int, tuple[anyio.Event, list[ProcessHandle]]] = {}
        self._handles: dict[int, ProcessHandle] = {}
        self._ctl: socket.socket | None = None
        self._template: Process | None = None
        self._output = -1  # the template's stdout/stderr (a memfd)
        self._dead = True
        self._closing = False

    async def ensure_started(self, ready_within: float = 60.0) -> bool:
        """Start the template once (concurrent callers wait for the first); False when it
        could not start (logged as ``forkserver.start_failed``; spawns fall back)."""
        async with self._start_lock:
            if not self._started:
                self._started = True
                try:
                    # Shielded: a cancelled first invocation must not leave a half-started
                    # template (and every later spawn on the slow path).
                    with anyio.CancelScope(shield=True):
                        await self.start(ready_within)
                except (OSError, TimeoutError, RuntimeError) as exc:
                    log.warning(
                        "forkserver.start_failed",
                        function=self._name,
                        error=repr(exc),
                        output=self._output_tail(),
                    )
                    await self.aclose()
        return not self._dead

    async def start(self, ready_within: float = 60.0) -> None:
        """Start the template and wait until it has imported the worker code."""
        self._started = True
        ctl, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        if self._output < 0:
            self._output = os.memfd_create(f"eventrun-forkserver-{self._name}", os.MFD_CLOEXEC)
        try:
            self._template = await anyio.open_process(
                [sys.executable, "-m", "eventrun.workers._forkserver", str(theirs.fileno())],
                stdin=subprocess.DEVNULL,
                stdout=self._output,
                stderr=self._output,
                cwd=self._cwd,
                env=self._env,
                start_new_session=True,
                pass_fds=(theirs.fileno(),),
            )
        finally:
            theirs.close()
        ctl.setblocking(False)
        self._ctl = ctl
        with anyio.move_on_after(ready_within):
            hello = await self._receive()
            if not isinstance(hello, Hello):
                raise RuntimeError(f"fork server exited or said {hello!r} instead of hello")
            self._dead = False
            self._tg.start_soon(self._read)
            return
        raise TimeoutError(f"fork server not ready within {ready_within} s")

    async def _receive(self) -> Hello | Spawned | Exited | None:
        assert self._ctl is not None
        while True:
            try:
                data = self._ctl.recv(65536)
            except BlockingIOError:
                try:
                    await anyio.wait_readable(self._ctl)
                except (OSError, anyio.ClosedResourceError):
                    return None
                continue
            except OSError:
                return None
            try:
                return _decode(data) if data else None
            except msgspec.DecodeError:
                return None

    async def _read(self) -> None:
        try:
            while (msg := await self._receive()) is not None:
                if isinstance(msg, Spawned):
                    handle = ProcessHandle(msg.pid)
                    self._handles[msg.pid] = handle
                    event, slot = self._pending.pop(msg.token)
                    slot.append(handle)
                    event.set()
                elif isinstance(msg, Exited) and (h := self._handles.pop(msg.pid, None)):
                    h.set_exited(msg.returncode)
        finally:
            self._mark_dead()

    def _mark_dead(self) -> None:
        if not self._dead:
            self._dead = True
            if not self._closing:
                log.warning(
                    "forkserver.died",
                    function=self._name,
                    cwd=str(self._cwd),
                    output=self._output_tail(),
                )
        for handle in self._handles.values():
            handle.kill()
            handle.set_exited(None)
        self._handles.clear()
        for event, _ in self._pending.values():
            event.set()
        self._pending.clear()

    def _output_tail(self, limit: int = 2048) -> str:
        """The end of what the template wrote (a traceback, when it failed)."""
        try:
            size = os.fstat(self._output).st_size
            data = os.pread(self._output, min(size, limit), max(0, size - limit))
        except OSError:
            return ""
        return data.decode("utf-8", "replace")

    async def spawn(self, log_stream: str, sock: socket.socket, memfd: int) -> ProcessHandle:
        if not self._started and not self._closing:
            await self.ensure_started()
        if self._dead or self._ctl is None:
            return await self._fallback.spawn(log_stream, sock, memfd)
        token = next(self._tokens)
        event, slot = anyio.Event(), list[ProcessHandle]()
        self._pending[token] = (event, slot)
        data = msgspec.msgpack.encode(Spawn(token, log_stream))
        while True:
            try:
                socket.send_fds(self._ctl, [data], [sock.fileno(), memfd])
                break
            except BlockingIOError:
                await anyio.wait_writable(self._ctl)
            except OSError:
                self._pending.pop(token, None)
                self._mark_dead()
                return await self._fallback.spawn(log_stream, sock, memfd)
        await event.wait()
        if not slot:
            return await self._fallback.spawn(log_stream, sock, memfd)
        handle: ProcessHandle = slot[0]
        return handle

    async def aclose(self, grace: float = 2.0) -> None:
        """Close the control socket (the template kills what is left and exits)."""
        self._closing = True
        if self._ctl is not None and self._ctl.fileno() != -1:
            anyio.notify_closing(self._ctl)
            self._ctl.close()
        if self._template is not None:
            with anyio.CancelScope(shield=True):
                with anyio.move_on_after(grace):
                    await self._template.wait()
                if self._template.returncode is None:
                    self._template.kill()
                    await self._template.wait()
                await self._template.aclose()
        if self._output >= 0:
            os.close(self._output)
            self._output = -1
