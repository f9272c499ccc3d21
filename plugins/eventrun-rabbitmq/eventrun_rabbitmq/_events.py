"""AMQP deliveries -> Lambda's Amazon MQ for RabbitMQ event (``aws:rmq``).

The batch event is Lambda's, field for field::

    {"eventSource": "aws:rmq",
     "eventSourceArn": "arn:aws:mq:us-east-1:000000000000:broker:127.0.0.1:5672",
     "rmqMessagesByQueue": {"orders::/": [{
         "basicProperties": {
             "contentType": "text/plain", "contentEncoding": null,
             "headers": {"header1": {"bytes": [118, 97, 108]}, "numberInHeader": 10},
             "deliveryMode": 1, "priority": 34, "correlationId": null, "replyTo": null,
             "expiration": "60000", "messageId": null,
             "timestamp": "Jan 1, 1970, 12:33:41 AM", "type": null,
             "userId": "guest", "appId": null, "clusterId": null, "bodySize": 80},
         "redelivered": false,
         "data": "eyJ0aW1lb3V0IjowfQ=="}]}}

Lambda's quirks kept: the key is ``QUEUE::VHOST``; every property is present, null when
the message has none; string header values are Java ``LongString`` objects
(``{"bytes": [...]}``) while numbers and booleans stay plain; ``timestamp`` is Java's
default ``Date`` text in UTC (``MMM d, y, h:mm:ss a``); ``expiration`` stays a string;
``data`` is the base64 body. A self-hosted broker has no ARN: eventrun builds one from
the broker's host and port (never its credentials), region from ``AWS_REGION``.

A record's event is a :class:`RabbitMessage` struct (see ``eventrun.abc.Record.event``):
msgspec encodes it to the JSON above, base64 included, without a dict per message.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import msgspec

from eventrun.abc import JSON, Record

__all__ = ["BasicProperties", "EventBuilder", "RabbitMessage", "java_date", "lambda_header"]

EVENT_SOURCE = "aws:rmq"


class BasicProperties(msgspec.Struct, rename="camel", gc=False):
    """``basicProperties``, in Lambda's field order."""

    content_type: str | None
    content_encoding: str | None
    headers: dict[str, Any] | None
    delivery_mode: int | None
    priority: int | None
    correlation_id: str | None
    reply_to: str | None
    expiration: str | None
    message_id: str | None
    timestamp: str | None
    type: str | None
    user_id: str | None
    app_id: str | None
    cluster_id: str | None
    body_size: int


class RabbitMessage(msgspec.Struct, rename="camel", gc=False):
    """One message of ``rmqMessagesByQueue``."""

    basic_properties: BasicProperties
    redelivered: bool
    data: bytes


def java_date(value: datetime) -> str:
    """A timestamp as Lambda (Gson, a ``java.util.Date``, en_US, UTC) writes it:
    ``Jan 1, 1970, 12:33:41 AM``."""
    utc = value.astimezone(UTC) if value.tzinfo is not None else value
    hour = utc.hour % 12 or 12
    return f"{utc:%b} {utc.day}, {utc.year}, {hour}:{utc:%M:%S} {'AM' if utc.hour < 12 else 'PM'}"


def lambda_header(value: Any) -> JSON:
    """A header value as Lambda renders it (the RabbitMQ Java client's types)."""
    if isinstance(value, str):
        return {"bytes": list(value.encode())}
    if isinstance(value, bytes | bytearray):
        return {"bytes": list(value)}
    if isinstance(value, bool | int | float) or value is None:
        return value
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime):
        return java_date(value)
    if isinstance(value, Mapping):
        return {str(k): lambda_header(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [lambda_header(v) for v in value]
    return str(value)


def _delivery_count(headers: Mapping[str, Any] | None) -> int:
    """Quorum queues' ``x-delivery-count`` (failed deliveries so far; absent at first)."""
    if not headers:
        return 0
    count = headers.get("x-delivery-count")
    return int(count) if isinstance(count, int) and not isinstance(count, bool) else 0


class EventBuilder:
    """Builds records and batch events for one queue of one broker."""

    def __init__(self, queue: str, vhost: str, arn: str) -> None:
        self.queue = queue
        self.key = f"{queue}::{vhost}"
        self.arn = arn

    def record(self, message: Any, token: object, failures_seen: int) -> Record:
        """The Record of an aiormq ``DeliveredMessage``; ``failures_seen`` is what
        eventrun counted for it (classic queues), ``attempt`` the larger of the two."""
        props = message.header.properties
        body: bytes = message.body
        headers = props.headers
        stamp = props.timestamp
        event = RabbitMessage(
            BasicProperties(
                props.content_type,
                props.content_encoding,
                None if headers is None else {k: lambda_header(v) for k, v in headers.items()},
                props.delivery_mode,
                props.priority,
                props.correlation_id,
                props.reply_to,
                props.expiration,
                props.message_id,
                None if stamp is None else java_date(stamp),
                props.message_type,
                props.user_id,
                props.app_id,
                props.cluster_id or None,  # deprecated in 0-9-1; pamqp sends "" for none
                len(body),
            ),
            bool(message.delivery.redelivered),
            body,
        )
        failures = max(_delivery_count(headers), failures_seen)
        return Record(
            shard="",
            item_id=props.message_id,
            event=event,
            data=body,
            data_key="data",
            timestamp=_epoch(stamp),
            token=token,
            size=len(body) * 4 // 3 + 600,
            attempt=failures + 1,
        )

    def batch_event(self, records: Sequence[Record]) -> dict[str, JSON]:
        return {
            "eventSource": EVENT_SOURCE,
            "eventSourceArn": self.arn,
            "rmqMessagesByQueue": {self.key: [r.event for r in records]},
        }

    def batch_info(self, records: Sequence[Record]) -> dict[str, JSON]:
        """The source part of a failure record (named like Lambda's ``KafkaBatchInfo``)."""
        return {
            "RabbitMQBatchInfo": {
                "eventSourceArn": self.arn,
                "queue": self.key,
                "messageIds": [r.item_id for r in records],
                "batchSize": len(records),
            }
        }


def _epoch(stamp: datetime | None) -> float:
    if stamp is None:
        return time.time()
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()
