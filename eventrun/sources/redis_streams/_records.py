"""Redis stream entries -> Lambda-shaped records (the ``redis_streams`` event shape).

The batch event a handler receives mirrors Lambda's Kinesis event, one item per entry::

    {"Records": [{
        "eventSource": "eventrun:redis-streams",
        "eventVersion": "1.0",
        "eventID": "orders:1700000000000-0",              # "<stream>:<entry id>"
        "eventName": "eventrun:redis-streams:record",
        "awsRegion": "us-east-1",                         # $AWS_REGION, default us-east-1
        "eventSourceARN": "arn:eventrun:redis:127.0.0.1:6379/0:stream/orders",
        "redis": {
            "redisSchemaVersion": "1.0",
            "stream": "orders",
            "id": "1700000000000-0",
            "sequenceNumber": "1700000000000-0",          # = id (Kinesis name)
            "partitionKey": "customer-7",                 # key_field's value, "" without one
            "data": "eyJvcmRlciI6IDd9",                   # base64, see below
            "approximateArrivalTimestamp": 1700000000.0,  # the id's ms part, epoch seconds
            "deliveryCount": 1,                           # Redis' delivery counter
            "fields": {"data": "{\\"order\\": 7}", "key": "customer-7"}
        }
    }]}

``fields`` holds every field of the entry as text; a value that is not UTF-8 becomes
``{"base64": "<base64 of the bytes>"}``. ``data`` is the base64 of the entry's ``data``
field, or else its ``body`` field, when exactly one of the two exists (what the
``redis:`` sink writes); otherwise the base64 of the compact JSON of ``fields``. Filters
match that decoded payload under the ``data`` key, like Kinesis. The ARN never contains
credentials: only host, port and database number of the connection URL.

A record's event is a :class:`StreamRecord` struct (see ``eventrun.abc.Record.event``):
msgspec encodes it to the JSON above and writes ``data`` as base64 itself, so building
an entry and encoding a batch for a process worker costs no dict or base64 call per entry.
"""

from __future__ import annotations

import json
from base64 import b64encode
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import msgspec

from eventrun.abc import Record

__all__ = ["EntryBuilder", "StreamEntry", "StreamRecord", "batch_info", "redacted_location"]

EVENT_SOURCE = "eventrun:redis-streams"
EVENT_NAME = "eventrun:redis-streams:record"


class StreamEntry(msgspec.Struct, rename="camel", gc=False):
    """The ``redis`` part of a record (field order as documented above). Like
    :class:`StreamRecord`, not tracked by the cyclic garbage collector: nothing in it
    can lead back to it."""

    redis_schema_version: str
    stream: str
    id: str
    sequence_number: str
    partition_key: str
    data: bytes
    approximate_arrival_timestamp: float
    delivery_count: int
    fields: dict[str, Any]


class StreamRecord(msgspec.Struct, gc=False):
    """One record of the batch event."""

    event_source: str = msgspec.field(name="eventSource")
    event_version: str = msgspec.field(name="eventVersion")
    event_id: str = msgspec.field(name="eventID")
    event_name: str = msgspec.field(name="eventName")
    aws_region: str = msgspec.field(name="awsRegion")
    event_source_arn: str = msgspec.field(name="eventSourceARN")
    redis: StreamEntry


def redacted_location(url: str) -> str:
    """``host:port/db`` of a redis URL, without user or password."""
    parts = urlsplit(url)
    db = parts.path.lstrip("/") or "0"
    return f"{parts.hostname or 'localhost'}:{parts.port or 6379}/{db}"


def _text(value: bytes) -> str | dict[str, str]:
    try:
        return value.decode()
    except UnicodeDecodeError:
        return {"base64": b64encode(value).decode("ascii")}


class EntryBuilder:
    """Builds :class:`Record` objects for one stream (stream-level strings cached once)."""

    __slots__ = ("_arn", "_key_field", "_names", "_prefix", "_region", "stream")

    def __init__(self, stream: str, location: str, region: str, key_field: str | None) -> None:
        self.stream = stream
        self._arn = f"arn:eventrun:redis:{location}:stream/{stream}"
        self._prefix = stream + ":"
        self._region = region
        self._key_field = key_field.encode() if key_field else None
        self._names: dict[bytes, str] = {}  # field name -> text (names repeat)

    @property
    def arn(self) -> str:
        return self._arn

    def build(self, raw_id: bytes, pairs: Sequence[bytes], deliveries: int) -> Record:
        """One record from a raw entry (``pairs`` is Redis' flat field/value list).

        Hot path: one call per entry, kept free of helper calls for the common case.
        """
        entry_id = raw_id.decode()
        fields: dict[str, Any] = {}
        payload: bytes | None = None
        payload_fields = 0
        key: str | None = None
        key_field = self._key_field
        size = 300
        names = self._names
        it = iter(pairs)
        for name in it:
            value = next(it)
            size += len(value)
            text = names.get(name)
            if text is None:
                text = name.decode(errors="backslashreplace")
                if len(names) < 1024:
                    names[name] = text
            try:
                fields[text] = value.decode()
            except UnicodeDecodeError:
                fields[text] = _text(value)
            if name == b"data" or name == b"body":
                payload = value
                payload_fields += 1
            if name == key_field:
                key = value.decode(errors="backslashreplace")
        if payload_fields != 1 or payload is None:
            payload = json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode()
        arrival = int(entry_id.partition("-")[0]) / 1000
        event = StreamRecord(
            EVENT_SOURCE,
            "1.0",
            self._prefix + entry_id,
            EVENT_NAME,
            self._region,
            self._arn,
            StreamEntry(
                "1.0", self.stream, entry_id, entry_id, key or "", payload, arrival,
                deliveries, fields,
            ),
        )  # fmt: skip
        # Positional: measurably cheaper than keywords on this path (see Record's fields).
        return Record(
            self.stream, entry_id, event, payload, "data", arrival, key, raw_id,
            size + len(payload) * 4 // 3, deliveries,
        )  # fmt: skip


def _iso(epoch_s: float) -> str:
    moment = datetime.fromtimestamp(epoch_s, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def batch_info(records: Sequence[Record], arn_of: dict[str, str]) -> dict[str, Any]:
    """``{"RedisStreamsBatchInfo": {...}}`` of a failure record: the fields of Lambda's
    ``KinesisBatchInfo`` (shardId = stream, sequence numbers = entry ids) for a batch of
    one stream, in order."""
    if not records:
        return {}
    first, last = records[0], records[-1]
    return {
        "RedisStreamsBatchInfo": {
            "shardId": first.shard,
            "startSequenceNumber": first.item_id,
            "endSequenceNumber": last.item_id,
            "approximateArrivalOfFirstRecord": _iso(first.timestamp),
            "approximateArrivalOfLastRecord": _iso(last.timestamp),
            "batchSize": len(records),
            "streamArn": arn_of.get(first.shard, ""),
        }
    }
