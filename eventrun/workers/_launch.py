"""Starting worker processes: a fresh interpreter per worker, and the shared handle.

A launcher turns (socket, output memfd, log stream name) into a running worker process
and reports its exit status through :class:`ProcessHandle`. :class:`SpawnLauncher` runs
``python -m eventrun.workers._child`` per worker (the fork server off, or no zygote up);
the fast path, workers forked by a zygote, is :class:`~._zygote_host.ZygoteLauncher`.
Launchers run their background tasks (exit waiters) in the pool's task group.

Neither hands a worker anything of the daemon's but the environment it was given: stdin
is ``/dev/null``, stdout/stderr the worker's memfd, no other descriptor.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import anyio
import structlog
from anyio.abc import Process, TaskGroup

__all__ = ["Launcher", "ProcessHandle", "SpawnLauncher"]

log = structlog.get_logger("eventrun.workers")


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
