"""Handlers for the worker tests; the task root is this directory."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

INITS = 0
INITS += 1  # module code runs once per worker (the init phase)
CALLS = 0
print("init: basic imported")

log = logging.getLogger("tests.basic")
log.setLevel(logging.INFO)


def handler(event, context):
    global CALLS
    CALLS += 1
    return {"event": event, "pid": os.getpid(), "inits": INITS, "calls": CALLS}


def context_fields(event, context):
    first = context.get_remaining_time_in_millis()
    first_at = time.monotonic()  # the system-wide clock the deadline is kept on
    time.sleep(event.get("sleep", 0.05))
    second_at = time.monotonic()
    second = context.get_remaining_time_in_millis()
    return {
        "aws_request_id": context.aws_request_id,
        "function_name": context.function_name,
        "function_version": context.function_version,
        "invoked_function_arn": context.invoked_function_arn,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "log_group_name": context.log_group_name,
        "log_stream_name": context.log_stream_name,
        "identity": [
            context.identity.cognito_identity_id,
            context.identity.cognito_identity_pool_id,
        ],
        "client_context": None
        if context.client_context is None
        else {
            "custom": context.client_context.custom,
            "env": context.client_context.env,
            "installation_id": context.client_context.client.installation_id,
            "app_title": context.client_context.client.app_title,
        },
        "remaining": [first, second],
        "remaining_at": [first_at, second_at],
        "pid": os.getpid(),
    }


def environment(event, context):
    return {
        "env": {k: os.environ.get(k) for k in event["names"]},
        "cwd": os.getcwd(),
        "sys_path_0": sys.path[0],
    }


def noisy(event, context):
    print("hello from print")
    print("to stderr", file=sys.stderr)
    log.info("via logging %s", 42)
    os.write(1, b"raw fd write\n")
    subprocess.run(["echo", "from a subprocess"], check=True)
    context.log("via context.log\n")
    print(repr(context))
    return "done"


def levels(event, context):
    root = logging.getLogger()
    root.debug("root debug")
    root.info("root info")
    root.warning("root warning")
    return logging.getLevelName(root.level)


def fail(event, context):
    raise ValueError(f"boom {event.get('n')}")


def unmarshallable(event, context):
    return {"a": {1, 2}}


def sleepy(event, context):
    print("going to sleep")
    time.sleep(event["s"])
    return os.getpid()


def exit3(event, context):
    os._exit(3)


def segfault(event, context):
    os.kill(os.getpid(), signal.SIGSEGV)


def hog(event, context):
    blob = bytearray(event["mb"] * 1024 * 1024)
    return {"pid": os.getpid(), "bytes": len(blob)}


def garbage(event, context):
    """Writes a corrupt frame into the IPC socket, then blocks."""
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
        if target.startswith("socket:"):
            os.write(int(name), b"\x00\x00\x00\x05\xc1\xc1\xc1\xc1\xc1")
    time.sleep(30)


def window(event, context):
    """Reports when it ran, to check the concurrency bound."""
    start = time.time()
    time.sleep(event["s"])
    return {"pid": os.getpid(), "start": start, "end": time.time()}


def process_state(event, context):
    import gc

    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.sched_getscheduler(0))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return {
        "frozen": gc.get_freeze_count(),
        "gc_enabled": gc.isenabled(),
        "gc_threshold": list(gc.get_threshold()),
        "batch_scheduling": os.sched_getscheduler(0) == os.SCHED_BATCH,
        "child_batch_scheduling": int(child.stdout) == os.SCHED_BATCH,
    }


def no_newline(event, context):
    sys.stdout.write("partial line")
    return 1
