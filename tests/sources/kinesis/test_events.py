"""Lambda's Kinesis and DynamoDB Streams record and failure-record shapes, field by field
(lambda-semantics.md §1.4, §3.2, §3.3), from botocore's decoded GetRecords answers."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from eventrun.sources.kinesis._events import (
    ddb_batch_info,
    ddb_records,
    kinesis_batch_info,
    kinesis_records,
)

KARN = "arn:aws:kinesis:us-east-2:123456789012:stream/s"
DARN = "arn:aws:dynamodb:us-west-2:1:table/T/stream/2024-01-01T00:00:00.000"
T0 = datetime(2019, 11, 14, 0, 38, 4, 835000, tzinfo=UTC)
T1 = datetime(2019, 11, 14, 0, 38, 5, 580000, tzinfo=UTC)


def test_kinesis_record_and_batch_info() -> None:
    raw = [
        {
            "SequenceNumber": "4960",
            "ApproximateArrivalTimestamp": T0,
            "Data": b"\xff\x00",
            "PartitionKey": "pk",
        },
        {
            "SequenceNumber": "4961",
            "ApproximateArrivalTimestamp": T1,
            "Data": b"{}",
            "PartitionKey": "pk",
        },
    ]
    records = kinesis_records(raw, "shardId-000000000001", KARN, "us-east-2", None)
    first = msgspec.to_builtins(records[0].event)
    assert first == {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": "pk",
            "sequenceNumber": "4960",
            "data": "/wA=",
            "approximateArrivalTimestamp": 1573691884.835,
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": "shardId-000000000001:4960",
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": "arn:aws:iam::000000000000:role/eventrun",
        "awsRegion": "us-east-2",
        "eventSourceARN": KARN,
    }
    assert (records[0].item_id, records[0].key, records[0].data) == ("4960", "pk", b"\xff\x00")
    assert kinesis_batch_info(records, KARN) == {
        "KinesisBatchInfo": {
            "shardId": "shardId-000000000001",
            "startSequenceNumber": "4960",
            "endSequenceNumber": "4961",
            "approximateArrivalOfFirstRecord": "2019-11-14T00:38:04.835Z",
            "approximateArrivalOfLastRecord": "2019-11-14T00:38:05.580Z",
            "batchSize": 2,
            "streamArn": KARN,
        }
    }


def test_dynamodb_record_and_batch_info() -> None:
    raw = [
        {
            "eventID": "e1",
            "eventName": "MODIFY",
            "eventVersion": "1.1",
            "eventSource": "aws:dynamodb",
            "awsRegion": "us-west-2",
            "dynamodb": {
                "ApproximateCreationDateTime": T0,
                "Keys": {"Id": {"N": "101"}},
                "OldImage": {"Id": {"N": "101"}, "Bin": {"B": b"foobar"}},
                "NewImage": {
                    "Id": {"N": "101"},
                    "Set": {"BS": [b"a", b"b"]},
                    "M": {"M": {"x": {"L": [{"B": b"\x00"}]}}},
                },
                "SequenceNumber": "111",
                "SizeBytes": 26,
                "StreamViewType": "NEW_AND_OLD_IMAGES",
            },
        }
    ]
    [record] = ddb_records(raw, "shardId-1", DARN, "us-west-2", None)
    event = record.plain_event()
    assert list(event) == [
        "eventID",
        "eventName",
        "eventVersion",
        "eventSource",
        "awsRegion",
        "dynamodb",
        "eventSourceARN",
    ]
    ddb = event["dynamodb"]
    assert ddb["ApproximateCreationDateTime"] == 1573691884.0
    assert ddb["OldImage"]["Bin"] == {"B": "Zm9vYmFy"}
    assert ddb["NewImage"]["Set"] == {"BS": ["YQ==", "Yg=="]}
    assert ddb["NewImage"]["M"] == {"M": {"x": {"L": [{"B": "AA=="}]}}}
    assert event["eventSourceARN"] == DARN
    assert record.item_id == "111"
    assert msgspec.json.decode(record.data) == ddb, "filters match the dynamodb field"
    info = ddb_batch_info([record], DARN)["DDBStreamBatchInfo"]
    assert info == {
        "shardId": "shardId-1",
        "startSequenceNumber": "111",
        "endSequenceNumber": "111",
        "approximateArrivalOfFirstRecord": "2019-11-14T00:38:04Z",
        "approximateArrivalOfLastRecord": "2019-11-14T00:38:04Z",
        "batchSize": 1,
        "streamArn": DARN,
    }
