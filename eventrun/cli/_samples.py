"""Lambda-shaped sample events for ``eventrun generate-event`` (like ``sam local generate-event``).

Shapes follow reference/lambda-semantics.md §3; values are plausible and self-consistent
(md5 of the body, base64 of the value, timestamps of now).
"""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_plus

__all__ = ["SAMPLES", "sample_event"]

REGION = "us-east-1"
ACCOUNT = "000000000000"


def _iso(ms: bool = True) -> str:
    now = datetime.now(UTC)
    if ms:
        return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def sqs(body: str = '{"hello": "world"}') -> dict[str, Any]:
    now = str(int(time.time() * 1000))
    return {
        "Records": [
            {
                "messageId": str(uuid.uuid4()),
                "receiptHandle": base64.b64encode(uuid.uuid4().bytes * 2).decode(),
                "body": body,
                "attributes": {
                    "ApproximateReceiveCount": "1",
                    "SentTimestamp": now,
                    "SenderId": "AIDAEVENTRUNSAMPLE",
                    "ApproximateFirstReceiveTimestamp": now,
                },
                "messageAttributes": {},
                "md5OfBody": hashlib.md5(body.encode()).hexdigest(),
                "eventSource": "aws:sqs",
                "eventSourceARN": f"arn:aws:sqs:{REGION}:{ACCOUNT}:my-queue",
                "awsRegion": REGION,
            }
        ]
    }


def kafka(value: str = '{"hello": "world"}') -> dict[str, Any]:
    return {
        "eventSource": "SelfManagedKafka",
        "bootstrapServers": "localhost:9092",
        "records": {
            "mytopic-0": [
                {
                    "topic": "mytopic",
                    "partition": 0,
                    "offset": 15,
                    "timestamp": int(time.time() * 1000),
                    "timestampType": "CREATE_TIME",
                    "key": base64.b64encode(b"key-1").decode(),
                    "value": base64.b64encode(value.encode()).decode(),
                    "headers": [{"headerKey": list(b"headerValue")}],
                }
            ]
        },
    }


def s3(key: str = "uploads/report 2026.csv", size: int = 1024) -> dict[str, Any]:
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": REGION,
                "eventTime": _iso(),
                "eventName": "ObjectCreated:Put",
                "userIdentity": {"principalId": "eventrun"},
                "requestParameters": {"sourceIPAddress": "127.0.0.1"},
                "responseElements": {
                    "x-amz-request-id": uuid.uuid4().hex[:16].upper(),
                    "x-amz-id-2": base64.b64encode(uuid.uuid4().bytes).decode(),
                },
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": "sample",
                    "bucket": {
                        "name": "inbox",
                        "ownerIdentity": {"principalId": "eventrun"},
                        "arn": "arn:aws:s3:::inbox",
                    },
                    "object": {
                        "key": quote_plus(key, safe="/"),
                        "size": size,
                        "eTag": hashlib.md5(key.encode()).hexdigest(),
                        "sequencer": f"{time.time_ns():X}",
                    },
                },
            }
        ]
    }


def schedule() -> dict[str, Any]:
    return {
        "version": "0",
        "account": ACCOUNT,
        "region": REGION,
        "detail": {},
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "time": _iso(ms=False),
        "id": str(uuid.uuid4()),
        "resources": [f"arn:aws:events:{REGION}:{ACCOUNT}:rule/my-schedule"],
    }


def http(
    method: str = "POST", path: str = "/hello", body: str = '{"hello": "world"}'
) -> dict[str, Any]:
    now = time.time()
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "name=eventrun",
        "headers": {"content-type": "application/json", "host": "127.0.0.1:9000"},
        "queryStringParameters": {"name": "eventrun"},
        "requestContext": {
            "accountId": ACCOUNT,
            "apiId": "eventrun",
            "domainName": "127.0.0.1:9000",
            "domainPrefix": "127",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": "curl/8.0",
            },
            "requestId": str(uuid.uuid4()),
            "routeKey": "$default",
            "stage": "$default",
            "time": datetime.now(UTC).strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now * 1000),
        },
        "body": body,
        "isBase64Encoded": False,
    }


