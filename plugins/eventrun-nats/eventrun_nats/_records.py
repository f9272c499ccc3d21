"""The ``nats:jetstream`` event shape and turning JetStream messages into records.

Lambda has no NATS event source; the shape follows its stream events (Kafka, Kinesis):
one batch event with the source named and a list of records whose payload is base64::

    {
      "eventSource": "nats:jetstream",
      "eventSourceArn": "nats://127.0.0.1:4222/ORDERS/billing",   # servers/STREAM/CONSUMER
      "records": [
        {
          "subject": "orders.eu",
          "data": "eyJpZCI6IDF9",            # base64 of the message payload
          "headers": {"Nats-Msg-Id": "a1"},  # or null when the message has none
          "stream": "ORDERS",
          "consumer": "billing",
          "streamSequence": 42,             # position in the stream: the itemIdentifier
          "consumerSequence": 57,
          "deliveredCount": 1,              # JetStream's delivery count (1: first delivery)
          "timestamp": 1700000000123        # when the stream stored it, epoch milliseconds
        }
      ]
    }

``batchItemFailures`` name records by ``streamSequence`` (``{"itemIdentifier": 42}`` or
``"42"``). A failure record's batch info is ``{"NATSBatchInfo": {...}}``.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import msgspec
from nats.aio.msg import Msg

from eventrun.abc import Record

__all__ = ["EVENT_SOURCE", "NatsRecordEvent", "ReplyInfo", "batch_info", "parse_reply", "to_record"]

EVENT_SOURCE = "nats:jetstream"


class NatsRecordEvent(msgspec.Struct):
    """One record of the batch event (msgspec encodes ``data`` as base64)."""

    subject: str
    data: bytes
    headers: dict[str, str] | None
    stream: str
    consumer: str
    streamSequence: int
    consumerSequence: int
    deliveredCount: int
    timestamp: int


class ReplyInfo(msgspec.Struct, frozen=True):
    """What JetStream puts in a delivered message's reply subject."""

    stream: str
    consumer: str
    delivered: int
    stream_seq: int
    consumer_seq: int
    timestamp_ns: int


def parse_reply(reply: str) -> ReplyInfo:
    """Parse ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>`` (or
    the newer form with domain and account hash after ``ACK``). Raises ValueError for a
    message that did not come from a JetStream consumer."""
    tokens = reply.split(".")
    if len(tokens) < 9 or tokens[0] != "$JS" or tokens[1] != "ACK":
        raise ValueError(f"not a JetStream reply subject: {reply!r}")
    if len(tokens) == 9:
        t = tokens[2:]
    elif len(tokens) >= 11:
        t = tokens[4:]
    else:
        raise ValueError(f"not a JetStream reply subject: {reply!r}")
    return ReplyInfo(t[0], t[1], int(t[2]), int(t[3]), int(t[4]), int(t[5]))


def shard_of(subject: str, lanes: int | None) -> str:
    """The dispatcher's ordering unit for a subject: itself, or one of ``lanes`` hashed."""
    if lanes is None:
        return subject
    return f"lane-{zlib.crc32(subject.encode()) % lanes}"


def to_record(msg: Msg, *, ordered: bool, lanes: int | None) -> Record:
    """A dispatcher record for one delivered message (``token`` is the message)."""
    info = parse_reply(msg.reply)
    data = msg.data
    event = NatsRecordEvent(
        subject=msg.subject,
        data=data,
        headers=dict(msg.headers) if msg.headers else None,
        stream=info.stream,
        consumer=info.consumer,
        streamSequence=info.stream_seq,
        consumerSequence=info.consumer_seq,
        deliveredCount=info.delivered,
        timestamp=info.timestamp_ns // 1_000_000,
    )
    return Record(
        shard=shard_of(msg.subject, lanes) if ordered else "",
        item_id=info.stream_seq,
        event=event,
        data=data,
        data_key="data",
        timestamp=info.timestamp_ns / 1e9,
        key=msg.subject,
        token=msg,
        size=len(data) + len(msg.subject) + 256,
        attempt=info.delivered,
    )


def batch_event(records: Sequence[Record], source_arn: str) -> dict[str, Any]:
    return {
        "eventSource": EVENT_SOURCE,
        "eventSourceArn": source_arn,
        "records": [r.event for r in records],
    }


def batch_info(records: Sequence[Record], stream: str, consumer: str) -> dict[str, Any]:
    """``{"NATSBatchInfo": {...}}`` for a failure record: which messages failed."""
    seqs = [int(r.item_id) for r in records]
    subjects = sorted({str(r.key) for r in records})
    return {
        "NATSBatchInfo": {
            "stream": stream,
            "consumer": consumer,
            "subjects": subjects,
            "startSequence": min(seqs, default=0),
            "endSequence": max(seqs, default=0),
            "batchSize": len(records),
        }
    }
