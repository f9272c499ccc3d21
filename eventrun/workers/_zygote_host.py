"""The daemon's side of a zygote (:mod:`._zygote`): start it, fork through it, restart it.

A daemon runs one :class:`Zygote` for every ``runtime: process`` function
(:func:`open_zygote`, entered by the runtime's phased start before the function
runners and left after them on drain). A pool started without one (a test, ``eventrun
invoke``), or a function whose interpreter start-up variables differ from the shared
zygote's, gets a zygote of its own, started by its first worker.

:meth:`Zygote.run` is the zygote's supervisor, a task of its owner's task group: it
starts the process, waits for its hello, serves its messages and, if the process dies,
logs ``zygote.died`` (with its exit status and the tail of its output), kills what it
had forked (their parent-death signal would anyway), and starts a new one
(``zygote.restarted``). If the first start fails (``zygote.start_failed``), or three
restarts in a row do, it gives up: :meth:`Zygote.spawn` then returns None and the pool
starts fresh interpreters instead, as when the fork server is off.
"""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import msgspec
import structlog
from anyio.abc import Process, TaskGroup, TaskStatus

from ._launch import ProcessHandle, SpawnLauncher
from ._protocol import Exited, FromTemplate, Hello, Spawn, Spawned
from ._zygote import bootstrap_command

__all__ = ["Zygote", "ZygoteLauncher", "open_zygote", "startup_environment", "zygote_environment"]

log = structlog.get_logger("eventrun.workers")

_decode = msgspec.msgpack.Decoder(FromTemplate).decode
_encode = msgspec.msgpack.Encoder().encode

# Read by the interpreter while it starts (or by a .pth hook), so a forked worker cannot
# take them from its function: every PYTHON* variable but these, the locale, coverage.py.
_APPLIED_AFTER_FORK = frozenset(
    {"PYTHONPATH", "PYTHONDONTWRITEBYTECODE", "PYTHONBREAKPOINT", "PYTHONASYNCIODEBUG"}
)
_STARTUP_NAMES = frozenset(
    {"LANG", "LC_ALL", "LC_CTYPE", "COVERAGE_PROCESS_START", "COVERAGE_PROCESS_CONFIG"}
)
_RESTART_ATTEMPTS = 3
_QUICK_DEATH_S = 1.0  # a zygote that dies sooner than this is restarted after a pause


def startup_environment(env: Mapping[str, str]) -> dict[str, str]:
    """The variables of ``env`` an interpreter reads as it starts: a function can share
    a zygote only when these are the zygote's."""
    return {
        key: value
        for key, value in env.items()
        if key in _STARTUP_NAMES or (key.startswith("PYTHON") and key not in _APPLIED_AFTER_FORK)
    }


