"""What keeps a handler away from the daemon and from other functions (Linux).

Handlers run as the daemon's user, so the kernel's same-user rules are all that stands
between them: any process of that user may read another's ``/proc/PID/environ``, open
its descriptors through ``/proc/PID/fd``, or ptrace it, unless the target is not
*dumpable*. Hence:

* :func:`make_undumpable` — the daemon (when it runs worker pools), every fork server
  and every worker: a handler cannot read the daemon's environment (its bearer tokens),
  nor another function's. It is kept across ``fork`` and reset by ``execve``, which is
  why a fork server and a spawned worker call it themselves. A process still reads its
  own ``/proc/self/status``, ``statm`` and ``fd``; other processes of the user can no
  longer attach a debugger or profiler (``py-spy``) without ``CAP_SYS_PTRACE``.
* :func:`drop_capabilities` — a daemon running as root would hand its workers every
  capability (``CAP_SYS_PTRACE`` reads any process, ``CAP_SYS_RESOURCE`` lifts a hard
  rlimit). Workers drop them all, for good: effective, permitted, inheritable, ambient
  and bounding sets, and ``no_new_privs`` so that no ``execve`` (of a setuid binary, or
  of anything as uid 0) gives them back. A process without capabilities skips this.
* :func:`close_other_fds` — a forked worker keeps only 0, 1, 2 and its socket.

Elsewhere than Linux these do nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import os

__all__ = ["close_other_fds", "drop_capabilities", "holds_capabilities", "make_undumpable"]

_PR_SET_DUMPABLE = 4
_PR_CAPBSET_DROP = 24
_PR_SET_NO_NEW_PRIVS = 38
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_FD_LIMIT = 1 << 30  # os.closerange uses close_range(2): the bound costs nothing


def _libc() -> ctypes.CDLL | None:
    if not os.path.isdir("/proc/self"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def make_undumpable() -> None:
    """``prctl(PR_SET_DUMPABLE, 0)``: other processes of this user can no longer read
    ``/proc/<this pid>/environ``, open ``/proc/<this pid>/fd/*`` or ptrace it."""
    libc = _libc()
    if libc is not None and libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_DUMPABLE, 0): {os.strerror(err)}")


def holds_capabilities() -> bool:
    """Whether this process is root or holds a capability (its workers must drop them)."""
    return _holds_capabilities()


def _holds_capabilities() -> bool:
    if os.geteuid() == 0:
        return True
    with open("/proc/self/status", "rb") as f:
        for line in f:
            if line.startswith((b"CapPrm:", b"CapEff:", b"CapAmb:")) and int(line.split()[1], 16):
                return True
    return False


def drop_capabilities() -> None:
    """Leave this process (and whatever it starts) without any capability."""
    libc = _libc()
    if libc is None or not _holds_capabilities():
        return
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(err)}")
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/sys/kernel/cap_last_cap", "rb") as f:
            last = int(f.read())
        for cap in range(last + 1):  # needs CAP_SETPCAP; no_new_privs covers its absence
            libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0)
    libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    header = (ctypes.c_uint32 * 2)(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable: all zero
    if libc.capset(header, data) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"capset: {os.strerror(err)}")


def close_other_fds(keep: int) -> None:
    """Close every descriptor above 2 except ``keep``."""
    os.closerange(3, keep)
    os.closerange(keep + 1, _FD_LIMIT)
