"""Handlers for the Redis Streams end-to-end tests (copied into each test's app folder).

Every produced entry has the fields ``id`` (unique), ``key``, ``seq`` (per-key sequence
number) and ``data``. ``handler`` appends one JSON line per record it handled to
``$LEDGER`` (one ``write`` on an ``O_APPEND`` descriptor per batch, so lines of
concurrent workers never interleave), *after* the whole batch succeeded: the ledger is
what was handled, across worker processes and daemon restarts.

Environment: ``LEDGER`` (required), ``WHO`` (tag of the daemon, for shared groups),
``DELAY`` (seconds slept per batch), ``ECHO`` (return ``{"records": [...]}`` with one
output per input). A record whose ``poison`` field is ``"1"`` fails its whole batch.
``capture`` appends each whole batch event to ``$EVENTS``.
"""

from __future__ import annotations

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
    started = time.time()
    records = event["Records"]
    for record in records:
        if record["redis"]["fields"].get("poison") == "1":
            raise ValueError(f"poison entry {record['redis']['fields']['id']}")
    delay = float(os.environ.get("DELAY") or 0)
    if delay:
        time.sleep(delay)
    finished = time.time()
    who = os.environ.get("WHO", "")
    lines = []
    for record in records:
        entry = record["redis"]
        fields = entry["fields"]
        doc = {
            "id": fields["id"],
            "key": fields["key"],
            "seq": int(fields["seq"]),
            "stream": entry["stream"],
            "entry": entry["id"],
            "deliveries": entry["deliveryCount"],
            "who": who,
            "pid": os.getpid(),
            "request": context.aws_request_id,
            "t0": started,
            "t1": finished,
        }
        lines.append(json.dumps(doc))
    _append(os.environ["LEDGER"], lines)
    if os.environ.get("ECHO"):
        return {"records": [{"echo": r["redis"]["fields"]["id"]} for r in records]}
    return None


def capture(event: dict[str, Any], context: Any) -> None:
    _append(os.environ["EVENTS"], [json.dumps(event)])