class Zygote:
    """A template process that forks workers for any function it :meth:`serves`."""

    def __init__(
        self,
        env: Mapping[str, str],
        cwd: Path | str = "/",
        *,
        name: str = "daemon",
        ready_within: float = 60.0,
        stop_grace: float = 2.0,
    ) -> None:
        self.env = dict(env)
        self.cwd = Path(cwd)
        self.name = name
        self.ready_within = ready_within
        self.stop_grace = stop_grace
        self.pid: int | None = None
        """The live zygote's pid (None while none is up)."""
        self.restarts = 0
        self._startup = startup_environment(self.env)
        self._proc: Process | None = None
        self._ctl: socket.socket | None = None
        self._output = -1  # the zygote's stdout/stderr (a memfd)
        self._tokens = itertools.count()
        self._pending: dict[int, tuple[anyio.Event, list[ProcessHandle]]] = {}
        self._handles: dict[int, ProcessHandle] = {}
        self._changed = anyio.Event()
        self._gave_up = False
        self._closing = False
        self._running = False
        self._stopped = anyio.Event()

    def serves(self, env: Mapping[str, str]) -> bool:
        """Whether a worker with environment ``env`` can be forked from this zygote."""
        return startup_environment(env) == self._startup

    def statistics(self) -> dict[str, int | None]:
        return {"pid": self.pid, "restarts": self.restarts, "workers": len(self._handles)}

    async def wait_change(self) -> None:
        """Wait until the zygote comes up, dies or is given up."""
        await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    # -- the supervisor ------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Start the zygote and keep one up until :meth:`aclose`; ``started`` once the
        first start succeeded or failed (spawns fall back to fresh interpreters then)."""
        self._running = True
        reported = False
        failures = 0
        try:
            self._output = os.memfd_create(f"eventrun-zygote-{self.name}", os.MFD_CLOEXEC)
            while not self._closing:
                try:
                    with anyio.CancelScope(shield=True):
                        await self._start()
                except (OSError, TimeoutError, RuntimeError) as exc:
                    if self._closing:
                        return
                    failures += 1
                    log.warning(
                        "zygote.start_failed",
                        zygote=self.name,
                        cwd=str(self.cwd),
                        error=repr(exc),
                        output=self._output_tail(),
                        attempt=failures,
                    )
                    await self._stop_process()
                    if not reported or failures >= _RESTART_ATTEMPTS:
                        return
                    await anyio.sleep(0.5 * 2**failures)
                    continue
                failures = 0
                if reported:
                    self.restarts += 1
                    log.warning(
                        "zygote.restarted", zygote=self.name, pid=self.pid, restarts=self.restarts
                    )
                else:
                    reported = True
                    log.info("zygote.started", zygote=self.name, pid=self.pid)
                    task_status.started()
                self._notify()
                born = anyio.current_time()
                await self._read()
                self._mark_dead()
                returncode = await self._stop_process()
                if self._closing:
                    return
                log.warning(
                    "zygote.died",
                    zygote=self.name,
                    returncode=returncode,
                    output=self._output_tail(),
                )
                if anyio.current_time() - born < _QUICK_DEATH_S:
                    await anyio.sleep(_QUICK_DEATH_S)
        finally:
            with anyio.CancelScope(shield=True):
                self._mark_dead()
                await self._stop_process()
                self._gave_up = True
                self._notify()
                if self._output >= 0:
                    os.close(self._output)
                    self._output = -1
                self._stopped.set()
                if not reported:
                    task_status.started()

    async def _start(self) -> None:
        ctl, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        os.ftruncate(self._output, 0)
        try:
            self._proc = await anyio.open_process(
                bootstrap_command(theirs.fileno()),
                stdin=subprocess.DEVNULL,
                stdout=self._output,
                stderr=self._output,
                cwd=self.cwd,
                env=self.env,
                start_new_session=True,
                pass_fds=(theirs.fileno(),),
            )
        except BaseException:
            ctl.close()
            raise
        finally:
            theirs.close()
        ctl.setblocking(False)
        self._ctl = ctl
        with anyio.move_on_after(self.ready_within):
            hello = await self._receive()
            if not isinstance(hello, Hello):
                raise RuntimeError(f"zygote exited or said {hello!r} instead of hello")
            self.pid = hello.pid
            return
        raise TimeoutError(f"zygote not ready within {self.ready_within} s")

    async def _receive(self) -> Hello | Spawned | Exited | None:
        ctl = self._ctl
        while ctl is not None:
            try:
                data = ctl.recv(65536)
            except BlockingIOError:
                try:
                    await anyio.wait_readable(ctl)
                except (OSError, anyio.ClosedResourceError):
                    return None
                continue
            except OSError:
                return None
            try:
                return _decode(data) if data else None
            except msgspec.DecodeError:
                return None
        return None

    async def _read(self) -> None:
        while (msg := await self._receive()) is not None:
            if isinstance(msg, Spawned):
                handle = ProcessHandle(msg.pid)
                self._handles[msg.pid] = handle
                if waiting := self._pending.pop(msg.token, None):
                    waiting[1].append(handle)
                    waiting[0].set()
            elif isinstance(msg, Exited) and (h := self._handles.pop(msg.pid, None)):
                h.set_exited(msg.returncode)

    def _mark_dead(self) -> None:
        """No zygote (any more): what it forked is killed, waiting spawns give up."""
        self.pid = None
        self._close_ctl()
        for handle in self._handles.values():
            handle.kill()
            handle.set_exited(None)
        self._handles.clear()
        for event, _ in self._pending.values():
            event.set()
        self._pending.clear()
        self._notify()

    def _close_ctl(self) -> None:
        if self._ctl is not None and self._ctl.fileno() != -1:
            anyio.notify_closing(self._ctl)
            self._ctl.close()
        self._ctl = None

    async def _stop_process(self) -> int | None:
        """Wait (``stop_grace``) for the process to exit after EOF, SIGKILL it if not."""
        proc, self._proc = self._proc, None
        self._close_ctl()
        if proc is None:
            return None
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(self.stop_grace):
                await proc.wait()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            await proc.aclose()
        return proc.returncode

    def _output_tail(self, limit: int = 2048) -> str:
        """The end of what the zygote wrote (a traceback, when it failed)."""
        try:
            size = os.fstat(self._output).st_size
            data = os.pread(self._output, min(size, limit), max(0, size - limit))
        except OSError:
            return ""
        return data.decode("utf-8", "replace")

    # -- for the pools -------------------------------------------------------------------

    async def spawn(
        self, env: Mapping[str, str], cwd: Path, log_stream: str, sock: socket.socket, memfd: int
    ) -> ProcessHandle | None:
        """Fork a worker of the function whose environment is ``env``; None when no
        zygote is up (the caller starts a fresh interpreter instead)."""
        with anyio.move_on_after(self.ready_within):
            while self.pid is None and self._running and not self._gave_up:
                await self._changed.wait()
        ctl = self._ctl
        if self.pid is None or ctl is None:
            return None
        token = next(self._tokens)
        event, slot = anyio.Event(), list[ProcessHandle]()
        self._pending[token] = (event, slot)
        data = _encode(Spawn(token, log_stream, str(cwd), dict(env)))
        while True:
            try:
                socket.send_fds(ctl, [data], [sock.fileno(), memfd])
                break
            except BlockingIOError:
                try:
                    await anyio.wait_writable(ctl)
                except (OSError, anyio.ClosedResourceError):
                    self._pending.pop(token, None)
                    return None
            except OSError:  # a dead zygote (its reader notices) or a huge environment
                self._pending.pop(token, None)
                return None
        await event.wait()
        return slot[0] if slot else None

    async def aclose(self) -> None:
        """Close the control socket (the zygote kills what is left and exits) and wait
        for the supervisor to finish."""
        self._closing = True
        self._close_ctl()
        if self._running:
            with anyio.CancelScope(shield=True):
                await self._stopped.wait()


class ZygoteLauncher:
    """A pool's launcher: workers forked by a zygote (the daemon's, or the pool's own,
    started by the first spawn); fresh interpreters when no zygote is up."""

    def __init__(
        self,
        tg: TaskGroup,
        zygote: Zygote,
        env: Mapping[str, str],
        cwd: Path,
        *,
        own: bool,
    ) -> None:
        self.zygote = zygote
        self._tg, self._env, self._cwd, self._own = tg, env, cwd, own
        self._fallback = SpawnLauncher(tg, env, cwd)
        self._start_lock = anyio.Lock()
        self._started = not own

    async def ensure_started(self) -> None:
        """Start the pool's own zygote once (concurrent callers wait for the first)."""
        async with self._start_lock:
            if not self._started:
                self._started = True
                # Shielded: a cancelled first invocation must not leave a half-started
                # zygote (and every later spawn on the slow path).
                with anyio.CancelScope(shield=True):
                    await self._tg.start(self.zygote.run)

    async def spawn(self, log_stream: str, sock: socket.socket, memfd: int) -> ProcessHandle:
        if not self._started:
            await self.ensure_started()
        handle = await self.zygote.spawn(self._env, self._cwd, log_stream, sock, memfd)
        if handle is None:
            return await self._fallback.spawn(log_stream, sock, memfd)
        return handle

    async def aclose(self) -> None:
        if self._own:
            await self.zygote.aclose()


def zygote_environment(function_envs: Iterable[Mapping[str, str]]) -> dict[str, str]:
    """The shared zygote's environment: the start-up variables most functions have (so
    that they all share it) and ``PYTHONUNBUFFERED``; nothing else of the daemon's."""
    counts = Counter(tuple(sorted(startup_environment(env).items())) for env in function_envs)
    common = dict(counts.most_common(1)[0][0]) if counts else {}
    return {**common, "PYTHONUNBUFFERED": "1"}


@asynccontextmanager
async def open_zygote(function_envs: Iterable[Mapping[str, str]]) -> AsyncIterator[Zygote]:
    """Run the daemon's zygote for functions with these environments until left."""
    zygote = Zygote(zygote_environment(function_envs))
    async with anyio.create_task_group() as tg:
        await tg.start(zygote.run)
        try:
            yield zygote
        finally:
            await zygote.aclose()
