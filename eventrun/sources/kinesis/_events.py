"""Lambda's Kinesis and DynamoDB Streams shapes (lambda-semantics.md §3.2, §3.3, §1.4).

A Kinesis record, field order as Lambda writes it::

    {"kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": "1",
                 "sequenceNumber": "4959...", "data": "<base64>",
                 "approximateArrivalTimestamp": 1545084650.987},
     "eventSource": "aws:kinesis", "eventVersion": "1.0",
     "eventID": "shardId-000000000006:4959...", "eventName": "aws:kinesis:record",
     "invokeIdentityArn": "arn:aws:iam::...:role/...", "awsRegion": "us-east-2",
     "eventSourceARN": "arn:aws:kinesis:us-east-2:...:stream/lambda-stream"}

A DynamoDB record is the stream record GetRecords returns (``eventID``, ``eventName``
INSERT/MODIFY/REMOVE, ``eventVersion``, ``eventSource: aws:dynamodb``, ``awsRegion``,
``dynamodb{ApproximateCreationDateTime, Keys, NewImage, OldImage, SequenceNumber,
SizeBytes, StreamViewType}``) plus ``eventSourceARN``, with botocore's decoded values put
back as JSON: datetimes as epoch seconds, binary attribute values as base64. The
``itemIdentifier`` of both is the sequence number (a string). The failure record carries
``KinesisBatchInfo`` / ``DDBStreamBatchInfo`` (shard, first/last sequence numbers and
arrival times, batch size, stream ARN).
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec

from eventrun.abc import JSON, Record

__all__ = [
    "INVOKE_IDENTITY_ARN",
    "KinesisData",
    "KinesisEvent",
    "ddb_batch_info",
    "ddb_records",
    "kinesis_batch_info",
    "kinesis_records",
]

INVOKE_IDENTITY_ARN = "arn:aws:iam::000000000000:role/eventrun"
"""What ``invokeIdentityArn`` says: the role Lambda would have assumed (there is none)."""
_DDB_META = 128
"""Bytes counted per DynamoDB record on top of its images (for the 6 MB payload limit)."""


class KinesisData(msgspec.Struct, rename="camel", gc=False):
    kinesis_schema_version: str
    partition_key: str
    sequence_number: str
    data: bytes
    approximate_arrival_timestamp: float


class KinesisEvent(msgspec.Struct, gc=False):
    """One record of a Kinesis event; msgspec writes ``data`` as base64 itself."""

    kinesis: KinesisData
    eventSource: str
    eventVersion: str
    eventID: str
    eventName: str
    invokeIdentityArn: str
    awsRegion: str
    eventSourceARN: str


def _epoch(value: Any) -> float:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    return float(value)


def kinesis_records(
    raw: Iterable[dict[str, Any]], shard: str, stream_arn: str, region: str, token: object
) -> list[Record]:
    """Records of a GetRecords answer (botocore's decoded form), in shard order."""
    out: list[Record] = []
    for r in raw:
        seq = str(r["SequenceNumber"])
        arrival = round(_epoch(r["ApproximateArrivalTimestamp"]), 3)
        data = bytes(r["Data"])
        key = str(r["PartitionKey"])
        event = KinesisEvent(
            kinesis=KinesisData("1.0", key, seq, data, arrival),
            eventSource="aws:kinesis",
            eventVersion="1.0",
            eventID=f"{shard}:{seq}",
            eventName="aws:kinesis:record",
            invokeIdentityArn=INVOKE_IDENTITY_ARN,
            awsRegion=region,
            eventSourceARN=stream_arn,
        )
        out.append(
            Record(
                shard=shard,
                item_id=seq,
                event=event,
                data=data,
                data_key="data",
                timestamp=arrival,
                key=key,
                token=token,
                size=len(data) * 4 // 3 + len(key) + 400,
            )
        )
    return out


def _attribute(value: Any) -> Any:
    """A DynamoDB AttributeValue with botocore's bytes turned back into base64 text."""
    if isinstance(value, dict):
        return {k: _attribute(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_attribute(v) for v in value]
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    return value


def ddb_records(
    raw: Iterable[dict[str, Any]], shard: str, stream_arn: str, region: str, token: object
) -> list[Record]:
    """Records of a DynamoDB Streams GetRecords answer, in shard order."""
    out: list[Record] = []
    for r in raw:
        ddb = dict(r.get("dynamodb", {}))
        created = ddb.get("ApproximateCreationDateTime")
        stamp = _epoch(created) if created is not None else 0.0
        if created is not None:
            ddb["ApproximateCreationDateTime"] = float(int(stamp))
        for name in ("Keys", "NewImage", "OldImage"):
            if name in ddb:
                ddb[name] = _attribute(ddb[name])
        seq = str(ddb.get("SequenceNumber", ""))
        event: dict[str, JSON] = {
            "eventID": r.get("eventID", ""),
            "eventName": r.get("eventName", ""),
            "eventVersion": r.get("eventVersion", "1.1"),
            "eventSource": r.get("eventSource", "aws:dynamodb"),
            "awsRegion": r.get("awsRegion", region),
            "dynamodb": ddb,
            "eventSourceARN": stream_arn,
        }
        if "userIdentity" in r:
            event["userIdentity"] = r["userIdentity"]
        data = msgspec.json.encode(ddb)
        keys = ddb.get("Keys")
        out.append(
            Record(
                shard=shard,
                item_id=seq,
                event=event,
                data=data,
                data_key="dynamodb",
                timestamp=stamp,
                key=msgspec.json.encode(keys).decode() if keys is not None else None,
                token=token,
                size=len(data) + _DDB_META,
            )
        )
    return out


def _iso(epoch_s: float, *, millis: bool) -> str:
    moment = datetime.fromtimestamp(epoch_s, UTC)
    if not millis:
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _info(records: Sequence[Record], arn: str, *, millis: bool) -> dict[str, JSON]:
    first, last = records[0], records[-1]
    return {
        "shardId": first.shard,
        "startSequenceNumber": first.item_id,
        "endSequenceNumber": last.item_id,
        "approximateArrivalOfFirstRecord": _iso(first.timestamp, millis=millis),
        "approximateArrivalOfLastRecord": _iso(last.timestamp, millis=millis),
        "batchSize": len(records),
        "streamArn": arn,
    }


def kinesis_batch_info(records: Sequence[Record], stream_arn: str) -> dict[str, JSON]:
    """``{"KinesisBatchInfo": {...}}`` of a failed batch (arrival times with ms)."""
    return {"KinesisBatchInfo": _info(records, stream_arn, millis=True)}


def ddb_batch_info(records: Sequence[Record], stream_arn: str) -> dict[str, JSON]:
    """``{"DDBStreamBatchInfo": {...}}`` of a failed batch (arrival times in seconds)."""
    return {"DDBStreamBatchInfo": _info(records, stream_arn, millis=False)}
