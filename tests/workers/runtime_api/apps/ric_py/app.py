"""A Python handler run by the official awslambdaric client (``command:``)."""

import os
import time

print("awslambdaric app init", flush=True)
calls = 0


class BadInput(Exception):
    pass


def handler(event, context):
    global calls
    calls += 1
    if event.get("raise"):
        raise BadInput(event["raise"])
    if event.get("big"):
        return "x" * event["big"]
    if event.get("sleep"):
        time.sleep(event["sleep"])
    if "crash" in event:
        os._exit(event["crash"])
    print("handling", context.aws_request_id, flush=True)
    return {
        "echo": event.get("echo"),
        "pid": os.getpid(),
        "calls": calls,
        "request_id": context.aws_request_id,
        "remaining": context.get_remaining_time_in_millis(),
        "memory": context.memory_limit_in_mb,
    }
