"""The event a handler gets from the ``mqtt`` trigger (Lambda has no MQTT event source;
this shape follows its stream events: a ``Records`` list, base64 payload)::

    {"Records": [{
        "eventSource": "eventrun:mqtt",
        "broker": "mqtt://127.0.0.1:1883",      # no credentials
        "clientId": "eventrun-telemetry-0",
        "topic": "sensors/7/temperature",
        "payload": "eyJjIjogMjEuNX0=",           # base64 of the PUBLISH payload
        "qos": 1,
        "retain": false,
        "dup": false,                            # the broker's DUP flag: a redelivery
        "messageId": 17,                         # MQTT packet identifier (0 for QoS 0)
        "receiptId": "a1b2c3d4-42",              # unique per delivery: batchItemFailures
        "receivedTimestamp": 1733590000123,      # epoch ms when eventrun received it
        "properties": {                          # MQTT 5 properties that were set
            "contentType": "application/json",
            "payloadFormatIndicator": 1,
            "responseTopic": "replies/7",
            "correlationData": "cmVxLTE=",       # base64
            "messageExpiryInterval": 60,
            "userProperties": [{"source": "gw-3"}]
        }
    }]}

A handler reporting partial failures names ``receiptId`` as ``itemIdentifier``
(``messageId`` alone is reused by the broker once acknowledged). MQTT carries no publish
time, so ``receivedTimestamp`` (and ``maximum_record_age``) count from receipt.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Sequence
from typing import Any

import msgspec
import paho.mqtt.client as mqtt

from eventrun.abc import Record

__all__ = ["EVENT_SOURCE", "MqttEvent", "batch_info", "build_record", "properties_of"]

EVENT_SOURCE = "eventrun:mqtt"
_NAMES = {
    "ContentType": "contentType",
    "PayloadFormatIndicator": "payloadFormatIndicator",
    "ResponseTopic": "responseTopic",
    "MessageExpiryInterval": "messageExpiryInterval",
}


_PRIVATE = 4  # a paho Properties' own attributes: packetType, types, names, properties


class MqttEvent(msgspec.Struct, gc=False):
    """One record of the event (msgspec encodes ``payload`` as base64). Building a struct
    costs a fraction of a dict; a batch for a process worker is encoded straight from it.
    Not tracked by the cyclic GC: its fields never lead back to it."""

    eventSource: str
    broker: str
    clientId: str
    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool
    messageId: int
    receiptId: str
    receivedTimestamp: int
    properties: dict[str, Any]


def properties_of(message: mqtt.MQTTMessage) -> dict[str, Any]:
    """The MQTT 5 properties a publisher set, under the event's names."""
    props = getattr(message, "properties", None)
    out: dict[str, Any] = {}
    if props is None or len(vars(props)) <= _PRIVATE:  # none set (the usual case)
        return out
    for attr, name in _NAMES.items():
        if hasattr(props, attr):
            out[name] = getattr(props, attr)
    if hasattr(props, "CorrelationData"):
        out["correlationData"] = base64.b64encode(bytes(props.CorrelationData)).decode()
    if hasattr(props, "UserProperty"):
        out["userProperties"] = [{str(k): str(v)} for k, v in props.UserProperty]
    return out


def build_record(
    message: mqtt.MQTTMessage,
    *,
    broker: str,
    client_id: str,
    receipt: str,
    token: object,
) -> Record:
    """One polled message as a dispatcher record: shard = topic (order per topic)."""
    now = time.time()
    payload = message.payload
    if not isinstance(payload, bytes):
        payload = bytes(payload)
    topic = message.topic
    event = MqttEvent(
        EVENT_SOURCE,
        broker,
        client_id,
        topic,
        payload,
        message.qos,
        bool(message.retain),
        bool(message.dup),
        message.mid,
        receipt,
        int(now * 1000),
        properties_of(message),
    )
    return Record(
        shard=topic,
        item_id=receipt,
        event=event,
        data=payload,
        data_key="payload",
        timestamp=now,
        token=token,
        attempt=2 if message.dup else 1,
    )


def batch_info(records: Sequence[Record], broker: str, client_id: str) -> dict[str, Any]:
    """``MQTTBatchInfo`` of a Lambda failure record: what identifies a failed batch."""
    first, last = records[0].plain_event(), records[-1].plain_event()
    return {
        "MQTTBatchInfo": {
            "broker": broker,
            "clientId": client_id,
            "topic": records[0].shard,
            "batchSize": len(records),
            "firstReceiptId": first["receiptId"],
            "lastReceiptId": last["receiptId"],
            "firstReceivedTimestamp": first["receivedTimestamp"],
            "lastReceivedTimestamp": last["receivedTimestamp"],
        }
    }
