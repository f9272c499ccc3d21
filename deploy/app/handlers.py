"""Example handlers for deploy/app/eventrun.yaml (replace with your own code).

Each is a plain Lambda handler; the image copies this folder to /app, the task root.
"""

from __future__ import annotations

import json
import logging
from typing import Any

log = logging.getLogger(__name__)


def orders(event: dict[str, Any], context: Any) -> None:
    """Self-managed Kafka event: records grouped by "topic-partition"."""
    count = sum(len(batch) for batch in event["records"].values())
    log.info("orders batch of %d records", count)


def jobs(event: dict[str, Any], context: Any) -> dict[str, list[dict[str, str]]]:
    """SQS event; a message whose body is not JSON is reported as a partial failure."""
    failures = []
    for record in event["Records"]:
        try:
            json.loads(record["body"])
        except ValueError:
            failures.append({"itemIdentifier": record["messageId"]})
    return {"batchItemFailures": failures}


def events(event: dict[str, Any], context: Any) -> None:
    """Redis Streams event (Kinesis-like shape, eventSource "eventrun:redis-streams")."""
    log.info("events batch of %d entries", len(event["Records"]))


def report(event: dict[str, Any], context: Any) -> dict[str, str]:
    """EventBridge Scheduled Event; ``time`` is the tick, not the moment it ran."""
    return {"tick": event["time"]}
