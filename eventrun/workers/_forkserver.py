"""The fork server: a template process that forks pre-imported worker processes.

Spawning a fresh interpreter and importing the worker code costs tens to hundreds of
milliseconds; forking a process that already did it costs about one. Each process pool
starts one template (``python -m eventrun.workers._forkserver FD``) with the function's
environment and cwd; the template imports :mod:`eventrun.workers._child` and then, per
request, forks a worker that runs :func:`~eventrun.workers._child.serve`. The handler
module is imported in the forked worker, never in the template, so the init phase (and
its cold-start cost) stays per worker, as on Lambda.

Control protocol over a ``SOCK_SEQPACKET`` socketpair (one msgpack message per packet):

* daemon -> template: :class:`Spawn` with two fds attached (the worker's socket, the
  worker's output memfd);
* template -> daemon: :class:`Hello` once, :class:`Spawned` per Spawn,
  :class:`Exited` whenever a worker is reaped (returncode as ``subprocess`` gives it).

EOF on the control socket (the daemon closed it or died) makes the template SIGKILL its
workers, reap them and exit; the workers also have a parent-death signal.

Isolation (:mod:`._harden`): the template starts with the function's own environment
(never the daemon's), its stdout/stderr are a memfd of its own (never the daemon's), it
makes itself non-dumpable and drops every capability before it forks anything, and a
forked worker closes every descriptor but 0, 1, 2 and its socket.
"""

from __future__ import annotations

import contextlib
import gc
import os
import selectors
import signal
import socket
import sys
from typing import NoReturn

import msgspec

from . import _child, _harden
from ._protocol import Exited, Hello, Spawn, Spawned

__all__ = ["main", "serve_template"]


_encode = msgspec.msgpack.Encoder().encode
_decode_spawn = msgspec.msgpack.Decoder(Spawn).decode


def _become_worker(
    ctl: socket.socket, wakeup: tuple[int, int], msg: Spawn, fds: list[int]
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
        # the selector's epoll fd and whatever else the template holds: 0, 1, 2 and
        # the socket are all a worker gets
        _harden.close_other_fds(sock_fd)
        os.environ["AWS_LAMBDA_LOG_STREAM_NAME"] = msg.log_stream_name
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


def serve_template(ctl: socket.socket) -> NoReturn:
    """Fork workers on request until the control socket closes."""
    # What the template imported is frozen: a worker's collections never traverse (and
    # so never write to) those objects, which keeps their pages shared with the template.
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
                    data, fds, _flags, _addr = socket.recv_fds(ctl, 65536, 2)
                    if not data:
                        _shutdown(children)
                    msg = _decode_spawn(data)
                    sys.stdout.flush()
                    sys.stderr.flush()
                    pid = os.fork()
                    if pid == 0:
                        _become_worker(ctl, (wake_r, wake_w), msg, fds)
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
    serve_template(socket.socket(fileno=int(argv[1])))


if __name__ == "__main__":
    main(sys.argv)
