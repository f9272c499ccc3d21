"""One runtime process and its own Runtime API endpoint (:mod:`._rapi_invoke` runs an
invocation through it).

* output: stdout, stderr and the telemetry log descriptor (``_LAMBDA_TELEMETRY_LOG_FD``,
  :mod:`._rapi_telemetry`) are one memfd opened ``O_APPEND``; :meth:`take_output` reads
  what was written since and empties the file, so an invocation's logs are its own;
* the process runs in a session of its own, so a kill reaches its children (a shell
  bootstrap's ``curl``) too;
* the parent-death signal: ``setpriv --pdeathsig KILL`` (util-linux) when available, so
  a daemon killed with SIGKILL leaves no runtime process behind; a daemon holding
  capabilities (root) starts runtimes without any (``--bounding-set -all``,
  ``--no-new-privs``...), as Python workers drop theirs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import Process, SocketAttribute, TaskGroup

from . import _harden
from ._rapi_endpoint import MAX_PAYLOAD, Endpoint
from ._rapi_http import serve_connection
from ._rapi_telemetry import unframe

__all__ = ["RapiWorker", "start_worker"]

_SETPRIV = shutil.which("setpriv")
_PAGE = os.sysconf("SC_PAGE_SIZE")


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
            return unframe(data)
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
        command = [_SETPRIV, "--pdeathsig", "KILL", *_drop_capabilities(), "--", *command]
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
                "_LAMBDA_TELEMETRY_LOG_FD": str(out),
            },
            start_new_session=True,
            pass_fds=(out,),
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


def _drop_capabilities() -> list[str]:
    """setpriv options that leave a runtime of a privileged daemon without capabilities
    and unable to regain them (as Python workers drop theirs, :mod:`._harden`)."""
    if not _harden.holds_capabilities():
        return []
    return [
        "--no-new-privs",
        "--bounding-set",
        "-all",
        "--inh-caps",
        "-all",
        "--ambient-caps",
        "-all",
    ]


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
