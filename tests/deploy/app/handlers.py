"""deploy/app's handlers, each also writing what it processed to a ledger (the container tests).

Mounted over /app/handlers.py by deploy/compose.test.yaml; the config is the image's
deploy/app/eventrun.yaml, unchanged. Every record handled appends ``"<id> <replica> <time>"`` to the
Redis list ``ledger:<source>`` in database 2 of the stack's Redis (the store uses 0), in
one RPUSH per batch after the batch's work, so a replica killed mid-batch leaves either
none or all of the batch's lines. ``<replica>`` is the container's hostname, ``<time>``
the epoch seconds of the write (containers share the host's clock). The test sets
``ledger:delay`` (seconds per batch) to keep batches in flight while it stops or kills a
replica.
"""

from __future__ import annotations

import base64
import json
import socket
import time
from typing import Any

import redis

LEDGER_URL = "redis://redis:6379/2"
_client: redis.Redis | None = None


def _ledger() -> redis.Redis:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(LEDGER_URL)
    return _client


def _record(source: str, ids: list[str]) -> None:
    client = _ledger()
    delay = float(client.get("ledger:delay") or 0)
    if delay:
        time.sleep(delay)
    if ids:
        stamp = f"{socket.gethostname()} {time.time():.3f}"
        client.rpush(f"ledger:{source}", *(f"{i} {stamp}" for i in ids))


def orders(event: dict[str, Any], context: Any) -> None:
    """Self-managed Kafka event: each record's value is its id."""
    values = [
        base64.b64decode(record["value"]).decode()
        for batch in event["records"].values()
        for record in batch
    ]
    _record("kafka", values)


def jobs(event: dict[str, Any], context: Any) -> dict[str, list[dict[str, str]]]:
    """SQS event; the body is JSON ``{"id": ...}``; not JSON is a partial failure."""
    failures, ids = [], []
    for record in event["Records"]:
        try:
            ids.append(str(json.loads(record["body"])["id"]))
        except (ValueError, KeyError, TypeError):
            failures.append({"itemIdentifier": record["messageId"]})
    _record("sqs", ids)
    return {"batchItemFailures": failures}


def events(event: dict[str, Any], context: Any) -> None:
    """Redis Streams event: each entry's ``id`` field."""
    _record("stream", [record["redis"]["fields"]["id"] for record in event["Records"]])


def report(event: dict[str, Any], context: Any) -> dict[str, str]:
    """EventBridge Scheduled Event: one ledger line per tick that ran."""
    _ledger().rpush("ledger:cron", f"{event['time']} {socket.gethostname()} {time.time():.3f}")
    return {"tick": event["time"]}
