"""The ``aws:rmq`` event, field by field, against Lambda's documented example and
aws-lambda-powertools' RabbitMQEvent data class."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import anyio
import msgspec
import pytest
from aws_lambda_powertools.utilities.data_classes.rabbit_mq_event import (
    BasicProperties as PtBasicProperties,
)
from aws_lambda_powertools.utilities.data_classes.rabbit_mq_event import RabbitMQEvent
from pamqp import commands as spec
from rabbitmq_kit import declare, poller, publish

from eventrun_rabbitmq._events import java_date, lambda_header

pytestmark = pytest.mark.rabbitmq

# Lambda's documented example (with-mq.html), the keys of one message and its properties
LAMBDA_MESSAGE_KEYS = ["basicProperties", "redelivered", "data"]
LAMBDA_PROPERTY_KEYS = [
    "contentType",
    "contentEncoding",
    "headers",
    "deliveryMode",
    "priority",
    "correlationId",
    "replyTo",
    "expiration",
    "messageId",
    "timestamp",
    "type",
    "userId",
    "appId",
    "clusterId",
    "bodySize",
]


def test_java_date_is_lambdas_text() -> None:
    assert java_date(datetime(1970, 1, 1, 0, 33, 41, tzinfo=UTC)) == "Jan 1, 1970, 12:33:41 AM"
    assert java_date(datetime(2024, 11, 5, 13, 4, 5, tzinfo=UTC)) == "Nov 5, 2024, 1:04:05 PM"
    assert java_date(datetime(2024, 11, 5, 12, 0, 0)) == "Nov 5, 2024, 12:00:00 PM"


def test_header_values_as_the_java_client_renders_them() -> None:
    assert lambda_header("value1") == {"bytes": [118, 97, 108, 117, 101, 49]}
    assert lambda_header(b"\x00\xff") == {"bytes": [0, 255]}
    assert lambda_header(10) == 10
    assert lambda_header(True) is True
    assert lambda_header({"a": "b", "n": [1, "c"]}) == {
        "a": {"bytes": [98]},
        "n": [1, {"bytes": [99]}],
    }


async def test_event_shape_field_by_field(rabbit_url: str, queue_name: str) -> None:
    await declare(rabbit_url, queue_name)
    body = json.dumps({"timeout": 0, "data": "CZrmf0Gw8Ov4bqLQxD4E"}).encode()
    props = spec.Basic.Properties(
        content_type="text/plain",
        headers={"header1": "value1", "numberInHeader": 10, "flag": True},
        delivery_mode=1,
        priority=34,
        expiration="60000",
        message_id="m-1",
        timestamp=datetime(1970, 1, 1, 0, 33, 41, tzinfo=UTC),
        message_type="order",
        user_id="guest",
        app_id="shop",
        correlation_id="c-9",
        reply_to="replies",
    )
    await publish(rabbit_url, queue_name, [body, b"plain"], properties=props)
    async with poller(rabbit_url, queue_name) as p:
        records: list = []
        with anyio.fail_after(10):
            while len(records) < 2:
                records += await p.poll(10)
        doc = json.loads(msgspec.json.encode(p.batch_event(records)))
        await p.ack(records)

    assert list(doc) == ["eventSource", "eventSourceArn", "rmqMessagesByQueue"]
    assert doc["eventSource"] == "aws:rmq"
    assert doc["eventSourceArn"].startswith("arn:aws:mq:")
    assert "guest" not in doc["eventSourceArn"]
    assert list(doc["rmqMessagesByQueue"]) == [f"{queue_name}::/"]
    first, second = doc["rmqMessagesByQueue"][f"{queue_name}::/"]
    assert list(first) == LAMBDA_MESSAGE_KEYS
    assert list(first["basicProperties"]) == LAMBDA_PROPERTY_KEYS
    assert first == {
        "basicProperties": {
            "contentType": "text/plain",
            "contentEncoding": None,
            "headers": {
                "header1": {"bytes": [118, 97, 108, 117, 101, 49]},
                "numberInHeader": 10,
                "flag": True,
            },
            "deliveryMode": 1,
            "priority": 34,
            "correlationId": "c-9",
            "replyTo": "replies",
            "expiration": "60000",
            "messageId": "m-1",
            "timestamp": "Jan 1, 1970, 12:33:41 AM",
            "type": "order",
            "userId": "guest",
            "appId": "shop",
            "clusterId": None,
            "bodySize": len(body),
        },
        "redelivered": False,
        "data": base64.b64encode(body).decode(),
    }
    assert base64.b64decode(second["data"]) == b"plain"

    event = RabbitMQEvent(doc)
    assert event.event_source == "aws:rmq"
    (messages,) = event.rmq_messages_by_queue.values()
    message = messages[0]
    assert message.json_data == {"timeout": 0, "data": "CZrmf0Gw8Ov4bqLQxD4E"}
    assert message.redelivered is False
    properties = message.basic_properties
    for name, value in vars(PtBasicProperties).items():
        if isinstance(value, property):  # every accessor finds its field
            getattr(properties, name)
    assert properties.message_id == "m-1"
    assert properties.body_size == len(body)
    assert properties.timestamp == "Jan 1, 1970, 12:33:41 AM"


async def test_message_without_properties_has_every_field_null(
    rabbit_url: str, queue_name: str
) -> None:
    await declare(rabbit_url, queue_name)
    await publish(rabbit_url, queue_name, [b"x"], properties=spec.Basic.Properties())
    async with poller(rabbit_url, queue_name) as p:
        records: list = []
        with anyio.fail_after(10):
            while not records:
                records = list(await p.poll(10))
        doc = json.loads(msgspec.json.encode(p.batch_event(records)))
        await p.ack(records)
    (message,) = doc["rmqMessagesByQueue"][f"{queue_name}::/"]
    props = message["basicProperties"]
    assert list(props) == LAMBDA_PROPERTY_KEYS
    assert props["bodySize"] == 1
    # aiormq gives every publish a message id; everything else is absent
    assert {k for k, v in props.items() if v is not None} == {"bodySize", "messageId"}
