"""``eventrun generate-event`` samples: self-consistent values, and the same shape (keys and
value types, recursively) as the events the real sources build, so a handler tested on a
sample sees what it will see in production.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import datetime
from typing import Any
from urllib.parse import unquote_plus

import msgspec
from aiokafka.structs import ConsumerRecord
from starlette.requests import Request

from eventrun.cli._samples import SAMPLES, sample_event
from eventrun.sources.filewatch._events import RecordBuilder
from eventrun.sources.http import build_event
from eventrun.sources.kafka._records import batch_event, build_records
from eventrun.sources.kinesis._events import ddb_records, kinesis_records
from eventrun.sources.redis_streams._records import EntryBuilder
from eventrun.sources.sqs._events import to_record


def shape(value: Any) -> Any:
    """Keys and JSON types, recursively (lists by their first item)."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def test_every_kind_is_json_serialisable() -> None:
    assert sorted(SAMPLES) == [
        "dynamodb",
        "http",
        "kafka",
        "kinesis",
        "redis",
        "s3",
        "schedule",
        "sqs",
    ]
    for kind in SAMPLES:
        event = sample_event(kind)
        assert json.loads(json.dumps(event)) == event


def test_sqs_matches_the_sqs_source() -> None:
    sample = sample_event("sqs")
    record = sample["Records"][0]
    assert record["md5OfBody"] == hashlib.md5(record["body"].encode()).hexdigest()
    real = to_record(
        {
            "MessageId": "m-1",
            "ReceiptHandle": "rh",
            "Body": "b",
            "MD5OfBody": "x",
            "Attributes": {
                "ApproximateReceiveCount": "1",
                "SentTimestamp": "1",
                "SenderId": "s",
                "ApproximateFirstReceiveTimestamp": "1",
            },
        },
        queue_arn="arn:aws:sqs:us-east-1:000000000000:q",
        region="us-east-1",
        fifo=False,
    )
    assert shape(record) == shape(real.event)


def test_kafka_matches_the_kafka_source() -> None:
    sample = sample_event("kafka")
    [records] = sample["records"].values()
    record = records[0]
    assert json.loads(base64.b64decode(record["value"])) == {"hello": "world"}
    message = ConsumerRecord(
        topic="mytopic",
        partition=0,
        offset=15,
        timestamp=1,
        timestamp_type=0,
        key=b"k",
        value=b"v",
        checksum=None,
        serialized_key_size=1,
        serialized_value_size=1,
        headers=[("headerKey", b"headerValue")],
    )
    built = batch_event(build_records([message], "mytopic", 0, "mytopic-0", None), "localhost:9092")
    real = json.loads(msgspec.json.encode(built))  # as a handler gets it
    assert shape(sample) == shape(real)


def test_s3_matches_the_filewatch_source() -> None:
    sample = sample_event("s3")
    record = sample["Records"][0]
    assert unquote_plus(record["s3"]["object"]["key"]) == "uploads/report 2026.csv"
    assert record["s3"]["object"]["key"] == "uploads/report+2026.csv"
    assert record["s3"]["bucket"]["arn"] == f"arn:aws:s3:::{record['s3']['bucket']['name']}"
    datetime.fromisoformat(record["eventTime"].replace("Z", "+00:00"))
    int(record["s3"]["object"]["sequencer"], 16)
    real = RecordBuilder("inbox", "cfg").created("uploads/a b.csv", 10, "etag", 1.0)
    assert shape(record) == shape(real)


def test_schedule_matches_eventbridge() -> None:
    sample = sample_event("schedule")
    assert set(sample) == {
        "version", "account", "region", "detail", "detail-type", "source", "time", "id",
        "resources",
    }  # fmt: skip
    assert datetime.strptime(sample["time"], "%Y-%m-%dT%H:%M:%SZ")


def test_http_matches_the_function_url_event() -> None:
    sample = sample_event("http")
    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": "POST",
        "path": "/hello",
        "raw_path": b"/hello",
        "query_string": b"name=eventrun",
        "headers": [(b"content-type", b"application/json"), (b"host", b"127.0.0.1:9000")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 9000),
        "scheme": "http",
        "root_path": "",
        "path_params": {},
    }
    real = build_event(Request(scope), b'{"hello": "world"}')
    assert shape(sample) == shape(real)
    assert sample["queryStringParameters"] == real["queryStringParameters"]
    assert sample["rawQueryString"] == real["rawQueryString"]


def test_redis_matches_the_redis_streams_source() -> None:
    sample = sample_event("redis")
    record = sample["Records"][0]
    assert base64.b64decode(record["redis"]["data"]).decode() == record["redis"]["fields"]["data"]
    assert record["eventID"] == f"{record['redis']['stream']}:{record['redis']['id']}"
    real = EntryBuilder("orders", "localhost:6379/0", "us-east-1", None).build(
        b"1700000000000-0", [b"data", b'{"hello": "world"}'], 1
    )
    event = json.loads(msgspec.json.encode(real.event))  # as a handler gets it
    assert shape(record) == shape(event)
    assert record["eventSourceARN"] == event["eventSourceARN"]


def test_kinesis_matches_the_kinesis_source() -> None:
    sample = sample_event("kinesis")
    record = sample["Records"][0]
    assert record["eventID"].endswith(":" + record["kinesis"]["sequenceNumber"])
    [real] = kinesis_records(
        [
            {
                "SequenceNumber": "1",
                "ApproximateArrivalTimestamp": datetime.now(),
                "Data": b"{}",
                "PartitionKey": "k",
            }
        ],
        "shardId-000000000000",
        "arn:aws:kinesis:us-east-1:000000000000:stream/s",
        "us-east-1",
        None,
    )
    real_event = msgspec.to_builtins(real.event)
    assert shape(record) == shape(real_event)
    assert list(record) == list(real_event)


def test_dynamodb_matches_the_dynamodb_streams_source() -> None:
    sample = sample_event("dynamodb")
    assert [r["eventName"] for r in sample["Records"]] == ["INSERT", "MODIFY", "REMOVE"]
    modify = sample["Records"][1]
    [real] = ddb_records(
        [
            {
                "eventID": "e",
                "eventName": "MODIFY",
                "eventVersion": "1.1",
                "eventSource": "aws:dynamodb",
                "awsRegion": "us-east-1",
                "dynamodb": {
                    "ApproximateCreationDateTime": datetime.now(),
                    "Keys": {"Id": {"N": "101"}},
                    "OldImage": {"Message": {"S": "a"}, "Id": {"N": "101"}},
                    "NewImage": {"Message": {"S": "b"}, "Id": {"N": "101"}},
                    "SequenceNumber": "1",
                    "SizeBytes": 1,
                    "StreamViewType": "NEW_AND_OLD_IMAGES",
                },
            }
        ],
        "shardId-1",
        "arn:aws:dynamodb:us-east-1:000000000000:table/t/stream/x",
        "us-east-1",
        None,
    )
    assert shape(modify) == shape(real.plain_event())
