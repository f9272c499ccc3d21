"""The zygote: one pre-imported template process that forks every function's workers.

Spawning a fresh interpreter and importing the worker code costs tens to hundreds of
milliseconds; forking a process that already did it costs about one. A daemon starts one
zygote (``python -c BOOTSTRAP FD ...``, see :func:`bootstrap_command`) with a neutral
environment and ``/`` as its working directory. It imports the worker code
(:mod:`eventrun.workers._child`: msgspec, asyncio, logging) and nothing of any function,
then, per request, forks a worker that becomes one function's execution environment
before it imports anything of that function (:func:`_enter_function`):

* ``os.environ`` is replaced by the function's whole environment (the daemon built it,
  :func:`~._api.function_environment`) and ``time.tzset()`` reads its ``TZ``;
* the working directory becomes the function's task root;
* ``sys.path`` is rebuilt as a fresh ``python`` started there with that environment
  would have it: the task root, the function's ``PYTHONPATH`` entries, then the
  interpreter's own (stdlib, site-packages); ``PYTHONDONTWRITEBYTECODE`` is applied;
* the memory limit (``RLIMIT_AS``) and the handler import happen in
  :func:`~._child.serve`, in the worker, as for a spawned one.

The handler module is imported in the forked worker, never in the zygote, so the init
phase (and its cold-start cost) stays per worker, as on Lambda, and no function's module
state, environment or ``sys.path`` entry is ever in the zygote to be inherited by
another function's worker. What a fork cannot change (the interpreter's start-up
variables: ``PYTHONHASHSEED``, ``PYTHONOPTIMIZE``, the locale...) is compared by the
daemon; a function whose start-up variables differ from the zygote's gets a zygote of
its own (:meth:`~._zygote_host.Zygote.serves`).

The zygote is started without ``eventrun/__init__.py`` and ``eventrun/workers/__init__.py``
(which import the daemon side: structlog, anyio...): the bootstrap puts empty package
modules in their place, and a forked worker removes them again, so that a handler that
imports ``eventrun`` gets the real package.

Control protocol over a ``SOCK_SEQPACKET`` socketpair (one msgpack message per packet):

* daemon -> zygote: :class:`Spawn` with two fds attached (the worker's socket, the
  worker's output memfd);
* zygote -> daemon: :class:`Hello` once, :class:`Spawned` per Spawn, :class:`Exited`
  whenever a worker is reaped (returncode as ``subprocess`` gives it).

EOF on the control socket (the daemon closed it or died) makes the zygote SIGKILL its
workers, reap them and exit; the zygote and the workers also have a parent-death signal.

Isolation (:mod:`._harden`): the zygote starts with an environment of start-up
variables only (never the daemon's), its stdout/stderr are a memfd of its own (never the
daemon's), it makes itself non-dumpable and drops every capability before it forks
anything, and a forked worker closes every descriptor but 0, 1, 2 and its socket.
"""

from __future__ import annotations

import contextlib
import gc
import os
import selectors
import signal
import socket
import sys
import time
from collections.abc import Sequence
from typing import NoReturn

import msgspec

from . import _child, _harden
from ._protocol import Exited, Hello, Spawn, Spawned

__all__ = ["bootstrap_command", "main", "serve_zygote"]

_STUB = "__eventrun_zygote_stub__"
_MAX_SPAWN_BYTES = 1 << 20  # a Spawn carries the function's environment

# Run with ``python -c``: the two package modules are stand-ins (see the docstring).
_BOOTSTRAP = f"""\
import sys, types
for _name, _path in (("eventrun", sys.argv[2]), ("eventrun.workers", sys.argv[3])):
    _m = types.ModuleType(_name)
    _m.__path__ = [_path]
    _m.{_STUB} = True
    sys.modules[_name] = _m
from eventrun.workers._zygote import main
main(sys.argv)
"""

_encode = msgspec.msgpack.Encoder().encode
_decode_spawn = msgspec.msgpack.Decoder(Spawn).decode


def bootstrap_command(fd: int) -> list[str]:
    """The command line of a zygote whose control socket is ``fd``."""
    workers = os.path.dirname(os.path.abspath(__file__))
    package = os.path.dirname(workers)
    return [sys.executable, "-c", _BOOTSTRAP, str(fd), package, workers]


