"""The event shape of the ``mqtt`` trigger, shared subscriptions, and the config models."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from mqtt_broker import Mosquitto, Publisher
from mqtt_kit import payload_of, poller, unique
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import ValidationError

from eventrun.abc import Record, SourceSpec
from eventrun.exceptions import SourceAuthError
from eventrun_mqtt.config import MqttConnection, MqttTrigger
from eventrun_mqtt.source import MqttPoller, default_client_id


async def _take(p: MqttPoller, count: int) -> list[Record]:
    records: list[Record] = []
    with anyio.fail_after(10):
        while len(records) < count:
            records += await p.poll(count - len(records))
    return records


async def test_mqtt_event_shape(broker: Mosquitto, publisher: Publisher) -> None:
    topic = f"{unique('shape')}/sensor/7"
    publisher.client.publish(topic, b"retained-before", qos=1, retain=True).wait_for_publish(10)
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.ContentType = "application/json"
    props.PayloadFormatIndicator = 1
    props.ResponseTopic = "replies/7"
    props.CorrelationData = b"req-1"
    props.MessageExpiryInterval = 600
    props.UserProperty = [("source", "gw-3"), ("source", "gw-4")]
    client_id = unique("c")
    async with poller(broker, [topic], client_id) as p:
        [retained] = await _take(p, 1)
        publisher.publish(topic, [b'{"c": 21.5}'], properties=props)
        [record] = await _take(p, 1)
        event = msgspec.to_builtins(p.batch_event([retained, record]))  # as a handler sees it
        info = p.batch_info([retained, record])
        await p.ack([retained, record])
    first, second = event["Records"]
    assert first["retain"] is True
    assert payload_of(first) == "retained-before"
    assert first["properties"] == {}
    assert re.fullmatch(r"[0-9a-f]{8}-\d+", second["receiptId"])
    assert isinstance(second.pop("receivedTimestamp"), int)
    assert isinstance(second.pop("messageId"), int)
    assert second == {
        "eventSource": "eventrun:mqtt",
        "broker": broker.url,
        "clientId": client_id,
        "topic": topic,
        "payload": base64.b64encode(b'{"c": 21.5}').decode(),
        "qos": 1,
        "retain": False,
        "dup": False,
        "receiptId": second["receiptId"],
        "properties": {
            "contentType": "application/json",
            "payloadFormatIndicator": 1,
            "responseTopic": "replies/7",
            "messageExpiryInterval": second["properties"]["messageExpiryInterval"],
            "correlationData": base64.b64encode(b"req-1").decode(),
            "userProperties": [{"source": "gw-3"}, {"source": "gw-4"}],
        },
    }
    assert 0 < second["properties"]["messageExpiryInterval"] <= 600
    assert record.shard == topic
    assert record.item_id == second["receiptId"]
    assert record.data == b'{"c": 21.5}'
    assert record.data_key == "payload"
    assert record.attempt == 1
    batch = info["MQTTBatchInfo"]
    assert batch["topic"] == topic
    assert batch["batchSize"] == 2
    assert batch["lastReceiptId"] == second["receiptId"]
    publisher.client.publish(topic, b"", qos=1, retain=True).wait_for_publish(10)  # clear it


async def test_mqtt_shared_subscription_splits_between_replicas(
    broker: Mosquitto, publisher: Publisher
) -> None:
    prefix = unique("share")
    topic = f"{prefix}/t"
    seen: dict[str, list[str]] = {"a": [], "b": []}
    everything = anyio.Event()

    async def consume(name: str, p: MqttPoller) -> None:
        while True:
            records = await p.poll(100)
            seen[name] += [payload_of(r.plain_event()) for r in records]
            await p.ack(records)
            if len(seen["a"]) + len(seen["b"]) >= 400:
                everything.set()

    a = poller(broker, [topic], unique("a"), group="workers")
    b = poller(broker, [topic], unique("b"), group="workers")
    assert a.filters == [f"$share/workers/{topic}"]
    async with a, b, anyio.create_task_group() as tg:
        tg.start_soon(consume, "a", a)
        tg.start_soon(consume, "b", b)
        payloads = [f"m{n}".encode() for n in range(400)]
        await anyio.to_thread.run_sync(publisher.publish, topic, payloads)
        with anyio.fail_after(20):
            await everything.wait()
        tg.cancel_scope.cancel()
    assert seen["a"], "replica b got everything"
    assert seen["b"], "replica a got everything"
    assert sorted(seen["a"] + seen["b"]) == sorted(f"m{n}" for n in range(400))


async def test_mqtt_qos0_messages_need_no_puback(broker: Mosquitto, publisher: Publisher) -> None:
    topic = f"{unique('qos0')}/t"
    async with poller(broker, [topic], unique("c")) as p:
        publisher.client.publish(topic, b"fire-and-forget", qos=0)
        [record] = await _take(p, 1)
        event = record.plain_event()
        assert (event["qos"], event["messageId"], record.token) == (0, 0, None)
        await p.ack([record])
        assert p.statistics()["unacknowledged"] == 0


async def test_mqtt_refused_credentials_are_an_auth_error(tmp_path: Path) -> None:
    closed = Mosquitto(tmp_path / "closed", anonymous=False)
    closed.start()
    try:
        with pytest.raises(SourceAuthError, match="Not authorized"):
            async with poller(closed, ["t"], unique("c")):
                pass
    finally:
        closed.stop()


def test_mqtt_trigger_model() -> None:
    cfg = MqttTrigger(url="mqtt://u:p@127.0.0.1:1884", topics=["a/+/c", "d/#"])
    assert cfg.batch_size == 100
    assert cfg.maximum_batching_window == 0.5
    assert cfg.receive_maximum == 1000
    assert cfg.session_expiry == 7 * 86400
    assert MqttTrigger(connection="main", topics=["x"], session_expiry="2h").session_expiry == 7200
    bad: list[dict[str, Any]] = [
        {"topics": ["x"]},  # neither url nor connection
        {"url": "mqtt://h", "connection": "main", "topics": ["x"]},
        {"url": "amqp://h", "topics": ["x"]},
        {"url": "mqtt://h/path", "topics": ["x"]},
        {"url": "mqtt://h", "topics": []},
        {"url": "mqtt://h", "topics": ["a/#/b"]},
        {"url": "mqtt://h", "topics": ["a/b+"]},
        {"url": "mqtt://h", "topics": ["$share/g"]},
        {"url": "mqtt://h", "topics": ["$share/g/x"], "group": "g"},
        {"url": "mqtt://h", "topics": ["x"], "group": "a/b"},
        {"url": "mqtt://h", "topics": ["x"], "receive_maximum": 0},
        {"url": "mqtt://h", "topics": ["x"], "qos": 2},
    ]
    for doc in bad:
        with pytest.raises(ValidationError):
            MqttTrigger(**doc)
    assert MqttConnection(url="mqtts://broker:8883").url == "mqtts://broker:8883"
    with pytest.raises(ValidationError):
        MqttConnection(url="tcp://broker")


def test_mqtt_default_client_id(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOSTNAME", "pod-7")
    cfg = MqttTrigger(url="mqtt://h", topics=["x"])
    spec = SourceSpec(kind="mqtt", name="orders/mqtt[2]", function="orders", config=cfg)
    assert default_client_id(spec, None) == "eventrun-orders-2"
    assert default_client_id(spec, "g") == "eventrun-orders-2-pod-7"
    assert MqttPoller(spec).client_id == "eventrun-orders-2"
