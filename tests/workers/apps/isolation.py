"""Handlers that look for what a worker should not reach (tests/workers/test_isolation.py)."""

from __future__ import annotations

import os
import resource
import sys


def environ(event, context):
    return dict(os.environ)


def pid(event, context):
    return os.getpid()


def read_files(event, context):
    """For each path: "denied" (PermissionError), "empty", or what it holds."""
    out = {}
    for path in event["paths"]:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except PermissionError:
            out[path] = "denied"
            continue
        out[path] = data.decode("latin-1") if data else "empty"
    return out


def write_files(event, context):
    """Try to open each path for writing: "denied", or "written"."""
    out = {}
    for path in event["paths"]:
        try:
            with open(path, "w") as f:
                f.write("forged daemon log line\n")
        except PermissionError:
            out[path] = "denied"
        else:
            out[path] = "written"
    return out


def rlimit(event, context):
    before = resource.getrlimit(resource.RLIMIT_AS)
    attempts = {}
    for name, wanted in {
        "unlimited": (resource.RLIM_INFINITY, resource.RLIM_INFINITY),
        "hard_plus_one": (before[0], before[1] + 1),
    }.items():
        try:
            resource.setrlimit(resource.RLIMIT_AS, wanted)
        except (ValueError, OSError) as exc:
            attempts[name] = type(exc).__name__
        else:
            attempts[name] = "raised"
    caps = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("CapEff", "CapPrm", "CapInh", "CapAmb", "CapBnd", "NoNewPrivs"):
                caps[key] = int(value.strip(), 16)
    return {
        "before": before,
        "after": resource.getrlimit(resource.RLIMIT_AS),
        "attempts": attempts,
        "caps": caps,
    }


def descriptors(event, context):
    """Every open descriptor and what it is; fstat of 1 and 2; output on both."""
    print("hello from stdout")
    print("hello from stderr", file=sys.stderr)
    fds = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            fds[name] = os.readlink(f"/proc/self/fd/{name}")
        except FileNotFoundError:
            continue  # the directory listdir had open
    stats = {str(fd): [os.fstat(fd).st_dev, os.fstat(fd).st_ino] for fd in (1, 2)}
    return {"fds": fds, "stats": stats, "pid": os.getpid(), "ppid": os.getppid()}
