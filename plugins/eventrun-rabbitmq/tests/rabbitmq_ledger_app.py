"""Handlers for the RabbitMQ end-to-end tests (copied into each test's app as ledger.py).

Each message body is JSON ``{"id": ..., "seq": n}`` (``"poison": true`` on a message
that must fail). ``handler`` appends one JSON line per message to ``$LEDGER`` after the
whole batch succeeded (one ``write`` on an ``O_APPEND`` descriptor per batch), so the
ledger is what was handled, across worker processes and daemon restarts. A poison
message is reported in ``batchItemFailures`` (the others of its batch succeed).
``DELAY`` (seconds per batch) slows it down; ``STARTED`` gets a line when a batch starts.
"""

from __future__ import annotations

import base64
import json
import os
import time
from typing import Any


def _append(path: str, lines: list[str]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, "".join(line + "\n" for line in lines).encode())
    finally:
        os.close(fd)


def handler(event: dict[str, Any], context: Any) -> Any:
    (messages,) = event["rmqMessagesByQueue"].values()
    if os.environ.get("STARTED"):
        _append(os.environ["STARTED"], [str(len(messages))])
    delay = float(os.environ.get("DELAY") or 0)
    if delay:
        time.sleep(delay)
    failures = []
    lines = []
    for message in messages:
        body = json.loads(base64.b64decode(message["data"]))
        if body.get("poison"):
            failures.append({"itemIdentifier": message["basicProperties"]["messageId"]})
            continue
        doc = {
            "id": body["id"],
            "seq": body["seq"],
            "redelivered": message["redelivered"],
            "request": context.aws_request_id,
            "pid": os.getpid(),
        }
        lines.append(json.dumps(doc))
    _append(os.environ["LEDGER"], lines)
    return {"batchItemFailures": failures}