def _interpreter_path() -> list[str]:
    """``sys.path`` of this interpreter without the script directory and without the
    entries its own ``PYTHONPATH`` added: what every function's path ends with."""
    own = {os.path.abspath(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p}
    entries = sys.path[1:] if sys.path[:1] == [""] else sys.path  # "" unless -P
    return [p for p in entries if p and os.path.abspath(p) not in own]


def _enter_function(msg: Spawn, base_path: Sequence[str]) -> None:
    """Become the function's process: its environment, directory and ``sys.path``."""
    os.chdir(msg.cwd)
    os.environ.clear()
    os.environ.update(msg.env)
    os.environ["AWS_LAMBDA_LOG_STREAM_NAME"] = msg.log_stream_name
    time.tzset()
    sys.dont_write_bytecode = bool(msg.env.get("PYTHONDONTWRITEBYTECODE"))
    extra = [os.path.abspath(p) for p in msg.env.get("PYTHONPATH", "").split(os.pathsep) if p]
    sys.path[:] = list(dict.fromkeys([msg.cwd, *extra, *base_path]))
    # finders of directories the function's path does not have (the zygote's own cwd)
    for entry in [e for e in sys.path_importer_cache if e not in sys.path]:
        del sys.path_importer_cache[entry]
    for name in ("eventrun.workers", "eventrun"):
        if getattr(sys.modules.get(name), _STUB, False):
            del sys.modules[name]


def _become_worker(
    ctl: socket.socket,
    wakeup: tuple[int, int],
    msg: Spawn,
    fds: list[int],
    base_path: Sequence[str],
) -> NoReturn:
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        ctl.close()
        os.close(wakeup[0])
        os.close(wakeup[1])
        sock_fd, memfd = fds
        os.dup2(memfd, 1)
        os.dup2(memfd, 2)
        os.close(memfd)
        # the selector's epoll fd and whatever else the zygote holds: 0, 1, 2 and the
        # socket are all a worker gets
        _harden.close_other_fds(sock_fd)
        _enter_function(msg, base_path)
        _child.set_parent_death_signal()
        _child.serve(socket.socket(fileno=sock_fd))
    except BaseException:
        os._exit(70)


def _reap(ctl: socket.socket, children: set[int]) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        children.discard(pid)
        ctl.send(_encode(Exited(pid, os.waitstatus_to_exitcode(status))))


def _shutdown(children: set[int]) -> NoReturn:
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for pid in children:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    os._exit(0)


def serve_zygote(ctl: socket.socket) -> NoReturn:
    """Fork workers on request until the control socket closes."""
    base_path = _interpreter_path()
    # What the zygote imported is frozen: a worker's collections never traverse (and so
    # never write to) those objects, which keeps their pages shared with the zygote.
    gc.collect()
    gc.freeze()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    children: set[int] = set()
    selector = selectors.DefaultSelector()
    selector.register(ctl, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    ctl.send(_encode(Hello(os.getpid())))
    try:
        while True:
            for key, _ in selector.select():
                if key.fileobj is ctl:
                    data, fds, _flags, _addr = socket.recv_fds(ctl, _MAX_SPAWN_BYTES, 2)
                    if not data:
                        _shutdown(children)
                    msg = _decode_spawn(data)
                    sys.stdout.flush()
                    sys.stderr.flush()
                    pid = os.fork()
                    if pid == 0:
                        _become_worker(ctl, (wake_r, wake_w), msg, fds, base_path)
                    for fd in fds:
                        os.close(fd)
                    children.add(pid)
                    ctl.send(_encode(Spawned(msg.token, pid)))
                else:
                    try:
                        while os.read(wake_r, 512):
                            pass
                    except BlockingIOError:
                        pass
                _reap(ctl, children)
    except (OSError, msgspec.DecodeError):
        _shutdown(children)


def main(argv: list[str]) -> NoReturn:
    _child.set_parent_death_signal()
    _harden.make_undumpable()
    _harden.drop_capabilities()
    serve_zygote(socket.socket(fileno=int(argv[1])))