def http_v1(method: str = "GET", path: str = "/hello", stage: str = "Prod") -> dict[str, Any]:
    """A REST API proxy event (payload format 1.0)."""
    now = time.time()
    headers = {"content-type": "application/json", "host": "127.0.0.1:9000"}
    return {
        "resource": path,
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "resourceId": "eventrun",
            "resourcePath": path,
            "httpMethod": method,
            "extendedRequestId": str(uuid.uuid4()),
            "requestTime": datetime.now(UTC).strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "path": path if stage == "$default" else f"/{stage}{path}",
            "accountId": ACCOUNT,
            "protocol": "HTTP/1.1",
            "stage": stage,
            "domainPrefix": "127",
            "requestTimeEpoch": int(now * 1000),
            "requestId": str(uuid.uuid4()),
            "identity": {"sourceIp": "127.0.0.1", "userAgent": "curl/8.0"},
            "domainName": "127.0.0.1:9000",
            "apiId": "eventrun",
        },
        "body": None,
        "isBase64Encoded": False,
    }


def redis(data: str = '{"hello": "world"}') -> dict[str, Any]:
    ms = int(time.time() * 1000)
    entry = f"{ms}-0"
    return {
        "Records": [
            {
                "eventSource": "eventrun:redis-streams",
                "eventSourceARN": "arn:eventrun:redis:localhost:6379/0:stream/orders",
                "eventID": f"orders:{entry}",
                "eventName": "eventrun:redis-streams:record",
                "eventVersion": "1.0",
                "awsRegion": REGION,
                "redis": {
                    "redisSchemaVersion": "1.0",
                    "stream": "orders",
                    "id": entry,
                    "sequenceNumber": entry,
                    "partitionKey": "",
                    "data": base64.b64encode(data.encode()).decode(),
                    "approximateArrivalTimestamp": ms / 1000,
                    "deliveryCount": 1,
                    "fields": {"data": data},
                },
            }
        ]
    }


def kinesis(data: str = '{"hello": "world"}') -> dict[str, Any]:
    seq = "49590338271490256608559692538361571095921575989136588898"
    return {
        "Records": [
            {
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": "1",
                    "sequenceNumber": seq,
                    "data": base64.b64encode(data.encode()).decode(),
                    "approximateArrivalTimestamp": round(time.time(), 3),
                },
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": f"shardId-000000000000:{seq}",
                "eventName": "aws:kinesis:record",
                "invokeIdentityArn": f"arn:aws:iam::{ACCOUNT}:role/eventrun",
                "awsRegion": REGION,
                "eventSourceARN": f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/my-stream",
            }
        ]
    }


def dynamodb() -> dict[str, Any]:
    label = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000")
    arn = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/my-table/stream/{label}"
    now = float(int(time.time()))
    keys = {"Id": {"N": "101"}}
    images = [
        ("INSERT", {"NewImage": {"Message": {"S": "New item!"}, "Id": {"N": "101"}}}),
        (
            "MODIFY",
            {
                "OldImage": {"Message": {"S": "New item!"}, "Id": {"N": "101"}},
                "NewImage": {"Message": {"S": "This item has changed"}, "Id": {"N": "101"}},
            },
        ),
        ("REMOVE", {"OldImage": {"Message": {"S": "This item has changed"}, "Id": {"N": "101"}}}),
    ]
    records = []
    for i, (name, image) in enumerate(images, start=1):
        records.append(
            {
                "eventID": uuid.uuid4().hex,
                "eventName": name,
                "eventVersion": "1.1",
                "eventSource": "aws:dynamodb",
                "awsRegion": REGION,
                "dynamodb": {
                    "ApproximateCreationDateTime": now,
                    "Keys": keys,
                    **image,
                    "SequenceNumber": str(111 * i),
                    "SizeBytes": 26 * i,
                    "StreamViewType": "NEW_AND_OLD_IMAGES",
                },
                "eventSourceARN": arn,
            }
        )
    return {"Records": records}


SAMPLES: dict[str, Callable[[], dict[str, Any]]] = {
    "dynamodb": dynamodb,
    "http": http,
    "kinesis": kinesis,
    "kafka": kafka,
    "redis": redis,
    "s3": s3,
    "schedule": schedule,
    "sqs": sqs,
}


def sample_event(kind: str) -> dict[str, Any]:
    return SAMPLES[kind]()
