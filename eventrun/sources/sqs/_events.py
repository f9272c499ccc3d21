"""SQS API messages -> Lambda SQS event records (lambda-semantics.md §3.1).

The SQS API speaks ``StringValue``/``BinaryValue`` (bytes) and ``MD5OfBody``; Lambda's
event speaks ``stringValue``/``binaryValue`` (base64 text), always lists
``stringListValues``/``binaryListValues``, and carries ``md5OfMessageAttributes`` only
when the message has attributes.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from eventrun.abc import Record

__all__ = ["to_record"]

_ATTRIBUTE_ORDER = (
    "ApproximateReceiveCount",
    "SentTimestamp",
    "SenderId",
    "ApproximateFirstReceiveTimestamp",
    "SequenceNumber",
    "MessageGroupId",
    "MessageDeduplicationId",
)


def _b64(value: bytes | str) -> str:
    raw = value.encode() if isinstance(value, str) else value
    return base64.b64encode(raw).decode("ascii")


def _message_attribute(api: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "StringValue" in api:
        out["stringValue"] = api["StringValue"]
    if "BinaryValue" in api:
        out["binaryValue"] = _b64(api["BinaryValue"])
    out["stringListValues"] = list(api.get("StringListValues", []))
    out["binaryListValues"] = [_b64(v) for v in api.get("BinaryListValues", [])]
    out["dataType"] = api["DataType"]
    return out


def _attributes(api: dict[str, str]) -> dict[str, str]:
    ordered = {name: str(api[name]) for name in _ATTRIBUTE_ORDER if name in api}
    for name, value in api.items():
        ordered.setdefault(name, str(value))
    return ordered


def to_record(message: dict[str, Any], *, queue_arn: str, region: str, fifo: bool) -> Record:
    """The Record for one message of a ReceiveMessage response."""
    attributes = _attributes(message.get("Attributes", {}))
    api_attrs = message.get("MessageAttributes") or {}
    body: str = message.get("Body", "")
    event: dict[str, Any] = {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": body,
        "attributes": attributes,
        "messageAttributes": {k: _message_attribute(v) for k, v in api_attrs.items()},
    }
    if "MD5OfMessageAttributes" in message:
        event["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
    event["md5OfBody"] = message.get("MD5OfBody", "")
    event["eventSource"] = "aws:sqs"
    event["eventSourceARN"] = queue_arn
    event["awsRegion"] = region
    data = body.encode()
    sent_ms = int(attributes.get("SentTimestamp", "0"))
    return Record(
        shard=attributes.get("MessageGroupId", "") if fifo else "",
        item_id=event["messageId"],
        event=event,
        data=data,
        data_key="body",
        timestamp=sent_ms / 1000.0,
        key=None,
        token=event["receiptHandle"],
        size=len(json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()),
        attempt=int(attributes.get("ApproximateReceiveCount", "1")),
    )
