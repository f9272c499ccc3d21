"""Lambda's self-managed Kafka shapes (lambda-semantics.md §3.4, §1.5, §1.6).

One record of the event, field order as Lambda writes it::

    {"topic": "orders", "partition": 0, "offset": 15, "timestamp": 1545084650987,
     "timestampType": "CREATE_TIME", "key": "<base64>", "value": "<base64>",
     "headers": [{"headerKey": [104, 101, ...]}]}

* ``key`` is omitted when the Kafka key is null, ``value`` when the value is null (a
  tombstone): Lambda leaves absent fields out (both are ``Option`` in
  ``aws_lambda_events``; powertools issue #6508 shows key-less records).
* header values are lists of unsigned byte values (0..255), one single-key object per
  header, repeated keys repeated, so ``bytes(values)`` gives the raw header back.
* the ``itemIdentifier`` of a record is ``{"partition": "orders-0", "offset": 15}``.

Building a record is on the hot path. A record with a key and a value (the common case)
gets a :class:`KafkaEvent` struct, not a dict: msgspec encodes it to exactly the dict's
JSON and writes the key and value as base64 itself, so a batch for a process worker is
encoded without a Python dict or a base64 call per record (building a record: 1.1-1.8
-> 0.65-0.86 us). An inline handler gets a plain copy of the batch event
(``eventrun.dispatch._shared_events``); ``Record.plain_event`` makes the dict when a filter or a
failure record needs one.
"""

from __future__ import annotations

import binascii
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec

from eventrun.abc import JSON, Record

__all__ = ["KafkaEvent", "batch_event", "batch_info", "build_records", "decode_key"]

_TIMESTAMP_TYPES = {0: "CREATE_TIME", 1: "LOG_APPEND_TIME"}
_NO_HEADERS: list[dict[str, list[int]]] = []
"""Shared by every struct event without headers (most records): never mutated, and
never handed out, since whatever user code sees is a plain copy of the struct."""
_ENCODER = msgspec.json.Encoder()
_b64 = binascii.b2a_base64


def decode_key(key: bytes) -> str:
    """The record key as the dispatcher's lane key: UTF-8 text, or base64 if not UTF-8."""
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        return _b64(key, newline=False).decode("ascii")


class KafkaEvent(msgspec.Struct, rename="camel", gc=False):
    """One record of a Kafka event with both a key and a value (field order is Lambda's).

    Not tracked by the cyclic garbage collector (``gc=False``: its fields can never lead
    back to it), so records in flight give the collector fewer objects to traverse."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    timestamp_type: str
    key: bytes
    value: bytes
    headers: list[dict[str, list[int]]]


def build_records(
    messages: Iterable[Any], topic: str, partition: int, shard: str, token: object
) -> list[Record]:
    """Records of aiokafka ``ConsumerRecord`` s of one topic-partition, in order.

    ``token`` is stored on every record (the source's per-assignment partition state).
    """
    out: list[Record] = []
    append = out.append
    types = _TIMESTAMP_TYPES
    for m in messages:
        offset = m.offset
        key = m.key
        value = m.value
        timestamp = m.timestamp
        headers = m.headers
        event: KafkaEvent | dict[str, JSON]
        if key is not None and value is not None:
            event = KafkaEvent(
                topic,
                partition,
                offset,
                timestamp,
                types.get(m.timestamp_type, "CREATE_TIME"),
                key,
                value,
                [{k: list(v or b"")} for k, v in headers] if headers else _NO_HEADERS,
            )
            try:
                text_key: str | None = key.decode()
            except UnicodeDecodeError:
                text_key = decode_key(key)
        else:
            event = _sparse_event(m, topic, partition)
            text_key = None if key is None else decode_key(key)
            value = value if value is not None else b""
        append(
            Record(
                shard,
                {"partition": shard, "offset": offset},
                event,
                value,
                "value",
                timestamp / 1000,
                text_key,
                token,
                len(value) + 256,
            )
        )
    return out


def _sparse_event(m: Any, topic: str, partition: int) -> dict[str, JSON]:
    """The event of a record without a key or without a value (the field is left out)."""
    event: dict[str, JSON] = {
        "topic": topic,
        "partition": partition,
        "offset": m.offset,
        "timestamp": m.timestamp,
        "timestampType": _TIMESTAMP_TYPES.get(m.timestamp_type, "CREATE_TIME"),
    }
    if m.key is not None:
        event["key"] = _b64(m.key, newline=False).decode()
    if m.value is not None:
        event["value"] = _b64(m.value, newline=False).decode()
    headers = m.headers
    event["headers"] = [{k: list(v or b"")} for k, v in headers] if headers else []
    return event


def batch_event(
    records: Sequence[Record], bootstrap_servers: str, event_source_arn: str | None = None
) -> dict[str, JSON]:
    """``{"eventSource": "SelfManagedKafka", "bootstrapServers", "records": {...}}``; with
    ``event_source_arn`` (an MSK cluster's) Lambda's Amazon MSK event instead:
    ``{"eventSource": "aws:kafka", "eventSourceArn", "bootstrapServers", "records"}``.

    Records are grouped by ``topic-partition`` in the order given.
    """
    grouped: dict[str, list[JSON]] = {}
    if len({record.shard for record in records}) == 1:  # one partition: the usual batch
        grouped[records[0].shard] = [record.event for record in records]
    else:
        for record in records:
            grouped.setdefault(record.shard, []).append(record.event)
    if event_source_arn:
        return {
            "eventSource": "aws:kafka",
            "eventSourceArn": event_source_arn,
            "bootstrapServers": bootstrap_servers,
            "records": grouped,
        }
    return {
        "eventSource": "SelfManagedKafka",
        "bootstrapServers": bootstrap_servers,
        "records": grouped,
    }


def _iso(epoch_ms: int) -> str:
    moment = datetime.fromtimestamp(epoch_ms / 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def batch_info(records: Sequence[Record], bootstrap_servers: str) -> dict[str, JSON]:
    """``{"KafkaBatchInfo": {...}}`` of Lambda's Kafka on-failure record.

    ``recordsInfo`` has, per ``topic-partition``, the first/last offsets (as strings,
    like Lambda) and timestamps (ISO 8601, milliseconds, ``Z``); ``payloadSize`` is the
    size in bytes of the batch's invocation event as JSON.
    """
    infos: dict[str, dict[str, str]] = {}
    for record in records:
        offset = str(record.item_id["offset"])
        stamp = _iso(round(record.timestamp * 1000))
        info = infos.get(record.shard)
        if info is None:
            infos[record.shard] = info = {
                "firstRecordOffset": offset,
                "firstRecordTimestamp": stamp,
            }
        info["lastRecordOffset"] = offset
        info["lastRecordTimestamp"] = stamp
    event = batch_event(records, bootstrap_servers)
    payload_size = len(_ENCODER.encode(event))
    return {
        "KafkaBatchInfo": {
            "batchSize": len(records),
            "bootstrapServers": bootstrap_servers,
            "payloadSize": payload_size,
            "recordsInfo": {
                shard: {
                    "firstRecordOffset": info["firstRecordOffset"],
                    "lastRecordOffset": info["lastRecordOffset"],
                    "firstRecordTimestamp": info["firstRecordTimestamp"],
                    "lastRecordTimestamp": info["lastRecordTimestamp"],
                }
                for shard, info in infos.items()
            },
        }
    }
