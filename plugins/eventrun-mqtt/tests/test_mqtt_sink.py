"""The ``mqtt:CONNECTION/TOPIC`` destination against a private Mosquitto."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import anyio
import paho.mqtt.client as mqtt
import pytest
from mqtt_broker import Mosquitto, close_client
from mqtt_kit import sink, unique
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from eventrun.abc import OutMessage, SinkSpec
from eventrun.exceptions import SinkError, SinkUnavailable
from eventrun_mqtt.config import MqttConnection
from eventrun_mqtt.sink import MqttSink


class Subscriber:
    def __init__(self, port: int, topic: str) -> None:
        self.messages: list[Any] = []
        self._cond = threading.Condition()
        ready = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: ready.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.client.subscribe(topic, qos=1)
        assert ready.wait(10)

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        with self._cond:
            self.messages.append(message)
            self._cond.notify_all()

    def wait(self, count: int) -> list[Any]:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.messages) >= count, 10)
            return list(self.messages)

    def close(self) -> None:
        close_client(self.client)


async def test_mqtt_sink_publishes_with_key_and_attributes(broker: Mosquitto) -> None:
    topic = f"{unique('out')}/results"
    sub = Subscriber(broker.port, topic)
    try:
        async with sink(broker, topic) as out:
            await out.send(
                [
                    OutMessage(b'{"n": 1}', key="k1", attributes={"trigger": "fn/mqtt[0]"}),
                    OutMessage(b'{"n": 2}'),
                ]
            )
            await out.send([])
        first, second = await anyio.to_thread.run_sync(sub.wait, 2)
    finally:
        sub.close()
    assert (first.payload, second.payload) == (b'{"n": 1}', b'{"n": 2}')
    assert first.qos == 1
    assert first.properties.ContentType == "application/json"
    assert first.properties.UserProperty == [("key", "k1"), ("trigger", "fn/mqtt[0]")]
    assert not hasattr(second.properties, "UserProperty")


async def test_mqtt_sink_down_is_unavailable_then_recovers(tmp_path: Path) -> None:
    own = Mosquitto(tmp_path / "broker")
    own.start()
    topic = unique("out")
    try:
        async with sink(own, topic) as out:
            await out.send([OutMessage(b"1")])
            own.stop()
            with pytest.raises(SinkUnavailable, match="mqtt:main/"):
                await out.send([OutMessage(b"2")])
            own.start()
            sub = Subscriber(own.port, topic)
            try:
                await out.send([OutMessage(b"3")])
                [message] = await anyio.to_thread.run_sync(sub.wait, 1)
            finally:
                sub.close()
        assert message.payload == b"3"
    finally:
        own.stop()


def test_mqtt_sink_target_checked() -> None:
    conn = MqttConnection(url="mqtt://127.0.0.1:1")
    for target in ("main", "main/", "main/a/+", "main/#"):
        spec = SinkSpec(url=f"mqtt:{target}", kind="mqtt", target=target, connection=conn)
        with pytest.raises(SinkError, match="topic"):
            MqttSink(spec)
    with pytest.raises(SinkError, match="connection"):
        MqttSink(SinkSpec(url="mqtt:main/t", kind="mqtt", target="main/t"))
